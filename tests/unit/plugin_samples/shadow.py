"""A plugin that tries to redeclare a setting of the core."""

from runs_fleet_core.plugins import hookimpl
from runs_fleet_core.plugins.registry import SettingsRegistry
from runs_fleet_core.settings import Setting


@hookimpl
def runs_fleet_register_settings(registry: SettingsRegistry) -> None:
    registry.add(Setting(name="RUNS_FLEET_MODE", help="mine now"))
