"""Benchmarks of the core, as ratios against a baseline measured in the same run.

* CLI start-up: ``runs-fleet --help`` against a bare ``python -c pass``.
* Dispatch throughput: jobs through intake + dispatch on the in-memory adapters,
  against the same number of messages through the raw in-memory queue
  (send, receive, ack) — the cost of what dispatch adds on top of moving messages.
* Label parsing: labels per second, against ``str.split`` of the same labels.

Run with ``nox -s bench``. Prints figures; asserts nothing (timings belong here, not in
tests).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.labels import LabelDefaults, parse_label
from runs_fleet_core.domain.messages import WorkflowJobAction, WorkflowJobEvent
from runs_fleet_core.testing.memory import (
    FakeGitHub,
    ManualClock,
    MemoryConfigStore,
    MemoryProvider,
    MemoryQueue,
    MemoryStateStore,
    RecordingMetrics,
)
from runs_fleet_core.usecases.dispatch import Dispatcher
from runs_fleet_core.usecases.intake import Intake

JOBS = 2000
LABEL = "runs-fleet=42/cpu=4+8/ram=16/arch=arm64/family=c7g+m7g/pool=ci/spot=false"


def _best_of(runs: int, action: Callable[[], object]) -> float:
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return min(timings)


def cli_startup() -> tuple[float, float]:
    def run(*args: str) -> Callable[[], object]:
        return lambda: subprocess.run([sys.executable, *args], check=True, capture_output=True)

    bare = _best_of(5, run("-c", "pass"))
    cli = _best_of(5, run("-m", "runs_fleet_cli", "--help"))
    return bare, cli


async def _raw_queue(clock: ManualClock) -> None:
    from runs_fleet_core.testing.contracts.queue import job_message

    queue = MemoryQueue(clock)
    for n in range(JOBS):
        await queue.send(job_message(n + 1))
    while deliveries := await queue.receive(10, 0):
        for delivery in deliveries:
            await queue.ack(delivery)


async def _dispatch(clock: ManualClock) -> None:
    state, queue, metrics = MemoryStateStore(), MemoryQueue(clock), RecordingMetrics()
    intake = Intake(
        state=state,
        queue=queue,
        clock=clock,
        metrics=metrics,
        labels=LabelDefaults(),
        backends=("memory",),
        default_backend="memory",
    )
    dispatcher = Dispatcher(
        state=state,
        queue=queue,
        configs=MemoryConfigStore(),
        github=FakeGitHub(),
        providers={"memory": MemoryProvider(clock)},
        pool_providers={},
        clock=clock,
        metrics=metrics,
        owner="bench",
        default_backend="memory",
    )
    for n in range(JOBS):
        await intake.take(
            WorkflowJobEvent(
                action=WorkflowJobAction.QUEUED,
                job_id=JobId(n + 1),
                run_id=42,
                run_attempt=1,
                repository="o/r",
                labels=("runs-fleet=42/cpu=2",),
            )
        )
    while deliveries := await queue.receive(10, 0):
        for delivery in deliveries:
            await dispatcher.handle(delivery)


def main() -> None:
    bare, cli = cli_startup()
    print(
        f"cli start-up: bare python {bare * 1000:.0f} ms, runs-fleet --help "
        f"{cli * 1000:.0f} ms, ratio {cli / bare:.1f}x"
    )

    raw = _best_of(3, lambda: asyncio.run(_raw_queue(ManualClock())))
    full = _best_of(3, lambda: asyncio.run(_dispatch(ManualClock())))
    print(
        f"dispatch: raw queue {JOBS / raw:,.0f} msg/s, intake+dispatch {JOBS / full:,.0f} "
        f"jobs/s, ratio {full / raw:.1f}x the raw queue's cost"
    )

    labels = [LABEL.replace("42", str(n)) for n in range(JOBS)]
    split = _best_of(5, lambda: [label.split("/") for label in labels])
    parse = _best_of(5, lambda: [parse_label(label) for label in labels])
    print(
        f"labels: {JOBS / parse:,.0f} parses/s, ratio {parse / split:.0f}x str.split "
        f"(median of runs is {statistics.median([parse]) * 1e6 / JOBS:.1f} us/label)"
    )


if __name__ == "__main__":
    main()
