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
    """Without an outbox (queue and state on different backends) a crash between the
    two writes leaves a job recorded but unsent; its redelivery sends it."""

    class Boom(Exception):
        pass

    async def failing_send(message: object) -> None:
        raise Boom

    real_send = world.queue.send
    world.queue.send = failing_send  # type: ignore[method-assign]
    with contextlib.suppress(Boom):
        await world.intake(outbox=False).take(event(5))
    world.queue.send = real_send  # type: ignore[method-assign]
    assert world.queue.pending_count() == 0
    assert (await world.state.get_job(JobId(5))) is not None
    result = await world.intake(outbox=False).take(event(5))
    assert result.outcome is IntakeOutcome.QUEUED
    assert world.queue.pending_count() == 1


async def test_with_an_outbox_a_job_is_recorded_and_sent_in_one_step(world: World) -> None:
    sends: list[object] = []
    world.queue.send = sends.append  # type: ignore[assignment,method-assign]
    result = await world.intake().take(event(6))
    assert result.outcome is IntakeOutcome.QUEUED
    job = await world.state.get_job(JobId(6))
    assert job is not None and job.version == 1 and job.enqueued_at == job.created_at
    assert world.queue.pending_count() == 1 and sends == []  # one atomic step, no send()
    again = await world.intake().take(event(6))
    assert again.outcome is IntakeOutcome.DUPLICATE and world.queue.pending_count() == 1


async def test_with_an_outbox_a_failed_write_leaves_nothing_and_redelivery_queues(
    world: World,
) -> None:
    class Down(Exception):
        pass

    async def down(*args: object) -> None:
        raise Down

    real = world.state.create_job_and_send
    world.state.create_job_and_send = down  # type: ignore[assignment,method-assign]
    with contextlib.suppress(Down):
        await world.intake().take(event(7))
    world.state.create_job_and_send = real  # type: ignore[method-assign]
    assert await world.state.get_job(JobId(7)) is None and world.queue.pending_count() == 0
    assert (await world.intake().take(event(7))).outcome is IntakeOutcome.QUEUED
    assert world.queue.pending_count() == 1
