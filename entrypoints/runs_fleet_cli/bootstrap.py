"""The CLI's composition root: the plugin manager and settings from the environment.

Everything the commands need is built here from an explicit environment mapping, so
tests call the same functions with their own environment.
"""

from __future__ import annotations

from collections.abc import Mapping

from runs_fleet_core.plugins import PluginManager
from runs_fleet_core.plugins.manager import DISABLE_VAR


def plugin_manager(env: Mapping[str, str]) -> PluginManager:
    """A plugin manager honouring ``RUNS_FLEET_DISABLE_PLUGINS`` (not loaded yet)."""
    disabled = [name.strip() for name in env.get(DISABLE_VAR, "").split(",") if name.strip()]
    return PluginManager(disabled=disabled)
