"""A well-formed plugin offering a queue, a setting and a command."""

from __future__ import annotations

from runs_fleet_core.plugins import AdapterRegistry, Command, CommandRegistry, hookimpl
from runs_fleet_core.plugins.registry import SettingsRegistry
from runs_fleet_core.settings import Setting


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
