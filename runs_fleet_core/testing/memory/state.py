"""An in-memory StateStore: jobs, runner assignments, leases and pool configs.

Use cases decide "who does what" through conditional writes; this fake makes the same
decisions a DynamoDB or Valkey store would, so unit tests exercise the real races
(two dispatchers claiming one job, two replicas wanting one lease). Records are kept
as JSON through the record converter, as a real store would keep them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

import attrs

from runs_fleet_core.converters import dumps, loads, make_record_converter
from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.lease import Lease
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RunnerAssignment
from runs_fleet_core.errors import ConflictError
from runs_fleet_core.ports.queue import Queue
from runs_fleet_core.testing.memory.queue import MemoryQueue


class MemoryStateStore:
    """The :class:`~runs_fleet_core.ports.StateStore` port, in memory.

    Each call yields to the event loop once (as a network round trip would) and then
    does its read-check-write without awaiting, which makes every conditional write
    atomic under asyncio. Fencing tokens are counted per lease name and survive
    releases, so a new holder always gets a larger token than any earlier one.
    """

    def __init__(self) -> None:
        self._converter = make_record_converter()
        self._jobs: dict[JobId, str] = {}
        self._assignments: dict[RunnerId, str] = {}
        self._leases: dict[str, str] = {}
        self._fencing: dict[str, int] = {}
        self._pools: dict[str, str] = {}

    # -- jobs ---------------------------------------------------------------------
    def sends_to(self, queue: Queue) -> bool:
        """The memory outbox sends to memory queues of the same process."""
        return isinstance(queue, MemoryQueue)

    async def create_job_and_send(self, job: Job, message: JobMessage, queue: Queue) -> Job | None:
        """Create ``job`` and queue ``message`` without yielding in between (atomic under
        asyncio); ``None``, and nothing sent, when the job exists."""
        if not isinstance(queue, MemoryQueue):
            raise TypeError(f"the memory outbox cannot send to {type(queue).__name__}")
        try:
            stored = await self.put_job(job, expect_version=None)
        except ConflictError:
            return None
        queue.send_nowait(message)
        return stored

    async def put_job(self, job: Job, *, expect_version: int | None) -> Job:
        """Create (``expect_version=None``) or replace (stored version must equal
        ``expect_version``) ``job``; the stored copy gets the next version.
        ``ConflictError`` when the condition fails, and then nothing is written."""
        await asyncio.sleep(0)
        stored = self._get_job(job.job_id)
        if expect_version is None:
            if stored is not None:
                raise ConflictError(f"job {job.job_id} already exists")
            version = 1
        elif stored is None:
            raise ConflictError(
                f"job {job.job_id} does not exist (expected version {expect_version})"
            )
        elif stored.version != expect_version:
            raise ConflictError(
                f"job {job.job_id} is at version {stored.version}, not {expect_version}"
            )
        else:
            version = expect_version + 1
        payload = dumps(self._converter, attrs.evolve(job, version=version))
        self._jobs[job.job_id] = payload
        return loads(self._converter, payload, Job)

    async def get_job(self, job_id: JobId) -> Job | None:
        """The stored job, or ``None``."""
        await asyncio.sleep(0)
        return self._get_job(job_id)

    async def list_jobs(
        self, *, status: JobStatus | None = None, pool: str | None = None
    ) -> Sequence[Job]:
        """Jobs with ``status`` and/or in ``pool`` (all when both are ``None``), by id."""
        await asyncio.sleep(0)
        jobs = (loads(self._converter, self._jobs[key], Job) for key in sorted(self._jobs))
        return [
            job
            for job in jobs
            if (status is None or job.status is status) and (pool is None or job.pool == pool)
        ]

    def _get_job(self, job_id: JobId) -> Job | None:
        payload = self._jobs.get(job_id)
        return None if payload is None else loads(self._converter, payload, Job)

    # -- runner assignments ----------------------------------------------------------
    async def assign_runner(self, runner_id: RunnerId, job_id: JobId, at: datetime) -> bool:
        """Bind ``runner_id`` to ``job_id`` unless it is bound already (to any job)."""
        await asyncio.sleep(0)
        if runner_id in self._assignments:
            return False
        assignment = RunnerAssignment(runner_id=runner_id, job_id=job_id, assigned_at=at)
        self._assignments[runner_id] = dumps(self._converter, assignment)
        return True

    async def get_assignment(self, runner_id: RunnerId) -> RunnerAssignment | None:
        """The job ``runner_id`` serves, or ``None`` when it is free."""
        await asyncio.sleep(0)
        return self._get_assignment(runner_id)

    async def release_runner(self, runner_id: RunnerId, job_id: JobId) -> None:
        """Free ``runner_id`` if it is bound to ``job_id``; otherwise do nothing."""
        await asyncio.sleep(0)
        current = self._get_assignment(runner_id)
        if current is not None and current.job_id == job_id:
            del self._assignments[runner_id]

    async def list_assignments(self) -> Sequence[RunnerAssignment]:
        """Every current assignment, by runner id."""
        await asyncio.sleep(0)
        return [
            loads(self._converter, self._assignments[key], RunnerAssignment)
            for key in sorted(self._assignments)
        ]

    def _get_assignment(self, runner_id: RunnerId) -> RunnerAssignment | None:
        payload = self._assignments.get(runner_id)
        return None if payload is None else loads(self._converter, payload, RunnerAssignment)

    # -- leases ----------------------------------------------------------------------
    async def acquire_lease(
        self, name: str, owner: str, ttl_s: float, now: datetime
    ) -> Lease | None:
        """Take ``name`` for ``owner`` if free, expired or already ``owner``'s (which
        renews it, same token); ``None`` while someone else holds it."""
        await asyncio.sleep(0)
        current = self._get_lease(name)
        expires_at = now + timedelta(seconds=ttl_s)
        if current is not None and current.valid_at(now):
            if current.owner != owner:
                return None
            return self._store_lease(attrs.evolve(current, expires_at=expires_at))
        token = self._fencing.get(name, 0) + 1
        self._fencing[name] = token
        lease = Lease(name=name, owner=owner, token=token, expires_at=expires_at)
        return self._store_lease(lease)

    async def renew_lease(self, lease: Lease, ttl_s: float, now: datetime) -> Lease | None:
        """Extend ``lease`` to ``now + ttl_s`` if it is still the current holding (even
        past its expiry, as long as nobody took it); ``None`` if it was lost."""
        await asyncio.sleep(0)
        if not self._holds(lease):
            return None
        renewed = attrs.evolve(lease, expires_at=now + timedelta(seconds=ttl_s))
        return self._store_lease(renewed)

    async def release_lease(self, lease: Lease) -> None:
        """Free the lease if ``lease`` is still the current holding; else do nothing."""
        await asyncio.sleep(0)
        if self._holds(lease):
            del self._leases[lease.name]

    def _get_lease(self, name: str) -> Lease | None:
        payload = self._leases.get(name)
        return None if payload is None else loads(self._converter, payload, Lease)

    def _holds(self, lease: Lease) -> bool:
        current = self._get_lease(lease.name)
        return current is not None and current.owner == lease.owner and current.token == lease.token

    def _store_lease(self, lease: Lease) -> Lease:
        payload = dumps(self._converter, lease)
        self._leases[lease.name] = payload
        return loads(self._converter, payload, Lease)

    # -- pool configs ------------------------------------------------------------------
    async def put_pool(self, pool: PoolConfig) -> None:
        """Store (or overwrite) the config of ``pool.name``."""
        payload = dumps(self._converter, pool)
        await asyncio.sleep(0)
        self._pools[pool.name] = payload

    async def get_pool(self, name: str) -> PoolConfig | None:
        """The pool's config, or ``None``."""
        await asyncio.sleep(0)
        payload = self._pools.get(name)
        return None if payload is None else loads(self._converter, payload, PoolConfig)

    async def list_pools(self) -> Sequence[PoolConfig]:
        """Every pool config, by name."""
        await asyncio.sleep(0)
        return [loads(self._converter, self._pools[k], PoolConfig) for k in sorted(self._pools)]

    async def delete_pool(self, name: str) -> None:
        """Remove the pool's config; removing a missing one is not an error."""
        await asyncio.sleep(0)
        self._pools.pop(name, None)
