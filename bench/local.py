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
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx

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

T = TypeVar("T")
CONCURRENCY = 32
WARMUP = 300
REQUESTS = 3000
ROUNDS = 2
"""Intake is measured this many times per server, alternating; the best round counts."""
DISPATCH_JOBS = 2000
WORKER_CONCURRENCY = 8
BURST = 5000
REPOSITORIES = 64
"""Jobs are spread over this many repositories of one organisation, as in real use."""
SECRET = "bench-webhook-secret"
HOST = "127.0.0.1"

INTAKE_RATIO_TARGET = 0.50
DISPATCH_TARGET_PER_MIN = 1000.0
IDLE_RSS_TARGET_MB = 120.0
CLIENT_BOUND = 0.8
"""A client busier than this during the bare rounds limits the bare figure."""

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
DISPATCH_TIMEOUT_S = 120.0
SETTLE_S = 1.0
"""Pause after a server is ready (or a burst ends) before reading its RSS."""
BARE_SERVER = Path(__file__).with_name("bare_server.py")
if importlib.util.find_spec("sniffio") is None:
    # httpcore imports sniffio inside every lock set-up and falls back to asyncio when it is
    # missing; a failed import is not cached, so each request paid a sys.path search (about
    # half the client's CPU: encode/httpcore#1103). A None entry makes the import fail at
    # once; this only makes the load generator cheaper.
    sys.modules["sniffio"] = None  # type: ignore[assignment]
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""urllib without proxies: everything here is on 127.0.0.1."""


# --------------------------------------------------------------------------- helpers


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while an event loop ran."""


class _Interrupts:
    """Signals seen by the running event loop. The benchmark's loops check them between
    steps and stop with :class:`Interrupted`: cancelling the main task is not enough on
    Python 3.11, whose ``asyncio.wait_for`` (used by redis-py for every send) drops a
    cancellation that arrives as the awaited operation completes (CPython gh-86296)."""

    def __init__(self) -> None:
        self.count = 0
        self.event: asyncio.Event | None = None

    def check(self) -> None:
        if self.count:
            raise Interrupted

    async def wait(self) -> None:
        assert self.event is not None
        await self.event.wait()


_INTERRUPTS = _Interrupts()


def _run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``; SIGINT or SIGTERM makes it stop at its next step with
    :class:`Interrupted` (a second one cancels it outright)."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        _INTERRUPTS.count, _INTERRUPTS.event = 0, asyncio.Event()

        def interrupt() -> None:
            _INTERRUPTS.count += 1
            assert _INTERRUPTS.event is not None
            _INTERRUPTS.event.set()
            if _INTERRUPTS.count > 1:
                task.cancel()

        signals = [signal.SIGTERM]
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signals.append(signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, interrupt)
        try:
            result = await main
            _INTERRUPTS.check()  # a signal after the last step the loops checked
            return result
        except asyncio.CancelledError:
            if _INTERRUPTS.count:
                raise Interrupted from None
            raise
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            signal.signal(signal.SIGTERM, _on_sigterm)

    return asyncio.run(guarded())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _clean_env(**settings: str) -> dict[str, str]:
    """This environment without the user's runs-fleet settings or proxies, plus ``settings``."""
    proxies = {"http_proxy", "https_proxy", "all_proxy"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RUNS_FLEET_") and k.lower() not in proxies
    }
    return env | {"NO_PROXY": "*"} | settings


