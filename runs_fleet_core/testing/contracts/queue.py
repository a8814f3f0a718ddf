"""The contract every Queue adapter must pass: at-least-once delivery, done right.

Dispatch is only as safe as the queue under it: a lost message is a job that never gets
a runner, a message delivered forever is a poison loop. These tests pin down what
dispatch relies on, for the in-memory queue and for SQS, Valkey or a third party's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import ClassVar

import pytest

from runs_fleet_core.domain.ids import JobId, RunId
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.domain.spec import Arch, RunnerSpec
from runs_fleet_core.ports.queue import DeadLetter, Delivery, Queue

Advance = Callable[[float], Awaitable[None]]
"""Makes ``seconds`` pass for the queue under test (``asyncio.sleep`` for real time)."""
SendRaw = Callable[[str], Awaitable[None]]
"""Puts a raw payload (not necessarily a message) in the job queue under test."""
UNREADABLE = '{"note": "not a job message", "token": "ghs_contractSecret"}'
"""A payload no adapter can read as a message, with a token-like value that must never
be shown again."""


def job_message(job_id: int, attempt: int = 1) -> JobMessage:
    """A realistic message for job ``job_id`` (all field kinds set, so a lossy round
    trip shows)."""
    spec = RunnerSpec(
        run_id=RunId("9001"),
        label="runs-fleet=9001/cpu=4+8/arch=arm64/pool=default",
        cpu_min=4,
        cpu_max=8,
        arch=Arch.ARM64,
        families=("c7g", "m7g"),
        pool="default",
        labels=("runs-fleet=9001/cpu=4+8/arch=arm64/pool=default",),
    ).for_job(JobId(job_id), "octo-org/app", attempt)
    return JobMessage(
        job_id=JobId(job_id),
        run_id=RunId("9001"),
        repository="octo-org/app",
        spec=spec,
        attempt=attempt,
        enqueued_at=datetime(2026, 1, 5, 9, 0, 1, 250000, tzinfo=UTC),
    )


class QueueContract:
    """Contract tests for a :class:`~runs_fleet_core.ports.Queue` adapter.

    Subclass it in a ``Test*`` class and provide two fixtures:

    * ``queue``: a fresh, empty queue (async fixtures are fine) built with
      ``max_attempts = self.max_attempts`` (3) and a visibility timeout of
      ``self.visibility_timeout_s`` (override the attribute to suit the backend);
    * ``advance``: an ``async (seconds: float) -> None`` that makes that much time pass
      for the queue: advance a fake clock, or ``asyncio.sleep`` for a real server.

    Optionally, override ``send_raw`` to return an ``async (payload: str) -> None`` that
    writes a payload to the job queue behind the adapter's back (as a foreign writer or
    a corrupted entry would): the tests of unreadable dead letters run only then.

    Example::

        class TestMyQueue(QueueContract):
            @pytest.fixture
            async def queue(self):
                return await MyQueue.connect(URL, max_attempts=3, visibility_timeout_s=1.0)
            @pytest.fixture
            def advance(self): return asyncio.sleep
    """

    pytestmark = pytest.mark.asyncio
    max_attempts: ClassVar[int] = 3
    visibility_timeout_s: ClassVar[float] = 1.0
    receive_wait_s: ClassVar[float] = 1.0
    """How long a receive that expects a message may wait for it."""

    async def receive_one(self, queue: Queue) -> Delivery:
        """The one delivery the queue holds now."""
        deliveries = await queue.receive(1, self.receive_wait_s)
        assert len(deliveries) == 1, f"expected one delivery, got {deliveries}"
        return deliveries[0]

    async def receive_all(self, queue: Queue, expected: int) -> list[Delivery]:
        """Everything visible, receiving until ``expected`` arrived or none come."""
        received: list[Delivery] = []
        while len(received) < expected:
            batch = await queue.receive(expected - len(received), self.receive_wait_s)
            if not batch:
                break
            received.extend(batch)
        received.extend(await queue.receive(10, 0))
        return received

    @pytest.fixture
    def send_raw(self) -> SendRaw | None:
        """No raw writes unless a subclass offers them (see the class docstring)."""
        return None

    async def expire_visibility(self, advance: Advance) -> None:
        """Let a whole visibility timeout pass, with a margin."""
        await advance(self.visibility_timeout_s * 1.5)

    async def exhaust(
        self, queue: Queue, advance: Advance, message: JobMessage, *, send: bool = True
    ) -> DeadLetter:
        """Send ``message`` (unless it is queued already), let every attempt lapse until
        it is dead-lettered; its dead letter."""
        if send:
            await queue.send(message)
        for _ in range(self.max_attempts):
            await self.receive_one(queue)
            await self.expire_visibility(advance)
        assert list(await queue.receive(10, 0)) == []
        found = [d for d in await queue.dead_letters() if d.message == message]
        assert len(found) == 1, f"expected one dead letter of {message}, got {found}"
        return found[0]

    async def test_a_sent_message_is_received_unchanged_as_attempt_one(self, queue: Queue) -> None:
        await queue.send(job_message(1))
        delivery = await self.receive_one(queue)
        assert delivery.message == job_message(1)
        assert delivery.attempt == 1
        assert delivery.receipt

    async def test_an_empty_queue_returns_nothing_without_waiting(self, queue: Queue) -> None:
        assert list(await queue.receive(10, 0)) == []

    async def test_an_acked_message_is_never_delivered_again(
        self, queue: Queue, advance: Advance
    ) -> None:
        await queue.send(job_message(1))
        await queue.ack(await self.receive_one(queue))
        await self.expire_visibility(advance)
        assert list(await queue.receive(10, 0)) == []

    async def test_acking_twice_is_not_an_error(self, queue: Queue) -> None:
        await queue.send(job_message(1))
        delivery = await self.receive_one(queue)
        await queue.ack(delivery)
        await queue.ack(delivery)
        assert list(await queue.receive(10, 0)) == []

    async def test_a_duplicate_send_is_queued_once(self, queue: Queue) -> None:
        await queue.send(job_message(1))
        await queue.send(job_message(1))
        received = await self.receive_all(queue, 1)
        assert [d.message for d in received] == [job_message(1)]

    async def test_a_duplicate_of_a_message_in_flight_is_dropped(
        self, queue: Queue, advance: Advance
    ) -> None:
        await queue.send(job_message(1))
        delivery = await self.receive_one(queue)
        await queue.send(job_message(1))
        await queue.ack(delivery)
        await self.expire_visibility(advance)
        assert list(await queue.receive(10, 0)) == []

    async def test_a_new_attempt_of_the_same_job_is_not_a_duplicate(self, queue: Queue) -> None:
        await queue.send(job_message(1, attempt=1))
        await queue.send(job_message(1, attempt=2))
        received = await self.receive_all(queue, 2)
        assert sorted(d.message.attempt for d in received) == [1, 2]

    async def test_every_sent_message_is_received_and_at_most_max_messages_at_once(
        self, queue: Queue
    ) -> None:
        for job_id in (1, 2, 3):
            await queue.send(job_message(job_id))
        first = await queue.receive(2, self.receive_wait_s)
        assert 1 <= len(first) <= 2
        rest = await self.receive_all(queue, 3 - len(first))
        assert sorted(d.message.job_id for d in [*first, *rest]) == [1, 2, 3]

    async def test_a_received_message_is_invisible_until_its_visibility_timeout(
        self, queue: Queue, advance: Advance
    ) -> None:
        await queue.send(job_message(1))
        await self.receive_one(queue)
        await advance(self.visibility_timeout_s * 0.3)
        assert list(await queue.receive(10, 0)) == []

    async def test_an_unacked_message_is_redelivered_with_the_next_attempt_number(
        self, queue: Queue, advance: Advance
    ) -> None:
        await queue.send(job_message(1))
        first = await self.receive_one(queue)
        await self.expire_visibility(advance)
        second = await self.receive_one(queue)
        assert second.message == first.message
        assert second.attempt == first.attempt + 1
        assert second.receipt != first.receipt

    async def test_a_stale_receipt_does_not_ack_the_newer_delivery(
        self, queue: Queue, advance: Advance
    ) -> None:
        await queue.send(job_message(1))
        stale = await self.receive_one(queue)
        await self.expire_visibility(advance)
        await self.receive_one(queue)
        await queue.ack(stale)
        await self.expire_visibility(advance)
        third = await self.receive_one(queue)
        assert third.message == job_message(1)
        assert third.attempt == 3

    async def test_a_message_past_max_attempts_is_dead_lettered_and_not_delivered_again(
        self, queue: Queue, advance: Advance
    ) -> None:
        await queue.send(job_message(1))
        for attempt in range(1, self.max_attempts + 1):
            assert (await self.receive_one(queue)).attempt == attempt
            await self.expire_visibility(advance)
        assert list(await queue.receive(10, 0)) == []
        await self.expire_visibility(advance)
        assert list(await queue.receive(10, 0)) == []
        dead = await queue.dead_letters()
        assert [(d.message, d.attempts) for d in dead] == [(job_message(1), self.max_attempts)]
        assert dead[0].reason

    async def test_a_retried_message_stays_hidden_until_its_delay_has_passed(
        self, queue: Queue, advance: Advance
    ) -> None:
        await queue.send(job_message(1))
        await queue.retry(await self.receive_one(queue), delay_s=self.visibility_timeout_s * 2)
        await advance(self.visibility_timeout_s)
        assert list(await queue.receive(10, 0)) == []
        await advance(self.visibility_timeout_s * 1.5)
        delivery = await self.receive_one(queue)
        assert delivery.message == job_message(1)
        assert delivery.attempt == 2

    async def test_retries_count_towards_max_attempts(self, queue: Queue) -> None:
        await queue.send(job_message(1))
        for attempt in range(1, self.max_attempts + 1):
            delivery = await self.receive_one(queue)
            assert delivery.attempt == attempt
            await queue.retry(delivery, delay_s=0)
        assert list(await queue.receive(10, 0)) == []
        assert [d.attempts for d in await queue.dead_letters()] == [self.max_attempts]

    async def test_a_dead_lettered_message_keeps_its_reason_and_stays_dead(
        self, queue: Queue, advance: Advance
    ) -> None:
        await queue.send(job_message(1))
        await queue.dead_letter(await self.receive_one(queue), "label cpu=0 is invalid")
        await self.expire_visibility(advance)
        assert list(await queue.receive(10, 0)) == []
        dead = await queue.dead_letters()
        assert [(d.message, d.reason, d.attempts) for d in dead] == [
            (job_message(1), "label cpu=0 is invalid", 1)
        ]

    async def test_dead_letters_are_listed_oldest_first(self, queue: Queue) -> None:
        for job_id in (1, 2):
            await queue.send(job_message(job_id))
        deliveries = {d.message.job_id: d for d in await self.receive_all(queue, 2)}
        await queue.dead_letter(deliveries[JobId(2)], "second")
        await queue.dead_letter(deliveries[JobId(1)], "first")
        dead = await queue.dead_letters()
        assert [(d.message, d.reason) for d in dead] == [
            (job_message(2), "second"),
            (job_message(1), "first"),
        ]

    async def test_two_concurrent_receivers_never_get_the_same_message(self, queue: Queue) -> None:
        await queue.send(job_message(1))
        results: Sequence[Sequence[Delivery]] = await asyncio.gather(
            queue.receive(1, 0), queue.receive(1, 0)
        )
        assert sum(len(batch) for batch in results) == 1

    async def test_a_waiting_receive_gets_a_message_sent_meanwhile(self, queue: Queue) -> None:
        waiting = asyncio.create_task(queue.receive(1, max(self.receive_wait_s, 5.0)))
        await asyncio.sleep(0.05)
        await queue.send(job_message(1))
        deliveries = await waiting
        assert [d.message for d in deliveries] == [job_message(1)]

    # -- redrive and purge -------------------------------------------------------------

    async def test_a_redriven_dead_letter_is_received_again_as_attempt_one(
        self, queue: Queue, advance: Advance
    ) -> None:
        dead = await self.exhaust(queue, advance, job_message(1))
        assert dead.id and dead.reason and dead.attempts == self.max_attempts
        redriven = await queue.redrive([dead.id])
        assert (redriven.moved, redriven.not_found, redriven.unreadable) == ((dead.id,), (), ())
        assert list(await queue.dead_letters()) == []
        delivery = await self.receive_one(queue)
        assert (delivery.message, delivery.attempt) == (job_message(1), 1)
        await queue.ack(delivery)
        await self.expire_visibility(advance)
        assert list(await queue.receive(10, 0)) == []
        assert list(await queue.dead_letters()) == []

    async def test_a_redriven_message_gets_its_full_attempts_again(
        self, queue: Queue, advance: Advance
    ) -> None:
        dead = await self.exhaust(queue, advance, job_message(1))
        await queue.redrive([dead.id])
        again = await self.exhaust(queue, advance, job_message(1), send=False)
        assert again.attempts == self.max_attempts

    async def test_redriving_everything_moves_each_dead_letter_once(self, queue: Queue) -> None:
        for job_id in (1, 2):
            await queue.send(job_message(job_id))
        for delivery in await self.receive_all(queue, 2):
            await queue.dead_letter(delivery, "poison")
        ids = [d.id for d in await queue.dead_letters()]
        assert len(set(ids)) == 2
        redriven = await queue.redrive(None)
        assert sorted(redriven.moved) == sorted(ids)
        received = await self.receive_all(queue, 2)
        assert sorted((d.message.job_id, d.attempt) for d in received) == [(1, 1), (2, 1)]
        assert (await queue.redrive(None)).moved == ()

    async def test_an_unknown_or_already_redriven_id_moves_nothing_and_is_reported(
        self, queue: Queue
    ) -> None:
        await queue.send(job_message(1))
        await queue.dead_letter(await self.receive_one(queue), "poison")
        (dead,) = await queue.dead_letters()
        unknown = await queue.redrive(["no-such-dead-letter", "0-1"])
        assert (unknown.moved, unknown.not_found) == ((), ("no-such-dead-letter", "0-1"))
        assert [d.id for d in await queue.dead_letters()] == [dead.id]
        assert (await queue.redrive([dead.id])).moved == (dead.id,)
        assert (await queue.redrive([dead.id])).not_found == (dead.id,)
        received = await self.receive_all(queue, 1)
        assert [d.message for d in received] == [job_message(1)]

    async def test_dead_letter_ids_and_times_stay_the_same_between_listings(
        self, queue: Queue
    ) -> None:
        for job_id in (1, 2):
            await queue.send(job_message(job_id))
        deliveries = {d.message.job_id: d for d in await self.receive_all(queue, 2)}
        await queue.dead_letter(deliveries[JobId(1)], "first")
        await queue.dead_letter(deliveries[JobId(2)], "second")
        first = await queue.dead_letters()
        second = await queue.dead_letters()
        assert [(d.id, d.dead_lettered_at) for d in first] == [
            (d.id, d.dead_lettered_at) for d in second
        ]
        stamps = [d.dead_lettered_at for d in first if d.dead_lettered_at is not None]
        assert stamps == sorted(stamps)
        assert all(d.size > 0 for d in first)

    async def test_a_purged_dead_letter_is_gone_for_good(self, queue: Queue) -> None:
        for job_id in (1, 2):
            await queue.send(job_message(job_id))
        deliveries = {d.message.job_id: d for d in await self.receive_all(queue, 2)}
        await queue.dead_letter(deliveries[JobId(1)], "poison")
        await queue.dead_letter(deliveries[JobId(2)], "poison")
        doomed, kept = await queue.dead_letters()
        assert list(await queue.purge([doomed.id, "no-such-dead-letter"])) == [doomed.id]
        assert [d.id for d in await queue.dead_letters()] == [kept.id]
        assert (await queue.redrive([doomed.id])).not_found == (doomed.id,)
        assert list(await queue.purge([doomed.id])) == []
        assert list(await queue.receive(10, 0)) == []

    async def test_an_unreadable_entry_is_listed_without_its_content_and_only_purged(
        self, queue: Queue, send_raw: SendRaw | None
    ) -> None:
        if send_raw is None:
            pytest.skip("this adapter's test offers no raw writes (override send_raw)")
        await send_raw(UNREADABLE)
        await queue.send(job_message(1))
        assert [d.message for d in await self.receive_all(queue, 1)] == [job_message(1)]
        (dead,) = await queue.dead_letters()
        assert dead.message is None and dead.reason.startswith("unreadable message")
        assert dead.size == len(UNREADABLE.encode()) and dead.attempts == 1
        assert "ghs_contractSecret" not in repr(dead)
        redriven = await queue.redrive(None)
        assert (redriven.moved, redriven.unreadable) == ((), (dead.id,))
        assert (await queue.redrive([dead.id])).unreadable == (dead.id,)
        assert [d.id for d in await queue.dead_letters()] == [dead.id]
        assert list(await queue.purge([dead.id])) == [dead.id]
        assert list(await queue.dead_letters()) == []
        assert list(await queue.receive(10, 0)) == []
