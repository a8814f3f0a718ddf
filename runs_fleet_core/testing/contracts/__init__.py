"""Contract suites: one pytest test class per port, for every adapter of it.

Subclass the suite of your port in a ``Test*`` class, provide the fixtures its
docstring names, and pytest runs the whole contract against your adapter. The in-memory
adapters, the built-in plugins and third-party plugins all pass the same suites, so
they cannot drift apart. Requires pytest and pytest-asyncio.
"""

import pytest

# Registered before the suites are imported so that pytest rewrites their asserts
# (showing values on failure) although they live outside the test directories.
pytest.register_assert_rewrite(
    "runs_fleet_core.testing.contracts.compute",
    "runs_fleet_core.testing.contracts.configs",
    "runs_fleet_core.testing.contracts.queue",
    "runs_fleet_core.testing.contracts.state",
)

from runs_fleet_core.testing.contracts.compute import (  # noqa: E402
    PoolProviderContract,
    ProviderContract,
)
from runs_fleet_core.testing.contracts.configs import ConfigStoreContract  # noqa: E402
from runs_fleet_core.testing.contracts.queue import Advance, QueueContract  # noqa: E402
from runs_fleet_core.testing.contracts.state import StateStoreContract  # noqa: E402

__all__ = [
    "Advance",
    "ConfigStoreContract",
    "PoolProviderContract",
    "ProviderContract",
    "QueueContract",
    "StateStoreContract",
]
