"""A third-party plugin, built and installed as its own distribution, is discovered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN_MODULE = '''
"""An out-of-tree runs-fleet plugin."""

from runs_fleet_core.plugins import Command, hookimpl


@hookimpl
def runs_fleet_register_adapters(registry):
    def make(context):
        from runs_fleet_core.testing.memory import MemoryProvider
        return MemoryProvider(context.clock, name="acme")
    registry.add_provider("acme", make)


@hookimpl
def runs_fleet_register_commands(registry):
    def run(args):
        print(f"hello from acme, {args.who}")
        return 0
    registry.add(Command(name="acme-hello", help="greet",
                         configure=lambda p: p.add_argument("who"), run=run))
'''


def _project(root: Path, name: str, module: str, body: str, requires: list[str]) -> Path:
    src = root / name
    (src / module).mkdir(parents=True)
    (src / module / "__init__.py").write_text(body)
    (src / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "{name}"
        version = "1.2.3"
        dependencies = {json.dumps(requires)}

        [project.entry-points.runs_fleet]
        {module} = "{module}"
    """)
    )
    return src


def _install(src: Path, target: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plugins")
    target = root / "site"
    _install(_project(root, "acme-runs-fleet", "acme_runs_fleet", PLUGIN_MODULE, []), target)
    _install(
        _project(root, "runs-fleet-nimbus", "runs_fleet_nimbus", "", ["nimbus-cloud-sdk>=2"]),
        target,
    )
    return target


def _cli(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")}
    environ.update(env, PYTHONPATH=os.pathsep.join([str(site), environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "runs_fleet_cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_installed_third_party_plugin_is_discovered(site: Path) -> None:
    result = _cli(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    acme = plugins["acme_runs_fleet"]
    assert acme["available"] and acme["distribution"] == "acme-runs-fleet"
    assert acme["version"] == "1.2.3"
    assert acme["provides"] == ["provider:acme", "command:acme-hello"]


def test_a_plugin_with_missing_dependencies_is_reported_with_the_extra(site: Path) -> None:
    result = _cli(site, "plugins")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "runs_fleet_nimbus" in line)
    assert "unavailable: missing dependencies nimbus-cloud-sdk" in line
    assert "pip install --force-reinstall 'runs-fleet-nimbus'" in line
    assert "Traceback" not in result.stderr


def test_a_plugins_command_runs_from_the_cli(site: Path) -> None:
    result = _cli(site, "acme-hello", "world")
    assert (result.returncode, result.stdout) == (0, "hello from acme, world\n")


def test_a_plugins_provider_can_serve_a_backend(site: Path) -> None:
    result = _cli(
        site,
        "config",
        "check",
        "--json",
        RUNS_FLEET_MODE="memory",
        RUNS_FLEET_BACKENDS="memory,acme",
        RUNS_FLEET_GITHUB_WEBHOOK_SECRET="s3cret",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["wiring"]["backends"] == ["memory", "acme"]
