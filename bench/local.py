"""Benchmarks of runs-fleet served for real, as ratios against baselines measured in the
same run (DESIGN.md §8). Prints one table; asserts nothing about time.

1. Webhook intake: ``POST /webhook`` (signed ``workflow_job`` ``queued`` deliveries, a
   ``runs-fleet=`` label, distinct job ids) against ``runs-fleet serve --no-worker
   --no-scheduler`` in local mode (embedded Valkey) in a subprocess, versus a bare
   Starlette endpoint (``bench/bare_server.py``) served by uvicorn the same way; the
   same httpx load generator for both (``CONCURRENCY`` requests in flight, ``REQUESTS``
   per round after a warm-up), plus the CPU each server and the client spent.
2. Dispatch: ``run_worker`` (concurrency 8) draining ``DISPATCH_JOBS`` jobs through an
   embedded Valkey (``ValkeyQueue`` + ``ValkeyStateStore``) to the in-memory provider,
   versus the raw Valkey queue moving the same number of messages (send, receive, ack).
3. Server RSS: ``runs-fleet serve`` idle after start and after a ``BURST``-job webhook
   burst. This server runs in ``RUNS_FLEET_MODE=memory`` with its worker on: local mode
   would start one runner process per job. Baseline: the bare Starlette process.

Only 127.0.0.1 is contacted. Every process and temporary directory is removed at the end,
also after Ctrl-C or SIGTERM. Run with ``nox -s bench`` (after ``bench/core.py``).

This module is the entry point and the report; the parts are ``intake_load.py``,
``dispatch_load.py`` and ``memory_load.py``, on ``harness.py`` (settings, signals, server
subprocesses) and ``loadgen.py`` (signed webhooks and the httpx load generator).
"""

import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from dispatch_load import DispatchResult, dispatch_throughput
from harness import (
    BURST,
    CLIENT_BOUND,
    CONCURRENCY,
    DISPATCH_JOBS,
    DISPATCH_TARGET_PER_MIN,
    IDLE_RSS_TARGET_MB,
    INTAKE_RATIO_TARGET,
    REQUESTS,
    ROUNDS,
    WARMUP,
    Interrupted,
    Processes,
    kill_leftover_valkey,
    mib,
    on_sigterm,
)
from intake_load import IntakeResult, webhook_intake
from memory_load import MemoryResult, server_memory

