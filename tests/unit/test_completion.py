from __future__ import annotations

from datetime import UTC, datetime

import attrs

from runs_fleet_core.domain.ids import JobId, RunnerId, runner_name_for
from runs_fleet_core.domain.job import JobStatus
from runs_fleet_core.domain.messages import AgentEvent, AgentReport, WorkflowJobAction
from runs_fleet_core.errors import GitHubError
from runs_fleet_core.ports.github import JobStatusReport
from runs_fleet_core.usecases.completion import CompletionOutcome

from .conftest import REPO, World, event

JOB = JobId(1)
NAME = runner_name_for(JOB, 1)


async def _launched(world: World, label: str = "runs-fleet=42/cpu=2") -> None:
    await world.intake().take(event(1, label))
    await world.dispatch_all()


def _report(kind: AgentEvent, name: str = NAME, detail: str | None = None) -> AgentReport:
    return AgentReport(
        job_id=JOB, runner_name=name, event=kind, at=datetime(2026, 1, 5, tzinfo=UTC), detail=detail
    )


async def test_in_progress_then_completed_ends_the_job_and_deletes_its_config(
    world: World,
) -> None:
    await _launched(world)
    completion = world.completion()
    started = event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name=NAME)
    assert await completion.job_started(started) is CompletionOutcome.UPDATED
    finished = event(1, action=WorkflowJobAction.COMPLETED, conclusion="success")
    assert await completion.job_finished(finished) is CompletionOutcome.UPDATED
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.COMPLETED
    assert [c.status for c in job.timeline] == [
        JobStatus.QUEUED,
        JobStatus.CLAIMED,
        JobStatus.LAUNCHING,
        JobStatus.RUNNING,
        JobStatus.COMPLETED,
    ]
    assert await world.configs.list_ids() == []
    assert world.metrics.count("runner_mismatches") == 0


async def test_completed_before_in_progress_still_completes(world: World) -> None:
    await _launched(world)
    finished = event(1, action=WorkflowJobAction.COMPLETED, conclusion="failure")
    assert await world.completion().job_finished(finished) is CompletionOutcome.UPDATED
    late = event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name=NAME)
    assert await world.completion().job_started(late) is CompletionOutcome.UNCHANGED
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.COMPLETED
    assert job.reason == "conclusion: failure"


async def test_a_repeated_webhook_changes_nothing(world: World) -> None:
    await _launched(world)
    started = event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name=NAME)
    await world.completion().job_started(started)
    assert await world.completion().job_started(started) is CompletionOutcome.UNCHANGED


async def test_another_runner_taking_the_job_is_counted(world: World) -> None:
    await _launched(world)
    started = event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name="someone-else")
    await world.completion().job_started(started)
    assert world.metrics.count("runner_mismatches") == 1


async def test_another_runner_taking_the_job_after_its_own_runner_started_is_counted_once(
    world: World,
) -> None:
    """The agent reports ``started`` as soon as its runner starts, before GitHub gives
    the runner a job: the job is already running when ``in_progress`` names the runner
    that took it, and a runner other than the one launched is still a mismatch."""
    await _launched(world)
    completion = world.completion()
    await completion.agent_reported(_report(AgentEvent.STARTED))
    started = event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name="someone-else")
    await completion.job_started(started)
    await completion.job_started(started)  # a redelivery
    job = await world.state.get_job(JOB)
    assert job is not None and job.observed_runner == "someone-else"
    assert world.metrics.count("runner_mismatches") == 1


async def test_the_interruption_of_a_runner_github_passed_over_leaves_the_job_alone(
    world: World,
) -> None:
    """GitHub gave the job to another runner (equal labels); the runner launched for it
    is stopped (housekeeping removes it, a spot warning): the job runs on, elsewhere,
    and needs no second runner."""
    await _launched(world, "runs-fleet=42/cpu=2/spot=true")
    completion = world.completion()
    await completion.agent_reported(_report(AgentEvent.STARTED))
    await completion.job_started(
        event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name="someone-else")
    )
    stopped = _report(AgentEvent.INTERRUPTED, detail="stopped by SIGTERM")
    assert await completion.agent_reported(stopped) is CompletionOutcome.UNCHANGED
    job = await world.state.get_job(JOB)
    assert job is not None
    assert (job.status, job.attempt, job.runner_lost) == (JobStatus.RUNNING, 1, None)
    assert world.queue.pending_count() == 0


async def test_cancelled_conclusion_cancels_the_job(world: World) -> None:
    await _launched(world)
    finished = event(1, action=WorkflowJobAction.COMPLETED, conclusion="cancelled")
    await world.completion().job_finished(finished)
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.CANCELLED


async def test_events_for_unknown_jobs_are_reported_not_raised(world: World) -> None:
    finished = event(99, action=WorkflowJobAction.COMPLETED, conclusion="success")
    assert await world.completion().job_finished(finished) is CompletionOutcome.UNKNOWN_JOB


