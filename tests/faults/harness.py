"""The fault matrix's machinery: replicas, webhook deliveries, the fault schedule.

A :class:`Burst` runs one deployment mode with three ``runs-fleet serve`` replicas (the
production command, unchanged) that reach every backend through a
:class:`~tests.faults.proxy.FaultProxy` of their own. GitHub's webhooks reach them
through :class:`WebhookRelay`, which plays GitHub's side of the network: each delivery
goes 1-3 times, after random delays (so copies and events of one job arrive in any
order), each time to a random live replica; a failed delivery is not retried, as GitHub
does not retry on its own (runs-fleet's healing and discovery must make up for it).
Meanwhile :class:`FaultSchedule` SIGKILLs replicas right after each dispatch step (a
tap on the step's request) and restarts them, cuts and stalls each backend for a while,
makes GitHub answer errors, and restarts Valkey. The mode (:mod:`tests.faults.modes`)
then counts what the invariants forbid.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import http.server
import json
import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from runs_fleet_cli.demo.processes import free_port, start, stop, tail, wait_until_ready
from tests.faults.proxy import FaultProxy, Mode

REPLICAS = 3
START_TIMEOUT_S = 30.0


@attrs.frozen
class Step:
    """A dispatch step a replica is killed right after: the backend that sees it and a
    pattern of the request that performs it."""

    backend: str
    pattern: bytes
    label: str


class Replica:
    """One ``runs-fleet serve`` process of the deployment; killed and restarted at will."""

    def __init__(self, index: int, workdir: Path, argv: list[str]) -> None:
        self.index = index
        self.workdir = workdir
        self.argv = argv
        self.port = free_port()
        self.env: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.logs: list[Path] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> None:
        with self.lock:
            self.starts += 1
            log = self.workdir / f"replica-{self.index}-{self.starts:02d}.log"
            self.logs.append(log)
            env = self.env | {"RUNS_FLEET_LISTEN": f"127.0.0.1:{self.port}"}
            self.process = start(self.argv, env=env, cwd=self.workdir, log=log)
            process = self.process
        if wait:
            wait_until_ready(f"{self.url}/health", process, log, START_TIMEOUT_S)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no flush, no goodbye to any backend."""
        with self.lock:
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait()

    def stop(self) -> None:
        with self.lock:
            if self.process is not None:
                stop(self.process)

    def describe(self) -> str:
        return "\n".join(f"--- {log.name}\n{tail(log, 30)}" for log in self.logs[-2:])


