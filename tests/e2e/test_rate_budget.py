"""500 jobs queued at once, end to end: GitHub never sees runner registrations faster
than runs-fleet's budget allows, and every job gets its runner.

The path is the production one from the webhook to the runner: ``runs-fleet serve`` runs
as its own process in local mode (the embedded Valkey it starts holds the job records and
the job queue, runner configs are files in its state dir, metrics are Prometheus') with
the real GitHub App client pointed at the simulated GitHub. Only the compute backend is
swapped (``RUNS_FLEET_BACKENDS=memory``): 500 runner processes would not fit on a test
machine, and the in-memory provider creates a runner per call like any other backend
(ids ``mem-1``, ``mem-2``, ...). ``RUNS_FLEET_RUNNER_DIR`` is required by local mode
but unused by that backend.

The simulated GitHub runs in the test's event loop (the ``github_server`` fixture)
without a webhook URL: it queues the 500 jobs, signing a
``workflow_job`` ``queued`` delivery for each as GitHub does, and the test POSTs all
500 of them to the server at once (the simulator itself sends deliveries one at a
time). Every generate-jitconfig call the server then makes is logged by the simulator
with the time it arrived; the assertions read that log and runs-fleet's own job records.

The budget (``RUNS_FLEET_GITHUB_JIT_PER_MINUTE``; the plugin sets no burst) is a token
bucket (:class:`runs_fleet_github.budget.TokenBucket`): it starts full with ``burst``
tokens and refills at ``per_minute / 60`` a second, so in any window of ``w`` seconds at
most ``burst + rate * w`` registrations take a token. GitHub sees each call a moment after
its token was taken, so a window at GitHub may also hold the calls that had taken their
token before the window opened and were still on their way: each of those occupies one of
the worker's ``RUNS_FLEET_WORKER_CONCURRENCY`` dispatch slots, so there are at most that
many. Every window of calls the simulator logged, of any length, is checked against
``burst + rate * w + concurrency``, with no allowance for the machine's speed. No
assertion is about how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.tokens import report_token
from runs_fleet_core.ports import SystemClock
from runs_fleet_github.budget import TokenBucket
from runs_fleet_github_simulator import AppKeyPair, GitHubSimulator, SimulatorServer
from tests import secret_scan
from tests.e2e.local_stack import LocalStack, processes_in, runner_name
from tests.integration.github_sim_fixture import APP_ID, ORG_REPO, WEBHOOK_SECRET

pytest_plugins = ["tests.integration.github_sim_fixture"]

JOBS = 500
RUNS = 5
"""The jobs belong to this many workflow runs (100-job matrices)."""
FIRST_RUN_ID = 7_000_000
JIT_PER_MINUTE = 1200
RATE_PER_S = JIT_PER_MINUTE / 60.0
CONCURRENCY = 8
"""The worker's dispatch slots (runs-fleet's default, set explicitly since the bound
depends on it): at most this many calls are on their way to GitHub at any moment."""
JIT_PATH = f"/repos/{ORG_REPO}/actions/runners/generate-jitconfig"
LAUNCHED = frozenset({"launching", "running", "completed"})
FAILED = frozenset({"failed", "rejected", "cancelled"})
WAIT_S = 120.0
"""Only a safety limit for waiting: the run itself needs far less."""
POLL_S = 0.5


def configured_burst() -> int:
    """The burst of the server's bucket: the plugin configures only the rate, so the
    bucket's own default applies."""
    bucket = TokenBucket(per_minute=JIT_PER_MINUTE, clock=SystemClock(), sleep=asyncio.sleep)
    return bucket.burst


def worst_window(times: list[float], burst: int, rate_per_s: float) -> tuple[float, int, float]:
    """The window of calls that leaves the least room in the bucket's promise.

    For calls ``i..j`` (sorted by arrival), the bucket allows ``burst + rate * (t_j - t_i)``
    of them; returns ``(excess, count, span)`` of the pair with the largest
    ``count - allowed``."""
    ordered = sorted(times)
    best: tuple[float, int, float] = (float("-inf"), 0, 0.0)
    start_i, start_key = 0, float("-inf")
    for j, at in enumerate(ordered):
        key = rate_per_s * at - j  # the best start so far maximises rate * t_i - i
        if key > start_key:
            start_i, start_key = j, key
        count = j - start_i + 1
        span = at - ordered[start_i]
        excess = count - (burst + rate_per_s * span)
        if excess > best[0]:
            best = (excess, count, span)
    return best


@contextlib.asynccontextmanager
async def serving(workdir: Path, github_url: str, keys: AppKeyPair) -> AsyncIterator[LocalStack]:
    """``runs-fleet serve`` (local mode, in-memory compute) against ``github_url``;
    stopped on exit, and checked to leave no process behind (its Valkey included)."""
    (workdir / "app.pem").write_bytes(keys.private_pem)
    (workdir / "webhook.secret").write_text(WEBHOOK_SECRET)
    for secret in ("app.pem", "webhook.secret"):
        os.chmod(workdir / secret, 0o600)
    (workdir / "runner").mkdir()
    stack = LocalStack(
        workdir,
        settings={
            "RUNS_FLEET_BACKENDS": "memory",
            "RUNS_FLEET_GITHUB_APP_ID": str(APP_ID),
            "RUNS_FLEET_GITHUB_JIT_PER_MINUTE": str(JIT_PER_MINUTE),
            "RUNS_FLEET_WORKER_CONCURRENCY": str(CONCURRENCY),
            "RUNS_FLEET_LOG_LEVEL": "info",
        },
    )
    stack.simulator = github_url
    try:
        # blocking waits run in a thread: the simulator must keep answering meanwhile
        await asyncio.to_thread(stack.start_serve)
        yield stack
    finally:
        await asyncio.to_thread(stack.close)
    left = processes_in(workdir)
    assert not left, f"processes outlived the test in {workdir}: {left}"


