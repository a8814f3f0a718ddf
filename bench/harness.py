"""The harness of ``bench/local.py``: its settings and targets, Ctrl-C/SIGTERM handling
for its event loops, and the server subprocesses it starts (runs-fleet in local or memory
mode, the bare Starlette baseline) with their CPU and memory readings. Kept apart from the
measurements so each part of the benchmark reads as what it measures."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

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


INTERRUPTS = _Interrupts()


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``; SIGINT or SIGTERM makes it stop at its next step with
    :class:`Interrupted` (a second one cancels it outright)."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        INTERRUPTS.count, INTERRUPTS.event = 0, asyncio.Event()

        def interrupt() -> None:
            INTERRUPTS.count += 1
            assert INTERRUPTS.event is not None
            INTERRUPTS.event.set()
            if INTERRUPTS.count > 1:
                task.cancel()

        signals = [signal.SIGTERM]
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signals.append(signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, interrupt)
        try:
            result = await main
            INTERRUPTS.check()  # a signal after the last step the loops checked
            return result
        except asyncio.CancelledError:
            if INTERRUPTS.count:
                raise Interrupted from None
            raise
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            signal.signal(signal.SIGTERM, on_sigterm)

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


def mib(kib: int) -> float:
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


def kill_leftover_valkey(state_dir: Path) -> None:
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


def start_bare(processes: Processes, name: str) -> Server:
    port = _free_port()
    server = processes.start(name, [str(BARE_SERVER), f"{HOST}:{port}"], _clean_env())
    server.wait_ready(f"http://{HOST}:{port}")
    return server


def start_local(processes: Processes, root: Path) -> Server:
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


def start_memory(processes: Processes) -> Server:
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


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside an event loop: stop like Ctrl-C does."""
    raise KeyboardInterrupt
