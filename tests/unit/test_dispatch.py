from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
from datetime import timedelta
from typing import Any

import attrs
import pytest

from runs_fleet_core.domain.ids import JobId, RunnerId, runner_name_for
from runs_fleet_core.domain.job import JobStatus
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RunnerPhase
from runs_fleet_core.errors import AdapterError, ProviderError
from runs_fleet_core.ports.github import JobStatusReport
from runs_fleet_core.usecases.dispatch import Dispatcher, DispatchOutcome, backoff_delay

from .conftest import World, event, new_world

JOB = JobId(1)


async def _queued(world: World, label: str = "runs-fleet=42/cpu=2", job_id: int = 1) -> None:
    await world.intake().take(event(job_id, label))


async def _runners_for(world: World, job_id: JobId) -> list[Any]:
    return [r for r in await world.provider.list_runners() if r.job_id == job_id]


async def test_a_queued_job_gets_one_runner_and_its_config(world: World) -> None:
    await _queued(world)
    assert await world.dispatch_all() == ["launched"]
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.LAUNCHING
    assert job.runner_name == runner_name_for(JOB, 1) and job.runner_id is not None
    config = await world.configs.get(RunnerId(runner_name_for(JOB, 1)))
    assert config is not None and config.job_id == JOB and config.jit_config
    assert len(await _runners_for(world, JOB)) == 1
    assert world.queue.pending_count() == 0


async def test_runner_settings_reach_the_runner_config(world: World) -> None:
    await _queued(world)
    dispatcher = world.dispatcher()
    dispatcher.runner_settings = lambda job, name: {"report_url": f"http://x/{job.job_id}/{name}"}
    [delivery] = await world.queue.receive(1, 0)
    await dispatcher.handle(delivery)
    config = await world.configs.get(RunnerId(runner_name_for(JOB, 1)))
    assert config is not None
    assert config.settings == {"report_url": f"http://x/1/{runner_name_for(JOB, 1)}"}


async def test_redelivery_after_success_creates_no_second_runner(world: World) -> None:
    await _queued(world)
    [delivery] = await world.queue.receive(1, 0)
    dispatcher = world.dispatcher()
    assert await dispatcher.handle(delivery) is DispatchOutcome.LAUNCHED
    assert await dispatcher.handle(delivery) is DispatchOutcome.ALREADY_DONE
    assert len(world.provider.created) == 1


async def test_two_workers_with_the_same_message_launch_one_runner(world: World) -> None:
    await _queued(world)
    [delivery] = await world.queue.receive(1, 0)
    outcomes = await asyncio.gather(
        world.dispatcher("a").handle(delivery), world.dispatcher("b").handle(delivery)
    )
    assert DispatchOutcome.LAUNCHED in outcomes
    assert len(world.provider.created) == 1


async def test_a_live_claim_of_another_worker_is_waited_for(world: World) -> None:
    await _queued(world)
    [delivery] = await world.queue.receive(1, 0)
    job = await world.state.get_job(JOB)
    assert job is not None
    claimed = job.transition(
        JobStatus.CLAIMED,
        at=world.clock.now(),
        claim_owner="other",
        claim_expires_at=world.clock.now() + timedelta(seconds=50),
    )
    await world.state.put_job(claimed, expect_version=job.version)
    assert await world.dispatcher().handle(delivery) is DispatchOutcome.BUSY
    assert world.provider.created == []
    world.clock.advance(49)
    assert await world.queue.receive(1, 0) == []
    world.clock.advance(2)
    assert await world.dispatch_all() == ["launched"]


async def test_retryable_failure_cleans_up_and_retries_with_backoff(world: World) -> None:
    await _queued(world)
    world.provider.fail_next.append(ProviderError("throttled", retryable=True))
    assert await world.dispatch_all() == ["retry"]
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.QUEUED and job.claim_owner is None
    assert job.reason == "attempt 1 failed, retrying: throttled"  # what the jobs API shows
    assert await world.configs.list_ids() == []
    world.clock.advance(400)
    assert await world.dispatch_all() == ["launched"]
    assert len(world.provider.created) == 1


async def test_retryable_failures_end_in_the_dead_letter_queue_with_the_reason(
    world: World,
) -> None:
    await _queued(world)
    world.provider.fail_next.extend(ProviderError("capacity", retryable=True) for _ in range(3))
    outcomes = []
    for _ in range(3):
        outcomes += await world.dispatch_all()
        world.clock.advance(400)
    assert outcomes == ["retry", "retry", "dead_lettered"]
    [dead] = await world.queue.dead_letters()
    assert "capacity" in dead.reason and dead.message.job_id == JOB
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.QUEUED
    assert job.reason == "dead-lettered, gave up after 3 attempts: capacity"
    assert world.provider.created == []


async def test_permanent_failure_fails_the_job_with_the_reason(world: World) -> None:
    await _queued(world)
    world.provider.fail_next.append(
        ProviderError("no instance type has 512 vCPUs", retryable=False)
    )
    assert await world.dispatch_all() == ["failed"]
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.FAILED
    assert job.reason is not None and "512 vCPUs" in job.reason
    assert world.queue.pending_count() == 0 and await world.configs.list_ids() == []


