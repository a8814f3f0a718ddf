"""The runner's output on its way out of the agent: masking secrets, copying the
runner's output to the agent's stdout and to a sink, and the agent's log records."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from runs_fleet_agent.output import (
    MASK,
    LineSink,
    OutputCopier,
    Redactor,
    SinkHandler,
    config_secrets,
)
from runs_fleet_agent.supervise import OUTPUT_DRAIN_S, StopRequest, run_once
from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.messages import AgentEvent
from runs_fleet_core.domain.runner import RunnerConfig

JIT = "eyJKSVQtQ09ORklHIjoic2VjcmV0In0="
INSTALLATION_TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"


class RecordingSink:
    """A sink that keeps every line it is given, with whether it was cut."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, bool]] = []
        self._lock = threading.Lock()

    def write_line(self, line: str, *, cut: bool = False) -> None:
        with self._lock:
            self.lines.append((line, cut))

    @property
    def text(self) -> list[str]:
        return [line for line, _ in self.lines]


class FailingSink:
    def write_line(self, line: str, *, cut: bool = False) -> None:
        raise RuntimeError("the sink is broken")


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "run.sh"
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return [str(path)]


def run(command: list[str], sink: LineSink | None = None) -> int:
    outcome = run_once(
        command, max_runtime_s=30, grace_s=1, stop=StopRequest(), poll_s=0.02, output=sink
    )
    return outcome.exit_code


# ------------------------------------------------------------------------------------------
# Redactor
# ------------------------------------------------------------------------------------------


def test_given_values_are_masked_wherever_they_appear() -> None:
    redactor = Redactor([JIT])
    redactor.add("report-token-0123", "")
    text = f"run.sh --jitconfig {JIT} token=report-token-0123 again {JIT}"
    assert redactor.redact(text) == f"run.sh --jitconfig {MASK} token={MASK} again {MASK}"


def test_a_value_inside_a_longer_one_does_not_leave_the_longer_one_half_shown() -> None:
    redactor = Redactor(["abcd", "xxabcdxx-secret"])
    assert redactor.redact("value xxabcdxx-secret and abcd") == f"value {MASK} and {MASK}"


@pytest.mark.parametrize(
    "secret",
    [
        INSTALLATION_TOKEN,
        "ghp_" + "a1B2c3D4e5" * 4,
        "gho_" + "Z" * 36,
        "ghu_" + "0" * 36,
        "ghr_" + "x9" * 38,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQR",
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAIOSFODNN7EXAMPLE",
    ],
)
def test_token_shapes_are_masked_without_being_told(secret: str) -> None:
    redacted = Redactor().redact(f"git clone https://x-access-token:{secret}@github.com/o/r")
    assert secret not in redacted
    assert redacted == f"git clone https://x-access-token:{MASK}@github.com/o/r"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            f"aws_secret_access_key={MASK}",
        ),
        (
            "export AWS_SECRET_ACCESS_KEY='wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'",
            f"export AWS_SECRET_ACCESS_KEY='{MASK}'",
        ),
        ('"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG"', f'"SecretAccessKey": "{MASK}"'),
        ("aws_session_token = IQoJb3JpZ2luX2VjE", f"aws_session_token = {MASK}"),
    ],
)
def test_aws_secret_settings_keep_their_name_and_lose_their_value(line: str, expected: str) -> None:
    assert Redactor().redact(line) == expected


def test_ordinary_output_is_left_alone() -> None:
    line = "ghs_ is a prefix; github_pat_ too; AKIA alone; Run actions/checkout@v4 (30s)"
    assert Redactor(["not-in-the-line"]).redact(line) == line


def test_a_cut_line_loses_the_beginning_of_a_secret_at_its_end() -> None:
    redactor = Redactor([JIT])
    assert redactor.redact(f"--jitconfig {JIT[:10]}", cut=True) == f"--jitconfig {MASK}"
    assert redactor.redact(f"token {INSTALLATION_TOKEN[:9]}", cut=True) == f"token {MASK}"
    # a whole line is not cut: its end is no secret's beginning
    assert redactor.redact(f"--jitconfig {JIT[:10]}") == f"--jitconfig {JIT[:10]}"


def test_a_configs_secrets_are_its_jit_config_and_secret_settings() -> None:
    config = RunnerConfig(
        runner_name="r",
        job_id=JobId(1),
        repository="o/r",
        jit_config=JIT,
        settings={"report_token": "tok", "report_url": "https://x", "max_runtime_s": "60"},
    )
    assert config_secrets(config) == [JIT, "tok"]


def test_log_records_go_to_the_sink_formatted() -> None:
    sink = RecordingSink()
    log = logging.getLogger("runs_fleet_agent.test_output")
    handler = SinkHandler(sink)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("runner %s takes job %d", "r-1", 7)
        log.debug("not this one")
    finally:
        log.removeHandler(handler)
    assert sink.text == ["runs-fleet-agent INFO runner r-1 takes job 7"]


# ------------------------------------------------------------------------------------------
# run_once with and without a sink
# ------------------------------------------------------------------------------------------


def test_with_a_sink_the_runners_lines_reach_the_sink_and_still_the_agents_stdout(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    sink = RecordingSink()
    command = script(
        tmp_path, 'echo "first line"\necho "to stderr" >&2\nprintf "last, no newline"\n'
    )
    assert run(command, sink) == 0
    assert sink.lines == [("first line", False), ("to stderr", False), ("last, no newline", False)]
    out, err = capfd.readouterr()
    assert out == "first line\nto stderr\nlast, no newline"
    assert err == ""


def test_without_a_sink_the_runner_writes_to_the_agents_streams_itself(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    command = script(tmp_path, 'echo "first line"\necho "to stderr" >&2\n')
    assert run(command) == 0
    out, err = capfd.readouterr()
    assert out == "first line\n"
    assert err == "to stderr\n"


def test_the_copy_is_unchanged_and_the_sink_gets_long_lines_cut() -> None:
    sink = RecordingSink()
    echo = io.BytesIO()
    read_end, write_end = os.pipe()
    copier = OutputCopier(read_end, sink, echo=echo, max_line_bytes=100)
    copier.start()
    long_line = "é" * 30 + "x" * 220  # 280 bytes
    os.write(write_end, f"{long_line}\r\nwindows line\r\nshort\n".encode())
    os.close(write_end)
    assert copier.finish(5.0)
    os.close(read_end)
    assert sink.lines == [
        ("é" * 30 + "x" * 40, True),
        ("windows line", False),
        ("short", False),
    ]
    assert echo.getvalue() == f"{long_line}\r\nwindows line\r\nshort\n".encode()


def test_a_failing_sink_does_not_stop_the_copy_or_change_the_outcome(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    command = script(tmp_path, "echo one\necho two\nexit 3\n")
    outcome = run_once(
        command, max_runtime_s=30, grace_s=1, stop=StopRequest(), poll_s=0.02, output=FailingSink()
    )
    assert (outcome.exit_code, outcome.event) == (3, AgentEvent.FAILED)
    assert capfd.readouterr().out == "one\ntwo\n"


def test_a_process_that_left_the_group_holding_the_pipe_does_not_hold_up_the_end(
    tmp_path: Path,
) -> None:
    sink = RecordingSink()
    stray = tmp_path / "stray.pid"
    command = script(tmp_path, f"setsid sleep 30 & echo $! > {stray}\necho done\n")
    started = time.monotonic()
    try:
        assert run(command, sink) == 0
        assert time.monotonic() - started < OUTPUT_DRAIN_S + 5
        assert sink.text == ["done"]
    finally:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(int(stray.read_text()), signal.SIGKILL)
