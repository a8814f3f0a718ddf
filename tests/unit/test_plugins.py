from __future__ import annotations

import importlib.metadata as md
import inspect
from pathlib import Path

import pytest

from runs_fleet_core.errors import PluginError
from runs_fleet_core.plugins import PluginManager, hookspecs, install_hint
from runs_fleet_core.plugins.manager import extra_hint

SAMPLES = "tests.unit.plugin_samples"


def _manager(*names: str, disabled: tuple[str, ...] = ()) -> PluginManager:
    points = [md.EntryPoint(name=n, value=f"{SAMPLES}.{n}", group="runs_fleet") for n in names]
    return PluginManager(entry_points=points, disabled=disabled)


def test_a_plugin_offers_adapters_settings_and_commands_by_name() -> None:
    manager = _manager("good")
    assert manager.adapters().queues.names() == ["sample"]
    assert "RUNS_FLEET_SAMPLE_URL" in manager.settings().all()
    assert manager.commands().commands.names() == ["sample"]
    [status] = manager.statuses()
    assert status.available
    assert status.provides == ("queue:sample", "service:sample-server", "command:sample")


def test_a_plugin_with_a_missing_dependency_is_unavailable_not_fatal() -> None:
    manager = _manager("good", "needs_sdk")
    statuses = {s.name: s for s in manager.statuses()}
    assert statuses["good"].available
    broken = statuses["needs_sdk"]
    assert not broken.available
    assert "cannot import runs_fleet_no_such_sdk" in broken.reason


def test_install_hints_name_an_extra_only_when_it_would_install_something() -> None:
    # runs-fleet[local] is installed here, so reinstalling the plugin is the fix
    assert install_hint("runs-fleet-local") == "pip install --force-reinstall 'runs-fleet-local'"
    assert install_hint("acme-nats") == "pip install --force-reinstall 'acme-nats'"
    assert extra_hint("no-such-extra").startswith("install a plugin that offers it")
    assert "'runs-fleet plugins' shows which" in extra_hint("local")


def test_a_misspelt_hook_makes_the_plugin_unavailable_with_the_reason() -> None:
    [status] = _manager("misspelt").statuses()
    assert not status.available
    assert "runs_fleet_register_adaptors" in status.reason


def test_a_disabled_plugin_is_listed_but_not_loaded() -> None:
    manager = _manager("good", disabled=("good",))
    [status] = manager.statuses()
    assert not status.available and "RUNS_FLEET_DISABLE_PLUGINS" in status.reason
    assert manager.adapters().queues.names() == []


def test_a_name_offered_twice_is_an_error_naming_both_plugins() -> None:
    with pytest.raises(
        PluginError,
        match=r"'sample' is offered by both plugin '(good|clash)' and plugin '(good|clash)'",
    ):
        _manager("good", "clash").adapters()


def test_a_hook_that_raises_is_reported_as_that_plugins_fault() -> None:
    with pytest.raises(PluginError, match=r"plugin 'exploding' failed .*boom"):
        _manager("exploding").adapters()


def test_asking_for_an_adapter_nobody_offers_lists_what_exists() -> None:
    with pytest.raises(
        PluginError, match=r"no queue named 'sqs' is installed \(installed: sample\)"
    ):
        _manager("good").adapters().queues.get("sqs")


def test_installed_plugins_are_found_through_entry_points() -> None:
    names = {s.name: s for s in PluginManager().statuses()}
    assert names["memory"].available and names["memory"].distribution == "runs-fleet"
    assert names["local"].available and names["local"].distribution == "runs-fleet-local"
    assert "config store:local" in names["local"].provides


def test_every_hook_is_documented_and_exercised() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text()
    samples = (Path(__file__).parent / "plugin_samples" / "good.py").read_text()
    hooks = [
        n
        for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
        if n.startswith("runs_fleet_")
    ]
    assert len(hooks) == 4
    for hook in hooks:
        assert inspect.getdoc(getattr(hookspecs, hook)), hook
        assert hook in docs, f"{hook} is not documented in docs/plugins.md"
        assert f"def {hook}(" in samples, f"{hook} has no test plugin"


async def test_services_start_before_the_settings_are_validated_and_stop_after() -> None:
    import contextlib

    from runs_fleet_core.wiring import deployment_settings, start_services

    from .plugin_samples import good

    points = [
        md.EntryPoint(name="good", value=f"{SAMPLES}.good", group="runs_fleet"),
        md.EntryPoint(name="memory", value="runs_fleet_core.testing.plugin", group="runs_fleet"),
    ]
    manager = PluginManager(entry_points=points)
    async with contextlib.AsyncExitStack() as stack:
        env = await start_services({"RUNS_FLEET_MODE": "memory"}, manager, stack)
        settings = deployment_settings(env, manager)
        assert settings["RUNS_FLEET_SAMPLE_URL"] == "sample://127.0.0.1:1"
        assert good.STARTED == ["sample"]
    assert good.STARTED == []
    async with contextlib.AsyncExitStack() as stack:
        env = {"RUNS_FLEET_MODE": "memory", "RUNS_FLEET_SAMPLE_URL": "given://x"}
        assert await start_services(env, manager, stack) == env
        assert good.STARTED == []
