"""Hook implementations of the ``local`` plugin.

This module is what the ``runs_fleet`` entry point names; it imports nothing heavy, so
loading it costs nothing until local mode is actually used.
"""

from __future__ import annotations

import os
from pathlib import Path

from runs_fleet_core.plugins import AdapterContext, AdapterRegistry, hookimpl
from runs_fleet_core.ports import ConfigStore

NAME = "local"


def default_state_dir() -> Path:
    """The per-user data dir: ``$XDG_DATA_HOME/runs-fleet`` (``~/.local/share/...``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "runs-fleet"


def state_dir(context: AdapterContext) -> Path:
    configured = context.settings.get("RUNS_FLEET_STATE_DIR")
    return Path(configured) if configured else default_state_dir()


def _config_store(context: AdapterContext) -> ConfigStore:
    from runs_fleet_local.configs import FileConfigStore

    return FileConfigStore(state_dir(context) / "runner-configs")


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    """Offer the file-based runner config store as ``local``."""
    registry.add_config_store(NAME, _config_store)
