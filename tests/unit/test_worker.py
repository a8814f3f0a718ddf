"""The dispatch worker: continuous draining, bounded concurrency, graceful stop, survival.

The queue and the use cases are the in-memory ones; a few tests wrap the queue or the
dispatcher to watch what the worker asks of them. No test asserts a wall-clock time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence

import pytest

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.ports import Delivery
from runs_fleet_core.usecases.worker import WorkerReport, run_worker
from tests.unit.conftest import World, event

TIMEOUT_S = 10.0


class SpyQueue:
    """Records every receive (what was asked, how many came back) and forwards."""

    def __init__(self, world: World) -> None:
        self.inner = world.queue
        self.asked: list[int] = []
        self.got: list[int] = []
        self.fail_receives = 0

    async def receive(self, max_messages: int, wait_s: float) -> Sequence[Delivery]:
        self.asked.append(max_messages)
        if self.fail_receives:
            self.fail_receives -= 1
            raise ConnectionError("queue unreachable")
        deliveries = await self.inner.receive(max_messages, wait_s)
        self.got.append(len(deliveries))
        return deliveries

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class GatedDispatcher:
    """Holds every delivery until ``gate`` opens; tracks how many it holds at once."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.active = 0
        self.peak = 0
        self.handled: list[JobId] = []
        self.started = asyncio.Event()

    async def handle(self, delivery: Delivery) -> str:
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.started.set()
        try:
            await self.gate.wait()
        finally:
            self.active -= 1
        self.handled.append(delivery.message.job_id)
        return "launched"


