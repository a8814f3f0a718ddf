from __future__ import annotations

import pytest

from runs_fleet_core.catalog import CORE_SETTINGS
from runs_fleet_core.errors import ConfigError
from runs_fleet_core.plugins import PluginManager
from runs_fleet_core.ports import ConfigStore, GitHub, PoolProvider, Provider, Queue, StateStore
from runs_fleet_core.settings import load_settings
from runs_fleet_core.testing.memory import ManualClock
from runs_fleet_core.wiring import build_adapters, check_wiring, choose_wiring

DEFS = {s.name: s for s in CORE_SETTINGS}


def _settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings(env, DEFS, require=False)


def test_memory_mode_builds_one_adapter_per_port() -> None:
    adapters = build_adapters(
        _settings(RUNS_FLEET_MODE="memory"), PluginManager().adapters(), ManualClock()
    )
    assert isinstance(adapters.providers["memory"], Provider)
    assert isinstance(adapters.pool_providers["memory"], PoolProvider)
    assert isinstance(adapters.queue, Queue)
    assert isinstance(adapters.state, StateStore)
    assert isinstance(adapters.configs, ConfigStore)
    assert isinstance(adapters.github, GitHub)
    assert adapters.wiring.default_backend == "memory"


def test_overrides_pick_adapters_from_other_plugins() -> None:
    settings = _settings(
        RUNS_FLEET_MODE="memory",
        RUNS_FLEET_CONFIG_ADAPTER="local",
        RUNS_FLEET_STATE_DIR="/tmp/runs-fleet-wiring-test",
    )
    assert choose_wiring(settings).config_store == "local"
    assert check_wiring(settings, PluginManager().adapters()) == []


def test_a_mode_without_its_plugins_names_every_missing_adapter() -> None:
    plugins = PluginManager(disabled=["k8s"])  # as if runs-fleet[k8s] were not installed
    with pytest.raises(ConfigError) as caught:
        build_adapters(_settings(RUNS_FLEET_MODE="k8s"), plugins.adapters(), ManualClock())
    problems = caught.value.problems
    named = {p.split("'")[1] for p in problems}
    adapters = plugins.adapters()
    offered = {
        *adapters.queues.names(),
        *adapters.state_stores.names(),
        *adapters.metrics.names(),
        *adapters.github_clients.names(),
    }
    assert {"k8s", "configmap"} <= named
    assert {"valkey", "prometheus", "github"} <= named | offered
    assert not named & offered
    assert all("runs-fleet plugins" in p or "runs-fleet[k8s]" in p for p in problems)


def test_a_built_in_adapter_that_is_disabled_says_so() -> None:
    plugins = PluginManager(disabled=["memory"])
    problems = check_wiring(_settings(RUNS_FLEET_MODE="memory"), plugins.adapters())
    assert problems and all("RUNS_FLEET_DISABLE_PLUGINS" in p for p in problems)


def test_a_plugin_may_not_redeclare_a_core_setting() -> None:
    import importlib.metadata as md

    from runs_fleet_core.errors import PluginError
    from runs_fleet_core.wiring import setting_definitions

    point = md.EntryPoint(
        name="shadow", value="tests.unit.plugin_samples.shadow", group="runs_fleet"
    )
    with pytest.raises(PluginError, match="declares RUNS_FLEET_MODE, which is a setting"):
        setting_definitions(PluginManager(entry_points=[point]))


def test_the_default_backend_must_be_enabled() -> None:
    settings = _settings(
        RUNS_FLEET_MODE="memory", RUNS_FLEET_BACKENDS="memory", RUNS_FLEET_DEFAULT_BACKEND="ec2"
    )
    assert check_wiring(settings, PluginManager().adapters()) == [
        "RUNS_FLEET_DEFAULT_BACKEND=ec2 is not one of RUNS_FLEET_BACKENDS (memory)"
    ]
