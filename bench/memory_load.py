"""Part 3 of ``bench/local.py``, server RSS: ``runs-fleet serve`` in memory mode idle and
after a webhook burst (until every job is dispatched), against the bare Starlette process
taking the same burst."""

from __future__ import annotations

import asyncio
import time

from harness import (
    BURST,
    DISPATCH_TIMEOUT_S,
    INTERRUPTS,
    SETTLE_S,
    Processes,
    Server,
    run_async,
    start_bare,
    start_memory,
)
from loadgen import Clients, Load, signed_deliveries


class MemoryResult:
    def __init__(self) -> None:
        self.fleet_idle_kib = 0
        self.fleet_burst_kib = 0
        self.fleet_drained_kib = 0
        self.fleet_peak_kib = 0
        self.bare_idle_kib = 0
        self.bare_burst_kib = 0
        self.fleet_load: Load | None = None
        self.launched = 0


async def _count_jobs(clients: Clients, url: str, status: str) -> int:
    """Jobs with ``status`` through ``GET /api/jobs`` (paged, bounded)."""
    count, cursor = 0, ""
    for _ in range(BURST // 500 + 2):
        page = await clients.get(f"{url}/api/jobs", status=status, limit="500", cursor=cursor)
        count += len(page["jobs"])
        cursor = page["next_cursor"] or ""
        if not cursor:
            break
    return count


async def _wait_dispatched(clients: Clients, url: str) -> None:
    """Until no job is queued or claimed any more (bounded)."""
    deadline = time.monotonic() + DISPATCH_TIMEOUT_S
    while time.monotonic() < deadline:
        waiting = 0
        for status in ("queued", "claimed"):
            page = await clients.get(f"{url}/api/jobs", status=status, limit="1")
            waiting += len(page["jobs"])
        if not waiting:
            return
        INTERRUPTS.check()
        await asyncio.sleep(0.5)


async def _burst_memory(server: Server, result: MemoryResult) -> None:
    async with Clients() as clients:
        result.fleet_load = await clients.post_all(
            f"{server.url}/webhook", signed_deliveries(1, BURST)
        )
        result.fleet_burst_kib = server.rss_kib()
        await _wait_dispatched(clients, server.url)
        await asyncio.sleep(SETTLE_S)
        result.fleet_drained_kib = server.rss_kib()
        result.fleet_peak_kib = server.peak_kib()
        result.launched = await _count_jobs(clients, server.url, "launching")


async def _burst_bare(server: Server) -> None:
    async with Clients() as clients:
        await clients.post_all(f"{server.url}/webhook", signed_deliveries(1, BURST))


def server_memory(processes: Processes) -> MemoryResult:
    result = MemoryResult()
    bare = start_bare(processes, "bare-rss")
    try:
        time.sleep(SETTLE_S)
        result.bare_idle_kib = bare.rss_kib()
        run_async(_burst_bare(bare))
        result.bare_burst_kib = bare.rss_kib()
    finally:
        processes.stop(bare)
    fleet = start_memory(processes)
    try:
        time.sleep(SETTLE_S)
        result.fleet_idle_kib = fleet.rss_kib()
        run_async(_burst_memory(fleet, result))
    finally:
        processes.stop(fleet)
    return result
