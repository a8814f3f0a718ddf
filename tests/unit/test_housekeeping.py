from __future__ import annotations

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.job import JobStatus
from runs_fleet_core.domain.messages import WorkflowJobAction
from runs_fleet_core.domain.runner import RunnerPhase
from runs_fleet_core.errors import AdapterError

from .conftest import REPO, World, event


async def _finish(world: World, job_id: int) -> None:
    finished = event(job_id, action=WorkflowJobAction.COMPLETED, conclusion="success")
    await world.completion().job_finished(finished)


async def test_a_runner_whose_job_ended_is_terminated_after_the_grace_period(
    world: World,
) -> None:
    await world.intake().take(event(1))
    await world.dispatch_all()
    await _finish(world, 1)
    keeper = world.housekeeper()
    assert (await keeper.run()).terminated == ()
    world.clock.advance(601)
    report = await keeper.run()
    assert len(report.terminated) == 1
    [created] = world.provider.created
    state = await world.provider.describe_runner(created.runner_id)
    assert state.phase is RunnerPhase.TERMINATED
    assert world.metrics.count("orphans_terminated") == 1


async def test_a_runner_serving_a_live_job_is_never_an_orphan(world: World) -> None:
    await world.intake().take(event(1))
    await world.dispatch_all()
    world.clock.advance(3600)
    report = await world.housekeeper().run()
    assert report.terminated == ()


async def test_stale_configs_of_ended_jobs_are_deleted(world: World) -> None:
    await world.intake().take(event(1))
    await world.dispatch_all()
    job = await world.state.get_job(JobId(1))
    assert job is not None
    await world.state.put_job(
        job.transition(JobStatus.FAILED, at=world.clock.now()), expect_version=job.version
    )
    report = await world.housekeeper().run()
    assert len(report.stale_configs) == 1
    assert await world.configs.list_ids() == []


async def test_a_recorded_job_whose_message_was_lost_is_sent_again(world: World) -> None:
    from runs_fleet_core.domain.ids import RunId
    from runs_fleet_core.domain.job import Job
    from runs_fleet_core.domain.labels import parse_label

    spec = parse_label("runs-fleet=42/cpu=2").for_job(JobId(5), "o/r")
    job = Job.new(
        job_id=JobId(5), run_id=RunId("42"), repository="o/r", at=world.clock.now(), spec=spec
    )
    await world.state.put_job(job, expect_version=None)
    world.clock.advance(61)
    report = await world.housekeeper().run()
    assert report.resent == (5,)
    assert await world.dispatch_all() == ["launched"]


async def test_jobs_stuck_in_a_phase_are_reported(world: World) -> None:
    await world.intake().take(event(1))
    await world.dispatch_all()
    world.clock.advance(901)
    report = await world.housekeeper().run()
    assert [j.job_id for j in report.stuck] == [1]


async def test_a_runner_github_gave_another_job_is_not_reaped_when_its_own_job_ends(
    world: World,
) -> None:
    from runs_fleet_core.domain.ids import runner_name_for

    label = "runs-fleet=42/cpu=2"
    await world.intake().take(event(1, label))
    await world.intake().take(event(2, label))
    await world.dispatch_all()
    # same labels: GitHub runs job 1 on job 2's runner and job 2 on job 1's runner
    swapped = {1: runner_name_for(JobId(2), 1), 2: runner_name_for(JobId(1), 1)}
    completion = world.completion()
    for job_id, runner in swapped.items():
        started = event(job_id, label, action=WorkflowJobAction.IN_PROGRESS, runner_name=runner)
        await completion.job_started(started)
    await _finish(world, 1)  # job 1 ends; the runner launched for it still runs job 2
    world.clock.advance(601)
    report = await world.housekeeper().run()
    job = await world.state.get_job(JobId(2))
    assert job is not None and job.observed_runner == runner_name_for(JobId(1), 1)
    # job 2's runner ran job 1, which ended: it goes; job 1's runner, busy with job 2, stays
    assert report.terminated == (job.runner_id,)
    await _finish(world, 2)
    report = await world.housekeeper().run()
    assert len(report.terminated) == 1


async def test_a_runner_passed_over_for_its_job_is_removed_once_the_swap_is_old_enough(
    world: World,
) -> None:
    """GitHub runs job 1 on job 2's runner; job 2 has no job for job 1's runner to take
    (it waits elsewhere): job 1's runner would idle until job 1 ends, so it goes after
    the grace period, counted from the swap."""
    from runs_fleet_core.domain.ids import runner_name_for

    await world.intake().take(event(1))
    await world.intake().take(event(2))
    await world.dispatch_all()
    world.clock.advance(601)  # both runners are past their launch grace
    started = event(
        1, action=WorkflowJobAction.IN_PROGRESS, runner_name=runner_name_for(JobId(2), 1)
    )
    await world.completion().job_started(started)
    keeper = world.housekeeper()
    assert (await keeper.run()).terminated == ()  # the swap is too recent
    world.clock.advance(601)
    report = await keeper.run()
    job_1 = await world.state.get_job(JobId(1))
    assert job_1 is not None
    assert report.terminated == (job_1.runner_id,)  # job 2's runner runs job 1: kept


async def _busy_at_github(world: World, runner_name: str, busy: bool) -> None:
    [registered] = [r for r in await world.github.list_runners(REPO) if r.name == runner_name]
    world.github.set_runner_state(REPO, registered.runner_id, busy=busy)


async def test_a_runner_github_shows_busy_is_kept_though_its_own_job_ended(
    world: World,
) -> None:
    """A JIT runner may take any job with its labels; until that job's ``in_progress``
    arrives (late, or lost), only GitHub knows the runner works: it is not removed."""
    await world.intake().take(event(1))
    await world.dispatch_all()
    await _finish(world, 1)  # GitHub ran job 1 elsewhere; its runner took another job
    job = await world.state.get_job(JobId(1))
    assert job is not None and job.runner_name is not None
    await _busy_at_github(world, job.runner_name, True)
    world.clock.advance(601)
    keeper = world.housekeeper()
    assert (await keeper.run()).terminated == ()
    assert world.metrics.count("orphans_spared") == 1
    await _busy_at_github(world, job.runner_name, False)  # that job is done
    assert (await keeper.run()).terminated == (job.runner_id,)


async def test_an_orphan_is_kept_while_github_cannot_say_whether_its_runner_is_busy(
    world: World,
) -> None:
    await world.intake().take(event(1))
    await world.dispatch_all()
    await _finish(world, 1)
    world.clock.advance(601)
    world.github.fail_next.append(AdapterError("GitHub is unreachable"))
    keeper = world.housekeeper()
    assert (await keeper.run()).terminated == ()
    job = await world.state.get_job(JobId(1))
    assert job is not None
    assert (await keeper.run()).terminated == (job.runner_id,)