async def test_a_stale_attempt_is_acknowledged_without_work(world: World) -> None:
    await _queued(world)
    job = await world.state.get_job(JOB)
    assert job is not None
    await world.state.put_job(
        job.transition(JobStatus.CANCELLED, at=world.clock.now()), expect_version=job.version
    )
    assert await world.dispatch_all() == ["already_done"]
    assert world.provider.created == []


async def _warm_pool(world: World, *, stopped: bool = False) -> RunnerId:
    pool = PoolConfig(name="default", label="runs-fleet=pool/cpu=2", desired_running=1)
    await world.state.put_pool(pool)
    [runner_id] = await world.pools.create_pool_runners(pool, 1, stopped=stopped)
    return runner_id


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
async def test_a_pool_job_takes_an_idle_warm_runner(world: World, stopped: bool) -> None:
    runner_id = await _warm_pool(world, stopped=stopped)
    await _queued(world, "runs-fleet=42/pool=default")
    assert await world.dispatch_all() == ["warm"]
    assignment = await world.state.get_assignment(runner_id)
    assert assignment is not None and assignment.job_id == JOB
    config = await world.configs.get(runner_id)
    assert config is not None and config.job_id == JOB
    [runner] = await world.pools.list_pool_runners("default")
    assert runner.phase is RunnerPhase.RUNNING
    assert world.provider.created == []


async def test_a_busy_pool_falls_back_to_a_cold_start(world: World) -> None:
    await _warm_pool(world)
    await _queued(world, "runs-fleet=42/pool=default", job_id=1)
    await _queued(world, "runs-fleet=42/pool=default", job_id=2)
    assert sorted(await world.dispatch_all()) == ["launched", "warm"]
    assert len(world.provider.created) == 1
    assert world.metrics.count("pool_misses", pool="default") == 1


async def test_a_warm_runner_that_vanished_is_released_and_the_job_cold_started(
    world: World,
) -> None:
    runner_id = await _warm_pool(world, stopped=True)
    await world.pools.terminate_runners([runner_id])
    real_list = world.pools.list_pool_runners

    async def stale_listing(pool: str) -> list[Any]:
        from runs_fleet_core.domain.runner import PoolRunner

        return [
            *await real_list(pool),
            PoolRunner(runner_id=runner_id, pool=pool, phase=RunnerPhase.STOPPED),
        ]

    world.pools.list_pool_runners = stale_listing  # type: ignore[method-assign]
    await _queued(world, "runs-fleet=42/pool=default")
    assert await world.dispatch_all() == ["launched"]
    assert await world.state.get_assignment(runner_id) is None
    assert await world.configs.get(runner_id) is None
    assert len(world.provider.created) == 1


def test_backoff_grows_and_stays_under_the_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, base_s=5, cap_s=60, rng=rng) for n in range(1, 40)]
    assert all(0 <= d <= 60 for d in delays)
    assert max(delays[:1]) <= 5


# -- crash between every pair of steps ------------------------------------------------


class Crash(BaseException):
    """The process dies: nothing after this point runs, nothing is cleaned up."""


class CrashingPort:
    """Wraps a port; the ``crash_at``-th call (counted over all wrapped ports) dies
    before it reaches the port."""

    def __init__(self, target: Any, counter: list[int], crash_at: int) -> None:
        self._target, self._counter, self._crash_at = target, counter, crash_at

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._counter[0] += 1
            if self._counter[0] == self._crash_at:
                raise Crash(name)
            return await attribute(*args, **kwargs)

        return call


def _crashing_dispatcher(world: World, crash_at: int) -> tuple[Dispatcher, list[int]]:
    counter = [0]
    wrap = lambda port: CrashingPort(port, counter, crash_at)  # noqa: E731
    dispatcher = Dispatcher(
        state=wrap(world.state),
        queue=wrap(world.queue),
        configs=wrap(world.configs),
        github=wrap(world.github),
        providers={"memory": wrap(world.provider)},
        pool_providers={"memory": wrap(world.pools)},
        clock=world.clock,
        metrics=world.metrics,
        owner="doomed",
        default_backend="memory",
        claim_ttl_s=60,
    )
    return dispatcher, counter


async def _steps_of_a_clean_run(label: str, warm: bool) -> int:
    clean = new_world()
    if warm:
        await _warm_pool(clean)
    await _queued(clean, label)
    [delivery] = await clean.queue.receive(1, 0)
    dispatcher, counter = _crashing_dispatcher(clean, crash_at=0)
    await dispatcher.handle(delivery)
    return counter[0]


