"""In-memory compute: a cold-start Provider and a warm PoolProvider.

They keep runner records the way a cloud would (ids, phases, launch times, the job and
pool a runner was started for) so dispatch, pool and housekeeping logic can be tested
without one. ``fail_next`` injects a backend failure into the next mutating call.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import datetime

import attrs

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import PoolRunner, RunnerPhase, RunnerResult, RunnerState
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import NotFoundError
from runs_fleet_core.ports.observe import Clock


@attrs.define(kw_only=True)
class _Runner:
    runner_id: RunnerId
    runner_name: str
    phase: RunnerPhase
    launched_at: datetime
    job_id: JobId | None
    pool: str | None


class MemoryProvider:
    """The :class:`~runs_fleet_core.ports.Provider` port, in memory.

    Runner ids are ``mem-1``, ``mem-2``, ...; a new runner is ``running`` at once.
    ``fail_next``: exceptions popped (first one first) and raised by the next
    ``create_runner`` or ``terminate_runner`` call before it does anything.
    ``created`` lists every runner really created, for counting runners per job.
    """

    def __init__(self, clock: Clock, *, name: str = "memory") -> None:
        self._clock = clock
        self._name = name
        self._ids = itertools.count(1)
        self._by_name: dict[str, RunnerResult] = {}
        self._runners: dict[RunnerId, _Runner] = {}
        self._created: list[RunnerResult] = []
        self.fail_next: list[Exception] = []

    @property
    def name(self) -> str:
        """The backend name given at construction (``memory`` by default)."""
        return self._name

    @property
    def created(self) -> list[RunnerResult]:
        """Every runner created so far, in order (idempotent repeats not included)."""
        return list(self._created)

    async def create_runner(self, spec: RunnerSpec, *, runner_name: str) -> RunnerResult:
        """A running runner for ``spec``, or the one already created as ``runner_name``."""
        await asyncio.sleep(0)
        self._maybe_fail()
        if spec.job_id is None:
            raise ValueError(f"spec for runner {runner_name!r} has no job_id")
        existing = self._by_name.get(runner_name)
        if existing is not None:
            return existing
        runner_id = RunnerId(f"mem-{next(self._ids)}")
        result = RunnerResult(
            runner_id=runner_id, provider=self._name, details={"runner_name": runner_name}
        )
        self._runners[runner_id] = _Runner(
            runner_id=runner_id,
            runner_name=runner_name,
            phase=RunnerPhase.RUNNING,
            launched_at=self._clock.now(),
            job_id=spec.job_id,
            pool=spec.pool,
        )
        self._by_name[runner_name] = result
        self._created.append(result)
        return result

    async def terminate_runner(self, runner_id: RunnerId) -> None:
        """Mark the runner terminated; unknown or already terminated ones are fine."""
        await asyncio.sleep(0)
        self._maybe_fail()
        runner = self._runners.get(runner_id)
        if runner is not None:
            runner.phase = RunnerPhase.TERMINATED

    async def describe_runner(self, runner_id: RunnerId) -> RunnerState:
        """The runner's state (``terminated`` ones included); ``NotFoundError`` for an
        id this provider never had."""
        await asyncio.sleep(0)
        runner = self._runners.get(runner_id)
        if runner is None:
            raise NotFoundError(f"runner {runner_id} does not exist in provider {self._name}")
        return self._state(runner)

    async def list_runners(self) -> Sequence[RunnerState]:
        """Every runner not terminated, oldest first."""
        await asyncio.sleep(0)
        return [
            self._state(runner)
            for runner in self._runners.values()
            if runner.phase is not RunnerPhase.TERMINATED
        ]

    def set_phase(self, runner_id: RunnerId, phase: RunnerPhase) -> None:
        """Change a runner's phase from outside (a spot interruption, a crash)."""
        if runner_id not in self._runners:
            raise NotFoundError(f"runner {runner_id} does not exist in provider {self._name}")
        self._runners[runner_id].phase = phase

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def _state(self, runner: _Runner) -> RunnerState:
        return RunnerState(
            runner_id=runner.runner_id,
            phase=runner.phase,
            provider=self._name,
            launched_at=runner.launched_at,
            job_id=runner.job_id,
            pool=runner.pool,
            runner_name=runner.runner_name,
        )


class MemoryPoolProvider:
    """The :class:`~runs_fleet_core.ports.PoolProvider` port, in memory.

    Runner ids are ``mem-pool-1``, ``mem-pool-2``, ...; new runners are ``running`` (or
    ``stopped``) at once, idle since creation. Starting or stopping an id the provider
    never had, or one already terminated, raises ``NotFoundError``; terminating one
    that is gone is fine. ``calls`` logs each start/stop/terminate call as
    ``(verb, ids)``; ``fail_next`` works as in :class:`MemoryProvider` for every call
    that changes runners.
    """

    def __init__(self, clock: Clock, *, name: str = "memory") -> None:
        self._clock = clock
        self._name = name
        self._ids = itertools.count(1)
        self._runners: dict[RunnerId, PoolRunner] = {}
        self.calls: list[tuple[str, tuple[RunnerId, ...]]] = []
        self.fail_next: list[Exception] = []

    @property
    def name(self) -> str:
        """The backend name given at construction (``memory`` by default)."""
        return self._name

    async def list_pool_runners(self, pool: str) -> Sequence[PoolRunner]:
        """Every non-terminated runner of ``pool``, oldest first."""
        await asyncio.sleep(0)
        return [runner for runner in self._runners.values() if runner.pool == pool]

    async def create_pool_runners(
        self, pool: PoolConfig, count: int, *, stopped: bool = False
    ) -> Sequence[RunnerId]:
        """``count`` new runners in ``pool``, running (or stopped), idle from now."""
        if count < 0:
            raise ValueError(f"cannot create {count} runners")
        await asyncio.sleep(0)
        self._maybe_fail()
        phase = RunnerPhase.STOPPED if stopped else RunnerPhase.RUNNING
        now = self._clock.now()
        created: list[RunnerId] = []
        for _ in range(count):
            runner_id = RunnerId(f"mem-pool-{next(self._ids)}")
            self._runners[runner_id] = PoolRunner(
                runner_id=runner_id, pool=pool.name, phase=phase, idle_since=now
            )
            created.append(runner_id)
        return created

    async def start_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Start stopped runners (idle from now); running ones stay as they are."""
        await self._change("start", runner_ids, RunnerPhase.RUNNING)

    async def stop_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Stop runners; stopped ones stay as they are."""
        await self._change("stop", runner_ids, RunnerPhase.STOPPED)

    async def terminate_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Remove runners for good; unknown or gone ones are fine."""
        self.calls.append(("terminate", tuple(runner_ids)))
        await asyncio.sleep(0)
        self._maybe_fail()
        for runner_id in runner_ids:
            self._runners.pop(runner_id, None)

    async def _change(self, verb: str, runner_ids: Sequence[RunnerId], phase: RunnerPhase) -> None:
        self.calls.append((verb, tuple(runner_ids)))
        await asyncio.sleep(0)
        self._maybe_fail()
        missing = [runner_id for runner_id in runner_ids if runner_id not in self._runners]
        if missing:
            raise NotFoundError(
                f"cannot {verb} runner(s) {', '.join(missing)} of provider {self._name}: "
                "never created or already terminated"
            )
        now = self._clock.now()
        for runner_id in runner_ids:
            runner = self._runners[runner_id]
            if runner.phase is not phase:
                idle_since = now if phase is RunnerPhase.RUNNING else runner.idle_since
                self._runners[runner_id] = attrs.evolve(runner, phase=phase, idle_since=idle_since)

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)
