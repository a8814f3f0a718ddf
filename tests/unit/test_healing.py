"""Healing: jobs whose webhook never came are settled from GitHub's view of them."""

from __future__ import annotations

from typing import Any

import attrs

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.messages import WorkflowJobAction
from runs_fleet_core.domain.runner import RunnerPhase
from runs_fleet_core.ports.github import JobStatusReport
from runs_fleet_core.usecases.healing import Healer

from .conftest import World, event


def _healer(world: World, **options: float) -> Healer:
    return Healer(
        state=world.state,
        queue=world.queue,
        github=world.github,
        completion=world.completion(),
        providers={"memory": world.provider},
        clock=world.clock,
        metrics=world.metrics,
        **options,  # type: ignore[arg-type]
    )


async def _job(world: World, job_id: int) -> Job:
    job = await world.state.get_job(JobId(job_id))
    assert job is not None
    return job


async def _launched(world: World, job_id: int) -> Job:
    await world.intake().take(event(job_id))
    await world.dispatch_all()
    job = await _job(world, job_id)
    assert job.status is JobStatus.LAUNCHING and job.runner_id is not None
    return job


async def test_a_completed_webhook_that_never_came_ends_the_job_and_removes_its_config(
    world: World,
) -> None:
    job = await _launched(world, 1)
    world.github.jobs[JobId(1)] = JobStatusReport(
        job_id=JobId(1), status="completed", conclusion="success", runner_name=job.runner_name
    )
    healer = _healer(world)
    assert (await healer.heal()).checked == ()  # not quiet long enough yet
    world.clock.advance(601)
    report = await healer.heal()
    assert report.finished == (1,)
    assert (await _job(world, 1)).status is JobStatus.COMPLETED
    assert await world.configs.list_ids() == []
    assert world.metrics.count("jobs_healed", how="finished") == 1


async def test_an_in_progress_webhook_that_never_came_marks_the_job_running(world: World) -> None:
    job = await _launched(world, 1)
    world.github.jobs[JobId(1)] = JobStatusReport(
        job_id=JobId(1), status="in_progress", runner_name=job.runner_name
    )
    world.clock.advance(601)
    assert (await _healer(world).heal()).started == (1,)
    healed = await _job(world, 1)
    assert healed.status is JobStatus.RUNNING and healed.observed_runner == job.runner_name


async def test_a_runner_that_never_registered_is_replaced_by_the_next_attempt(
    world: World,
) -> None:
    first = await _launched(world, 1)
    world.github.jobs[JobId(1)] = JobStatusReport(job_id=JobId(1), status="queued")
    world.clock.advance(901)
    report = await _healer(world).heal()
    assert report.relaunched == (1,)
    old = await world.provider.describe_runner(first.runner_id)  # type: ignore[arg-type]
    assert old.phase is RunnerPhase.TERMINATED
    requeued = await _job(world, 1)
    assert (requeued.status, requeued.attempt) == (JobStatus.REQUEUED, 2)
    await world.dispatch_all()
    second = await _job(world, 1)
    assert second.status is JobStatus.LAUNCHING and second.runner_id != first.runner_id
    assert second.runner_name == "runs-fleet-1-2"
    live = list(await world.provider.list_runners())
    assert [r.runner_id for r in live] == [second.runner_id]  # exactly one runner


async def test_a_job_no_runner_ever_takes_fails_after_the_last_attempt(world: World) -> None:
    await _launched(world, 1)
    world.github.jobs[JobId(1)] = JobStatusReport(job_id=JobId(1), status="queued")
    healer = _healer(world, max_attempts=2)
    world.clock.advance(901)
    assert (await healer.heal()).relaunched == (1,)
    await world.dispatch_all()
    world.clock.advance(901)
    assert (await healer.heal()).failed == (1,)
    failed = await _job(world, 1)
    assert failed.status is JobStatus.FAILED and "2 attempt(s)" in (failed.reason or "")


async def test_a_job_github_no_longer_has_is_cancelled(world: World) -> None:
    await _launched(world, 1)
    world.clock.advance(601)
    assert (await _healer(world).heal()).cancelled == (1,)
    assert (await _job(world, 1)).status is JobStatus.CANCELLED
    assert await world.configs.list_ids() == []


async def test_a_job_waiting_for_approval_or_recently_launched_is_left_alone(
    world: World,
) -> None:
    await _launched(world, 1)
    await _launched(world, 2)
    world.github.jobs[JobId(1)] = JobStatusReport(job_id=JobId(1), status="waiting")
    world.github.jobs[JobId(2)] = JobStatusReport(job_id=JobId(2), status="queued")
    world.clock.advance(601)  # quiet enough to ask, too early to relaunch
    report = await _healer(world).heal()
    assert report.checked == (1, 2)
    assert (report.relaunched, report.finished, report.cancelled) == ((), (), ())
    assert (await _job(world, 1)).status is JobStatus.LAUNCHING


async def test_a_pass_asks_about_a_bounded_number_of_jobs_least_recently_asked_first(
    world: World,
) -> None:
    for job_id in (1, 2, 3):
        await _launched(world, job_id)
        world.github.jobs[JobId(job_id)] = JobStatusReport(job_id=JobId(job_id), status="waiting")
        world.clock.advance(10)
    world.clock.advance(601)
    healer = _healer(world, max_per_pass=2)
    assert (await healer.heal()).checked == (1, 2)  # the oldest first
    assert (await healer.heal()).checked == (3, 1)  # then the one not asked yet


