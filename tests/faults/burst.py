"""One burst of the fault matrix: a mode's deployment under every fault at once, then
the counts of what the invariants forbid (see :mod:`tests.faults.harness`)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from runs_fleet_cli.demo.processes import http_json
from tests.e2e.local_stack import JIT_PATH
from tests.faults.harness import (
    REPLICAS,
    FaultLog,
    FaultSchedule,
    Replica,
    WebhookRelay,
    http_get_json,
    wait_until,
)
from tests.faults.modes import Deployment
from tests.faults.proxy import FaultProxy, LoopThread

JOBS = 200
POOL = "warm"
POOL_LABEL = f"runs-fleet=1/cpu=2/pool={POOL}"
JOB_SECONDS = 0.3
SERVE = ["-m", "runs_fleet_cli", "serve", "--scheduler"]
COLUMNS = (
    "jobs lost",
    "jobs with two runners",
    "runners with two jobs",
    "messages looping",
    "busy runners stopped",
    "orphans after housekeeping",
)


@attrs.define
class Outcome:
    """One mode's row of the table, and what explains it."""

    mode: str
    jobs: int
    counts: dict[str, int]
    faults: FaultLog
    deliveries: Counter[str]
    details: dict[str, Any] = attrs.field(factory=dict)

    def row(self) -> str:
        cells = " | ".join(f"{self.counts[c]:>{len(c)}}" for c in COLUMNS)
        return f"| {self.mode:<5} | {self.jobs:>4} | {cells} |"

    def note(self) -> str:
        """The faults this row survived."""
        kills = sum(self.faults.kills.values())
        missed = dict(self.faults.missed_steps) or "none"
        return (
            f"{self.mode}: {kills} replica SIGKILLs right after a dispatch step "
            f"{dict(self.faults.kills)} (steps not reached in time: {missed}); backend "
            f"outages {dict(self.faults.outages)}; Valkey restarts {self.faults.valkey_restarts}; "
            f"GitHub errors injected {self.faults.github_errors}; webhook copies sent "
            f"{sum(self.deliveries.values())}, by answer {dict(self.deliveries)}; "
            f"dead letters left {self.details.get('queue left', {}).get('queue_dead_letters', 0)}"
            f"; jobs served by a warm pool runner {self.details.get('warm', 0)}"
            f"; seconds from the burst's start {self.details.get('took')}"
        )


HEADER = "| mode  | jobs | " + " | ".join(COLUMNS) + " |"
RULE = "|" + "|".join("-" * len(cell) for cell in HEADER.split("|")[1:-1]) + "|"


def table(rows: list[str], notes: list[str]) -> str:
    """The matrix: one row per mode, then what each mode went through."""
    return "\n".join([HEADER, RULE, *rows, *notes])


