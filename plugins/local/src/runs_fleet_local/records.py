"""Runner records on disk: what the local backend knows about each runner it started.

Local runners are processes, and processes say nothing about the job they serve or the
pool they belong to, and nothing at all once the orchestrator restarts. So each runner
has a work dir ``<state_dir>/runners/<runner_id>/`` holding ``runner.json``: its job or
pool, the agent's pid and the process start time that guards against a reused pid. A
record is written atomically (temp file, fsync, rename), and every change to the set
of runners happens under an exclusive lock on ``runners/.lock``, so two orchestrator
processes on one host never start two runners for one name.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import attrs

from runs_fleet_core.converters import dumps, loads, make_record_converter
from runs_fleet_local.private import make_private_dir

RECORD_FILE = "runner.json"
LOG_FILE = "agent.log"
_LOCK_FILE = ".lock"


class Kind(enum.StrEnum):
    """A runner started for one job (``cold``) or kept warm in a pool (``pool``)."""

    COLD = "cold"
    POOL = "pool"


class Phase(enum.StrEnum):
    """What the record says; the process check refines it (a dead agent is not running).

    ``pending``: named but its agent not yet recorded (a creator crashed in between);
    ``running``: an agent was started; ``stopped``: a pool runner without a process on
    purpose; ``terminated``: removed for good (kept so that describe can say so)."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPED = "stopped"
    TERMINATED = "terminated"


@attrs.frozen(kw_only=True)
class RunnerRecord:
    """One runner as recorded in its ``runner.json``."""

    runner_id: str
    kind: Kind
    phase: Phase
    launched_at: datetime
    runner_name: str | None = None
    job_id: int | None = None
    pool: str | None = None
    pid: int | None = None
    start_time: int | None = None
    """The agent's start time in clock ticks since boot (``/proc/<pid>/stat``, field 22)."""
    started_at: datetime | None = None
    """When the agent was last spawned (a pool runner's idle-since)."""
    ended_at: datetime | None = None


class RecordStore:
    """The records under ``root`` (``<state_dir>/runners``). Blocking: call from a thread."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._converter = make_record_converter()

    @property
    def root(self) -> Path:
        """The directory holding one work dir per runner."""
        return self._root

    def work_dir(self, runner_id: str) -> Path:
        """The runner's work dir (its agent's cwd and log)."""
        return self._root / runner_id

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive lock that serialises changes across processes."""
        make_private_dir(self._root)
        fd = os.open(self._root / _LOCK_FILE, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read(self, runner_id: str) -> RunnerRecord | None:
        """The record of ``runner_id``; ``None`` when there is none (or it is unreadable)."""
        path = self.work_dir(runner_id) / RECORD_FILE
        try:
            return loads(self._converter, path.read_bytes(), RunnerRecord)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None

    def write(self, record: RunnerRecord) -> None:
        """Write ``record`` atomically and durably, creating its work dir."""
        directory = self.work_dir(record.runner_id)
        make_private_dir(directory)
        path = directory / RECORD_FILE
        temp = directory / f".{RECORD_FILE}.{secrets.token_hex(6)}.tmp"
        try:
            with open(temp, "xb") as handle:
                handle.write(dumps(self._converter, record).encode())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(directory)

    def all(self) -> list[RunnerRecord]:
        """Every readable record, oldest launch first."""
        try:
            names = sorted(os.listdir(self._root))
        except FileNotFoundError:
            return []
        records = [self.read(name) for name in names if not name.startswith(".")]
        return sorted((r for r in records if r is not None), key=lambda r: r.launched_at)

    def remove(self, runner_id: str) -> None:
        """Delete the runner's work dir and record; a missing one is fine."""
        shutil.rmtree(self.work_dir(runner_id), ignore_errors=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
