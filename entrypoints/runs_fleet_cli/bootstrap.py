"""The CLI's composition root: plugins, settings and label defaults from the environment.

Everything the commands need is built here from an explicit environment mapping, so
tests call the same functions with their own environment.
"""

from __future__ import annotations

from collections.abc import Mapping

from runs_fleet_core.catalog import CORE_SETTINGS
from runs_fleet_core.domain.labels import DEFAULT_BACKENDS, LabelDefaults
from runs_fleet_core.plugins import PluginManager
from runs_fleet_core.plugins.manager import DISABLE_VAR
from runs_fleet_core.settings import Setting, Settings, load_settings


def plugin_manager(env: Mapping[str, str]) -> PluginManager:
    """A plugin manager honouring ``RUNS_FLEET_DISABLE_PLUGINS`` (not loaded yet)."""
    disabled = [name.strip() for name in env.get(DISABLE_VAR, "").split(",") if name.strip()]
    return PluginManager(disabled=disabled)


def setting_definitions(plugins: PluginManager) -> dict[str, Setting]:
    """The core's settings followed by every available plugin's."""
    definitions = {setting.name: setting for setting in CORE_SETTINGS}
    definitions.update(plugins.settings().all())
    return definitions


def settings_from(env: Mapping[str, str], plugins: PluginManager, *, require: bool) -> Settings:
    return load_settings(env, setting_definitions(plugins), require=require)


def label_defaults(settings: Settings) -> LabelDefaults:
    """Label parsing defaults from configuration: disk size, operator presets, and the
    backend names a label may use (the built-in ones plus any the deployment enables)."""
    return LabelDefaults(
        disk_gib=settings.get("RUNS_FLEET_DEFAULT_DISK_GIB"),
        presets=settings.get("RUNS_FLEET_PRESETS", {}),
        backends=DEFAULT_BACKENDS | frozenset(settings.get("RUNS_FLEET_BACKENDS", [])),
    )
