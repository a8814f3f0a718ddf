"""Local compute: each runner is a runs-fleet agent process on this host.

:class:`LocalProvider` starts one agent per job, named by the runner name (which is
also its config key, so the agent finds its config at once). :class:`LocalPoolProvider`
keeps warm agents that wait for a config under their own id (``<pool>-<random>``); a
"stopped" pool runner is a record without a process, and starting it spawns a waiting
agent again. Both read their runners back from disk, so they tell the truth across a
restart of the orchestrator, and neither keeps anything that matters in memory.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from pathlib import Path

import attrs

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import PoolRunner, RunnerPhase, RunnerResult, RunnerState
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import NotFoundError, ProviderError
from runs_fleet_local import processes
from runs_fleet_local.records import Kind, Phase, RunnerRecord
from runs_fleet_local.runners import LocalRunners

NAME = "local"


class LocalProvider:
    """The :class:`~runs_fleet_core.ports.Provider` port over local agent processes.

    Runner id = runner name; the work dir is ``<state_dir>/runners/<runner id>/``.
    """

    def __init__(self, runners: LocalRunners) -> None:
        self._runners = runners

    @property
    def name(self) -> str:
        """``local``."""
        return NAME

    async def create_runner(self, spec: RunnerSpec, *, runner_name: str) -> RunnerResult:
        """Start an agent for ``spec``'s job, or return the runner already created under
        ``runner_name`` (ended or not: a name never gets a second runner)."""
        if spec.job_id is None:
            raise ValueError(f"spec for runner {runner_name!r} has no job_id")
        try:
            self._runners.configs.path_for(RunnerId(runner_name))
        except ValueError as exc:
            raise ProviderError(str(exc), retryable=False) from exc
        record = await self._runners.locked(self._create, runner_name, spec, spec.job_id)
        return RunnerResult(
            runner_id=RunnerId(record.runner_id),
            provider=NAME,
            details={"runner_name": runner_name, "work_dir": str(self._work_dir(record))},
        )

    def _create(self, runner_name: str, spec: RunnerSpec, job_id: JobId) -> RunnerRecord:
        """Under the lock: the existing runner, an adopted orphan, or a new agent."""
        runners = self._runners
        existing = runners.records.read(runner_name)
        if existing is not None and existing.kind is Kind.POOL:
            raise ProviderError(f"{runner_name!r} is the id of a warm-pool runner", retryable=False)
        if existing is not None and existing.phase is not Phase.PENDING:
            return existing
        record = existing or RunnerRecord(
            runner_id=runner_name,
            kind=Kind.COLD,
            phase=Phase.PENDING,
            launched_at=runners.clock.now(),
            runner_name=runner_name,
            job_id=job_id,
            pool=spec.pool,
        )
        runners.records.write(record)
        work_dir = runners.records.work_dir(runner_name)
        orphan = None if existing is None else processes.find_by_cwd(work_dir)
        if orphan is not None:  # a creator died between starting the agent and recording it
            adopted = attrs.evolve(
                record, phase=Phase.RUNNING, pid=orphan, start_time=processes.start_time(orphan)
            )
            runners.records.write(adopted)
            return adopted
        try:
            return runners.spawn(record)
        except ProviderError:
            runners.records.remove(runner_name)
            raise

    async def terminate_runner(self, runner_id: RunnerId) -> None:
        """Stop the agent and its runner for good; the record stays, saying terminated."""
        record = await self._runners.read(runner_id)
        if record is None or record.kind is Kind.POOL:
            if record is not None:
                await LocalPoolProvider(self._runners).terminate_runners([runner_id])
            return
        await self._runners.stop(record)
        await self._runners.locked(self._mark_terminated, runner_id)
        await self._runners.delete_config(runner_id)

    def _mark_terminated(self, runner_id: str) -> None:
        current = self._runners.records.read(runner_id)
        if current is not None and current.phase is not Phase.TERMINATED:
            ended = attrs.evolve(
                current, phase=Phase.TERMINATED, ended_at=self._runners.clock.now()
            )
            self._runners.records.write(ended)

    async def describe_runner(self, runner_id: RunnerId) -> RunnerState:
        """The runner's state from its record and its process; ``NotFoundError`` when
        there is no record (never created, or forgotten after the retention period)."""
        record = await self._runners.read(runner_id)
        if record is None:
            raise NotFoundError(f"runner {runner_id} does not exist in provider {NAME}")
        return self._state(record)

    async def list_runners(self) -> Sequence[RunnerState]:
        """Every runner (cold or warm) not terminated, oldest first; forgets cold runners
        that ended longer than the retention period ago."""
        await self._runners.locked(self._runners.prune)
        states = [self._state(record) for record in await self._runners.all()]
        return [s for s in states if s.phase is not RunnerPhase.TERMINATED]

    def _state(self, record: RunnerRecord) -> RunnerState:
        cold = record.kind is Kind.COLD
        phase = (cold_phase if cold else pool_phase)(record, self._runners)
        details = {"work_dir": str(self._work_dir(record))}
        if record.pid is not None:
            details["pid"] = str(record.pid)
        return RunnerState(
            runner_id=RunnerId(record.runner_id),
            phase=phase,
            provider=NAME,
            launched_at=record.launched_at,
            job_id=None if record.job_id is None else JobId(record.job_id),
            pool=record.pool,
            runner_name=record.runner_name or None,
            details=details,
        )

    def _work_dir(self, record: RunnerRecord) -> Path:
        return self._runners.records.work_dir(record.runner_id)


def cold_phase(record: RunnerRecord, runners: LocalRunners) -> RunnerPhase:
    """A one-job runner: running while its agent lives, terminated once it is gone."""
    if record.phase is Phase.TERMINATED:
        return RunnerPhase.TERMINATED
    if record.phase is Phase.PENDING:
        return RunnerPhase.PENDING
    return RunnerPhase.RUNNING if runners.alive(record) else RunnerPhase.TERMINATED


def pool_phase(record: RunnerRecord, runners: LocalRunners) -> RunnerPhase:
    """A warm runner: running while its agent lives, stopped when it has none."""
    if record.phase is Phase.TERMINATED:
        return RunnerPhase.TERMINATED
    return RunnerPhase.RUNNING if runners.alive(record) else RunnerPhase.STOPPED


class LocalPoolProvider:
    """The :class:`~runs_fleet_core.ports.PoolProvider` port over local agent processes.

    A pool runner's id is ``<pool>-<8 hex digits>``; it is also its config key. Which
    runner is busy is the StateStore's business, not this class's.
    """

    def __init__(self, runners: LocalRunners) -> None:
        self._runners = runners

    @property
    def name(self) -> str:
        """``local``."""
        return NAME

    async def list_pool_runners(self, pool: str) -> Sequence[PoolRunner]:
        """Every runner of ``pool`` still recorded, oldest first."""
        return [
            PoolRunner(
                runner_id=RunnerId(record.runner_id),
                pool=pool,
                phase=pool_phase(record, self._runners),
                idle_since=record.started_at or record.launched_at,
            )
            for record in await self._runners.all()
            if record.kind is Kind.POOL and record.pool == pool
        ]

    async def create_pool_runners(
        self, pool: PoolConfig, count: int, *, stopped: bool = False
    ) -> Sequence[RunnerId]:
        """``count`` new runners in ``pool``: waiting agents, or (``stopped``) records
        only. All or none: ``ProviderError`` when the cap leaves no room for them all."""
        if count < 0:
            raise ValueError(f"cannot create {count} runners")
        ids = [RunnerId(f"{pool.name}-{secrets.token_hex(4)}") for _ in range(count)]
        for runner_id in ids:
            self._runners.configs.path_for(runner_id)  # refuses a pool name unfit for ids
        if ids:
            await self._runners.locked(self._create, pool.name, ids, stopped)
        return ids

    def _create(self, pool: str, ids: list[RunnerId], stopped: bool) -> None:
        runners = self._runners
        if not stopped:
            runners.ensure_room(len(ids))
        now = runners.clock.now()
        for runner_id in ids:
            record = RunnerRecord(
                runner_id=runner_id, kind=Kind.POOL, phase=Phase.STOPPED, launched_at=now, pool=pool
            )
            runners.records.write(record)
            if not stopped:
                runners.spawn(record)

    async def start_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Start a waiting agent for each stopped runner; running ones stay as they are.
        ``NotFoundError`` (before anything starts) for an id the pool does not have."""
        await self._runners.locked(self._start, list(runner_ids))

    def _start(self, runner_ids: list[RunnerId]) -> None:
        records = self._known(runner_ids, "start")
        for record in records:
            if not self._runners.alive(record):
                self._runners.spawn(record)

    async def stop_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Stop the agents of these runners, keeping their records (stopped)."""
        records = await self._runners.locked(self._known, list(runner_ids), "stop")
        await asyncio.gather(*(self._runners.stop(record) for record in records))
        await self._runners.locked(self._mark_stopped, [r.runner_id for r in records])

    def _mark_stopped(self, runner_ids: list[str]) -> None:
        for runner_id in runner_ids:
            record = self._runners.records.read(runner_id)
            if record is not None and not self._runners.alive(record):
                stopped = attrs.evolve(record, phase=Phase.STOPPED, pid=None, start_time=None)
                self._runners.records.write(stopped)

    async def terminate_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Stop the agents and remove the runners' records, work dirs and configs."""
        records = [r for r in [await self._runners.read(i) for i in runner_ids] if r is not None]
        await asyncio.gather(*(self._runners.stop(record) for record in records))
        for record in records:
            await self._runners.locked(self._runners.records.remove, record.runner_id)
            await self._runners.delete_config(record.runner_id)

    def _known(self, runner_ids: list[RunnerId], verb: str) -> list[RunnerRecord]:
        records = {i: self._runners.records.read(i) for i in runner_ids}
        missing = [i for i, r in records.items() if r is None or r.kind is not Kind.POOL]
        if missing:
            raise NotFoundError(
                f"cannot {verb} runner(s) {', '.join(missing)} of provider {NAME}: "
                "never created or already terminated"
            )
        return [r for r in records.values() if r is not None]
