"""Runner events from a backend's feed: spot warnings, vanished runners, agent reports."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from runs_fleet_core.domain.ids import JobId, RunnerId, runner_name_for
from runs_fleet_core.domain.job import JobStatus
from runs_fleet_core.domain.messages import AgentEvent, AgentReport, WorkflowJobAction
from runs_fleet_core.errors import AdapterError
from runs_fleet_core.ports.events import RunnerEvent, RunnerEventKind
from runs_fleet_core.testing.memory import MemoryRunnerEvents
from runs_fleet_core.usecases.events import EventOutcome, RunnerEventHandler, run_runner_events

from .conftest import World, event

JOB = JobId(1)
NAME = runner_name_for(JOB, 1)
GOOD_TOKEN = "right-token"


def _handler(world: World) -> RunnerEventHandler:
    return RunnerEventHandler(
        state=world.state,
        completion=world.completion(),
        clock=world.clock,
        metrics=world.metrics,
        verify_token=lambda report, token: token == GOOD_TOKEN,
    )


async def _launched(world: World) -> RunnerId:
    await world.intake().take(event(1, "runs-fleet=42/cpu=2"))
    await world.dispatch_all()
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.LAUNCHING and job.runner_id
    return job.runner_id


async def _running(world: World) -> RunnerId:
    runner_id = await _launched(world)
    started = event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name=NAME)
    await world.completion().job_started(started)
    return runner_id


def _event(kind: RunnerEventKind, runner_id: RunnerId | None, **fields: object) -> RunnerEvent:
    return RunnerEvent(kind=kind, receipt="r", runner_id=runner_id, **fields)  # type: ignore[arg-type]


async def test_a_spot_warning_requeues_the_job_once_on_demand(world: World) -> None:
    runner_id = await _launched(world)
    handler = _handler(world)
    warning = _event(RunnerEventKind.INTERRUPTION, runner_id, detail="spot interruption")
    assert await handler.handle("memory", warning) is EventOutcome.HANDLED
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.REQUEUED
    assert job.attempt == 2 and job.spec is not None and job.spec.spot is False
    assert job.reason == "spot interruption"
    assert world.queue.pending_count() == 1  # the on-demand attempt is queued
    assert await handler.handle("memory", warning) is EventOutcome.IGNORED  # delivered twice


async def test_a_runner_that_vanished_before_starting_requeues_its_job(world: World) -> None:
    runner_id = await _launched(world)
    gone = _event(RunnerEventKind.GONE, runner_id, detail="instance terminated")
    assert await _handler(world).handle("memory", gone) is EventOutcome.HANDLED
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.REQUEUED


@pytest.mark.parametrize("kind", [RunnerEventKind.INTERRUPTION, RunnerEventKind.GONE])
async def test_a_job_whose_runner_vanished_while_running_it_is_left_to_github(
    world: World, kind: RunnerEventKind
) -> None:
    runner_id = await _running(world)
    handler = _handler(world)
    lost = _event(kind, runner_id, detail="instance terminated")
    assert await handler.handle("memory", lost) is EventOutcome.HANDLED
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.RUNNING and job.attempt == 1
    assert job.runner_lost == "instance terminated"
    assert world.queue.pending_count() == 0  # GitHub gave the job to that runner: no relaunch
    assert await handler.handle("memory", lost) is EventOutcome.IGNORED  # delivered twice


async def test_a_runner_gone_after_its_agent_reported_its_exit_is_not_lost(world: World) -> None:
    runner_id = await _running(world)
    exited = AgentReport(
        job_id=JOB,
        runner_name=NAME,
        event=AgentEvent.FAILED,
        at=datetime(2026, 1, 5, tzinfo=UTC),
        exit_code=1,
    )
    await world.completion().agent_reported(exited)
    gone = _event(RunnerEventKind.GONE, runner_id, detail="instance terminated")
    assert await _handler(world).handle("memory", gone) is EventOutcome.IGNORED
    job = await world.state.get_job(JOB)
    assert job is not None and job.runner_lost is None and job.runner_exit == 1


async def test_events_about_runners_without_a_job_are_ignored(world: World) -> None:
    await _running(world)
    handler = _handler(world)
    for kind in (RunnerEventKind.INTERRUPTION, RunnerEventKind.GONE):
        assert await handler.handle("memory", _event(kind, RunnerId("i-0pool"))) is (
            EventOutcome.IGNORED
        )
    assert await handler.handle("memory", _event(RunnerEventKind.GONE, None)) is (
        EventOutcome.IGNORED
    )
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.RUNNING


def _report(kind: AgentEvent) -> AgentReport:
    return AgentReport(
        job_id=JOB, runner_name=NAME, event=kind, at=datetime(2026, 1, 5, tzinfo=UTC)
    )


async def test_an_agent_report_needs_the_right_token(world: World) -> None:
    await _launched(world)
    handler = _handler(world)
    forged = _event(RunnerEventKind.REPORT, None, report=_report(AgentEvent.STARTED), token="wrong")
    assert await handler.handle("memory", forged) is EventOutcome.REJECTED
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.LAUNCHING
    real = _event(
        RunnerEventKind.REPORT, None, report=_report(AgentEvent.STARTED), token=GOOD_TOKEN
    )
    assert await handler.handle("memory", real) is EventOutcome.HANDLED
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.RUNNING
    counted = world.metrics.count(
        "runner_events", backend="memory", kind="report", outcome="rejected"
    )
    assert counted == 1


async def test_the_loop_acks_handled_events_and_keeps_failed_ones(world: World) -> None:
    runner_id = await _launched(world)
    feed = MemoryRunnerEvents()
    handled = feed.push(_event(RunnerEventKind.GONE, runner_id, detail="terminated"))
    failing = feed.push(_event(RunnerEventKind.GONE, RunnerId("i-0other")))
    base = _handler(world)

    class Flaky(RunnerEventHandler):
        async def handle(self, backend: str, event: RunnerEvent) -> EventOutcome:
            if event.receipt == failing.receipt:
                raise AdapterError("state store unreachable")
            return await super().handle(backend, event)

    handler = Flaky(
        state=base.state,
        completion=base.completion,
        clock=base.clock,
        metrics=base.metrics,
        verify_token=base.verify_token,
    )
    stop = asyncio.Event()
    loop = asyncio.create_task(
        run_runner_events(feeds={"memory": feed}, handler=handler, stop=stop, wait_s=0.05)
    )
    for _ in range(200):
        if feed.acked:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert [e.receipt for e in feed.acked] == [handled.receipt]
    assert [e.receipt for e in feed.pending] == [failing.receipt]
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.REQUEUED


@pytest.fixture(autouse=True)
def _quiet_metrics_check(world: World) -> None:
    """Each test starts from a world with no runner events counted."""
    assert world.metrics.count("runner_events") == 0
