"""The job queue: at-least-once delivery of :class:`JobMessage` values.

"At least once" means a message may be delivered more than once (after a consumer
crash, a visibility timeout, a network split), so every consumer must be idempotent;
it also means a message is never dropped until it is acknowledged or dead-lettered.
Consumers acknowledge only after the message's effect is durable.

A message that keeps failing, or that a queue cannot even read, is dead-lettered: set
aside where a person can see why (:meth:`Queue.dead_letters`), send it back once the
cause is fixed (:meth:`Queue.redrive`) or drop it (:meth:`Queue.purge`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from runs_fleet_core.domain.messages import JobMessage


@attrs.frozen(kw_only=True)
class Delivery:
    """One delivery of a message. ``receipt`` is the adapter's handle for ack/retry;
    ``attempt`` counts deliveries of this message, starting at 1."""

    message: JobMessage
    receipt: str
    attempt: int = 1


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A message set aside after too many attempts or as undeliverable.

    ``id`` names it for :meth:`Queue.redrive` and :meth:`Queue.purge` and stays the same
    while it is dead (a stream entry id, an SQS message id). ``message`` is ``None`` for
    an entry that holds no readable message: it cannot be redriven, only purged, and
    its raw content is never handed out (``size`` says how large it is, in bytes).
    ``dead_lettered_at`` is when it was set aside, if the backend knows.
    """

    id: str
    message: JobMessage | None
    reason: str
    attempts: int
    dead_lettered_at: datetime | None = None
    size: int = 0


@attrs.frozen(kw_only=True)
class Redriven:
    """What :meth:`Queue.redrive` did with the dead letters it was asked to move."""

    moved: tuple[str, ...] = ()
    """Ids now back in the job queue."""
    not_found: tuple[str, ...] = ()
    """Ids that are not dead letters (never were, or were moved or purged meanwhile)."""
    unreadable: tuple[str, ...] = ()
    """Ids of dead letters that hold no readable message: left in place (purge them)."""


@runtime_checkable
class Queue(Protocol):
    async def send(self, message: JobMessage) -> None:
        """Store the message durably before returning.

        Sends with an equal ``message.dedup_id`` while an earlier one is still queued or
        in flight are dropped (a duplicate webhook must not queue twice). After an ack
        an adapter may keep dropping that id for a while (SQS FIFO does, for five
        minutes); callers must not rely on either behaviour and use a new attempt
        number for a deliberate resend.
        """
        ...

    async def receive(self, max_messages: int, wait_s: float) -> Sequence[Delivery]:
        """Up to ``max_messages`` deliveries, waiting at most ``wait_s`` for the first.

        A received message is invisible to other consumers until acked, retried, or its
        visibility timeout passes (then it is delivered again with ``attempt + 1``).
        A message past the maximum number of attempts is dead-lettered instead.
        """
        ...

    async def ack(self, delivery: Delivery) -> None:
        """Remove the message for good. Acking twice is not an error."""
        ...

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """Make the message visible again after ``delay_s``.

        The attempt count is not reset: the next delivery is ``attempt + 1`` and counts
        towards the maximum, so a message retried forever still ends in the dead-letter
        queue.
        """
        ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the message to the dead-letter queue with ``reason``; it stays there
        until a person redrives it."""
        ...

    async def dead_letters(self) -> Sequence[DeadLetter]:
        """The dead letters, oldest first, those without a readable message included."""
        ...

    async def redrive(self, ids: Sequence[str] | None = None) -> Redriven:
        """Move the dead letters ``ids`` (``None``: every one) back to the job queue, as
        fresh messages: their attempts count from 1 again and their dedup id is free.

        Each move adds the message to the queue, then removes the dead letter (or does
        both at once): a crash between the two leaves it in both places, never in
        neither, and redriving it again is dropped by the queue's deduplication (a
        queue without deduplication may then deliver it twice; dispatch's job claim
        absorbs that). An unknown id is no error: it is reported in ``not_found``, and
        a dead letter without a readable message in ``unreadable``.
        """
        ...

    async def purge(self, ids: Sequence[str]) -> Sequence[str]:
        """Delete the dead letters ``ids`` for good; the ids that were deleted (unknown
        ones are left out)."""
        ...
