"""The webhook load generator shared by the intake and memory parts of ``bench/local.py``:
signed ``workflow_job`` deliveries, the httpx clients that POST them, and what a batch
of requests did (:class:`Load`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from harness import CONCURRENCY, INTERRUPTS, REPOSITORIES, SECRET


def repository_name(job_id: int) -> str:
    return f"bench-org/repo-{job_id % REPOSITORIES}"


def signed_deliveries(first_job_id: int, count: int) -> list[tuple[bytes, dict[str, str]]]:
    """Signed ``workflow_job`` ``queued`` deliveries for ``count`` distinct jobs."""
    deliveries = []
    for job_id in range(first_job_id, first_job_id + count):
        run_id = 100_000 + job_id // 4
        body = json.dumps(
            {
                "action": "queued",
                "workflow_job": {
                    "id": job_id,
                    "run_id": run_id,
                    "run_attempt": 1,
                    "name": "build",
                    "status": "queued",
                    "labels": [f"runs-fleet={run_id}/cpu=2/arch=x64"],
                    "runner_name": None,
                    "conclusion": None,
                },
                "repository": {"full_name": repository_name(job_id)},
                "installation": {"id": 7},
            }
        ).encode()
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "content-type": "application/json",
            "x-github-event": "workflow_job",
            "x-github-delivery": str(uuid.uuid4()),
            "x-hub-signature-256": f"sha256={digest}",
        }
        deliveries.append((body, headers))
    return deliveries


class Load:
    """What one batch of requests did: wall time, per-request latencies, status codes."""

    def __init__(
        self,
        elapsed_s: float,
        latencies: list[float],
        statuses: Mapping[int, int],
        client_cpu_s: float,
    ) -> None:
        self.elapsed_s = elapsed_s
        self.latencies = latencies
        self.statuses = dict(statuses)
        self.client_cpu_s = client_cpu_s
        self.server_cpu_s = 0.0
        """CPU time the server (and its own helpers, e.g. Valkey) spent on the batch."""
        self.helper_cpu_s = 0.0
        """The part of ``server_cpu_s`` spent by helper processes."""

    def per_request_ms(self, seconds: float) -> float:
        return seconds / len(self.latencies) * 1000

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed_s

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p99_ms(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98] * 1000

    def codes(self) -> str:
        return ", ".join(f"{n} x {code}" for code, n in sorted(self.statuses.items()))


class Clients:
    """The load generator: ``CONCURRENCY`` httpx.AsyncClients of one keep-alive
    connection each, so at most ``CONCURRENCY`` requests are in flight. (One client with a
    pool of 32 connections spends most of its CPU scanning the pool on every request,
    and the bare baseline would then measure the client.)"""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self.all: list[httpx.AsyncClient] = []

    async def __aenter__(self) -> Clients:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        for _ in range(CONCURRENCY):
            client = httpx.AsyncClient(limits=limits, timeout=30.0, trust_env=False)
            self.all.append(await self._stack.enter_async_context(client))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def get(self, url: str, **params: str) -> dict[str, Any]:
        response = await self.all[0].get(url, params=params)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def post_all(self, url: str, deliveries: Sequence[tuple[bytes, dict[str, str]]]) -> Load:
        """POST every delivery to ``url``, ``CONCURRENCY`` at a time."""
        pending = iter(deliveries)
        latencies: list[float] = []
        statuses: collections.Counter[int] = collections.Counter()

        async def one_connection(client: httpx.AsyncClient) -> None:
            for body, headers in pending:
                INTERRUPTS.check()
                started = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] += 1

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one_connection(client) for client in self.all))
        elapsed = time.perf_counter() - started
        return Load(elapsed, latencies, statuses, time.process_time() - cpu)