@pytest.mark.parametrize(
    ("label", "warm"),
    [("runs-fleet=42/cpu=2", False), ("runs-fleet=42/pool=default", True)],
    ids=["cold", "warm"],
)
async def test_a_crash_between_any_two_dispatch_steps_still_gives_exactly_one_runner(
    label: str, warm: bool
) -> None:
    steps = await _steps_of_a_clean_run(label, warm)
    assert steps >= 8
    for crash_at in range(1, steps + 2):
        world = new_world()
        warm_id = await _warm_pool(world) if warm else None
        await _queued(world, label)
        [delivery] = await world.queue.receive(1, 0)
        dispatcher, _ = _crashing_dispatcher(world, crash_at)
        with contextlib.suppress(Crash):
            await dispatcher.handle(delivery)
        world.clock.advance(61)  # past the visibility timeout and the dead worker's claim
        await world.dispatch_all(owner="survivor")
        world.clock.advance(61)
        await world.dispatch_all(owner="survivor")

        where = f"crash before call {crash_at}"
        job = await world.state.get_job(JOB)
        assert job is not None and job.status is JobStatus.LAUNCHING, where
        assert job.runner_id is not None, where
        if warm:
            assert job.runner_id == warm_id and world.provider.created == [], where
            assignments = await world.state.list_assignments()
            assert [(a.runner_id, a.job_id) for a in assignments] == [(warm_id, JOB)], where
        else:
            assert len(world.provider.created) == 1, where
            assert len(await _runners_for(world, JOB)) == 1, where
        config = await world.configs.get(RunnerId(job.runner_id if warm else job.runner_name or ""))
        assert config is not None and config.job_id == JOB, where
        registered = await world.github.list_runners("octo-org/widgets")
        assert [r.name for r in registered] == [runner_name_for(JOB, 1)], where
        assert world.queue.pending_count() == 0 and await world.queue.dead_letters() == [], where


async def test_a_runner_that_ran_and_went_before_its_launch_was_recorded_is_not_made_again(
    world: World,
) -> None:
    """The worker died right after creating the runner; the runner ran the job and was
    cleaned up (a finished Kubernetes Job past its TTL); the message comes back. GitHub
    gave the job out already, so no second runner is created for it."""
    await _queued(world)
    [delivery] = await world.queue.receive(1, 0)
    provider = world.provider

    class DiesRightAfterCreating:
        def __getattr__(self, name: str) -> Any:
            return getattr(provider, name)

        async def create_runner(self, spec: Any, *, runner_name: str) -> Any:
            await provider.create_runner(spec, runner_name=runner_name)
            raise Crash

    doomed = attrs.evolve(
        world.dispatcher(owner="doomed"), providers={"memory": DiesRightAfterCreating()}
    )
    with contextlib.suppress(Crash):
        await doomed.handle(delivery)
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.LAUNCHING and job.runner_id is None
    [runner] = await _runners_for(world, JOB)
    await world.provider.terminate_runner(runner.runner_id)  # it ran, and is gone
    world.github.jobs[JOB] = JobStatusReport(job_id=JOB, status="completed", conclusion="success")
    world.clock.advance(61)
    assert await world.dispatch_all(owner="survivor") == ["already_done"]
    assert len(world.provider.created) == 1
    assert world.queue.pending_count() == 0


async def test_a_warm_runner_that_will_not_start_is_stopped_released_and_cold_started(
    world: World,
) -> None:
    """Starting a stopped instance can fail for want of capacity: the job must not wait
    for that runner, and the pool keeps it, stopped, for later."""
    runner_id = await _warm_pool(world, stopped=True)

    async def no_capacity(runner_ids: Any) -> None:
        raise AdapterError("AWS ec2.start_instances failed: InsufficientInstanceCapacity")

    world.pools.start_runners = no_capacity  # type: ignore[method-assign]
    await _queued(world, "runs-fleet=42/pool=default")
    assert await world.dispatch_all() == ["launched"]
    assert await world.state.get_assignment(runner_id) is None
    assert await world.configs.get(runner_id) is None
    [runner] = await world.pools.list_pool_runners("default")
    assert (runner.runner_id, runner.phase) == (runner_id, RunnerPhase.STOPPED)
    assert world.metrics.count("pool_misses", pool="default", reason="start_failed") == 1
    assert len(world.provider.created) == 1


async def test_a_pool_nobody_configured_becomes_an_ephemeral_pool_and_the_job_cold_starts(
    world: World,
) -> None:
    await _queued(world, "runs-fleet=42/cpu=2/pool=nightly")
    assert await world.dispatch_all() == ["launched"]
    pool = await world.state.get_pool("nightly")
    assert pool is not None and pool.ephemeral
    assert pool.label == "runs-fleet=42/cpu=2/pool=nightly" and pool.desired_running == 10
    assert len(world.provider.created) == 1


async def test_no_ephemeral_pool_when_they_are_turned_off(world: World) -> None:
    await _queued(world, "runs-fleet=42/cpu=2/pool=nightly")
    dispatcher = world.dispatcher(ephemeral_pool_max_size=0)
    while deliveries := await world.queue.receive(10, 0):
        for delivery in deliveries:
            await dispatcher.handle(delivery)
    assert await world.state.get_pool("nightly") is None
    assert len(world.provider.created) == 1
