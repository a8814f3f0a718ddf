"""The plugin system: hook specifications, registries and the manager that loads them.

Plugin authors need only :data:`hookimpl` and the registry types; see
:mod:`runs_fleet_core.plugins.hookspecs` for the hooks and a complete example.
"""

from runs_fleet_core.plugins.hookspecs import hookimpl
from runs_fleet_core.plugins.manager import PluginManager, PluginStatus, install_hint
from runs_fleet_core.plugins.registry import (
    AdapterContext,
    AdapterRegistry,
    Command,
    CommandRegistry,
    ServiceRegistry,
    SettingsRegistry,
)

__all__ = [
    "AdapterContext",
    "AdapterRegistry",
    "Command",
    "CommandRegistry",
    "PluginManager",
    "PluginStatus",
    "ServiceRegistry",
    "SettingsRegistry",
    "hookimpl",
    "install_hint",
]
