"""Gauges read from the backends rather than counted as things happen: jobs by active
status, queue depth and dead letters. ``/metrics`` refreshes them at scrape time; a sink
that pushes (CloudWatch) refreshes them before each push."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from runs_fleet_core.domain.job import FINAL_STATUSES, JobStatus
from runs_fleet_core.wiring import Adapters

ACTIVE_STATUSES = tuple(s for s in JobStatus if s not in FINAL_STATUSES)
READ_TIMEOUT_S = 2.0
_log = logging.getLogger("runs_fleet_server")


async def refresh_gauges(adapters: Adapters) -> None:
    """Set the gauges; a backend that fails or is slow leaves its gauge as it was."""
    metrics = adapters.metrics
    for status in ACTIVE_STATUSES:
        jobs = await _value(functools.partial(adapters.state.list_jobs, status=status))
        if jobs is not None:
            metrics.gauge("jobs_by_status", float(len(jobs)), labels={"status": status.value})
    dead = await _value(adapters.queue.dead_letters)
    if dead is not None:
        metrics.gauge("queue_dead_letters", float(len(dead)))
    pending = getattr(adapters.queue, "pending_count", None)
    if callable(pending):
        depth = await _value(pending)
        if isinstance(depth, int | float):
            metrics.gauge("queue_depth", float(depth))


async def _value(call: Callable[[], Any]) -> Any:
    """``call()`` (awaited if it is a coroutine), or ``None`` if it fails or is slow."""
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            result = call()
            return await result if inspect.isawaitable(result) else result
    except Exception as exc:
        _log.debug("metrics gauge skipped: %s: %s", type(exc).__name__, exc)
        return None
