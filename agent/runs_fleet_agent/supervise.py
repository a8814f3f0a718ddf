"""Running the GitHub Actions runner once, under a runtime ceiling, stoppable by signal.

The runner runs in its own process group so that a stop reaches everything it started
(the listener, the worker, the job's processes): SIGTERM/SIGINT are forwarded to the
whole group and escalated to SIGKILL after a grace period. The runtime ceiling is armed
before the runner starts, because an agent whose ceiling never fired once left 24 of 62
instances running for good. When the runner exits, whatever its job left behind in the
group is killed, so no process outlives the job.

Given a :class:`~runs_fleet_agent.output.LineSink`, the runner writes its stdout and
stderr into a pipe instead of the agent's own streams: an
:class:`~runs_fleet_agent.output.OutputCopier` copies everything to the agent's stdout
and hands each line to the sink. Without one the runner inherits the agent's streams.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from runs_fleet_agent.output import LineSink, OutputCopier
from runs_fleet_core.domain.messages import AgentEvent

EXIT_TIMEOUT = 124
EXIT_CANNOT_RUN = 127
OUTPUT_DRAIN_S = 2.0
"""How long the output of a runner that exited may still be copied (a process that left
the runner's group may hold the pipe open for good)."""


@dataclass(frozen=True)
class Outcome:
    """How the run ended: the agent's exit code, the event to report, and a detail."""

    exit_code: int
    event: AgentEvent
    detail: str | None = None


class StopRequest:
    """Remembers the first stop signal received; install it as a signal handler."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        """Record ``signum`` (later signals do not replace the first)."""
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived."""
        return self.signum is not None

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` in short steps, waking early when a stop signal arrives."""
        until = time.monotonic() + seconds
        while not self.requested and (left := until - time.monotonic()) > 0:
            time.sleep(min(0.1, left))


def signal_exit_code(signum: int) -> int:
    """The shell convention for death by a signal: 128 + its number (SIGTERM: 143)."""
    return 128 + signum


def run_once(
    command: Sequence[str],
    *,
    max_runtime_s: float,
    grace_s: float,
    stop: StopRequest,
    poll_s: float = 0.1,
    output: LineSink | None = None,
    env: Mapping[str, str] | None = None,
) -> Outcome:
    """Run ``command`` to its end, or stop it on a signal or at the runtime ceiling.
    ``output``: where the runner's output lines go besides the agent's stdout (``None``:
    the runner writes to the agent's stdout and stderr itself). ``env``: the command's
    whole environment (``None``: the agent's)."""
    piped = output is not None
    try:
        child = subprocess.Popen(  # noqa: S603
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if piped else None,
            stderr=subprocess.STDOUT if piped else None,
            process_group=0,
            env=None if env is None else dict(env),
        )
    except OSError as exc:
        return Outcome(EXIT_CANNOT_RUN, AgentEvent.FAILED, f"cannot start the runner: {exc}")
    copier = None
    if output is not None and child.stdout is not None:
        copier = OutputCopier(child.stdout.fileno(), output, echo=_agent_stdout())
        copier.start()
    deadline = time.monotonic() + max_runtime_s
    reason: str | None = None
    kill_at = math.inf
    while not _exited(child.pid):
        now = time.monotonic()
        if reason is None and (stop.requested or now >= deadline):
            reason = "signal" if stop.requested else "timeout"
            _signal_group(child.pid, stop.signum or signal.SIGTERM)
            kill_at = now + grace_s
        elif now >= kill_at:
            _signal_group(child.pid, signal.SIGKILL)
            kill_at = math.inf
        time.sleep(poll_s)
    _signal_group(child.pid, signal.SIGKILL)  # the exited leader still holds the group id
    returncode = child.wait()
    if copier is not None and copier.finish(OUTPUT_DRAIN_S) and child.stdout is not None:
        child.stdout.close()
    return _outcome(returncode, reason, stop, max_runtime_s)


def _agent_stdout() -> BinaryIO | None:
    """The agent's stdout as bytes, ``None`` when it has none."""
    buffer: BinaryIO | None = getattr(sys.stdout, "buffer", None)
    return buffer


def _outcome(
    returncode: int, reason: str | None, stop: StopRequest, max_runtime_s: float
) -> Outcome:
    if reason == "timeout":
        detail = f"the runner exceeded the maximum runtime of {max_runtime_s:g}s and was stopped"
        return Outcome(EXIT_TIMEOUT, AgentEvent.FAILED, detail)
    if reason == "signal" and stop.signum is not None:
        name = signal.Signals(stop.signum).name
        return Outcome(signal_exit_code(stop.signum), AgentEvent.INTERRUPTED, f"stopped by {name}")
    code = signal_exit_code(-returncode) if returncode < 0 else returncode
    if code == 0:
        return Outcome(0, AgentEvent.FINISHED)
    return Outcome(code, AgentEvent.FAILED, f"the runner exited with code {code}")


def _exited(pid: int) -> bool:
    """Whether the child exited, without reaping it (so its group id stays reserved)."""
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return result is not None


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return