def _status_kib(pid: int, field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of ``pid`` from ``/proc/<pid>/status``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def _cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` (0 once it is gone), in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mib(kib: int) -> float:
    return kib / 1024


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZXx"


class Processes:
    """The servers this benchmark starts, each in its own session (so a Ctrl-C reaches
    only this script, which then stops them in order), with logs under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Server:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, *argv],
                env=dict(env),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._started.append(process)
        return Server(name=name, process=process, log=log)

    def stop(self, server: Server) -> None:
        """SIGTERM (runs-fleet shuts down gracefully and stops its Valkey), then SIGKILL."""
        process = server.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(ValueError):
            self._started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(self._started):
            if process.poll() is None:
                process.kill()
                process.wait()
        self._started.clear()


class Server:
    """One server subprocess and its base URL."""

    def __init__(self, *, name: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.url = ""
        self.helper_pids: list[int] = []
        """Processes serving this server alone (its embedded Valkey), for CPU accounting."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        return _status_kib(self.pid, "VmRSS")

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds (user + system) used so far by the server and by its helpers."""
        return _cpu_s(self.pid), sum(_cpu_s(pid) for pid in self.helper_pids)

    def peak_kib(self) -> int:
        return _status_kib(self.pid, "VmHWM")

    def wait_ready(self, url: str) -> None:
        """Poll ``GET <url>/ready`` until it answers 200 (bounded)."""
        self.url = url
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self._log_tail()}")
            with contextlib.suppress(OSError), _DIRECT.open(f"{url}/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} was not ready in {START_TIMEOUT_S:g}s:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return "(no log)"


def _valkey_pid(state_dir: Path) -> int | None:
    """The pid of the embedded valkey-server working on ``state_dir``, if one runs."""
    data_dir = state_dir / "valkey"
    try:
        pid = int((data_dir / "valkey.pid").read_text().strip())
        exe = os.readlink(f"/proc/{pid}/exe")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except (OSError, ValueError):
        return None
    if "valkey-server" not in Path(exe).name or Path(cwd) != data_dir.resolve():
        return None
    return pid


def _kill_leftover_valkey(state_dir: Path) -> None:
    """Stop an embedded valkey-server an interrupted run left on ``state_dir`` (by the
    pid in its pid file, and only if that pid is a valkey-server working there)."""
    pid = _valkey_pid(state_dir)
    if pid is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _alive(pid):
            return


# --------------------------------------------------------------------------- webhooks


def _repository(job_id: int) -> str:
    return f"bench-org/repo-{job_id % REPOSITORIES}"


def _deliveries(first_job_id: int, count: int) -> list[tuple[bytes, dict[str, str]]]:
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
                "repository": {"full_name": _repository(job_id)},
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
                _INTERRUPTS.check()
                started = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] += 1

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one_connection(client) for client in self.all))
        elapsed = time.perf_counter() - started
        return Load(elapsed, latencies, statuses, time.process_time() - cpu)


async def _intake_rounds(servers: Sequence[Server]) -> dict[str, Load]:
    """Warm each server up, then ``ROUNDS`` alternating measured rounds; the best
    round (highest throughput) of each server."""
    best: dict[str, Load] = {}
    next_id = 1
    async with Clients() as clients:
        for server in servers:
            await clients.post_all(f"{server.url}/webhook", _deliveries(next_id, WARMUP))
            next_id += WARMUP
        for _ in range(ROUNDS):
            for server in servers:
                deliveries = _deliveries(next_id, REQUESTS)
                next_id += REQUESTS
                own, helpers = server.cpu_s()
                load = await clients.post_all(f"{server.url}/webhook", deliveries)
                own_after, helpers_after = server.cpu_s()
                load.helper_cpu_s = helpers_after - helpers
                load.server_cpu_s = own_after - own + load.helper_cpu_s
                if server.name not in best or load.throughput > best[server.name].throughput:
                    best[server.name] = load
    return best


# --------------------------------------------------------------------------- servers


def _write_app_key(path: Path) -> None:
    """A throwaway GitHub App key: local mode refuses to start without one (it is never
    used: the worker is off, and the API URL points at a closed local port)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _start_bare(processes: Processes, name: str) -> Server:
    port = _free_port()
    server = processes.start(name, [str(BARE_SERVER), f"{HOST}:{port}"], _clean_env())
    server.wait_ready(f"http://{HOST}:{port}")
    return server


def _start_local(processes: Processes, root: Path) -> Server:
    """``runs-fleet serve --no-worker --no-scheduler`` in local mode, embedded Valkey."""
    (root / "runner").mkdir()
    _write_app_key(root / "app.pem")
    port = _free_port()
    env = _clean_env(
        RUNS_FLEET_MODE="local",
        RUNS_FLEET_STATE_DIR=str(root / "local-state"),
        RUNS_FLEET_GITHUB_WEBHOOK_SECRET=SECRET,
        RUNS_FLEET_GITHUB_APP_ID="1",
        RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE=str(root / "app.pem"),
        RUNS_FLEET_GITHUB_API_URL=f"http://{HOST}:{_free_port()}",
        RUNS_FLEET_RUNNER_DIR=str(root / "runner"),
        RUNS_FLEET_LISTEN=f"{HOST}:{port}",
        RUNS_FLEET_SHUTDOWN_DELAY_S="0",
    )
    argv = ["-m", "runs_fleet_cli", "serve", "--no-worker", "--no-scheduler"]
    server = processes.start("runs-fleet-local", argv, env)
    server.wait_ready(f"http://{HOST}:{port}")
    valkey = _valkey_pid(root / "local-state")
    server.helper_pids = [valkey] if valkey is not None else []
    return server


def _start_memory(processes: Processes) -> Server:
    """``runs-fleet serve`` (worker and scheduler on) in memory mode."""
    port = _free_port()
    env = _clean_env(
        RUNS_FLEET_MODE="memory",
        RUNS_FLEET_GITHUB_WEBHOOK_SECRET=SECRET,
        RUNS_FLEET_LISTEN=f"{HOST}:{port}",
        RUNS_FLEET_SHUTDOWN_DELAY_S="0",
    )
    server = processes.start("runs-fleet-memory", ["-m", "runs_fleet_cli", "serve"], env)
    server.wait_ready(f"http://{HOST}:{port}")
    return server


# --------------------------------------------------------------------------- part 1


class IntakeResult:
    def __init__(self, bare: Load, fleet: Load, local_idle_kib: int, bare_idle_kib: int):
        self.bare = bare
        self.fleet = fleet
        self.local_idle_kib = local_idle_kib
        self.bare_idle_kib = bare_idle_kib


def webhook_intake(processes: Processes, root: Path) -> IntakeResult:
    bare = _start_bare(processes, "bare-intake")
    fleet = _start_local(processes, root)
    time.sleep(SETTLE_S)
    bare_idle, local_idle = bare.rss_kib(), fleet.rss_kib()
    try:
        best = _run(_intake_rounds([bare, fleet]))
    finally:
        processes.stop(fleet)
        processes.stop(bare)
    return IntakeResult(best[bare.name], best[fleet.name], local_idle, bare_idle)


# --------------------------------------------------------------------------- part 2


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
    repository = _repository(job_id)
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
            _INTERRUPTS.check()
            await queue.send(message)
        moved = 0
        while moved < DISPATCH_JOBS:
            _INTERRUPTS.check()
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
            _INTERRUPTS.check()
            await intake.take(
                WorkflowJobEvent(
                    action=WorkflowJobAction.QUEUED,
                    job_id=JobId(n),
                    run_id=100_000 + n // 4,
                    run_attempt=1,
                    repository=_repository(n),
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
                asyncio.create_task(_INTERRUPTS.wait()),
            }
            await asyncio.wait(waits, timeout=DISPATCH_TIMEOUT_S, return_when="FIRST_COMPLETED")
            for waiting in waits:
                waiting.cancel()
            _INTERRUPTS.check()
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
    return _run(_dispatch_bench(root / "dispatch-state"))


# --------------------------------------------------------------------------- part 3


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
        _INTERRUPTS.check()
        await asyncio.sleep(0.5)


async def _burst_memory(server: Server, result: MemoryResult) -> None:
    async with Clients() as clients:
        result.fleet_load = await clients.post_all(f"{server.url}/webhook", _deliveries(1, BURST))
        result.fleet_burst_kib = server.rss_kib()
        await _wait_dispatched(clients, server.url)
        await asyncio.sleep(SETTLE_S)
        result.fleet_drained_kib = server.rss_kib()
        result.fleet_peak_kib = server.peak_kib()
        result.launched = await _count_jobs(clients, server.url, "launching")


async def _burst_bare(server: Server) -> None:
    async with Clients() as clients:
        await clients.post_all(f"{server.url}/webhook", _deliveries(1, BURST))


def server_memory(processes: Processes) -> MemoryResult:
    result = MemoryResult()
    bare = _start_bare(processes, "bare-rss")
    try:
        time.sleep(SETTLE_S)
        result.bare_idle_kib = bare.rss_kib()
        _run(_burst_bare(bare))
        result.bare_burst_kib = bare.rss_kib()
    finally:
        processes.stop(bare)
    fleet = _start_memory(processes)
    try:
        time.sleep(SETTLE_S)
        result.fleet_idle_kib = fleet.rss_kib()
        _run(_burst_memory(fleet, result))
    finally:
        processes.stop(fleet)
    return result


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
    idle_mb = _mib(memory.fleet_idle_kib)
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
            f"{_mib(memory.bare_idle_kib):.1f} MB bare",
            f"{memory.fleet_idle_kib / memory.bare_idle_kib:.2f}x",
            f"<= {IDLE_RSS_TARGET_MB:.0f} MB",
            _mark(idle_mb <= IDLE_RSS_TARGET_MB),
        ),
        (
            f"RSS after {BURST:,}-webhook burst",
            f"{_mib(memory.fleet_burst_kib):.1f} MB",
            f"{_mib(memory.bare_burst_kib):.1f} MB bare",
            f"{memory.fleet_burst_kib / memory.bare_burst_kib:.2f}x",
            "-",
            "",
        ),
        (
            "  ... all dispatched / peak (VmHWM)",
            f"{_mib(memory.fleet_drained_kib):.1f} / {_mib(memory.fleet_peak_kib):.1f} MB",
            "-",
            "-",
            "-",
            "",
        ),
        (
            "RSS idle, local mode --no-worker",
            f"{_mib(intake.local_idle_kib):.1f} MB",
            f"{_mib(intake.bare_idle_kib):.1f} MB bare",
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


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside an event loop: stop like Ctrl-C does."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def _workspace() -> Iterator[tuple[Path, Processes]]:
    root = Path(tempfile.mkdtemp(prefix="runs-fleet-bench-"))
    processes = Processes(root)
    try:
        yield root, processes
    finally:
        processes.stop_all()
        for state_dir in (root / "local-state", root / "dispatch-state"):
            _kill_leftover_valkey(state_dir)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
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
