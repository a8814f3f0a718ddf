"""Agent processes: starting them detached, recognising them later, stopping all of them.

A pid alone cannot identify a process across an orchestrator restart: the kernel reuses
pids. Paired with the process start time from ``/proc/<pid>/stat`` it can. Each agent
leads its own session (``start_new_session``); the runner it starts gets its own process
group inside that session, so stopping a runner for good means signalling the agent's
group first (it forwards the stop) and then killing every process of the session.
Linux only: this reads ``/proc``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

_PROC = Path("/proc")
_DEAD_STATES = frozenset({"Z", "X", "x"})
_ENV_PASSED = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The start time of live process ``pid`` in clock ticks since boot; ``None`` when
    there is no such process or it already exited (a zombie counts as gone)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in _DEAD_STATES:
        return None
    return int(fields[19])


def is_alive(pid: int | None, started: int | None) -> bool:
    """Whether ``pid`` is still the process that started at ``started``."""
    return pid is not None and started is not None and start_time(pid) == started


def session_members(session: int) -> list[int]:
    """Pids of the live processes whose session id is ``session``."""
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[0] not in _DEAD_STATES and int(fields[3]) == session:
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to process group ``pgid``; a gone group is fine."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return


def kill_session(session: int) -> None:
    """SIGKILL every process of ``session`` (the agent's group and its runner's)."""
    signal_group(session, signal.SIGKILL)
    for pid in session_members(session):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


def agent_environment(runner_dir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of an agent: a few harmless variables of ours, the runner dir,
    and ``extra``. Never the orchestrator's own settings: the job would see them."""
    env = {name: os.environ[name] for name in _ENV_PASSED if name in os.environ}
    if "PYTHONPATH" in env:  # agents run in their work dir: relative entries would break
        entries = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(e) for e in entries if e)
    env["RUNS_FLEET_RUNNER_DIR"] = str(Path(runner_dir).absolute())
    env.update(extra)
    return env


def spawn(command: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` detached in its own session, in ``cwd``, appending its output to
    ``cwd/agent.log`` (created 0600)."""
    log_fd = os.open(
        cwd / "agent.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
    )
    try:
        return subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(log_fd)


def find_by_cwd(directory: Path) -> int | None:
    """The pid of a live session leader working in ``directory`` (an agent
    started by a creator that crashed before recording it), or ``None``."""
    target = str(directory.resolve())
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") != target:
                continue
        except OSError:
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in _DEAD_STATES and fields[3] == entry.name:
            return int(entry.name)  # the session leader: the agent, not its runner
    return None
