"""An in-memory job queue with the delivery semantics of SQS FIFO and Valkey Streams.

Unit tests and the "memory" mode need a queue that behaves like the real ones where it
matters: at-least-once delivery, visibility timeouts, attempt counting, deduplication
and a dead-letter queue with redrive and purge. Messages are stored as JSON through the
message converter, so a value that a real queue could not carry fails here too, and
:meth:`MemoryQueue.send_raw_nowait` stores what is not a message at all, as a foreign
writer could on a real queue.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

import attrs

from runs_fleet_core.converters import dumps, loads, make_message_converter
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.ports.observe import Clock
from runs_fleet_core.ports.queue import DeadLetter, Delivery, Redriven

_POLL_STEP_S = 0.01


@attrs.define(kw_only=True)
class _Entry:
    """One stored message. ``receipt`` is set while it is in flight."""

    seq: int
    payload: str
    dedup_id: str
    visible_at: datetime
    attempts: int = 0
    receipt: str | None = None


@attrs.frozen(kw_only=True)
class _Dead:
    payload: str
    dedup_id: str
    reason: str
    attempts: int
    at: datetime


class MemoryQueue:
    """The :class:`~runs_fleet_core.ports.Queue` port, in memory, on a :class:`Clock`.

    Visibility timeouts and retry delays are measured on ``clock`` (a ``ManualClock``
    in tests); only ``receive``'s ``wait_s`` is real time, spent polling in small steps.
    A message whose next delivery would exceed ``max_attempts`` is dead-lettered with
    the reason ``"exceeded N attempts"`` instead. Every call's read-check-write runs
    without awaiting, so it is atomic under asyncio.
    """

    def __init__(
        self, clock: Clock, *, max_attempts: int = 3, visibility_timeout_s: float = 30.0
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if visibility_timeout_s <= 0:
            raise ValueError(f"visibility_timeout_s must be positive, got {visibility_timeout_s}")
        self._clock = clock
        self._max_attempts = max_attempts
        self._visibility = timedelta(seconds=visibility_timeout_s)
        self._converter = make_message_converter()
        self._entries: dict[int, _Entry] = {}
        self._receipts: dict[str, int] = {}
        self._live_dedup: Counter[str] = Counter()
        self._dead: dict[str, _Dead] = {}  # insertion order is burial order
        self._dead_ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._deliveries = itertools.count(1)

    async def send(self, message: JobMessage) -> None:
        """Queue ``message``, unless one with its ``dedup_id`` is queued or in flight."""
        await asyncio.sleep(0)
        self.send_nowait(message)

    def send_nowait(self, message: JobMessage) -> None:
        """:meth:`send` without yielding to the event loop, for a caller that must not
        be interrupted between its own write and this one (the memory outbox)."""
        if self._live_dedup[message.dedup_id] > 0:
            return
        self._enqueue(dumps(self._converter, message), message.dedup_id, attempts=0)

    def send_raw_nowait(self, payload: str) -> None:
        """Queue ``payload`` as it is, message or not: a test of what the queue and its
        consumers do with an entry they cannot read (it is dead-lettered on receive)."""
        self._enqueue(payload, f"raw:{next(self._seq)}", attempts=0)

    async def receive(self, max_messages: int, wait_s: float) -> Sequence[Delivery]:
        """Up to ``max_messages`` visible messages, oldest first, waiting at most
        ``wait_s`` real seconds for the first one."""
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_s, 0.0)
        while True:
            await asyncio.sleep(0)
            taken = self._take(max_messages)
            remaining = deadline - loop.time()
            if taken or remaining <= 0:
                return taken
            await asyncio.sleep(min(_POLL_STEP_S, remaining))

    async def ack(self, delivery: Delivery) -> None:
        """Remove the message if ``delivery`` is its latest delivery; else do nothing."""
        await asyncio.sleep(0)
        entry = self._current(delivery)
        if entry is not None:
            self._remove(entry)

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """Make the message visible again ``delay_s`` clock seconds from now, keeping
        its attempt count. A stale delivery is ignored."""
        await asyncio.sleep(0)
        entry = self._current(delivery)
        if entry is None:
            return
        del self._receipts[delivery.receipt]
        entry.receipt = None
        entry.visible_at = self._clock.now() + timedelta(seconds=max(delay_s, 0.0))

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Set the message aside with ``reason``. A stale delivery is ignored."""
        await asyncio.sleep(0)
        entry = self._current(delivery)
        if entry is not None:
            self._bury(entry, reason)

    async def dead_letters(self) -> Sequence[DeadLetter]:
        """The dead letters, oldest first, ids counting from 1."""
        await asyncio.sleep(0)
        return [
            DeadLetter(
                id=dead_id,
                message=self._decoded(dead.payload),
                reason=dead.reason,
                attempts=dead.attempts,
                dead_lettered_at=dead.at,
                size=len(dead.payload.encode()),
            )
            for dead_id, dead in self._dead.items()
        ]

    async def redrive(self, ids: Sequence[str] | None = None) -> Redriven:
        """Move dead letters back to the queue with their attempts reset, in one step
        (nothing awaits between the add and the removal)."""
        await asyncio.sleep(0)
        moved, not_found, unreadable = [], [], []
        for dead_id in list(self._dead) if ids is None else ids:
            dead = self._dead.get(dead_id)
            if dead is None:
                not_found.append(dead_id)
            elif self._decoded(dead.payload) is None:
                unreadable.append(dead_id)
            else:
                if self._live_dedup[dead.dedup_id] <= 0:
                    self._enqueue(dead.payload, dead.dedup_id, attempts=0)
                del self._dead[dead_id]
                moved.append(dead_id)
        return Redriven(
            moved=tuple(moved), not_found=tuple(not_found), unreadable=tuple(unreadable)
        )

    async def purge(self, ids: Sequence[str]) -> Sequence[str]:
        """Delete the dead letters ``ids``; the ids that were there."""
        await asyncio.sleep(0)
        return [dead_id for dead_id in ids if self._dead.pop(dead_id, None) is not None]

    def pending_count(self) -> int:
        """How many messages are queued or in flight (dead letters excluded)."""
        return len(self._entries)

    def _enqueue(self, payload: str, dedup_id: str, *, attempts: int) -> None:
        seq = next(self._seq)
        self._entries[seq] = _Entry(
            seq=seq,
            payload=payload,
            dedup_id=dedup_id,
            visible_at=self._clock.now(),
            attempts=attempts,
        )
        self._live_dedup[dedup_id] += 1

    def _take(self, max_messages: int) -> list[Delivery]:
        now = self._clock.now()
        taken: list[Delivery] = []
        for entry in list(self._entries.values()):  # insertion order is send order
            if len(taken) >= max_messages:
                break
            if entry.visible_at > now:
                continue
            if entry.receipt is not None:
                del self._receipts[entry.receipt]
                entry.receipt = None
            if entry.attempts >= self._max_attempts:
                self._bury(entry, f"exceeded {self._max_attempts} attempts")
                continue
            try:
                message = loads(self._converter, entry.payload, JobMessage)
            except ValueError as exc:
                entry.attempts += 1
                self._bury(entry, f"unreadable message: {exc}")
                continue
            taken.append(self._deliver(entry, message, now))
        return taken

    def _deliver(self, entry: _Entry, message: JobMessage, now: datetime) -> Delivery:
        entry.attempts += 1
        entry.receipt = f"{entry.seq}:{next(self._deliveries)}"
        entry.visible_at = now + self._visibility
        self._receipts[entry.receipt] = entry.seq
        return Delivery(message=message, receipt=entry.receipt, attempt=entry.attempts)

    def _decoded(self, payload: str) -> JobMessage | None:
        try:
            return loads(self._converter, payload, JobMessage)
        except ValueError:
            return None

    def _current(self, delivery: Delivery) -> _Entry | None:
        seq = self._receipts.get(delivery.receipt)
        return None if seq is None else self._entries[seq]

    def _bury(self, entry: _Entry, reason: str) -> None:
        self._remove(entry)
        self._dead[str(next(self._dead_ids))] = _Dead(
            payload=entry.payload,
            dedup_id=entry.dedup_id,
            reason=reason,
            attempts=entry.attempts,
            at=self._clock.now(),
        )

    def _remove(self, entry: _Entry) -> None:
        del self._entries[entry.seq]
        if entry.receipt is not None:
            self._receipts.pop(entry.receipt, None)
        self._live_dedup[entry.dedup_id] -= 1
        if self._live_dedup[entry.dedup_id] <= 0:
            del self._live_dedup[entry.dedup_id]
