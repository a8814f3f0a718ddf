"""A well-formed plugin offering a queue, a setting and a command."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from runs_fleet_core.plugins import AdapterRegistry, Command, CommandRegistry, hookimpl
from runs_fleet_core.plugins.registry import ServiceRegistry, SettingsRegistry
from runs_fleet_core.settings import Setting, Settings

STARTED: list[str] = []


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    def make(context: object) -> object:
        from runs_fleet_core.testing.memory import ManualClock, MemoryQueue

        return MemoryQueue(ManualClock())

    registry.add_queue("sample", make)  # type: ignore[arg-type]


@hookimpl
def runs_fleet_register_settings(registry: SettingsRegistry) -> None:
    registry.add(Setting(name="RUNS_FLEET_SAMPLE_URL", help="where the sample queue is"))


@hookimpl
def runs_fleet_register_commands(registry: CommandRegistry) -> None:
    registry.add(
        Command(name="sample", help="say hello", configure=lambda parser: None, run=lambda args: 0)
    )


@hookimpl
def runs_fleet_register_services(registry: ServiceRegistry) -> None:
    @contextlib.asynccontextmanager
    async def sample_server() -> AsyncIterator[Mapping[str, str]]:
        STARTED.append("sample")
        yield {"RUNS_FLEET_SAMPLE_URL": "sample://127.0.0.1:1"}
        STARTED.remove("sample")

    def factory(
        settings: Settings,
    ) -> contextlib.AbstractAsyncContextManager[Mapping[str, str]] | None:
        return None if settings.get("RUNS_FLEET_SAMPLE_URL") else sample_server()

    registry.add("sample-server", factory)
