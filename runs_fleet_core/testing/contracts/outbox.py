"""The contract of the optional JobOutbox capability of a StateStore: a new job and its
queue message appear together, or neither does.

Intake relies on it to record a job and queue it in one step; a store that offers the
capability must pass this suite with a queue of its own backend.
"""

from __future__ import annotations

import asyncio
from typing import cast

import attrs

from runs_fleet_core.domain.job import Job
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.ports.queue import Queue
from runs_fleet_core.ports.state import JobOutbox, StateStore
from runs_fleet_core.testing.contracts.state import make_job
from runs_fleet_core.testing.memory.observe import ManualClock


class JobOutboxContract:
    """Contract tests for a StateStore that also implements the optional
    :class:`~runs_fleet_core.ports.state.JobOutbox` capability.

    Provide two fixtures: ``state_store`` (a fresh, empty store) and ``queue`` (an empty
    queue of the same backend that the store ``sends_to``). Intake relies on these: a
    new job and its message appear together, and a job seen before sends nothing.
    """

    @staticmethod
    def _message(job: Job) -> JobMessage:
        return JobMessage.for_job(job, enqueued_at=job.created_at)

    async def test_the_store_sends_to_the_queue(self, state_store: JobOutbox, queue: Queue) -> None:
        assert state_store.sends_to(queue)

    async def test_a_new_job_is_recorded_and_its_message_queued(
        self, state_store: JobOutbox, queue: Queue, clock: ManualClock
    ) -> None:
        job = make_job(1, clock.now())
        stored = await state_store.create_job_and_send(job, self._message(job), queue)
        assert stored is not None and stored.version == 1
        assert attrs.evolve(stored, version=job.version) == job
        assert await cast(StateStore, state_store).get_job(job.job_id) == stored
        deliveries = await queue.receive(10, 1.0)
        assert [d.message for d in deliveries] == [self._message(job)]

    async def test_a_job_seen_before_is_left_alone_and_nothing_is_sent(
        self, state_store: JobOutbox, queue: Queue, clock: ManualClock
    ) -> None:
        job = make_job(2, clock.now())
        first = await state_store.create_job_and_send(job, self._message(job), queue)
        assert first is not None
        for delivery in await queue.receive(10, 1.0):
            await queue.ack(delivery)
        again = attrs.evolve(job, repository="octo-org/other")
        assert await state_store.create_job_and_send(again, self._message(again), queue) is None
        assert await cast(StateStore, state_store).get_job(job.job_id) == first
        assert await queue.receive(10, 0.2) == []

    async def test_racing_intakes_of_one_job_record_and_send_it_once(
        self, state_store: JobOutbox, queue: Queue, clock: ManualClock
    ) -> None:
        job = make_job(3, clock.now())
        results = await asyncio.gather(
            *(state_store.create_job_and_send(job, self._message(job), queue) for _ in range(8))
        )
        assert sum(result is not None for result in results) == 1
        deliveries = await queue.receive(10, 1.0)
        assert [d.message.job_id for d in deliveries] == [job.job_id]