async def test_spot_interruption_requeues_once_on_demand_with_the_original_labels(
    world: World,
) -> None:
    label = "runs-fleet=42/cpu=4/arch=arm64"
    await _launched(world, label)
    outcome = await world.completion().agent_reported(
        _report(AgentEvent.INTERRUPTED, detail="spot interruption")
    )
    assert outcome is CompletionOutcome.REQUEUED
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.REQUEUED and job.attempt == 2
    assert await world.configs.get(RunnerId(NAME)) is None
    [delivery] = await world.queue.receive(1, 0)
    spec = delivery.message.spec
    assert (spec.spot, spec.attempt, spec.label, spec.cpu_min) == (False, 2, label, 4)
    assert spec.labels == (label, "linux")
    await world.dispatcher().handle(delivery)
    second = runner_name_for(JOB, 2)
    job = await world.state.get_job(JOB)
    assert job is not None and job.runner_name == second and job.status is JobStatus.LAUNCHING

    again = await world.completion().agent_reported(_report(AgentEvent.INTERRUPTED, second))
    assert again is CompletionOutcome.UPDATED
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.FAILED
    assert world.queue.pending_count() == 0


async def test_a_warm_runner_is_freed_when_its_job_ends(world: World) -> None:
    from runs_fleet_core.domain.pool import PoolConfig

    pool = PoolConfig(name="default", desired_running=1)
    [runner_id] = await world.pools.create_pool_runners(pool, 1)
    await _launched(world, "runs-fleet=42/pool=default")
    assert await world.state.get_assignment(runner_id) is not None
    finished = event(1, action=WorkflowJobAction.COMPLETED, conclusion="success")
    await world.completion().job_finished(finished)
    assert await world.state.get_assignment(runner_id) is None
    assert await world.configs.get(runner_id) is None


async def test_a_warm_runner_the_job_never_named_is_freed_when_the_job_ends(
    world: World,
) -> None:
    """The agent reported the job started before the dispatcher recorded the warm runner
    on it: the job names no runner, and the assignment still gets released."""
    from runs_fleet_core.domain.pool import PoolConfig

    pool = PoolConfig(name="default", desired_running=1)
    [runner_id] = await world.pools.create_pool_runners(pool, 1)
    await world.intake().take(event(1, "runs-fleet=42/pool=default"))
    assert await world.state.assign_runner(runner_id, JOB, world.clock.now())
    await world.completion().agent_reported(_report(AgentEvent.STARTED))
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.RUNNING and job.runner_id is None
    finished = event(1, action=WorkflowJobAction.COMPLETED, conclusion="success")
    await world.completion().job_finished(finished)
    assert await world.state.get_assignment(runner_id) is None


async def test_the_runners_exit_code_does_not_decide_a_started_jobs_result(world: World) -> None:
    await _launched(world)
    completion = world.completion()
    await completion.agent_reported(_report(AgentEvent.STARTED))
    failed = AgentReport(
        job_id=JOB,
        runner_name=NAME,
        event=AgentEvent.FAILED,
        at=datetime(2026, 1, 5, tzinfo=UTC),
        exit_code=1,
    )
    assert await completion.agent_reported(failed) is CompletionOutcome.UNCHANGED
    finished = event(1, action=WorkflowJobAction.COMPLETED, conclusion="failure")
    assert await completion.job_finished(finished) is CompletionOutcome.UPDATED
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.COMPLETED
    assert job.reason == "conclusion: failure"


def _broken(runner_name: str = NAME) -> AgentReport:
    return AgentReport(
        job_id=JOB,
        runner_name=runner_name,
        event=AgentEvent.FAILED,
        at=datetime(2026, 1, 5, tzinfo=UTC),
        exit_code=127,
        detail="run.sh not found",
    )


async def test_a_runner_that_breaks_before_its_job_starts_gets_the_job_a_fresh_runner(
    world: World,
) -> None:
    await _launched(world)
    world.github.jobs[JOB] = JobStatusReport(job_id=JOB, status="queued")
    assert await world.completion().agent_reported(_broken()) is CompletionOutcome.REQUEUED
    job = await world.state.get_job(JOB)
    assert job is not None and (job.status, job.attempt) == (JobStatus.REQUEUED, 2)
    assert job.reason == "runner failed before the job ran: run.sh not found; dispatched again"
    (delivery,) = await world.queue.receive(10, 0)
    assert (delivery.message.job_id, delivery.message.attempt) == (JOB, 2)
    assert await world.configs.get(RunnerId(NAME)) is None


async def test_a_job_whose_runners_keep_breaking_fails_after_max_attempts(world: World) -> None:
    await _launched(world)
    world.github.jobs[JOB] = JobStatusReport(job_id=JOB, status="queued")
    completion = attrs.evolve(world.completion(), max_attempts=1)
    assert await completion.agent_reported(_broken()) is CompletionOutcome.UPDATED
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.FAILED
    assert job.reason == "runner failed before the job ran: run.sh not found (1 runner(s) tried)"


