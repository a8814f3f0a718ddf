"""The runs-fleet agent as a process: config in, run.sh once, reports out, exit code.

Each test runs ``python -m runs_fleet_agent`` for real against a stand-in ``run.sh``
and a tiny HTTP receiver on 127.0.0.1 that records the reports. Agents run in their own
session and every one of them (and what it started) is killed at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runs_fleet_core.converters import dumps, loads, make_config_converter, make_message_converter
from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.messages import AgentEvent, AgentReport
from runs_fleet_core.domain.runner import RunnerConfig

AGENT_PATH = str(Path(__file__).parents[2] / "agent")
JIT = "JIT-CONFIG-SECRET-0123456789"
TOKEN = "REPORT-TOKEN-SECRET-abcdef"
RECORDING_RUN_SH = '#!/bin/sh\necho "$@" > args\necho $$ > runner.pid\nexit "${EXIT_WITH:-0}"\n'
SLEEPING_RUN_SH = "#!/bin/sh\necho $$ > runner.pid\nsleep 60 &\necho $! > sleeper.pid\nwait\n"
TRAPPING_RUN_SH = (
    "#!/bin/sh\ntrap 'echo TERM > got; exit 0' TERM\necho $$ > runner.pid\n"
    "while true; do sleep 0.1; done\n"
)
STUBBORN_RUN_SH = "#!/bin/sh\ntrap '' TERM\necho $$ > runner.pid\nwhile true; do sleep 0.1; done\n"


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs and answers with ``statuses``
    (first to last, then 204)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append((dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/agent/report"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def reports(self) -> list[AgentReport]:
        converter = make_message_converter()
        return [loads(converter, body, AgentReport) for _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


class Agents:
    """Starts agents in ``work`` and kills every one left (with its session) at the end."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.runner_dir = work / "runner"
        self.runner_dir.mkdir()
        self.config_file = work / "configs" / "runs-fleet-7-1.json"
        self.config_file.parent.mkdir()
        self.started: list[subprocess.Popen[str]] = []

    def run_sh(self, script: str) -> None:
        path = self.runner_dir / "run.sh"
        path.write_text(script)
        path.chmod(0o755)

    def write_config(self, **settings: str) -> None:
        config = RunnerConfig(
            runner_name="runs-fleet-7-1",
            job_id=JobId(7),
            repository="octo-org/app",
            jit_config=JIT,
            settings=settings,
        )
        temp = self.config_file.with_suffix(".tmp")
        temp.write_text(dumps(make_config_converter(), config))
        temp.rename(self.config_file)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "runs_fleet_agent", "--config-file", str(self.config_file)]
        command += ["--runner-dir", str(self.runner_dir), "--report-backoff", "0.05", *args]
        child = subprocess.Popen(
            command,
            cwd=self.work,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": AGENT_PATH, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.started.append(child)
        return child

    def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run an agent to its end: its exit code and everything it printed."""
        out, err = self.start(*args, env=env).communicate(timeout=60)
        return self.started[-1].returncode, out + err

    def kill_all(self) -> None:
        for child in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            for name in ("runner.pid", "sleeper.pid"):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
                    os.killpg(int((self.work / name).read_text()), signal.SIGKILL)
            child.communicate()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    agents = Agents(tmp_path)
    yield agents
    agents.kill_all()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def gone(pid_file: Path) -> bool:
    """Whether the process whose pid is in ``pid_file`` has exited (zombies included:
    an orphan waits for a reaper that a container may not have)."""
    try:
        stat = Path(f"/proc/{int(pid_file.read_text())}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def test_the_config_is_read_deleted_and_its_jit_config_handed_to_run_sh(agents: Agents) -> None:
    agents.run_sh(RECORDING_RUN_SH)
    agents.write_config()
    code, _ = agents.run()
    assert code == 0
    assert not agents.config_file.exists()
    assert (agents.work / "args").read_text().split() == ["--jitconfig", JIT]


def test_started_and_finished_are_reported_with_the_bearer_token(
    agents: Agents, receiver: Receiver
) -> None:
    agents.run_sh(RECORDING_RUN_SH)
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    code, _ = agents.run()
    assert code == 0
    assert [h["Authorization"] for h, _ in receiver.requests] == [f"Bearer {TOKEN}"] * 2
    assert {h["Content-Type"] for h, _ in receiver.requests} == {"application/json"}
    started, finished = receiver.reports()
    assert (started.event, started.job_id, started.runner_name) == (
        AgentEvent.STARTED,
        7,
        "runs-fleet-7-1",
    )
    assert (finished.event, finished.exit_code) == (AgentEvent.FINISHED, 0)
    assert finished.at >= started.at


def test_a_failing_runner_is_reported_failed_with_its_exit_code(
    agents: Agents, receiver: Receiver
) -> None:
    agents.run_sh(RECORDING_RUN_SH)
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    code, _ = agents.run(env={"EXIT_WITH": "3"})
    assert code == 3
    report = receiver.reports()[-1]
    assert (report.event, report.exit_code) == (AgentEvent.FAILED, 3)
    assert report.detail and "3" in report.detail


def test_sigterm_is_forwarded_to_the_runner_and_reported_as_interrupted(
    agents: Agents, receiver: Receiver
) -> None:
    agents.run_sh(TRAPPING_RUN_SH)
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    agent = agents.start()
    wait_for(lambda: (agents.work / "runner.pid").exists())
    agent.send_signal(signal.SIGTERM)
    agent.communicate(timeout=30)
    assert agent.returncode == 143
    assert (agents.work / "got").read_text().strip() == "TERM"
    report = receiver.reports()[-1]
    assert (report.event, report.exit_code) == (AgentEvent.INTERRUPTED, 143)


def test_a_runner_that_ignores_sigterm_is_killed_after_the_grace(agents: Agents) -> None:
    agents.run_sh(STUBBORN_RUN_SH)
    agents.write_config()
    agent = agents.start("--grace", "0.5")
    wait_for(lambda: (agents.work / "runner.pid").exists())
    agent.send_signal(signal.SIGTERM)
    agent.communicate(timeout=30)
    assert agent.returncode == 143
    assert gone(agents.work / "runner.pid")


def test_the_maximum_runtime_stops_the_runner_and_everything_it_started(
    agents: Agents, receiver: Receiver
) -> None:
    agents.run_sh(SLEEPING_RUN_SH)
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    code, _ = agents.run("--max-runtime", "1", "--grace", "1")
    assert code == 124
    assert gone(agents.work / "runner.pid") and gone(agents.work / "sleeper.pid")
    report = receiver.reports()[-1]
    assert (report.event, report.exit_code) == (AgentEvent.FAILED, 124)
    assert report.detail and "maximum runtime" in report.detail


def test_the_maximum_runtime_comes_from_the_config_when_not_given(agents: Agents) -> None:
    agents.run_sh(SLEEPING_RUN_SH)
    agents.write_config(max_runtime_s="1")
    code, _ = agents.run("--grace", "1")
    assert code == 124
    assert gone(agents.work / "sleeper.pid")


def test_neither_the_jit_config_nor_the_token_is_ever_printed(
    agents: Agents, receiver: Receiver
) -> None:
    agents.run_sh(RECORDING_RUN_SH)
    receiver.statuses = [503, 401, 500, 500, 500, 500]
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    log = agents.work / "agent.log"
    command = [sys.executable, "-m", "runs_fleet_agent", "--report-backoff", "0.05"]
    command += ["--config-file", str(agents.config_file)]
    with log.open("w") as handle:
        child = subprocess.Popen(
            command,
            cwd=agents.work,
            env={
                "PATH": os.environ["PATH"],
                "PYTHONPATH": AGENT_PATH,
                "RUNS_FLEET_RUNNER_DIR": str(agents.runner_dir),
                "EXIT_WITH": "5",
            },
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        assert child.wait(timeout=60) == 5
    code, output = agents.run("--report-attempts", "2")  # config gone: exits with a message
    assert code == 78
    text = log.read_text() + output
    assert "could not deliver" in text and "no runner config" in text
    assert JIT not in text and TOKEN not in text


def test_without_a_report_url_nothing_is_reported(agents: Agents, receiver: Receiver) -> None:
    agents.run_sh(RECORDING_RUN_SH)
    agents.write_config()
    code, output = agents.run()
    assert code == 0
    assert receiver.requests == []
    assert "no report_url" in output


def test_an_undeliverable_report_does_not_change_the_exit_code(agents: Agents) -> None:
    agents.run_sh(RECORDING_RUN_SH)
    with socket.socket() as sock:  # a port nothing listens on once the socket closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    agents.write_config(report_url=f"http://127.0.0.1:{port}/report", report_token=TOKEN)
    code, output = agents.run("--report-attempts", "2")
    assert code == 0
    assert output.count("could not deliver") == 2


def test_a_report_answered_503_is_retried(agents: Agents, receiver: Receiver) -> None:
    agents.run_sh(RECORDING_RUN_SH)
    receiver.statuses = [503]
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    code, _ = agents.run()
    assert code == 0
    assert [r.event for r in receiver.reports()] == [
        AgentEvent.STARTED,
        AgentEvent.STARTED,
        AgentEvent.FINISHED,
    ]


def test_a_waiting_agent_starts_once_its_config_appears(agents: Agents) -> None:
    agents.run_sh(RECORDING_RUN_SH)
    agent = agents.start("--wait-for-config", "30")
    time.sleep(0.5)
    assert agent.poll() is None and not (agents.work / "args").exists()
    agents.write_config()
    agent.communicate(timeout=30)
    assert agent.returncode == 0
    assert (agents.work / "args").read_text().split() == ["--jitconfig", JIT]


def test_a_waiting_agent_gives_up_or_stops_on_sigterm(agents: Agents) -> None:
    agents.run_sh(RECORDING_RUN_SH)
    assert agents.run("--wait-for-config", "0.3")[0] == 75
    agent = agents.start("--wait-for-config", "30")
    time.sleep(0.5)
    agent.send_signal(signal.SIGTERM)
    agent.communicate(timeout=30)
    assert agent.returncode == 143
    assert not (agents.work / "args").exists()


def test_a_malformed_config_is_deleted_and_refused(agents: Agents) -> None:
    agents.run_sh(RECORDING_RUN_SH)
    agents.config_file.write_text(json.dumps({"jit_config": JIT, "job_id": "not a number"}))
    code, output = agents.run()
    assert code == 78
    assert not agents.config_file.exists()
    assert "malformed" in output and JIT not in output


def test_a_runner_dir_without_run_sh_is_reported_failed(agents: Agents, receiver: Receiver) -> None:
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    code, output = agents.run()
    assert code == 127
    report = receiver.reports()[-1]
    assert (report.event, report.exit_code) == (AgentEvent.FAILED, 127)
    assert JIT not in output
