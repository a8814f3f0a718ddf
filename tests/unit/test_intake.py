from __future__ import annotations

import contextlib

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.job import JobStatus
from runs_fleet_core.usecases.intake import IntakeOutcome

from .conftest import World, event


async def test_queued_job_is_recorded_and_enqueued(world: World) -> None:
    result = await world.intake().take(event(1, "runs-fleet=42/cpu=4/arch=arm64"))
    assert result.outcome is IntakeOutcome.QUEUED
    job = await world.state.get_job(JobId(1))
    assert job is not None and job.status is JobStatus.QUEUED and job.enqueued_at is not None
    [delivery] = await world.queue.receive(10, 0)
    assert delivery.message.job_id == 1
    assert delivery.message.spec.cpu_min == 4
    assert delivery.message.spec.labels == ("runs-fleet=42/cpu=4/arch=arm64", "linux")


async def test_duplicate_delivery_queues_once(world: World) -> None:
    intake = world.intake()
    first = await intake.take(event(1))
    second = await intake.take(event(1))
    assert (first.outcome, second.outcome) == (IntakeOutcome.QUEUED, IntakeOutcome.DUPLICATE)
    assert world.queue.pending_count() == 1


async def test_webhook_for_a_job_already_dispatched_queues_nothing(world: World) -> None:
    await world.intake().take(event(1))
    await world.dispatch_all()
    result = await world.intake().take(event(1))
    assert result.outcome is IntakeOutcome.DUPLICATE
    assert world.queue.pending_count() == 0


async def test_bad_label_is_recorded_as_rejected_with_the_reason(world: World) -> None:
    result = await world.intake().take(event(7, "runs-fleet=42/cpu=lots"))
    assert result.outcome is IntakeOutcome.REJECTED
    job = await world.state.get_job(JobId(7))
    assert job is not None and job.status is JobStatus.REJECTED
    assert job.reason is not None and "cpu=lots" in job.reason
    assert world.queue.pending_count() == 0
    assert world.metrics.count("jobs_rejected") == 1


async def test_backend_not_enabled_is_rejected_naming_the_enabled_ones(world: World) -> None:
    result = await world.intake(backends=("memory",)).take(event(3, "runs-fleet=1/backend=k8s"))
    assert result.outcome is IntakeOutcome.REJECTED
    assert result.reason is not None
    assert "backend=k8s" in result.reason and "enabled: memory" in result.reason


async def test_jobs_without_the_marker_label_are_ignored(world: World) -> None:
    result = await world.intake().take(event(9, "ubuntu-latest"))
    assert result.outcome is IntakeOutcome.IGNORED
    assert await world.state.get_job(JobId(9)) is None


async def test_a_recorded_but_unsent_job_is_sent_on_redelivery(world: World) -> None:
    class Boom(Exception):
        pass

    async def failing_send(message: object) -> None:
        raise Boom

    real_send = world.queue.send
    world.queue.send = failing_send  # type: ignore[method-assign]
    with contextlib.suppress(Boom):
        await world.intake().take(event(5))
    world.queue.send = real_send  # type: ignore[method-assign]
    assert world.queue.pending_count() == 0
    result = await world.intake().take(event(5))
    assert result.outcome is IntakeOutcome.QUEUED
    assert world.queue.pending_count() == 1
