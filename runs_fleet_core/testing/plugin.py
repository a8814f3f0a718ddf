"""The built-in ``memory`` plugin: every port in process memory.

It is registered through the ``runs_fleet`` entry-point group like any other plugin,
and serves ``RUNS_FLEET_MODE=memory`` (trying labels and wiring without any server)
and the project's own tests. Everything is lost when the process exits.
"""

from __future__ import annotations

from runs_fleet_core.plugins import AdapterContext, AdapterRegistry, hookimpl
from runs_fleet_core.ports import (
    ConfigStore,
    GitHub,
    Metrics,
    PoolProvider,
    Provider,
    Queue,
    StateStore,
)

NAME = "memory"


def _provider(context: AdapterContext) -> Provider:
    from runs_fleet_core.testing.memory import MemoryProvider

    return MemoryProvider(context.clock, name=NAME)


def _pool_provider(context: AdapterContext) -> PoolProvider:
    from runs_fleet_core.testing.memory import MemoryPoolProvider

    return MemoryPoolProvider(context.clock, name=NAME)


def _queue(context: AdapterContext) -> Queue:
    from runs_fleet_core.testing.memory import MemoryQueue

    return MemoryQueue(
        context.clock, max_attempts=context.settings.get("RUNS_FLEET_MAX_ATTEMPTS", 3)
    )


def _state(context: AdapterContext) -> StateStore:
    from runs_fleet_core.testing.memory import MemoryStateStore

    return MemoryStateStore()


def _configs(context: AdapterContext) -> ConfigStore:
    from runs_fleet_core.testing.memory import MemoryConfigStore

    return MemoryConfigStore()


def _metrics(context: AdapterContext) -> Metrics:
    from runs_fleet_core.testing.memory import RecordingMetrics

    return RecordingMetrics()


def _github(context: AdapterContext) -> GitHub:
    from runs_fleet_core.testing.memory import FakeGitHub

    return FakeGitHub()


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    """Offer the in-memory adapters under the name ``memory``."""
    registry.add_provider(NAME, _provider)
    registry.add_pool_provider(NAME, _pool_provider)
    registry.add_queue(NAME, _queue)
    registry.add_state_store(NAME, _state)
    registry.add_config_store(NAME, _configs)
    registry.add_metrics(NAME, _metrics)
    registry.add_github(NAME, _github)
