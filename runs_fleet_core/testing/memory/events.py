"""A runner event feed in memory: tests push events and see which were acked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import attrs

from runs_fleet_core.ports.events import RunnerEvent


class MemoryRunnerEvents:
    """The :class:`~runs_fleet_core.ports.events.RunnerEvents` port, in memory.

    An event stays pending until acked: each ``receive`` hands out the pending events
    (so one that was received but not acked comes again, as a redelivery would)."""

    def __init__(self) -> None:
        self._arrived = asyncio.Event()
        self._pending: dict[str, RunnerEvent] = {}
        self.acked: list[RunnerEvent] = []
        self._count = 0

    def push(self, event: RunnerEvent) -> RunnerEvent:
        """Add ``event`` with a fresh receipt; returns it as it will be delivered."""
        self._count += 1
        event = attrs.evolve(event, receipt=f"event-{self._count}")
        self._pending[event.receipt] = event
        self._arrived.set()
        return event

    @property
    def pending(self) -> Sequence[RunnerEvent]:
        return list(self._pending.values())

    async def receive(self, max_events: int, wait_s: float) -> Sequence[RunnerEvent]:
        if not self._pending:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), max(wait_s, 0.0))
        await asyncio.sleep(0)
        return list(self._pending.values())[:max_events]

    async def ack(self, event: RunnerEvent) -> None:
        await asyncio.sleep(0)
        acked = self._pending.pop(event.receipt, None)
        if acked is not None:
            self.acked.append(acked)