class WebhookRelay:
    """GitHub's side of webhook delivery (see the module docstring). The simulator
    posts here; the answer is 200 at once, then the copies go out."""

    def __init__(self, replicas: Sequence[Replica], rng: random.Random) -> None:
        self.replicas = replicas
        self.rng = rng
        self.outcomes: Counter[str] = Counter()
        self.received = 0
        self._due: list[tuple[float, int, bytes, dict[str, str]]] = []
        self._count = 0
        self._cv = threading.Condition()
        self._closed = False
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items() if k.lower().startswith("x-")}
                headers["Content-Type"] = self.headers.get("Content-Type", "application/json")
                relay.submit(body, headers)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhook"
        self._threads = [threading.Thread(target=self._server.serve_forever, daemon=True)]
        self._threads += [threading.Thread(target=self._send_loop, daemon=True) for _ in range(4)]
        for thread in self._threads:
            thread.start()

    def submit(self, body: bytes, headers: dict[str, str]) -> None:
        with self._cv:
            self.received += 1
            for _ in range(self.rng.randint(1, 3)):
                self._count += 1
                due = time.monotonic() + self.rng.uniform(0.0, 0.8)
                heapq.heappush(self._due, (due, self._count, body, headers))
            self._cv.notify_all()

    @property
    def pending(self) -> int:
        with self._cv:
            return len(self._due)

    def _send_loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._due or self._due[0][0] > time.monotonic()):
                    self._cv.wait(0.02)
                if self._closed:
                    return
                _, _, body, headers = heapq.heappop(self._due)
            self.outcomes[self._deliver(body, headers)] += 1

    def _deliver(self, body: bytes, headers: Mapping[str, str]) -> str:
        live = [r for r in self.replicas if r.alive]
        if not live:
            return "no replica"
        replica = self.rng.choice(live)
        request = urllib.request.Request(
            f"{replica.url}/webhook", data=body, headers=dict(headers), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(response.status)
        except urllib.error.HTTPError as exc:
            return str(exc.code)
        except OSError:
            return "connection failed"

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._server.shutdown()
        self._server.server_close()


@attrs.define
class FaultLog:
    """What the schedule did, for the table."""

    kills: Counter[str] = attrs.field(factory=Counter)
    missed_steps: Counter[str] = attrs.field(factory=Counter)
    outages: Counter[str] = attrs.field(factory=Counter)
    valkey_restarts: int = 0
    github_errors: int = 0


class FaultSchedule:
    """Runs the faults in a thread until :meth:`stop` (see the module docstring)."""

    def __init__(
        self,
        *,
        replicas: Sequence[Replica],
        proxies: Mapping[str, Sequence[FaultProxy]],
        steps: Sequence[Step],
        rng: random.Random,
        restart_valkey: Callable[[], None] | None,
        github_fault: Callable[[], int],
        rounds: int = 2,
    ) -> None:
        self.replicas = replicas
        self.proxies = proxies
        self.steps = steps
        self.rng = rng
        self.restart_valkey = restart_valkey
        self.github_fault = github_fault
        self.rounds = rounds
        self.log = FaultLog()
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._kills, daemon=True),
            threading.Thread(target=self._outages, daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self.threads:
            thread.join(30)
        for proxies in self.proxies.values():
            for proxy in proxies:
                proxy.disarm()
                proxy.set_mode(Mode.PASS)

    def _kills(self) -> None:
        """Each step in turn, ``rounds`` times: arm a tap on a random live replica's
        proxy, kill that replica when the step's answer starts, restart it."""
        for step in [s for _ in range(self.rounds) for s in self.steps]:
            if self._stop.is_set():
                return
            fired = threading.Event()
            for replica in self.replicas:
                proxy = self.proxies[step.backend][replica.index]
                proxy.arm(step.pattern, functools.partial(self._kill, replica, fired), step.label)
            if fired.wait(10):
                self.log.kills[step.label] += 1
            else:
                self.log.missed_steps[step.label] += 1
            for replica in self.replicas:
                self.proxies[step.backend][replica.index].disarm()
                if not replica.alive:
                    self._stop.wait(self.rng.uniform(0.1, 0.6))
                    replica.start(wait=False)

    @staticmethod
    def _kill(replica: Replica, fired: threading.Event) -> None:
        """The first replica to reach the step dies; the others' taps are disarmed."""
        if not fired.is_set():
            fired.set()
            replica.kill()

    def _outages(self) -> None:
        """Every backend in turn: cut (connections reset) then hung (bytes held), a
        second or two each; GitHub errors; a Valkey crash and restart in the middle."""
        backends = list(self.proxies)
        self._stop.wait(2.0)
        for n, backend in enumerate(backends * 2):
            if self._stop.is_set():
                return
            mode = Mode.RESET if n % 2 == 0 else Mode.STALL
            for proxy in self.proxies[backend]:
                proxy.set_mode(mode)
            self._stop.wait(self.rng.uniform(1.0, 2.5))
            for proxy in self.proxies[backend]:
                proxy.set_mode(Mode.PASS)
            self.log.outages[f"{backend} {mode.value}"] += 1
            self.log.github_errors += self.github_fault()
            if n == len(backends) - 1 and self.restart_valkey is not None:
                self.restart_valkey()
                self.log.valkey_restarts += 1
            self._stop.wait(self.rng.uniform(1.0, 2.0))


def http_get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_until(check: Callable[[], bool], timeout_s: float, poll_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if check():
                return True
        time.sleep(poll_s)
    return False
