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
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RunnerAssignment


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
        already bound to any job (including this one: one bind wins)."""
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