async def queue_at_github(sim: GitHubSimulator) -> list[tuple[int, bytes, dict[str, str]]]:
    """Queue ``JOBS`` jobs on the simulated GitHub; each job's id and the body and
    headers of its signed ``queued`` delivery (which nothing has sent)."""
    queued = []
    for n in range(JOBS):
        run_id = FIRST_RUN_ID + n % RUNS
        job_id = await sim.queue_job(
            ORG_REPO, [f"runs-fleet={run_id}/cpu=2"], run_id=run_id, name=f"test ({n})"
        )
        [delivery] = sim.deliveries_for(job_id, "queued")
        assert delivery.status_code is None  # recorded, not sent
        queued.append((job_id, delivery.body, delivery.headers))
    return queued


async def all_jobs(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every job record runs-fleet holds (``GET /api/jobs``, all pages)."""
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "500"} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/api/jobs", params=params)
        response.raise_for_status()
        page = response.json()
        jobs += page["jobs"]
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs


async def wait_until_launched(
    client: httpx.AsyncClient, stack: LocalStack, ids: set[int]
) -> list[dict[str, Any]]:
    """The job records once every job of ``ids`` is launching or later; fails at once
    if one fails, and with the server's log if the wait runs out."""
    deadline = time.monotonic() + WAIT_S
    while True:
        jobs = [job for job in await all_jobs(client) if job["job_id"] in ids]
        failed = [job for job in jobs if job["status"] in FAILED]
        assert not failed, f"jobs ended without a runner: {failed[:3]}"
        launched = [job for job in jobs if job["status"] in LAUNCHED]
        if len(launched) == len(ids):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(launched)} of {len(ids)} jobs launched in time\n{stack.describe()}"
            )
        await asyncio.sleep(POLL_S)


def throttled(metrics_text: str) -> float:
    """``github_throttled_calls`` with ``reason=jit_rate``, from the Prometheus page."""
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if (
                sample.name == "runs_fleet_github_throttled_calls_total"
                and sample.labels.get("reason") == "jit_rate"
            ):
                return float(sample.value)
    return 0.0


async def test_500_jobs_queued_at_once_stay_within_the_jit_budget_and_all_get_runners(
    tmp_path: Path, github_server: SimulatorServer, app_keys: AppKeyPair
) -> None:
    sim = github_server.sim
    burst = configured_burst()
    assert burst < JOBS  # else the bucket would never have to hold a call back
    queued = await queue_at_github(sim)
    ids = {job_id for job_id, _, _ in queued}

    async with (
        serving(tmp_path, github_server.url, app_keys) as stack,
        httpx.AsyncClient(
            base_url=stack.api,
            timeout=60.0,
            limits=httpx.Limits(max_connections=JOBS, max_keepalive_connections=0),
        ) as client,
    ):
        answers = await asyncio.gather(
            *(client.post("/webhook", content=body, headers=headers) for _, body, headers in queued)
        )
        assert [a.status_code for a in answers] == [202] * JOBS
        assert sorted((a.json()["outcome"], a.json()["job_id"]) for a in answers) == sorted(
            ("queued", job_id) for job_id in ids
        )

        jobs = await wait_until_launched(client, stack, ids)
        metrics = (await client.get("/metrics")).text

    for job in jobs:
        secret_scan.register_secret(
            report_token(WEBHOOK_SECRET, JobId(job["job_id"]), job["runner_name"]), "report token"
        )

    # every job launched once, each on its own runner of the in-memory backend
    assert len(jobs) == JOBS
    assert {job["backend"] for job in jobs} == {"memory"}
    assert {job["attempt"] for job in jobs} == {1}
    assert {job["runner_name"] for job in jobs} == {runner_name(job_id) for job_id in ids}
    assert sorted(job["runner_id"] for job in jobs) == sorted(
        f"mem-{n}" for n in range(1, JOBS + 1)
    )  # ids count up: no runner was created beyond one per job

    # GitHub gave exactly one JIT config per job and refused no call
    calls = sim.calls("POST", JIT_PATH)
    assert sorted(call.body["name"] for call in calls) == sorted(runner_name(i) for i in ids)
    assert {call.status for call in calls} == {201}
    assert sorted(r.name for r in sim.runners.values()) == sorted(runner_name(i) for i in ids)
    refused = [(c.method, c.path, c.status) for c in sim.calls() if c.status in (403, 429)]
    assert refused == []

    # no window of calls, of any length, beyond what the bucket lets start in it plus
    # the calls already on their way when it opened
    excess, count, span = worst_window([call.at for call in calls], burst, RATE_PER_S)
    assert excess <= CONCURRENCY, (
        f"{count} generate-jitconfig calls reached GitHub within {span:.3f} s; the budget "
        f"allows {burst} + {RATE_PER_S:g}/s, plus {CONCURRENCY} on their way"
    )
    # and the bucket did hold calls back: the dispatch alone was faster than the budget
    assert throttled(metrics) > 0


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([0.0, 0.0, 0.0], (1.0, 3, 0.0)),
        ([0.0, 0.0, 1.0, 2.0], (0.0, 2, 0.0)),
        ([0.0, 0.5, 1.0, 1.0, 1.0], (2.0, 5, 1.0)),
    ],
)
def test_the_worst_window_is_found(times: list[float], expected: tuple[float, int, float]) -> None:
    assert worst_window(times, burst=2, rate_per_s=1.0) == expected
