"""The machinery both local compute adapters share: records, agents, locks and stops.

:class:`LocalRunners` starts agents (``python -m runs_fleet_agent``) detached, records
them, tells whether a recorded agent still runs, and stops one for good. Every change
to the set of runners runs in a worker thread under the records' file lock (and an
asyncio lock, so one process does not queue threads on its own lock); the safety cap on
live agents is checked under the same lock, so concurrent creates cannot exceed it.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import attrs

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.errors import ProviderError
from runs_fleet_core.ports import Clock
from runs_fleet_local import processes
from runs_fleet_local.configs import FileConfigStore
from runs_fleet_local.private import make_private_dir
from runs_fleet_local.records import Kind, Phase, RecordStore, RunnerRecord
from runs_fleet_local.runner_dirs import private_runner_dir

T = TypeVar("T")
_POLL_S = 0.05
_KILL_WAIT_S = 5.0


@attrs.frozen(kw_only=True)
class AgentOptions:
    """How agents are started.

    ``runner_dir``: the GitHub Actions runner they run (``None``: creates fail with a
    message). ``grace_s``: the agent's SIGTERM → SIGKILL delay for its runner; stopping
    an agent waits that long plus ``stop_margin_s`` before killing its whole session.
    ``max_runtime_s``: passed as ``--max-runtime`` when set. ``wait_for_config_s``: how
    long a warm-pool agent waits for a job before exiting (its runner then counts as
    stopped). ``max_runners``: the cap on live agents on this host.
    ``private_runner_dirs``: give each agent a runner directory of its own made of
    symlinks into ``runner_dir`` (:mod:`runs_fleet_local.runner_dirs`), for runners that
    register themselves with a registration token."""

    runner_dir: Path | None
    max_runners: int = 8
    grace_s: float = 30.0
    stop_margin_s: float = 5.0
    max_runtime_s: float | None = None
    wait_for_config_s: float = 24 * 3600.0
    python: str = sys.executable
    extra_env: Mapping[str, str] = attrs.field(factory=dict)
    retention: timedelta = timedelta(days=7)
    private_runner_dirs: bool = False


class LocalRunners:
    """Agents and their records under ``state_dir``; configs from ``configs``."""

    def __init__(
        self, state_dir: Path, configs: FileConfigStore, options: AgentOptions, clock: Clock
    ) -> None:
        self.records = RecordStore(Path(state_dir) / "runners")
        self.configs = configs
        self.options = options
        self.clock = clock
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = asyncio.Lock()

    async def locked(self, function: Callable[..., T], *args: object) -> T:
        """Run ``function(*args)`` in a worker thread holding both locks."""
        async with self._lock:
            return await asyncio.to_thread(self._run_locked, function, *args)

    def _run_locked(self, function: Callable[..., T], *args: object) -> T:
        with self.records.locked():
            return function(*args)

    async def read(self, runner_id: str) -> RunnerRecord | None:
        """The record of ``runner_id``, if any (no lock: records are replaced whole)."""
        return await asyncio.to_thread(self.records.read, runner_id)

    async def all(self) -> list[RunnerRecord]:
        """Every record, oldest first."""
        return await asyncio.to_thread(self.records.all)

    def alive(self, record: RunnerRecord) -> bool:
        """Whether the record's agent still runs (the pid still names the same process)."""
        self.reap()
        return processes.is_alive(record.pid, record.start_time)

    def reap(self, wait_s: float = 0.0) -> None:
        """Collect the exit status of agents this instance started that ended, waiting
        up to ``wait_s`` for them (agents outlive the orchestrator by design: never
        wait for them in normal operation)."""
        deadline = time.monotonic() + wait_s
        for pid, child in list(self._children.items()):
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue
            del self._children[pid]

    def ensure_room(self, count: int, *, exclude: str | None = None) -> None:
        """Raise ``ProviderError`` unless ``count`` more agents may start now: the runner
        dir must be set and the live agents (other than ``exclude``) leave room under
        the cap. Call under the lock."""
        options = self.options
        if options.runner_dir is None:
            raise ProviderError(
                "local runners need RUNS_FLEET_RUNNER_DIR: the directory of an unpacked "
                "GitHub Actions runner (with run.sh)",
                retryable=False,
            )
        live = sum(1 for r in self.records.all() if r.runner_id != exclude and self.alive(r))
        if live + count > options.max_runners:
            raise ProviderError(
                f"{live} local runners are running and RUNS_FLEET_LOCAL_MAX_RUNNERS is "
                f"{options.max_runners}: no room for {count} more; try again when one ended"
            )

    def spawn(self, record: RunnerRecord) -> RunnerRecord:
        """Start ``record``'s agent and record it as running. Call under the lock.

        Raises ``ProviderError`` when the runner dir is unset, the cap is reached or the
        agent cannot be started."""
        self.ensure_room(1, exclude=record.runner_id)
        options = self.options
        assert options.runner_dir is not None
        work_dir = self.records.work_dir(record.runner_id)
        make_private_dir(work_dir)
        runner_dir = options.runner_dir
        if options.private_runner_dirs:
            try:
                runner_dir = private_runner_dir(runner_dir, work_dir)
            except OSError as exc:
                raise ProviderError(
                    f"cannot make the runner directory of {record.runner_id} from "
                    f"{options.runner_dir}: {exc}"
                ) from exc
        env = processes.agent_environment(runner_dir, options.extra_env)
        try:
            child = processes.spawn(self._command(record), cwd=work_dir, env=env)
        except OSError as exc:
            raise ProviderError(f"cannot start the runs-fleet agent: {exc}") from exc
        self._children[child.pid] = child
        started = processes.start_time(child.pid)
        running = attrs.evolve(
            record,
            phase=Phase.RUNNING,
            pid=child.pid,
            start_time=started,
            started_at=self.clock.now(),
        )
        self.records.write(running)
        return running

    def _command(self, record: RunnerRecord) -> list[str]:
        options = self.options
        config_path = self.configs.path_for(RunnerId(record.runner_id)).absolute()
        command = [options.python, "-m", "runs_fleet_agent", "--config-file", str(config_path)]
        command += ["--grace", f"{options.grace_s:g}"]
        if options.max_runtime_s is not None:
            command += ["--max-runtime", f"{options.max_runtime_s:g}"]
        if record.kind is Kind.POOL:
            command += ["--wait-for-config", f"{options.wait_for_config_s:g}"]
        return command

    async def stop(self, record: RunnerRecord) -> None:
        """Stop the record's agent and everything it started: SIGTERM to its group
        (the agent forwards it to the runner), then SIGKILL to its whole session once
        the grace has passed. An agent that is already gone is fine."""
        pid = record.pid
        if pid is None:
            return
        if self.alive(record):
            processes.signal_group(pid, signal.SIGTERM)
            deadline = self.options.grace_s + self.options.stop_margin_s
            if not await self._wait_gone(record, deadline):
                processes.kill_session(pid)
                await self._wait_gone(record, _KILL_WAIT_S)
        if processes.start_time(pid) is None:  # the pid is free: kill what is left
            await asyncio.to_thread(processes.kill_session, pid)

    async def _wait_gone(self, record: RunnerRecord, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.alive(record):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_S)
        return True

    async def delete_config(self, runner_id: str) -> None:
        """Remove a config that no runner will ever read (best effort)."""
        try:
            await self.configs.delete(RunnerId(runner_id))
        except (OSError, ValueError):
            return

    def prune(self) -> None:
        """Forget cold runners that ended longer than the retention ago. Under the lock."""
        cutoff = self.clock.now() - self.options.retention
        for record in self.records.all():
            ended = record.ended_at or record.launched_at
            if record.kind is Kind.COLD and ended < cutoff and not self.alive(record):
                self.records.remove(record.runner_id)
