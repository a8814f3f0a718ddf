"""Part 2 of ``bench/local.py``, dispatch: ``run_worker`` draining jobs through an
embedded Valkey to the in-memory provider, against the raw Valkey queue moving as many
messages."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Mapping
from pathlib import Path

from harness import (
    DISPATCH_JOBS,
    DISPATCH_TIMEOUT_S,
    INTERRUPTS,
    WORKER_CONCURRENCY,
    run_async,
)
from loadgen import repository_name

from runs_fleet_core.domain.ids import JobId, RunId
from runs_fleet_core.domain.labels import LabelDefaults, parse_label
from runs_fleet_core.domain.messages import JobMessage, WorkflowJobAction, WorkflowJobEvent
from runs_fleet_core.ports import Delivery, SystemClock
from runs_fleet_core.testing.memory import (
    FakeGitHub,
    MemoryConfigStore,
    MemoryProvider,
    RecordingMetrics,
)
from runs_fleet_core.usecases.dispatch import Dispatcher, DispatchOutcome
from runs_fleet_core.usecases.intake import Intake
from runs_fleet_core.usecases.worker import run_worker


class _Counting:
    """The dispatcher, noting when the ``total``-th runner is launched."""

    def __init__(self, dispatcher: Dispatcher, total: int) -> None:
        self.dispatcher = dispatcher
        self.total = total
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.done = asyncio.Event()
        self.finished_at = 0.0

    async def handle(self, delivery: Delivery) -> DispatchOutcome:
        outcome = await self.dispatcher.handle(delivery)
        self.outcomes[outcome.value] += 1
        if self.outcomes[DispatchOutcome.LAUNCHED.value] == self.total:
            self.finished_at = time.perf_counter()
            self.done.set()
        return outcome


def _message(job_id: int, clock: SystemClock) -> JobMessage:
    spec = parse_label(f"runs-fleet={100_000 + job_id // 4}/cpu=2/arch=x64")
    repository = repository_name(job_id)
    return JobMessage(
        job_id=JobId(job_id),
        run_id=RunId(spec.run_id),
        repository=repository,
        spec=spec.for_job(JobId(job_id), repository),
        attempt=1,
        enqueued_at=clock.now(),
    )


class DispatchResult:
    def __init__(self, raw_s: float, dispatch_s: float, outcomes: Mapping[str, int], runners: int):
        self.raw_s = raw_s
        self.dispatch_s = dispatch_s
        self.outcomes = dict(outcomes)
        self.runners = runners


async def _raw_queue(url: str) -> float:
    """Seconds for the raw Valkey queue to send, receive and ack ``DISPATCH_JOBS``."""
    from runs_fleet_valkey.queue import ValkeyQueue

    clock = SystemClock()
    messages = [_message(n + 1, clock) for n in range(DISPATCH_JOBS)]
    queue = ValkeyQueue.from_url(url, name="bench-raw:jobs")
    try:
        started = time.perf_counter()
        for message in messages:
            INTERRUPTS.check()
            await queue.send(message)
        moved = 0
        while moved < DISPATCH_JOBS:
            INTERRUPTS.check()
            deliveries = await queue.receive(10, 1.0)
            if not deliveries:
                raise RuntimeError(f"the raw queue gave back {moved} of {DISPATCH_JOBS}")
            for delivery in deliveries:
                await queue.ack(delivery)
            moved += len(deliveries)
        return time.perf_counter() - started
    finally:
        await queue.aclose()


async def _dispatch(url: str) -> tuple[float, Mapping[str, int], int]:
    """Jobs recorded and enqueued by ``Intake`` (not timed), then ``run_worker`` timed
    from its start until the last runner is launched."""
    from runs_fleet_valkey.queue import ValkeyQueue
    from runs_fleet_valkey.state import ValkeyStateStore

    clock, metrics = SystemClock(), RecordingMetrics()
    queue = ValkeyQueue.from_url(url, name="bench-dispatch:jobs")
    state = ValkeyStateStore.from_url(url, prefix="bench-dispatch")
    provider = MemoryProvider(clock)
    try:
        intake = Intake(
            state=state,
            queue=queue,
            clock=clock,
            metrics=metrics,
            labels=LabelDefaults(),
            backends=("memory",),
            default_backend="memory",
        )
        for n in range(1, DISPATCH_JOBS + 1):
            INTERRUPTS.check()
            await intake.take(
                WorkflowJobEvent(
                    action=WorkflowJobAction.QUEUED,
                    job_id=JobId(n),
                    run_id=100_000 + n // 4,
                    run_attempt=1,
                    repository=repository_name(n),
                    labels=(f"runs-fleet={100_000 + n // 4}/cpu=2/arch=x64",),
                )
            )
        counting = _Counting(
            Dispatcher(
                state=state,
                queue=queue,
                configs=MemoryConfigStore(),
                github=FakeGitHub(),
                providers={"memory": provider},
                pool_providers={},
                clock=clock,
                metrics=metrics,
                owner="bench",
                default_backend="memory",
            ),
            DISPATCH_JOBS,
        )
        stop = asyncio.Event()
        started = time.perf_counter()
        worker = asyncio.create_task(
            run_worker(
                queue=queue,
                dispatcher=counting,
                stop=stop,
                metrics=metrics,
                concurrency=WORKER_CONCURRENCY,
            )
        )
        try:
            waits = {
                asyncio.create_task(counting.done.wait()),
                asyncio.create_task(INTERRUPTS.wait()),
            }
            await asyncio.wait(waits, timeout=DISPATCH_TIMEOUT_S, return_when="FIRST_COMPLETED")
            for waiting in waits:
                waiting.cancel()
            INTERRUPTS.check()
        finally:
            stop.set()
            await worker
        ended = counting.finished_at or time.perf_counter()
        return ended - started, counting.outcomes, len(provider.created)
    finally:
        await queue.aclose()
        await state.aclose()


async def _dispatch_bench(state_dir: Path) -> DispatchResult:
    from runs_fleet_local.embedded_valkey import embedded_valkey

    async with embedded_valkey(state_dir) as settings:
        url = settings["RUNS_FLEET_VALKEY_URL"]
        raw_s = await _raw_queue(url)
        dispatch_s, outcomes, runners = await _dispatch(url)
    return DispatchResult(raw_s, dispatch_s, outcomes, runners)


def dispatch_throughput(root: Path) -> DispatchResult:
    return run_async(_dispatch_bench(root / "dispatch-state"))
