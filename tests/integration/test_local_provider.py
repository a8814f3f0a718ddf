"""Local runners as real processes: spawned, found again after a restart, stopped whole.

Each test writes a stand-in ``run.sh`` that leaves traces (its arguments, its
environment, the pids it started) in the runner's work dir, and kills every process it
started at teardown, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runs_fleet_core.domain.ids import JobId, RunId, RunnerId, runner_name_for
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RunnerConfig, RunnerPhase
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import ProviderError
from runs_fleet_core.plugins import AdapterRegistry, ServiceRegistry, SettingsRegistry
from runs_fleet_core.settings import Settings
from runs_fleet_local import plugin, processes
from runs_fleet_local.compute import LocalPoolProvider, LocalProvider
from runs_fleet_local.records import Kind, Phase, RecordStore, RunnerRecord
from runs_fleet_local.runners import LocalRunners

from ..contract.test_local_compute import kill_recorded, make_runners, write_runner_dir

TRACING_RUN_SH = """#!/bin/sh
echo "$1 $2" > ran
env > env.txt
sleep 120 &
echo $! > grandchild.pid
wait
"""
STUBBORN_RUN_SH = """#!/bin/sh
trap '' TERM
echo started > ran
while true; do sleep 0.1; done
"""
QUICK_RUN_SH = '#!/bin/sh\necho "$1 $2" > ran\n'
SPEC = RunnerSpec(run_id=RunId("31337"), label="runs-fleet=31337/cpu=2", pool="default")


async def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


def pid_alive(pid: int) -> bool:
    return processes.start_time(pid) is not None


class Host:
    """The test's local host: one state dir, runner dirs, and every instance it made."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.instances: list[LocalRunners] = []

    def runners(self, script: str = TRACING_RUN_SH, **options: object) -> LocalRunners:
        runner_dir = write_runner_dir(self.root / f"runner-{len(self.instances)}", script)
        runners = make_runners(self.state_dir, runner_dir, **options)
        self.instances.append(runners)
        return runners

    def work_dir(self, runner_id: str) -> Path:
        return self.state_dir / "runners" / runner_id

    async def create(self, provider: LocalProvider, job: int, runners: LocalRunners) -> RunnerId:
        name = runner_name_for(JobId(job), 1)
        await runners.configs.put(RunnerId(name), config_for(job, name))
        result = await provider.create_runner(SPEC.for_job(JobId(job), "o/r"), runner_name=name)
        return result.runner_id


def config_for(job: int, name: str) -> RunnerConfig:
    return RunnerConfig(
        runner_name=name, job_id=JobId(job), repository="o/r", jit_config=f"jit-{job}"
    )


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    host = Host(tmp_path)
    yield host
    kill_recorded(host.state_dir)
    for path in host.state_dir.glob("runners/*/grandchild.pid"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(path.read_text()), signal.SIGKILL)
    for runners in host.instances:
        runners.reap(wait_s=5.0)