async def test_a_runner_that_started_but_never_got_its_job_from_github_is_replaced(
    world: World,
) -> None:
    from datetime import UTC, datetime

    from runs_fleet_core.domain.messages import AgentEvent, AgentReport

    first = await _launched(world, 1)
    started = AgentReport(
        job_id=JobId(1),
        runner_name=first.runner_name or "",
        event=AgentEvent.STARTED,
        at=datetime(2026, 1, 5, tzinfo=UTC),
    )
    await world.completion().agent_reported(started)
    assert (await _job(world, 1)).status is JobStatus.RUNNING
    world.github.jobs[JobId(1)] = JobStatusReport(job_id=JobId(1), status="queued")
    world.clock.advance(901)
    assert (await _healer(world).heal()).relaunched == (1,)
    requeued = await _job(world, 1)
    assert (requeued.status, requeued.attempt) == (JobStatus.REQUEUED, 2)


async def test_a_job_github_runs_on_its_runner_is_never_relaunched(world: World) -> None:
    job = await _launched(world, 1)
    await world.completion().job_started(
        event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name=job.runner_name)
    )
    world.github.jobs[JobId(1)] = JobStatusReport(
        job_id=JobId(1), status="in_progress", runner_name=job.runner_name
    )
    world.clock.advance(3600)
    report = await _healer(world).heal()
    assert report.checked == (1,) and report.relaunched == () and report.started == ()
    assert (await _job(world, 1)).attempt == 1


async def test_a_relaunch_keeps_the_old_runner_while_github_has_it_run_another_job(
    world: World,
) -> None:
    """GitHub gave job 1 to the runner launched for job 2 (equal labels) and job 2 to
    no runner yet: job 2 gets its next attempt, and the runner that runs job 1 is left
    to finish it."""
    await _launched(world, 1)
    second = await _launched(world, 2)
    taken_by = second.runner_name
    await world.completion().job_started(
        event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name=taken_by)
    )
    world.github.jobs[JobId(1)] = JobStatusReport(
        job_id=JobId(1), status="in_progress", runner_name=taken_by
    )
    world.github.jobs[JobId(2)] = JobStatusReport(job_id=JobId(2), status="queued")
    world.clock.advance(901)
    assert (await _healer(world).heal()).relaunched == (2,)
    kept = await world.provider.describe_runner(second.runner_id)  # type: ignore[arg-type]
    assert kept.phase is not RunnerPhase.TERMINATED
    assert (await _job(world, 2)).attempt == 2
    first = await _job(world, 1)
    assert (first.status, first.attempt) == (JobStatus.RUNNING, 1)


class _Watching:
    """A provider that notes, when a runner is terminated, which job still holds it
    (its "gone" event would be handled against that job)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.holders: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.world.provider, name)

    async def terminate_runner(self, runner_id: RunnerId) -> None:
        jobs = await self.world.state.list_jobs()
        self.holders += [int(j.job_id) for j in jobs if j.runner_id == runner_id]
        await self.world.provider.terminate_runner(runner_id)


async def test_a_relaunched_jobs_old_runner_goes_after_the_next_attempt_is_recorded(
    world: World,
) -> None:
    """Its "gone" event then names no runner of the job, instead of requeueing it a
    second time (which failed it as "runner lost again")."""
    await _launched(world, 1)
    world.github.jobs[JobId(1)] = JobStatusReport(job_id=JobId(1), status="queued")
    world.clock.advance(901)
    watching = _Watching(world)
    healer = attrs.evolve(_healer(world), providers={"memory": watching})
    assert (await healer.heal()).relaunched == (1,)
    assert watching.holders == []


class _Racing:
    """A state store where job 1 changes (a webhook, a report) right before the
    healer writes it."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.world.state, name)

    async def put_job(self, job: Job, *, expect_version: int | None) -> Job:
        if job.job_id == JobId(1) and not self.raced:
            self.raced = True
            current = await _job(self.world, 1)
            await self.world.state.put_job(current, expect_version=current.version)
        return await self.world.state.put_job(job, expect_version=expect_version)


async def test_a_job_that_moves_on_while_being_healed_leaves_the_pass_going(
    world: World,
) -> None:
    for job_id in (1, 2):
        await _launched(world, job_id)
        world.github.jobs[JobId(job_id)] = JobStatusReport(job_id=JobId(job_id), status="queued")
    world.clock.advance(901)
    healer = attrs.evolve(_healer(world), state=_Racing(world))
    assert (await healer.heal()).relaunched == (2,)
    assert world.metrics.count("healing_conflicts") == 1
    assert (await _job(world, 1)).attempt == 1  # looked at again by the next pass


async def test_a_job_no_runner_was_launched_for_gets_its_message_again_not_an_attempt(
    world: World,
) -> None:
    """A queue backlog or a message lost with a worker: the job is sent again, same
    attempt, however often, and never failed for it."""
    await world.intake().take(event(1))
    lost = await world.queue.receive(10, 0)  # a worker took it and died
    assert [d.message.job_id for d in lost] == [JobId(1)]
    world.github.jobs[JobId(1)] = JobStatusReport(job_id=JobId(1), status="queued")
    healer = _healer(world)
    for _ in range(5):
        world.clock.advance(901)
        report = await healer.heal()
        assert (report.resent, report.relaunched, report.failed) == ((1,), (), ())
        job = await _job(world, 1)
        assert (job.status, job.attempt) == (JobStatus.QUEUED, 1)
    world.clock.advance(60)
    assert (await healer.heal()).resent == ()  # just sent: the next pass waits again
    await world.dispatch_all()
    job = await _job(world, 1)
    assert job.status is JobStatus.LAUNCHING and job.runner_name == "runs-fleet-1-1"
    assert len(list(await world.provider.list_runners())) == 1
