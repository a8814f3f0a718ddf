"""The dispatch worker: drain the job queue continuously with bounded concurrency.

One production system took one batch per 25-second tick and so drained about ten
messages per 25 seconds while jobs waited. This loop asks the queue for more as soon as
a slot is free, keeps at most ``concurrency`` deliveries in flight, and waits on the
queue's own long poll (never spinning) when it is empty. A delivery that fails with an
unexpected exception is logged, counted and left unacknowledged, so the queue delivers
it again (and dead-letters it after too many attempts); the worker itself carries on.
On ``stop`` it takes nothing new and returns once the deliveries in flight are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Protocol

import attrs

from runs_fleet_core.ports import Delivery, Metrics, Queue
from runs_fleet_core.usecases.dispatch import backoff_delay

_log = logging.getLogger(__name__)

MIN_IDLE_S = 0.05
"""The shortest pause after an empty receive, whatever ``wait_s`` is: a queue adapter
that answers "nothing" at once must not turn the loop into a busy loop."""
MAX_RECEIVE_BACKOFF_S = 30.0
RETRY_BASE_S = 5.0
RETRY_CAP_S = 300.0
"""Backoff of a delivery whose dispatch raised unexpectedly (full jitter, doubling)."""


class DeliveryHandler(Protocol):
    """What the worker feeds deliveries to (the :class:`Dispatcher`)."""

    async def handle(self, delivery: Delivery) -> object:
        """Process one delivery, acknowledging, retrying or dead-lettering it."""
        ...


@attrs.define
class WorkerReport:
    """What one run of the worker did: deliveries handled, and those that raised."""

    handled: int = 0
    failed: int = 0
    receive_errors: int = 0


async def run_worker(
    *,
    queue: Queue,
    dispatcher: DeliveryHandler,
    stop: asyncio.Event,
    metrics: Metrics,
    concurrency: int = 8,
    batch: int = 10,
    wait_s: float = 1.0,
) -> WorkerReport:
    """Receive and dispatch deliveries until ``stop`` is set, then finish those in flight.

    At most ``concurrency`` deliveries are handled at once; each receive asks for at most
    ``min(batch, free slots)`` and waits up to ``wait_s`` for the first. ``stop`` is
    noticed within ``wait_s`` (a receive already waiting is not interrupted, so no
    message is taken and then dropped). Cancelling the task cancels the deliveries in
    flight, which stay unacknowledged.
    """
    if concurrency < 1 or batch < 1:
        raise ValueError(f"concurrency and batch must be at least 1, got {concurrency}, {batch}")
    worker = _Worker(
        queue=queue,
        dispatcher=dispatcher,
        stop=stop,
        metrics=metrics,
        concurrency=concurrency,
        batch=batch,
        wait_s=wait_s,
    )
    return await worker.run()


@attrs.define(kw_only=True)
class _Worker:
    queue: Queue
    dispatcher: DeliveryHandler
    stop: asyncio.Event
    metrics: Metrics
    concurrency: int
    batch: int
    wait_s: float
    report: WorkerReport = attrs.field(factory=WorkerReport)
    in_flight: set[asyncio.Task[None]] = attrs.field(factory=set)
    _rng: random.Random = attrs.field(factory=random.Random)

    async def run(self) -> WorkerReport:
        try:
            await self._drain()
            if self.in_flight:
                await asyncio.wait(self.in_flight)
        finally:
            for task in self.in_flight:
                task.cancel()
            if self.in_flight:
                await asyncio.wait(self.in_flight)
            self.metrics.gauge("worker_in_flight", 0.0)
        return self.report

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self.stop.is_set():
            free = self.concurrency - len(self.in_flight)
            if free <= 0:
                await _first_of(self.stop, self.in_flight)
                continue
            started = loop.time()
            try:
                deliveries = await self.queue.receive(min(self.batch, free), self.wait_s)
            except Exception:
                failures += 1
                self.report.receive_errors += 1
                self.metrics.increment("worker_receive_errors")
                _log.exception("receiving from the job queue failed (%d in a row)", failures)
                await _pause(self.stop, min(MAX_RECEIVE_BACKOFF_S, MIN_IDLE_S * 2**failures))
                continue
            failures = 0
            for delivery in deliveries:
                task = asyncio.create_task(self._handle(delivery))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
            self.metrics.gauge("worker_in_flight", float(len(self.in_flight)))
            if not deliveries:
                await _pause(self.stop, max(self.wait_s, MIN_IDLE_S) - (loop.time() - started))

    async def _handle(self, delivery: Delivery) -> None:
        """Handle one delivery; an unexpected exception is logged and counted, and the
        delivery is given back to the queue (see :meth:`_give_back`)."""
        try:
            outcome = await self.dispatcher.handle(delivery)
        except Exception:
            self.report.failed += 1
            self.metrics.increment("worker_errors")
            _log.exception(
                "dispatching job %s (delivery attempt %d) failed; it will be delivered again",
                delivery.message.job_id,
                delivery.attempt,
            )
            await self._give_back(delivery)
            return
        self.report.handled += 1
        self.metrics.increment("worker_deliveries", labels={"outcome": str(outcome)})

    async def _give_back(self, delivery: Delivery) -> None:
        """Retry the delivery after a backoff: the failure counts as an attempt, so a
        message that keeps failing ends in the dead-letter queue. A queue that renews
        the deliveries it hands out (so that slow dispatches keep their messages) stops
        renewing this one even when the retry itself fails, so the visibility timeout
        brings it back instead of it staying hidden behind a live worker."""
        delay = backoff_delay(
            delivery.attempt, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S, rng=self._rng
        )
        try:
            await self.queue.retry(delivery, delay)
        except Exception as exc:  # the queue is down: its visibility timeout takes over
            _log.warning("job %s: its delivery could not be retried: %s",
                         delivery.message.job_id, exc)  # fmt: skip


async def _first_of(stop: asyncio.Event, tasks: set[asyncio.Task[None]]) -> None:
    """Wait until one of ``tasks`` ends or ``stop`` is set."""
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` (nothing if not positive), waking early when ``stop`` is set."""
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