async def test_a_runner_is_a_detached_agent_that_runs_run_sh_with_its_jit_config(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNS_FLEET_GITHUB_WEBHOOK_SECRET", "orchestrator-only-secret")
    runners = host.runners()
    provider = LocalProvider(runners)
    runner_id = await host.create(provider, 7, runners)
    assert runner_id == "runs-fleet-7-1"
    work = host.work_dir(runner_id)
    await wait_until(lambda: (work / "grandchild.pid").exists())
    record = RecordStore(host.state_dir / "runners").read(runner_id)
    assert record is not None and record.pid is not None
    assert pid_alive(record.pid)
    assert os.getsid(record.pid) == record.pid != os.getsid(0)
    assert Path(os.readlink(f"/proc/{record.pid}/cwd")) == work.resolve()
    command = cmdline(record.pid)
    assert "runs_fleet_agent" in command and "--config-file" in command
    assert (work / "ran").read_text().split() == ["--jitconfig", "jit-7"]
    assert not runners.configs.path_for(runner_id).exists()  # the agent consumed it
    env = (work / "env.txt").read_text()
    assert f"RUNS_FLEET_RUNNER_DIR={runners.options.runner_dir}" in env
    assert "orchestrator-only-secret" not in env
    assert (work / "agent.log").exists()
    state = await provider.describe_runner(runner_id)
    assert (state.phase, state.job_id, state.pool) == (RunnerPhase.RUNNING, 7, "default")


async def test_a_new_provider_on_the_same_state_dir_finds_and_terminates_the_runner(
    host: Host,
) -> None:
    first = host.runners()
    runner_id = await host.create(LocalProvider(first), 7, first)
    await wait_until(lambda: (host.work_dir(runner_id) / "grandchild.pid").exists())
    restarted = LocalProvider(host.runners())
    state = await restarted.describe_runner(runner_id)
    assert (state.phase, state.job_id) == (RunnerPhase.RUNNING, 7)
    assert [s.runner_id for s in await restarted.list_runners()] == [runner_id]
    await restarted.terminate_runner(runner_id)
    assert (await restarted.describe_runner(runner_id)).phase is RunnerPhase.TERMINATED
    assert (await LocalProvider(first).describe_runner(runner_id)).phase is RunnerPhase.TERMINATED


async def test_terminating_kills_the_agent_the_runner_and_what_the_runner_started(
    host: Host,
) -> None:
    runners = host.runners()
    provider = LocalProvider(runners)
    runner_id = await host.create(provider, 7, runners)
    work = host.work_dir(runner_id)
    await wait_until(lambda: (work / "grandchild.pid").exists())
    record = RecordStore(host.state_dir / "runners").read(runner_id)
    assert record is not None and record.pid is not None
    grandchild = int((work / "grandchild.pid").read_text())
    assert pid_alive(grandchild)
    await provider.terminate_runner(runner_id)
    await wait_until(lambda: not pid_alive(grandchild))
    assert not pid_alive(record.pid)
    assert processes.session_members(record.pid) == []


async def test_a_runner_that_ignores_sigterm_is_killed_after_the_grace(host: Host) -> None:
    runners = host.runners(STUBBORN_RUN_SH, grace_s=0.5, stop_margin_s=0.5)
    provider = LocalProvider(runners)
    runner_id = await host.create(provider, 7, runners)
    await wait_until(lambda: (host.work_dir(runner_id) / "ran").exists())
    record = RecordStore(host.state_dir / "runners").read(runner_id)
    assert record is not None and record.pid is not None
    await provider.terminate_runner(runner_id)
    assert processes.session_members(record.pid) == []
    assert (await provider.describe_runner(runner_id)).phase is RunnerPhase.TERMINATED


async def test_a_runner_whose_job_ended_is_terminated_and_no_longer_listed(host: Host) -> None:
    runners = host.runners(QUICK_RUN_SH)
    provider = LocalProvider(runners)
    runner_id = await host.create(provider, 7, runners)

    async def phase() -> RunnerPhase:
        return (await provider.describe_runner(runner_id)).phase

    for _ in range(200):
        if await phase() is RunnerPhase.TERMINATED:
            break
        await asyncio.sleep(0.05)
    assert await phase() is RunnerPhase.TERMINATED
    assert await provider.list_runners() == []
    again = await host.create(provider, 7, runners)  # the name never gets a second runner
    assert again == runner_id
    assert await phase() is RunnerPhase.TERMINATED


async def test_a_reused_pid_is_not_mistaken_for_the_agent(host: Host) -> None:
    runners = host.runners()
    store = RecordStore(host.state_dir / "runners")
    own_start = processes.start_time(os.getpid())
    assert own_start is not None
    store.write(
        RunnerRecord(
            runner_id="runs-fleet-9-1",
            kind=Kind.COLD,
            phase=Phase.RUNNING,
            launched_at=runners.clock.now(),
            job_id=9,
            pid=os.getpid(),
            start_time=own_start - 1,
        )
    )
    state = await LocalProvider(runners).describe_runner(RunnerId("runs-fleet-9-1"))
    assert state.phase is RunnerPhase.TERMINATED


@pytest.fixture
def orphan(host: Host) -> Iterator[Callable[[Path], int]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(cwd: Path) -> int:
        cwd.mkdir(parents=True, exist_ok=True)
        child = subprocess.Popen(["sleep", "120"], cwd=cwd, start_new_session=True)
        started.append(child)
        return child.pid

    yield start
    for child in started:
        child.kill()
        child.wait()


async def test_an_agent_started_by_a_creator_that_crashed_is_adopted(
    host: Host, orphan: Callable[[Path], int]
) -> None:
    runners = host.runners()
    name = runner_name_for(JobId(7), 1)
    runners.records.write(
        RunnerRecord(
            runner_id=name,
            kind=Kind.COLD,
            phase=Phase.PENDING,
            launched_at=runners.clock.now(),
            runner_name=name,
            job_id=7,
        )
    )
    pid = orphan(host.work_dir(name))
    await host.create(LocalProvider(runners), 7, runners)
    record = runners.records.read(name)
    assert record is not None and (record.pid, record.phase) == (pid, Phase.RUNNING)


async def test_two_provider_instances_creating_one_name_start_one_agent(host: Host) -> None:
    first, second = host.runners(), host.runners()
    name = runner_name_for(JobId(7), 1)
    await first.configs.put(RunnerId(name), config_for(7, name))
    spec = SPEC.for_job(JobId(7), "o/r")
    results = await asyncio.gather(
        *(LocalProvider(r).create_runner(spec, runner_name=name) for r in (first, second) * 2)
    )
    assert {r.runner_id for r in results} == {name}
    assert len(agents_in(host.work_dir(name))) == 1


def agents_in(work_dir: Path) -> list[int]:
    """Live session leaders (agents) working in ``work_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cwd = Path(os.readlink(entry / "cwd"))
                if cwd == work_dir.resolve() and os.getsid(int(entry.name)) == int(entry.name):
                    found.append(int(entry.name))
    return [pid for pid in found if pid_alive(pid)]


async def test_the_cap_on_live_runners_refuses_more_until_one_ends(host: Host) -> None:
    runners = host.runners(max_runners=2)
    provider, pools = LocalProvider(runners), LocalPoolProvider(runners)
    first = await host.create(provider, 1, runners)
    await host.create(provider, 2, runners)
    with pytest.raises(ProviderError, match="RUNS_FLEET_LOCAL_MAX_RUNNERS") as refused:
        await host.create(provider, 3, runners)
    assert refused.value.retryable
    with pytest.raises(ProviderError, match="RUNS_FLEET_LOCAL_MAX_RUNNERS"):
        await pools.create_pool_runners(PoolConfig(name="warm"), 1)
    assert len(await pools.create_pool_runners(PoolConfig(name="warm"), 2, stopped=True)) == 2
    await provider.terminate_runner(first)
    assert await host.create(provider, 3, runners) == "runs-fleet-3-1"


async def test_a_pool_runner_waits_for_its_config_runs_once_and_is_then_stopped(
    host: Host,
) -> None:
    runners = host.runners(QUICK_RUN_SH)
    pools = LocalPoolProvider(runners)
    (runner_id,) = await pools.create_pool_runners(PoolConfig(name="warm"), 1)
    assert runner_id.startswith("warm-")
    work = host.work_dir(runner_id)
    await asyncio.sleep(0.5)
    assert not (work / "ran").exists()
    assert [r.phase for r in await pools.list_pool_runners("warm")] == [RunnerPhase.RUNNING]
    name = runner_name_for(JobId(7), 1)
    await runners.configs.put(runner_id, config_for(7, name))
    await wait_until(lambda: (work / "ran").exists())
    assert (work / "ran").read_text().split() == ["--jitconfig", "jit-7"]

    async def phases() -> list[RunnerPhase]:
        return [r.phase for r in await pools.list_pool_runners("warm")]

    for _ in range(200):
        if await phases() == [RunnerPhase.STOPPED]:
            break
        await asyncio.sleep(0.05)
    assert await phases() == [RunnerPhase.STOPPED]
    await pools.start_runners([runner_id])
    assert await phases() == [RunnerPhase.RUNNING]


async def test_terminating_a_pool_runner_removes_its_work_dir_and_config(host: Host) -> None:
    runners = host.runners()
    pools = LocalPoolProvider(runners)
    (runner_id,) = await pools.create_pool_runners(PoolConfig(name="warm"), 1, stopped=True)
    await runners.configs.put(runner_id, config_for(7, "runs-fleet-7-1"))
    assert host.work_dir(runner_id).is_dir()
    await pools.terminate_runners([runner_id])
    assert not host.work_dir(runner_id).exists()
    assert await runners.configs.get(runner_id) is None
    assert await pools.list_pool_runners("warm") == []


def test_the_plugin_offers_local_compute_settings_and_the_embedded_valkey() -> None:
    adapters, settings, services = AdapterRegistry(), SettingsRegistry(), ServiceRegistry()
    plugin.runs_fleet_register_adapters(adapters)
    plugin.runs_fleet_register_settings(settings)
    plugin.runs_fleet_register_services(services)
    assert adapters.providers.names() == ["local"]
    assert adapters.pool_providers.names() == ["local"]
    assert set(settings.all()) == {"RUNS_FLEET_LOCAL_MAX_RUNNERS"}
    assert services.services.names() == ["embedded-valkey"]
    not_local = Settings(values={"RUNS_FLEET_MODE": "memory"})
    assert services.services.get("embedded-valkey")(not_local) is None


async def test_an_agent_that_cannot_forward_the_stop_is_killed_with_its_session(
    host: Host,
) -> None:
    runners = host.runners(grace_s=0.5, stop_margin_s=0.5)
    provider = LocalProvider(runners)
    runner_id = await host.create(provider, 7, runners)
    work = host.work_dir(runner_id)
    await wait_until(lambda: (work / "grandchild.pid").exists())
    record = runners.records.read(runner_id)
    assert record is not None and record.pid is not None
    os.kill(record.pid, signal.SIGSTOP)  # a hung agent: it will never forward SIGTERM
    await provider.terminate_runner(runner_id)
    assert processes.session_members(record.pid) == []
    assert not pid_alive(int((work / "grandchild.pid").read_text()))
