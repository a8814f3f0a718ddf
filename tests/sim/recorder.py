"""Who holds a job at the moment a runner is stopped or terminated.

The compute adapters of the simulation are wrapped by recorders that, on every stop or
terminate call, ask a :class:`BusyProbe` whether each runner named holds a job: bound to
it in the StateStore (or, for a cold runner, launched for it) while that job is not
final. They ask when the call is made and again when it returns, and the probe answers
synchronously, straight from the store's records, without yielding to the event loop:
no other task can move between the question and the call, so a violation is seen at
the moment it happens, never reconstructed afterwards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

import attrs
import redis

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.job import JobStatus
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import PoolRunner, RunnerResult, RunnerState
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.testing.memory import MemoryPoolProvider, MemoryProvider, MemoryStateStore


class BusyProbe(Protocol):
    """Synchronous reads of the shared state, for checking at one exact moment."""

    def assigned_job(self, runner_id: RunnerId) -> JobId | None:
        """The job ``runner_id`` is bound to in the StateStore, if any."""
        ...

    def job_live(self, job_id: JobId) -> bool:
        """Whether ``job_id`` is recorded and not final."""
        ...


class ProbedMemoryStateStore(MemoryStateStore):
    """The memory StateStore, also answering :class:`BusyProbe` from its own records,
    and expiring final jobs as a production store's retention does (the memory store
    lists jobs by decoding every record, which a long run cannot afford otherwise)."""

    def expire_final_jobs(self, ended_before: datetime) -> None:
        for job_id in list(self._jobs):
            job = self._get_job(job_id)
            ended = None if job is None or not job.final else job.entered(job.status)
            if ended is not None and ended < ended_before:
                del self._jobs[job_id]

    def assigned_job(self, runner_id: RunnerId) -> JobId | None:
        assignment = self._get_assignment(runner_id)
        return None if assignment is None else assignment.job_id

    def job_live(self, job_id: JobId) -> bool:
        job = self._get_job(job_id)
        return job is not None and not job.final


class ValkeyProbe:
    """:class:`BusyProbe` over the Valkey StateStore's keys (``p:runner:<id>`` holds the
    bound ``job_id``, ``p:job:<id>`` the job's ``status``), read with a blocking client
    so that no other task runs while it looks."""

    def __init__(self, url: str, *, prefix: str = "runs-fleet") -> None:
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self._prefix = prefix

    def assigned_job(self, runner_id: RunnerId) -> JobId | None:
        job_id = self._client.hget(f"{self._prefix}:runner:{runner_id}", "job_id")
        return None if job_id is None else JobId(int(str(job_id)))

    def job_live(self, job_id: JobId) -> bool:
        status = self._client.hget(f"{self._prefix}:job:{job_id}", "status")
        return status is not None and not JobStatus(str(status)).final

    def close(self) -> None:
        self._client.close()


@attrs.frozen(kw_only=True)
class Violation:
    """A runner stopped or terminated while it held a job."""

    seed: int
    cycle: int
    verb: str
    runner_id: RunnerId
    job_id: JobId
    moment: str

    def __str__(self) -> str:
        return (
            f"seed {self.seed}, cycle {self.cycle}: {self.verb} of runner {self.runner_id} "
            f"{self.moment} while it held job {self.job_id}"
        )


@attrs.define(kw_only=True)
class Ledger:
    """Violations and completed calls, tagged with the seed and the current cycle."""

    seed: int
    cycle: int = 0
    violations: list[Violation] = attrs.field(factory=list)
    acted: Counter[str] = attrs.field(factory=Counter)

    def check(self, verb: str, runner_id: RunnerId, job_id: JobId | None, moment: str) -> None:
        if job_id is not None:
            self.violations.append(
                Violation(
                    seed=self.seed,
                    cycle=self.cycle,
                    verb=verb,
                    runner_id=runner_id,
                    job_id=job_id,
                    moment=moment,
                )
            )


Call = Callable[[Sequence[RunnerId]], Awaitable[None]]


class RecordingPoolProvider:
    """A PoolProvider whose stop and terminate calls are checked against the probe."""

    def __init__(self, inner: MemoryPoolProvider, probe: BusyProbe, ledger: Ledger) -> None:
        self._inner = inner
        self._probe = probe
        self._ledger = ledger

    @property
    def name(self) -> str:
        return self._inner.name

    async def list_pool_runners(self, pool: str) -> Sequence[PoolRunner]:
        return await self._inner.list_pool_runners(pool)

    async def create_pool_runners(
        self, pool: PoolConfig, count: int, *, stopped: bool = False
    ) -> Sequence[RunnerId]:
        return await self._inner.create_pool_runners(pool, count, stopped=stopped)

    async def start_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        await self._inner.start_runners(runner_ids)

    async def stop_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        await self._checked("stop", runner_ids, self._inner.stop_runners)

    async def terminate_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        await self._checked("terminate", runner_ids, self._inner.terminate_runners)

    async def _checked(self, verb: str, runner_ids: Sequence[RunnerId], call: Call) -> None:
        self._check(verb, runner_ids, "when asked")
        try:
            await call(runner_ids)
        finally:
            self._check(verb, runner_ids, "when done")
        self._ledger.acted[verb] += len(runner_ids)

    def _check(self, verb: str, runner_ids: Sequence[RunnerId], moment: str) -> None:
        for runner_id in runner_ids:
            job_id = self._probe.assigned_job(runner_id)
            busy = job_id is not None and self._probe.job_live(job_id)
            self._ledger.check(verb, runner_id, job_id if busy else None, moment)


class RecordingProvider:
    """A cold-start Provider whose terminate calls are checked: a cold runner is busy
    while the job it was launched for is not final."""

    def __init__(self, inner: MemoryProvider, probe: BusyProbe, ledger: Ledger) -> None:
        self._inner = inner
        self._probe = probe
        self._ledger = ledger
        self._launched_for: dict[RunnerId, JobId] = {}

    @property
    def name(self) -> str:
        return self._inner.name

    async def create_runner(self, spec: RunnerSpec, *, runner_name: str) -> RunnerResult:
        result = await self._inner.create_runner(spec, runner_name=runner_name)
        assert spec.job_id is not None
        self._launched_for[result.runner_id] = spec.job_id
        return result

    async def terminate_runner(self, runner_id: RunnerId) -> None:
        self._check(runner_id, "when asked")
        try:
            await self._inner.terminate_runner(runner_id)
        finally:
            self._check(runner_id, "when done")
        self._ledger.acted["terminate_cold"] += 1

    async def describe_runner(self, runner_id: RunnerId) -> RunnerState:
        return await self._inner.describe_runner(runner_id)

    async def list_runners(self) -> Sequence[RunnerState]:
        return await self._inner.list_runners()

    def _check(self, runner_id: RunnerId, moment: str) -> None:
        job_id = self._launched_for.get(runner_id)
        busy = job_id is not None and self._probe.job_live(job_id)
        self._ledger.check("terminate", runner_id, job_id if busy else None, moment)
