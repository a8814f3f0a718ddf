"""The local plugin's compute adapters pass the Provider and PoolProvider contracts.

The runners are real agent processes (``python -m runs_fleet_agent``) running a stand-in
``run.sh`` that sleeps, so they live long enough for the contract to look at them.
Cold runners get their config stored before they are created, as dispatch does; warm
ones wait for a config that never comes. Every process is killed at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.runner import RunnerConfig, RunnerResult
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.ports import SystemClock
from runs_fleet_core.testing.contracts import PoolProviderContract, ProviderContract
from runs_fleet_local import processes
from runs_fleet_local.compute import LocalPoolProvider, LocalProvider
from runs_fleet_local.configs import FileConfigStore
from runs_fleet_local.records import RecordStore
from runs_fleet_local.runners import AgentOptions, LocalRunners

AGENT_PATH = str(Path(__file__).parents[2] / "agent")
SLEEPING_RUN_SH = "#!/bin/sh\nexec sleep 120\n"


def make_runners(state_dir: Path, runner_dir: Path, **options: object) -> LocalRunners:
    """The local machinery over ``state_dir``, agents importable from the checkout."""
    chosen: dict[str, object] = {"grace_s": 2.0, "stop_margin_s": 2.0, **options}
    agent_options = AgentOptions(
        runner_dir=runner_dir,
        extra_env={"PYTHONPATH": AGENT_PATH},
        **chosen,  # type: ignore[arg-type]
    )
    configs = FileConfigStore(state_dir / "runner-configs")
    return LocalRunners(state_dir, configs, agent_options, SystemClock())


def write_runner_dir(path: Path, script: str = SLEEPING_RUN_SH) -> Path:
    """A runner dir whose ``run.sh`` is ``script``."""
    path.mkdir(parents=True, exist_ok=True)
    run_sh = path / "run.sh"
    run_sh.write_text(script)
    run_sh.chmod(0o755)
    return path


def kill_recorded(state_dir: Path) -> None:
    """Kill every agent recorded under ``state_dir`` and all its session holds."""
    for record in RecordStore(state_dir / "runners").all():
        if record.pid is not None:
            processes.kill_session(record.pid)


class DispatchedLocalProvider(LocalProvider):
    """The local provider with dispatch's habit: the config is stored before creation."""

    def __init__(self, runners: LocalRunners) -> None:
        super().__init__(runners)
        self.configs = runners.configs

    async def create_runner(self, spec: RunnerSpec, *, runner_name: str) -> RunnerResult:
        assert spec.job_id is not None
        config = RunnerConfig(
            runner_name=runner_name,
            job_id=spec.job_id,
            repository=spec.repository or "octo-org/app",
            jit_config="contract-jit-config",
        )
        await self.configs.put(RunnerId(runner_name), config)
        return await super().create_runner(spec, runner_name=runner_name)


class TestLocalProvider(ProviderContract):
    @pytest.fixture
    async def provider(self, tmp_path: Path) -> AsyncIterator[LocalProvider]:
        runners = make_runners(tmp_path / "state", write_runner_dir(tmp_path / "runner"))
        provider = DispatchedLocalProvider(runners)
        yield provider
        try:
            for state in await provider.list_runners():
                await provider.terminate_runner(state.runner_id)
        finally:
            kill_recorded(tmp_path / "state")
            runners.reap(wait_s=5.0)


class TestLocalPoolProvider(PoolProviderContract):
    settle_timeout_s = 10.0

    @pytest.fixture
    async def pool_provider(self, tmp_path: Path) -> AsyncIterator[LocalPoolProvider]:
        runners = make_runners(tmp_path / "state", write_runner_dir(tmp_path / "runner"))
        yield LocalPoolProvider(runners)
        kill_recorded(tmp_path / "state")
        runners.reap(wait_s=5.0)