async def test_a_broken_runner_changes_nothing_once_github_gave_the_job_out(
    world: World,
) -> None:
    await _launched(world)
    world.github.jobs[JOB] = JobStatusReport(job_id=JOB, status="in_progress", runner_name=NAME)
    assert await world.completion().agent_reported(_broken()) is CompletionOutcome.UNCHANGED
    job = await world.state.get_job(JOB)
    assert job is not None and (job.status, job.attempt) == (JobStatus.LAUNCHING, 1)
    assert await world.queue.receive(10, 0) == []


async def test_a_broken_runner_of_an_earlier_attempt_changes_nothing(world: World) -> None:
    await _launched(world)
    world.github.jobs[JOB] = JobStatusReport(job_id=JOB, status="queued")
    stale = _broken(runner_name_for(JOB, 7))
    assert await world.completion().agent_reported(stale) is CompletionOutcome.UNCHANGED


async def _lost_and_failed(world: World, *, rerun: int, run_attempt: int = 1) -> CompletionOutcome:
    """The job runs on its runner, the runner is reclaimed, GitHub fails the job."""
    await _launched(world)
    completion = world.completion(rerun_lost_jobs=rerun)
    await completion.job_started(event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name=NAME))
    lost = await completion.agent_reported(
        _report(AgentEvent.INTERRUPTED, detail="spot interruption")
    )
    assert lost is CompletionOutcome.UPDATED
    world.github.jobs[JOB] = JobStatusReport(job_id=JOB, status="completed", conclusion="failure")
    failed = attrs.evolve(
        event(1, action=WorkflowJobAction.COMPLETED, conclusion="failure"), run_attempt=run_attempt
    )
    return await completion.job_finished(failed)


async def test_a_job_failed_by_its_lost_runner_is_rerun_once_when_configured(world: World) -> None:
    assert await _lost_and_failed(world, rerun=1) is CompletionOutcome.UPDATED
    assert world.github.reruns == [(REPO, JOB)]
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.COMPLETED
    assert job.reason is not None and "spot interruption" in job.reason
    assert "re-run requested" in job.reason
    assert world.queue.pending_count() == 0  # GitHub queues the re-run as a new job


async def test_the_rerun_of_a_rerun_is_not_rerun(world: World) -> None:
    await _lost_and_failed(world, rerun=1, run_attempt=2)
    assert world.github.reruns == []
    job = await world.state.get_job(JOB)
    assert job is not None and job.reason is not None
    assert "not re-run: run attempt 2 is past RUNS_FLEET_RERUN_LOST_JOBS" in job.reason


async def test_lost_runner_failures_are_not_rerun_by_default(world: World) -> None:
    await _lost_and_failed(world, rerun=0)
    assert world.github.reruns == []
    job = await world.state.get_job(JOB)
    assert (
        job is not None
        and job.reason is not None
        and "RUNS_FLEET_RERUN_LOST_JOBS is 0" in (job.reason)
    )


async def test_a_genuine_failure_is_never_rerun(world: World) -> None:
    await _launched(world)
    completion = world.completion(rerun_lost_jobs=3)
    await completion.job_started(event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name=NAME))
    exited = attrs.evolve(_report(AgentEvent.FAILED), exit_code=1)
    await completion.agent_reported(exited)
    world.github.jobs[JOB] = JobStatusReport(job_id=JOB, status="completed", conclusion="failure")
    await completion.job_finished(
        event(1, action=WorkflowJobAction.COMPLETED, conclusion="failure")
    )
    # an interruption reported after the runner's own exit changes nothing either
    await completion.agent_reported(_report(AgentEvent.INTERRUPTED, detail="late"))
    assert world.github.reruns == []
    job = await world.state.get_job(JOB)
    assert job is not None and job.reason == "conclusion: failure" and job.runner_lost is None


async def test_a_cancelled_job_whose_runner_was_lost_is_not_rerun(world: World) -> None:
    await _launched(world)
    completion = world.completion(rerun_lost_jobs=1)
    await completion.job_started(event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name=NAME))
    await completion.agent_reported(_report(AgentEvent.INTERRUPTED, detail="pod evicted"))
    world.github.jobs[JOB] = JobStatusReport(job_id=JOB, status="completed", conclusion="cancelled")
    await completion.job_finished(
        event(1, action=WorkflowJobAction.COMPLETED, conclusion="cancelled")
    )
    assert world.github.reruns == []


async def test_a_refused_rerun_is_recorded_not_raised(world: World) -> None:
    await _launched(world)
    world.github.fail_next.append(GitHubError("403 cannot be rerun", retryable=False))
    completion = world.completion(rerun_lost_jobs=1)
    await completion.job_started(event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name=NAME))
    await completion.agent_reported(_report(AgentEvent.INTERRUPTED, detail="spot interruption"))
    finished = event(1, action=WorkflowJobAction.COMPLETED, conclusion="failure")
    assert await completion.job_finished(finished) is CompletionOutcome.UPDATED
    job = await world.state.get_job(JOB)
    assert job is not None and job.reason is not None and "refused" in job.reason
    assert world.metrics.count("lost_runner_failures", rerun="refused") == 1