class Burst:
    """Set up ``deployment`` with three replicas behind fault proxies, queue ``jobs``
    jobs while the faults run, then count."""

    def __init__(self, deployment: Deployment, workdir: Path, seed: int, jobs: int = JOBS):
        self.deployment = deployment
        self.stack = deployment.stack
        self.workdir = workdir
        self.jobs = jobs
        self.rng = random.Random(seed)
        self.loop = LoopThread()
        self.replicas = [Replica(i, workdir, SERVE) for i in range(REPLICAS)]
        self.relay = WebhookRelay(self.replicas, random.Random(seed + 1))
        self.proxies: dict[str, list[FaultProxy]] = {}
        self.took: dict[str, float] = {}
        """Seconds from the burst's start to the end of each phase (for the notes)."""
        self.shared: dict[str, set[int]] = {}
        """Runners seen bound to two unfinished jobs at once, with the jobs."""
        self._runs = 0
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch_bindings, daemon=True)

    def start(self) -> None:
        if self.stack.valkey is not None:
            self.stack.valkey.start()
        self.deployment.setup()
        self.stack.api = self.relay.url.removesuffix("/webhook")
        self.stack.start_simulator(job_seconds=JOB_SECONDS)
        for name, port in self.deployment.backends().items():
            self.proxies[name] = [
                FaultProxy(self.loop, lambda port=port: port, f"{name}-{i}")
                for i in range(REPLICAS)
            ]
        for replica in self.replicas:
            ports = {name: proxies[replica.index].port for name, proxies in self.proxies.items()}
            replica.env = self.deployment.replica_env(replica.index, ports, replica.url)
        for replica in self.replicas:
            replica.start()
        self.deployment.start_runners()

    def close(self) -> None:
        self.deployment.stop_runners()
        for replica in self.replicas:
            replica.stop()
        self.relay.close()
        for proxies in self.proxies.values():
            for proxy in proxies:
                with contextlib.suppress(Exception):
                    proxy.close()
        self.loop.close()
        self.stack.close()

    def _github_fault(self) -> int:
        """GitHub errors for a while: server errors, then a secondary rate limit."""
        self.stack.inject_fault(JIT_PATH, status=502, count=3)
        self.stack.inject_fault(JIT_PATH, status=403, count=2, retry_after=1)
        return 5

    def run(self) -> Outcome:
        schedule = FaultSchedule(
            replicas=self.replicas,
            proxies=self.proxies,
            steps=self.deployment.steps,
            rng=self.rng,
            restart_valkey=self.deployment.restart_valkey if self.stack.valkey else None,
            github_fault=self._github_fault,
        )
        started = time.monotonic()
        schedule.start()
        self._watcher.start()
        queued = []
        for n in range(self.jobs):
            queued.append(self._queue())
            if self.deployment.pool_sizes and n % (self.jobs // 5) == 0:
                self._resize_pool(self.deployment.pool_sizes[n // (self.jobs // 5)])
        self.took["burst"] = time.monotonic() - started
        wait_until(lambda: not any(t.is_alive() for t in schedule.threads), 60)
        schedule.stop()
        self.took["faults"] = time.monotonic() - started
        for replica in self.replicas:
            if not replica.alive:
                replica.start()
        wait_until(lambda: self._unfinished(queued) == 0, 300, poll_s=1)
        self.took["all completed"] = time.monotonic() - started
        self._done.set()
        self._watcher.join(30)
        if self.deployment.pool_sizes:
            self._resize_pool(0)  # the pool drains: its idle runners must go too
        wait_until(lambda: sum(self.deployment.orphans().values()) == 0, 60, poll_s=1)
        self.took["cleaned up"] = time.monotonic() - started
        return self._count(queued, schedule.log)

    def _resize_pool(self, running: int) -> None:
        """Resize the warm pool mid-burst, so scale-down races with warm claims."""
        body = {"label": POOL_LABEL, "desired_running": running, "desired_stopped": 0}
        body["idle_timeout_s"] = 0
        for replica in self.rng.sample(self.replicas, len(self.replicas)):
            try:
                http_json("PUT", f"{replica.url}/api/pools/{POOL}", body, timeout=10)
                return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:  # the body is wrong: no replica would take it
                    raise AssertionError(f"pool not saved: {exc.read().decode()}") from None
            except OSError:
                continue  # that replica is down or its backend is: try another

    def _queue(self) -> int:
        """One job, of a run of its own: jobs of one run with equal labels may swap
        runners at GitHub, which would blur whose runner served whom. With a warm pool,
        every third job asks for it."""
        self._runs += 1
        run_id = 50_000 + self._runs
        label = f"runs-fleet={run_id}/cpu=2"
        if self.deployment.pool_sizes and self._runs % 3 == 0:
            label += f"/pool={POOL}"
        job_id, _ = self.stack.queue_job(labels=[label], run_id=run_id)
        time.sleep(self.rng.uniform(0.0, 0.2))  # a burst spread over the faults
        return job_id

    def _github_jobs(self) -> dict[int, dict[str, Any]]:
        jobs = http_get_json(f"{self.stack.simulator}/_simulator/jobs")
        return {int(job["id"]): job for job in jobs}

    def _unfinished(self, queued: list[int]) -> int:
        jobs = self._github_jobs()
        return sum(1 for job_id in queued if jobs[job_id]["status"] != "completed")

    def _watch_bindings(self) -> None:
        """Sample runs-fleet's records through the burst: a runner bound to two
        unfinished jobs at one moment serves two jobs (a warm runner serving jobs one
        after the other, each with a runner registration of its own, does not)."""
        while not self._done.wait(0.5):
            try:
                records = self._records(page_size=500)
            except (OSError, StopIteration, KeyError):
                continue  # replicas down or restarting: sample again
            holders: dict[str, set[int]] = {}
            for record in records:
                if record.get("runner_id") and record["status"] not in _FINAL:
                    holders.setdefault(str(record["runner_id"]), set()).add(record["job_id"])
            for runner_id, jobs in holders.items():
                if len(jobs) > 1:
                    self.shared[runner_id] = jobs

    def _records(self, page_size: int = 200) -> list[dict[str, Any]]:
        replica = next(r for r in self.replicas if r.alive)
        records: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = f"limit={page_size}" + (f"&cursor={cursor}" if cursor else "")
            page = http_json("GET", f"{replica.url}/api/jobs?{query}")
            records += page["jobs"]
            cursor = page.get("next_cursor")
            if not cursor:
                return records

    def _count(self, queued: list[int], log: FaultLog) -> Outcome:
        github = self._github_jobs()
        lost = [j for j in queued if github[j]["status"] != "completed"]
        machines = self.deployment.machines_per_runner()
        doubled = sorted({int(name.split("-")[2]) for name, count in machines.items() if count > 1})
        served: Counter[str] = Counter(
            str(job["runner_name"]) for job in github.values() if job.get("runner_name")
        )
        records = self._records()
        two_jobs = {n for n, c in served.items() if c > 1} | set(self.shared)
        unsettled = [r["job_id"] for r in records if r["status"] not in _FINAL]
        orphans = self.deployment.orphans()
        queue_left = self._queue_left()
        counts = {
            "jobs lost": len(lost),
            "jobs with two runners": len(doubled),
            "runners with two jobs": len(two_jobs),
            "messages looping": len(unsettled) + queue_left.get("queue_depth", 0),
            "busy runners stopped": self.deployment.busy_stopped(),
            "orphans after housekeeping": sum(orphans.values()),
        }
        warm = sum(  # local mode names a cold runner's id after the runner
            1
            for r in records
            if self.deployment.pool_sizes
            and r.get("runner_id")
            and r["runner_id"] != r.get("runner_name")
        )
        details = {
            "took": {phase: round(seconds) for phase, seconds in self.took.items()},
            "queue left": queue_left,
            "warm": warm,
            "lost": {j: (github[j]["status"], self._reason(j)) for j in lost[:10]},
            "doubled": {n: c for n, c in machines.items() if c > 1},
            "two jobs": {n: sorted(self.shared.get(n, ())) for n in sorted(two_jobs)[:10]},
            "unsettled": unsettled[:20],
            "orphans": orphans,
        }
        return Outcome(self.deployment.mode, len(queued), counts, log, self.relay.outcomes, details)

    def _reason(self, job_id: int) -> str:
        """runs-fleet's status of the job, and why."""
        replica = next(r for r in self.replicas if r.alive)
        try:
            record = http_json("GET", f"{replica.url}/api/jobs/{job_id}")
        except OSError as exc:
            return f"no record ({exc})"
        return f"{record['status']}: {record.get('reason')}"

    def _queue_left(self) -> dict[str, int]:
        """Messages still queued or in flight, and dead-lettered, from a replica's
        metrics (the gauges are refreshed at scrape time)."""
        replica = next(r for r in self.replicas if r.alive)
        text = _text(f"{replica.url}/metrics")
        left: dict[str, int] = {}
        for name in ("queue_depth", "queue_dead_letters"):
            for line in text.splitlines():
                if line.startswith((f"runs_fleet_{name} ", f"runs_fleet_{name}{{")):
                    left[name] = left.get(name, 0) + int(float(line.rsplit(" ", 1)[1]))
        return left

    def describe(self) -> str:
        return "\n".join(r.describe() for r in self.replicas)


_FINAL = frozenset({"completed", "failed", "rejected", "cancelled"})


def _text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def summary(details: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in details.items() if v)
