"""Hook implementations of the ``local`` plugin.

This module is what the ``runs_fleet`` entry point names; it imports nothing heavy, so
loading it costs nothing until local mode is actually used. It offers the ``local``
provider and pool provider (runners as agent processes on this host), the ``local``
config store (private files), and the embedded Valkey service of local mode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from runs_fleet_core.plugins import (
    AdapterContext,
    AdapterRegistry,
    ServiceRegistry,
    SettingsRegistry,
    hookimpl,
)
from runs_fleet_core.ports import ConfigStore, PoolProvider, Provider
from runs_fleet_core.settings import Kind, Setting, Settings

if TYPE_CHECKING:
    from runs_fleet_local.runners import LocalRunners

NAME = "local"

_MAX_RUNNERS = Setting(
    name="RUNS_FLEET_LOCAL_MAX_RUNNERS",
    help="local mode: at most this many runner processes at once on this host",
    kind=Kind.INT,
    default=8,
    minimum=1,
)


def default_state_dir() -> Path:
    """The per-user data dir: ``$XDG_DATA_HOME/runs-fleet`` (``~/.local/share/...``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "runs-fleet"


def settings_state_dir(settings: Settings) -> Path:
    """``RUNS_FLEET_STATE_DIR``, or the per-user data dir."""
    configured = settings.get("RUNS_FLEET_STATE_DIR")
    return Path(configured) if configured else default_state_dir()


def state_dir(context: AdapterContext) -> Path:
    """The state dir of the deployment ``context`` belongs to."""
    return settings_state_dir(context.settings)


def _config_store(context: AdapterContext) -> ConfigStore:
    from runs_fleet_local.configs import FileConfigStore

    return FileConfigStore(state_dir(context) / "runner-configs")


def _runners(context: AdapterContext) -> LocalRunners:
    from runs_fleet_local.configs import FileConfigStore
    from runs_fleet_local.runners import AgentOptions, LocalRunners

    settings = context.settings
    runner_dir = settings.get("RUNS_FLEET_RUNNER_DIR")
    options = AgentOptions(
        runner_dir=Path(runner_dir) if runner_dir else None,
        max_runners=int(settings.get("RUNS_FLEET_LOCAL_MAX_RUNNERS", 8)),
        max_runtime_s=settings.get("RUNS_FLEET_AGENT_MAX_RUNTIME_S"),
        private_runner_dirs=settings.get("RUNS_FLEET_RUNNER_REGISTRATION") == "token",
    )
    root = state_dir(context)
    return LocalRunners(root, FileConfigStore(root / "runner-configs"), options, context.clock)


def _provider(context: AdapterContext) -> Provider:
    from runs_fleet_local.compute import LocalProvider

    return LocalProvider(_runners(context))


def _pool_provider(context: AdapterContext) -> PoolProvider:
    from runs_fleet_local.compute import LocalPoolProvider

    return LocalPoolProvider(_runners(context))


def valkey_service(settings: Settings) -> AbstractAsyncContextManager[Mapping[str, str]] | None:
    """The embedded Valkey server, when local mode uses Valkey and names no server."""
    from runs_fleet_core.wiring import choose_wiring

    if settings.mode != "local" or settings.get("RUNS_FLEET_VALKEY_URL"):
        return None
    wiring = choose_wiring(settings)
    if "valkey" not in (wiring.queue, wiring.state_store):
        return None
    from runs_fleet_local.embedded_valkey import embedded_valkey

    return embedded_valkey(settings_state_dir(settings))


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    """Offer the ``local`` provider, pool provider and file-based config store."""
    registry.add_provider(NAME, _provider)
    registry.add_pool_provider(NAME, _pool_provider)
    registry.add_config_store(NAME, _config_store)


@hookimpl
def runs_fleet_register_settings(registry: SettingsRegistry) -> None:
    """Declare the setting only local mode reads (RUNS_FLEET_RUNNER_DIR and
    RUNS_FLEET_AGENT_MAX_RUNTIME_S are the core's: other modes' agents use them too)."""
    registry.add(_MAX_RUNNERS)


@hookimpl
def runs_fleet_register_services(registry: ServiceRegistry) -> None:
    """Offer local mode's embedded Valkey server."""
    registry.add("embedded-valkey", valkey_service)
