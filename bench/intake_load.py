"""Part 1 of ``bench/local.py``, webhook intake: ``runs-fleet serve --no-worker
--no-scheduler`` in local mode against the bare Starlette endpoint, the same load on both,
best of alternating rounds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from harness import (
    REQUESTS,
    ROUNDS,
    SETTLE_S,
    WARMUP,
    Processes,
    Server,
    run_async,
    start_bare,
    start_local,
)
from loadgen import Clients, Load, signed_deliveries


async def _intake_rounds(servers: Sequence[Server]) -> dict[str, Load]:
    """Warm each server up, then ``ROUNDS`` alternating measured rounds; the best
    round (highest throughput) of each server."""
    best: dict[str, Load] = {}
    next_id = 1
    async with Clients() as clients:
        for server in servers:
            await clients.post_all(f"{server.url}/webhook", signed_deliveries(next_id, WARMUP))
            next_id += WARMUP
        for _ in range(ROUNDS):
            for server in servers:
                deliveries = signed_deliveries(next_id, REQUESTS)
                next_id += REQUESTS
                own, helpers = server.cpu_s()
                load = await clients.post_all(f"{server.url}/webhook", deliveries)
                own_after, helpers_after = server.cpu_s()
                load.helper_cpu_s = helpers_after - helpers
                load.server_cpu_s = own_after - own + load.helper_cpu_s
                if server.name not in best or load.throughput > best[server.name].throughput:
                    best[server.name] = load
    return best


class IntakeResult:
    def __init__(self, bare: Load, fleet: Load, local_idle_kib: int, bare_idle_kib: int):
        self.bare = bare
        self.fleet = fleet
        self.local_idle_kib = local_idle_kib
        self.bare_idle_kib = bare_idle_kib


def webhook_intake(processes: Processes, root: Path) -> IntakeResult:
    bare = start_bare(processes, "bare-intake")
    fleet = start_local(processes, root)
    time.sleep(SETTLE_S)
    bare_idle, local_idle = bare.rss_kib(), fleet.rss_kib()
    try:
        best = run_async(_intake_rounds([bare, fleet]))
    finally:
        processes.stop(fleet)
        processes.stop(bare)
    return IntakeResult(best[bare.name], best[fleet.name], local_idle, bare_idle)