async def _queue_jobs(world: World, count: int, first: int = 1) -> None:
    intake = world.intake()
    for job_id in range(first, first + count):
        await intake.take(event(job_id))


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (polling) until ``condition()`` holds; fail after ``TIMEOUT_S``."""
    for _ in range(int(TIMEOUT_S / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition did not come true in time")


def _errors_reach(world: World, count: int) -> bool:
    return world.metrics.count("worker_errors") >= count


def _start(world: World, stop: asyncio.Event, **kwargs: object) -> asyncio.Task[WorkerReport]:
    options: dict[str, object] = {
        "queue": world.queue,
        "dispatcher": world.dispatcher(),
        "metrics": world.metrics,
        "wait_s": 0.05,
    } | kwargs
    return asyncio.create_task(run_worker(stop=stop, **options))  # type: ignore[arg-type]


async def test_it_drains_every_message_into_one_runner_each(world: World) -> None:
    await _queue_jobs(world, 40)
    stop = asyncio.Event()
    task = _start(world, stop, concurrency=8)
    await _until(lambda: world.queue.pending_count() == 0 and len(world.provider.created) == 40)
    stop.set()
    report = await asyncio.wait_for(task, TIMEOUT_S)
    assert report == WorkerReport(handled=40, failed=0, receive_errors=0)
    assert world.metrics.count("worker_deliveries", outcome="launched") == 40
    assert world.metrics.gauge_value("worker_in_flight") == 0


async def test_it_keeps_receiving_while_messages_wait_instead_of_one_batch_per_tick(
    world: World,
) -> None:
    await _queue_jobs(world, 30)
    spy = SpyQueue(world)
    stop = asyncio.Event()
    task = _start(world, stop, queue=spy, concurrency=4, batch=3, wait_s=0.5)
    await _until(lambda: len(world.provider.created) == 30)
    stop.set()
    await asyncio.wait_for(task, TIMEOUT_S)
    first_empty = spy.got.index(0) if 0 in spy.got else len(spy.got)
    assert sum(spy.got[:first_empty]) == 30, "a receive came back empty while messages waited"
    assert max(spy.asked) == 3


async def test_no_more_than_concurrency_deliveries_are_in_flight(world: World) -> None:
    await _queue_jobs(world, 12)
    spy, dispatcher = SpyQueue(world), GatedDispatcher()
    stop = asyncio.Event()
    task = _start(world, stop, queue=spy, dispatcher=dispatcher, concurrency=5, batch=10)
    await _until(lambda: dispatcher.active == 5)
    await asyncio.sleep(0.05)  # let the worker try for more, if it would
    assert dispatcher.peak == 5
    assert spy.asked[0] == 5, "the first receive asks only for the free slots"
    assert len(spy.asked) == 1, "no receive while every slot is taken"
    dispatcher.gate.set()
    await _until(lambda: len(dispatcher.handled) == 12)
    stop.set()
    await asyncio.wait_for(task, TIMEOUT_S)
    assert dispatcher.peak == 5
    assert all(asked <= 5 for asked in spy.asked)


async def test_stop_takes_nothing_new_and_waits_for_deliveries_in_flight(world: World) -> None:
    await _queue_jobs(world, 10)
    spy, dispatcher = SpyQueue(world), GatedDispatcher()
    stop = asyncio.Event()
    task = _start(world, stop, queue=spy, dispatcher=dispatcher, concurrency=3)
    await _until(lambda: dispatcher.active == 3)
    stop.set()
    await asyncio.sleep(0.05)
    assert not task.done(), "the worker returned with deliveries still in flight"
    receives = len(spy.asked)
    dispatcher.gate.set()
    report = await asyncio.wait_for(task, TIMEOUT_S)
    assert report.handled == 3 and len(dispatcher.handled) == 3
    assert len(spy.asked) == receives, "the worker received after stop was set"
    assert world.queue.pending_count() == 10, "unfinished work stays queued (in flight: 3)"


async def test_an_unexpected_exception_is_logged_counted_and_redelivered(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    await _queue_jobs(world, 5)
    real = world.dispatcher()
    broken = {JobId(3)}

    class Flaky:
        async def handle(self, delivery: Delivery) -> object:
            if delivery.message.job_id in broken:
                raise RuntimeError("boom in a provider SDK")
            return await real.handle(delivery)

    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="runs_fleet_core.usecases.worker"):
        task = _start(world, stop, dispatcher=Flaky())
        await _until(lambda: len(world.provider.created) == 4)
        await _until(lambda: world.metrics.count("worker_errors") == 1)
        # the four launched jobs are acknowledged once their records are saved; the
        # failed delivery never is
        await _until(lambda: world.queue.pending_count() == 1)
        broken.clear()
        world.clock.advance(31)  # past the visibility timeout: delivered again
        await _until(lambda: len(world.provider.created) == 5)
        stop.set()
        report = await asyncio.wait_for(task, TIMEOUT_S)
    assert (report.handled, report.failed) == (5, 1)
    assert world.queue.pending_count() == 0
    assert "job 3" in caplog.text and "boom in a provider SDK" in caplog.text


async def test_a_delivery_that_always_fails_ends_in_the_dead_letter_queue(world: World) -> None:
    await _queue_jobs(world, 1)

    class Broken:
        async def handle(self, delivery: Delivery) -> object:
            raise RuntimeError("always")

    stop = asyncio.Event()
    task = _start(world, stop, dispatcher=Broken())
    for failures in (1, 2, 3):
        await _until(functools.partial(_errors_reach, world, failures))
        world.clock.advance(31)
    await _until(lambda: world.queue.pending_count() == 0)
    stop.set()
    await asyncio.wait_for(task, TIMEOUT_S)
    dead = await world.queue.dead_letters()
    assert [d.message.job_id for d in dead] == [1] and dead[0].attempts == 3


async def test_an_empty_queue_is_not_polled_in_a_busy_loop(world: World) -> None:
    class Impatient:
        """A queue that answers "nothing" at once, ignoring wait_s."""

        calls = 0

        async def receive(self, max_messages: int, wait_s: float) -> Sequence[Delivery]:
            self.calls += 1
            return []

    queue = Impatient()
    stop = asyncio.Event()
    task = _start(world, stop, queue=queue, wait_s=0.05)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, TIMEOUT_S)
    assert 1 <= queue.calls <= 15, f"{queue.calls} receives in 0.3 s with wait_s=0.05"


async def test_zero_wait_still_pauses_between_empty_receives(world: World) -> None:
    spy = SpyQueue(world)
    stop = asyncio.Event()
    task = _start(world, stop, queue=spy, wait_s=0.0)
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, TIMEOUT_S)
    assert len(spy.asked) <= 10


async def test_receive_failures_are_survived_with_backoff(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    await _queue_jobs(world, 3)
    spy = SpyQueue(world)
    spy.fail_receives = 2
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="runs_fleet_core.usecases.worker"):
        task = _start(world, stop, queue=spy)
        await _until(lambda: len(world.provider.created) == 3)
        stop.set()
        report = await asyncio.wait_for(task, TIMEOUT_S)
    assert report.receive_errors == 2 and report.handled == 3
    assert world.metrics.count("worker_receive_errors") == 2
    assert "queue unreachable" in caplog.text


async def test_stop_set_before_start_returns_at_once(world: World) -> None:
    await _queue_jobs(world, 2)
    stop = asyncio.Event()
    stop.set()
    report = await asyncio.wait_for(_start(world, stop), TIMEOUT_S)
    assert report == WorkerReport()
    assert world.queue.pending_count() == 2


async def test_cancelling_the_worker_cancels_deliveries_in_flight_unacknowledged(
    world: World,
) -> None:
    await _queue_jobs(world, 2)
    dispatcher = GatedDispatcher()
    task = _start(world, asyncio.Event(), dispatcher=dispatcher)
    await _until(lambda: dispatcher.active == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert dispatcher.active == 0 and dispatcher.handled == []
    world.clock.advance(31)
    assert len(await world.queue.receive(10, 0)) == 2, "both messages are delivered again"


@pytest.mark.parametrize(("concurrency", "batch"), [(0, 10), (8, 0)])
async def test_nonsense_limits_are_refused(world: World, concurrency: int, batch: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await run_worker(
            queue=world.queue,
            dispatcher=world.dispatcher(),
            stop=asyncio.Event(),
            metrics=world.metrics,
            concurrency=concurrency,
            batch=batch,
        )
