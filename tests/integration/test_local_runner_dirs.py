"""Local runners that register themselves each get a runner directory of their own.

``config.sh`` writes a runner's registration into its runner directory, and local mode
runs every runner from one ``RUNS_FLEET_RUNNER_DIR``: with registration tokens each
agent runs in a directory of its own inside its work dir, with copies of the shared
one's scripts and links to its directories.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runs_fleet_core.domain.ids import JobId, RunnerId, runner_name_for
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.plugins import AdapterContext, AdapterRegistry
from runs_fleet_core.settings import Settings
from runs_fleet_core.testing.memory import ManualClock, RecordingMetrics
from runs_fleet_local import plugin
from runs_fleet_local.compute import LocalProvider
from runs_fleet_local.runner_dirs import private_runner_dir
from runs_fleet_local.runners import LocalRunners

from ..contract.test_local_compute import kill_recorded, make_runners, write_runner_dir
from .test_local_provider import SPEC, wait_until

REGISTERING_CONFIG_SH = """#!/bin/sh
root="$(dirname "$0")"
[ -e "$root/.runner" ] && exit 9
echo "$@" > "$root/.runner"
"""
RUN_SH = """#!/bin/sh
root="$(dirname "$0")"
cat "$root/.runner" > registration
echo "$root" > ran
rm -f "$root/.runner"
"""


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A runner directory with a registering ``config.sh`` and a ``run.sh`` that notes
    where it ran from, plus what a registered runner leaves behind."""
    runner_dir = write_runner_dir(tmp_path / "actions-runner", RUN_SH)
    config_sh = runner_dir / "config.sh"
    config_sh.write_text(REGISTERING_CONFIG_SH)
    config_sh.chmod(0o755)
    (runner_dir / "bin").mkdir()
    (runner_dir / "_work").mkdir()
    (runner_dir / ".credentials").write_text("someone else's")
    return runner_dir


@pytest.fixture
def runners(tmp_path: Path, shared: Path) -> Iterator[LocalRunners]:
    made = make_runners(tmp_path / "state", shared, private_runner_dirs=True)
    yield made
    kill_recorded(tmp_path / "state")
    made.reap(wait_s=5.0)


def test_a_private_runner_dir_shares_the_runner_but_no_registration(
    tmp_path: Path, shared: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    made = private_runner_dir(shared, work)
    (made / ".runner").write_text("left by an earlier run")

    again = private_runner_dir(shared, work)

    assert again == made == work / "actions-runner"
    assert sorted(p.name for p in again.iterdir()) == ["bin", "config.sh", "run.sh"]
    assert (again / "bin").is_symlink()  # large and only read: shared
    assert (again / "bin").resolve() == (shared / "bin").resolve()
    for script in ("config.sh", "run.sh"):  # real files: the runner's scripts find their
        assert not (again / script).is_symlink()  # root by resolving their own path
        assert (again / script).read_text() == (shared / script).read_text()
        assert (again / script).stat().st_mode & 0o111


async def test_token_runners_run_side_by_side_each_in_its_own_runner_dir(
    runners: LocalRunners, shared: Path, tmp_path: Path
) -> None:
    provider = LocalProvider(runners)
    works = []
    for job in (7, 8):
        name = runner_name_for(JobId(job), 1)
        token_config = RunnerConfig(
            runner_name=name,
            job_id=JobId(job),
            repository="o/r",
            jit_config="",
            labels=("runs-fleet=1/cpu=2",),
            registration_token=f"token-{job}",
            registration_url="https://github.com/o/r",
        )
        await runners.configs.put(RunnerId(name), token_config)
        await provider.create_runner(SPEC.for_job(JobId(job), "o/r"), runner_name=name)
        works.append(tmp_path / "state" / "runners" / name)

    for work in works:
        await wait_until(lambda work=work: (work / "ran").exists())
        assert (work / "ran").read_text().strip() == str(work / "actions-runner")
        assert f"--name {work.name} " in (work / "registration").read_text()
        assert not (work / "actions-runner" / ".runner").exists()
    assert not (shared / ".runner").exists()


def test_the_plugin_gives_private_runner_dirs_only_to_token_registrations(
    tmp_path: Path,
) -> None:
    registry = AdapterRegistry()
    plugin.runs_fleet_register_adapters(registry)
    factory = registry.providers.get("local")

    def options(**values: str) -> bool:
        settings = Settings(
            values={"RUNS_FLEET_MODE": "local", "RUNS_FLEET_STATE_DIR": str(tmp_path), **values}
        )
        context = AdapterContext(settings=settings, clock=ManualClock(), metrics=RecordingMetrics())
        provider = factory(context)
        assert isinstance(provider, LocalProvider)
        return bool(provider._runners.options.private_runner_dirs)

    assert options() is False
    assert options(RUNS_FLEET_RUNNER_REGISTRATION="jit") is False
    assert options(RUNS_FLEET_RUNNER_REGISTRATION="token") is True
