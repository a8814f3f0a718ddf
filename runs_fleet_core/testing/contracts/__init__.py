"""Contract suites: one pytest test class per port, for every adapter of it.

Subclass the suite of your port in a ``Test*`` class, provide the fixtures its
docstring names, and pytest runs the whole contract against your adapter. The in-memory
adapters, the built-in plugins and third-party plugins all pass the same suites, so
they cannot drift apart. Requires pytest and pytest-asyncio.
"""

# _rewrite must come first: it registers the suites for assert rewriting before they load.
from runs_fleet_core.testing.contracts import _rewrite  # noqa: F401
from runs_fleet_core.testing.contracts.compute import PoolProviderContract, ProviderContract
from runs_fleet_core.testing.contracts.configs import ConfigStoreContract
from runs_fleet_core.testing.contracts.outbox import JobOutboxContract
from runs_fleet_core.testing.contracts.queue import Advance, QueueContract
from runs_fleet_core.testing.contracts.state import StateStoreContract

__all__ = [
    "Advance",
    "ConfigStoreContract",
    "JobOutboxContract",
    "PoolProviderContract",
    "ProviderContract",
    "QueueContract",
    "StateStoreContract",
]
