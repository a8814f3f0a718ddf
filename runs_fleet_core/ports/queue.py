"""The job queue: at-least-once delivery of :class:`JobMessage` values.

"At least once" means a message may be delivered more than once (after a consumer
crash, a visibility timeout, a network split), so every consumer must be idempotent;
it also means a message is never dropped until it is acknowledged or dead-lettered.
Consumers acknowledge only after the message's effect is durable.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    """A message set aside after too many attempts or as undeliverable."""

    message: JobMessage
    reason: str
    attempts: int


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
        """The dead-lettered messages, oldest first."""
        ...