# --------------------------------------------------------------------------- report


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def report(intake: IntakeResult, dispatch: DispatchResult, memory: MemoryResult) -> str:
    fleet, bare = intake.fleet, intake.bare
    intake_ratio = fleet.throughput / bare.throughput
    per_min = DISPATCH_JOBS / dispatch.dispatch_s * 60
    raw_per_min = DISPATCH_JOBS / dispatch.raw_s * 60
    idle_mb = mib(memory.fleet_idle_kib)
    rows = [
        ("measure", "runs-fleet", "baseline", "ratio", "target", ""),
        (
            "webhook intake, local mode --no-worker",
            f"{fleet.throughput:,.0f} req/s",
            f"{bare.throughput:,.0f} req/s bare",
            f"{intake_ratio:.0%}",
            f">= {INTAKE_RATIO_TARGET:.0%} of bare",
            _mark(intake_ratio >= INTAKE_RATIO_TARGET),
        ),
        (
            "  latency p50",
            f"{fleet.p50_ms:.1f} ms",
            f"{bare.p50_ms:.1f} ms",
            f"{fleet.p50_ms / bare.p50_ms:.1f}x",
            "-",
            "",
        ),
        (
            "  latency p99",
            f"{fleet.p99_ms:.1f} ms",
            f"{bare.p99_ms:.1f} ms",
            f"{fleet.p99_ms / bare.p99_ms:.1f}x",
            "-",
            "",
        ),
        (
            "  server CPU per request",
            f"{fleet.per_request_ms(fleet.server_cpu_s):.2f} ms "
            f"(Valkey {fleet.per_request_ms(fleet.helper_cpu_s):.2f})",
            f"{bare.per_request_ms(bare.server_cpu_s):.2f} ms",
            f"{fleet.server_cpu_s / bare.server_cpu_s:.1f}x",
            "-",
            "",
        ),
        (
            "  client CPU per request (busy)",
            f"{fleet.per_request_ms(fleet.client_cpu_s):.2f} ms "
            f"({fleet.client_cpu_s / fleet.elapsed_s:.0%})",
            f"{bare.per_request_ms(bare.client_cpu_s):.2f} ms "
            f"({bare.client_cpu_s / bare.elapsed_s:.0%})",
            "-",
            "-",
            "",
        ),
        (
            "dispatch, embedded Valkey, worker c=8",
            f"{per_min:,.0f} jobs/min",
            f"{raw_per_min:,.0f} msg/min raw",
            f"{per_min / raw_per_min:.0%}",
            f">= {DISPATCH_TARGET_PER_MIN:,.0f} jobs/min",
            _mark(per_min >= DISPATCH_TARGET_PER_MIN and dispatch.runners == DISPATCH_JOBS),
        ),
        (
            "RSS idle, memory mode (worker on)",
            f"{idle_mb:.1f} MB",
            f"{mib(memory.bare_idle_kib):.1f} MB bare",
            f"{memory.fleet_idle_kib / memory.bare_idle_kib:.2f}x",
            f"<= {IDLE_RSS_TARGET_MB:.0f} MB",
            _mark(idle_mb <= IDLE_RSS_TARGET_MB),
        ),
        (
            f"RSS after {BURST:,}-webhook burst",
            f"{mib(memory.fleet_burst_kib):.1f} MB",
            f"{mib(memory.bare_burst_kib):.1f} MB bare",
            f"{memory.fleet_burst_kib / memory.bare_burst_kib:.2f}x",
            "-",
            "",
        ),
        (
            "  ... all dispatched / peak (VmHWM)",
            f"{mib(memory.fleet_drained_kib):.1f} / {mib(memory.fleet_peak_kib):.1f} MB",
            "-",
            "-",
            "-",
            "",
        ),
        (
            "RSS idle, local mode --no-worker",
            f"{mib(intake.local_idle_kib):.1f} MB",
            f"{mib(intake.bare_idle_kib):.1f} MB bare",
            f"{intake.local_idle_kib / intake.bare_idle_kib:.2f}x",
            "-",
            "",
        ),
    ]
    load = memory.fleet_load
    notes = [
        f"intake: {REQUESTS:,} signed workflow_job 'queued' webhooks per round after "
        f"{WARMUP} warm-up, {CONCURRENCY} in flight (httpx), best of {ROUNDS} alternating "
        "rounds; both servers are uvicorn subprocesses (asyncio loop, h11).",
        f"  runs-fleet: `runs-fleet serve --no-worker --no-scheduler`, RUNS_FLEET_MODE=local, "
        f"embedded Valkey (AOF everysec), info logging to a file; answers {fleet.codes()}.",
        f"  bare: bench/bare_server.py, Starlette route reading the body -> 202; "
        f"answers {bare.codes()}.",
        f"dispatch: {DISPATCH_JOBS:,} jobs recorded and enqueued by Intake (not timed), then "
        f"run_worker timed until the last launch; MemoryProvider, FakeGitHub, "
        f"MemoryConfigStore; outcomes {dispatch.outcomes}, runners created {dispatch.runners}. "
        f"Raw: ValkeyQueue send, receive (10 at a time), ack of {DISPATCH_JOBS:,} messages, "
        "one at a time.",
        f"RSS: VmRSS of the `runs-fleet serve` process itself. The burst server runs "
        f"RUNS_FLEET_MODE=memory (in-process queue/state, in-memory provider, worker and "
        f"scheduler on), not local mode, which would start {BURST:,} runner processes; "
        f"answers {load.codes() if load else '-'}, {memory.launched:,} jobs launched. "
        "The local-mode figure leaves out its valkey-server child.",
    ]
    if bare.client_cpu_s / bare.elapsed_s >= CLIENT_BOUND:
        notes.append(
            f"caution: the client was busy {bare.client_cpu_s / bare.elapsed_s:.0%} of the "
            "bare round, so the bare figure is partly the client's limit and the throughput "
            "ratio flatters runs-fleet; the server-CPU-per-request ratio does not depend on it."
        )
    return _table(rows) + "\n\n" + "\n".join(notes)


# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def _workspace() -> Iterator[tuple[Path, Processes]]:
    root = Path(tempfile.mkdtemp(prefix="runs-fleet-bench-"))
    processes = Processes(root)
    try:
        yield root, processes
    finally:
        processes.stop_all()
        for state_dir in (root / "local-state", root / "dispatch-state"):
            kill_leftover_valkey(state_dir)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with _workspace() as (root, processes):
            print(f"local benchmarks (webhook intake, dispatch, server RSS) in {root}", flush=True)
            intake = webhook_intake(processes, root)
            print("  webhook intake measured", flush=True)
            dispatch = dispatch_throughput(root)
            print("  dispatch measured", flush=True)
            memory = server_memory(processes)
            print("  server RSS measured\n", flush=True)
            print(report(intake, dispatch, memory))
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted: servers stopped, temporary files removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
