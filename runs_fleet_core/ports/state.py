"""The StateStore: jobs, runner assignments, leases and pool configs, shared by replicas.

Everything that decides "who does what" lives here and is written conditionally, never
kept in one process's memory: that is what lets several replicas run side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.lease import Lease
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RunnerAssignment
from runs_fleet_core.ports.queue import Queue


@runtime_checkable
class StateStore(Protocol):
    # -- jobs ---------------------------------------------------------------------
    async def put_job(self, job: Job, *, expect_version: int | None) -> Job:
        """Write ``job`` conditionally and return it as stored (``version`` bumped).

        ``expect_version=None``: create, only if no job with that id exists.
        ``expect_version=n``: replace, only if the stored version is ``n``.
        Raises ``ConflictError`` when the condition fails; then nothing is written.
        """
        ...

    async def get_job(self, job_id: JobId) -> Job | None:
        """The stored job, or ``None``."""
        ...

    async def list_jobs(
        self, *, status: JobStatus | None = None, pool: str | None = None
    ) -> Sequence[Job]:
        """Jobs filtered by status and/or pool, without scanning unrelated records."""
        ...

    # -- runner assignments (the busy signal) ---------------------------------------
    async def assign_runner(self, runner_id: RunnerId, job_id: JobId, at: datetime) -> bool:
        """Atomically bind ``runner_id`` to ``job_id``; ``False`` if the runner is
        already bound to any job (including this one: one bind wins).

        The pool loop reserves a runner it is about to stop or terminate by binding it
        to ``SCALE_DOWN_RESERVATION`` (job id 0, see ``runs_fleet_core.domain.pool``),
        so every store must keep that id like any other."""
        ...

    async def get_assignment(self, runner_id: RunnerId) -> RunnerAssignment | None: ...

    async def release_runner(self, runner_id: RunnerId, job_id: JobId) -> None:
        """Remove the binding if it is ``runner_id`` → ``job_id``; otherwise do nothing."""
        ...

    async def list_assignments(self) -> Sequence[RunnerAssignment]: ...

    # -- leases ----------------------------------------------------------------------
    async def acquire_lease(
        self, name: str, owner: str, ttl_s: float, now: datetime
    ) -> Lease | None:
        """Take the lease ``name`` for ``owner`` if it is free or expired (or already
        ``owner``'s, which renews it). Returns ``None`` when someone else holds it.
        Each new holding (a different owner, or the same owner after its lease expired)
        gets a fencing token larger than every earlier one."""
        ...

    async def renew_lease(self, lease: Lease, ttl_s: float, now: datetime) -> Lease | None:
        """Extend a lease still held by ``lease.owner`` with the same token; ``None``
        if it was lost (taken by another owner, or released). An expired lease that
        nobody took since may be renewed: its token still fences out older holders."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up if ``lease`` is still the current holding; else no-op."""
        ...

    # -- pool configs ------------------------------------------------------------------
    async def put_pool(self, pool: PoolConfig) -> None: ...

    async def get_pool(self, name: str) -> PoolConfig | None: ...

    async def list_pools(self) -> Sequence[PoolConfig]: ...

    async def delete_pool(self, name: str) -> None: ...


@runtime_checkable
class JobOutbox(Protocol):
    """Optional: a StateStore whose backend also holds the queue can record a new job
    and queue its message in one atomic step (a transactional outbox).

    Intake uses it when :meth:`sends_to` accepts the deployment's queue. The job can then
    never be recorded without its message (a crash between two writes) nor queued
    without its record, and a webhook costs one round trip to the backend instead of
    three (create, send, mark as enqueued).
    """

    def sends_to(self, queue: Queue) -> bool:
        """``True`` if :meth:`create_job_and_send` can send to ``queue`` atomically."""
        ...

    async def create_job_and_send(self, job: Job, message: JobMessage, queue: Queue) -> Job | None:
        """Create ``job`` as ``put_job(job, expect_version=None)`` does and, in the same
        atomic step, send ``message`` to ``queue`` as ``Queue.send`` does. Returns the job
        as stored, or ``None`` when a job with that id exists: then nothing is written and
        nothing is sent."""
        ...
