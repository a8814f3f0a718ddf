"""The StateStore on ConfigMaps and Leases: Kubernetes mode without another database.

Several replicas share one store, and whether a job gets exactly one runner or one
leader runs the pool loop depends on conditional writes deciding races. The API server
decides them here: a create fails with ``AlreadyExists`` when the name is taken (jobs,
runner assignments), a replace or a delete carrying a ``resourceVersion`` fails with
``Conflict`` when the object changed since it was read. A conflict is never answered
by writing anyway: the record is read again and the decision made again, since a
metadata-only change (a label added by hand) leaves the job's own version as it was.

Records, their names and labels are spelt in :mod:`runs_fleet_k8s.state_records`;
leases, one ``coordination.k8s.io/v1`` Lease each, in :mod:`runs_fleet_k8s.leases`.
Reads are quorum reads of the API server (no ``resourceVersion`` on get or list), and
listings are label selectors evaluated by the API server, page by page.

ConfigMaps do not expire on their own, so a finished job's record gets a
``runs-fleet.io/expires-on`` day (its retention after it finished) and the store
deletes the records whose day has passed: :meth:`ConfigMapStateStore.purge_expired_jobs`,
which the store also runs by itself, at most every ``purge_interval_s``, after writing
a finished job. Every replica may do so; deletes are conditional, so they never race.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import attrs

from runs_fleet_core.converters import dumps, loads, make_record_converter
from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.lease import Lease
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RunnerAssignment
from runs_fleet_core.errors import AdapterError, ConfigError, ConflictError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports import Clock
from runs_fleet_core.settings import Kind, Setting
from runs_fleet_k8s import leases, names
from runs_fleet_k8s import state_records as records
from runs_fleet_k8s.client import KubeApiError, KubeCaller

T = TypeVar("T")
_log = logging.getLogger(__name__)

RETENTION_SETTING = "RUNS_FLEET_KUBE_JOB_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 366
DEFAULT_PAGE_SIZE = 250
SEEN_MAX = 4096
"""Jobs whose last seen resourceVersion a store remembers (enough for the jobs in flight)."""
DEFAULT_PURGE_INTERVAL_S = 600.0
PURGE_BATCH = 200
"""Most records one purge deletes, so the write that triggers it stays quick; the rest
go on the next purge."""
_WRITE_ATTEMPTS = 5

SETTINGS: tuple[Setting, ...] = (
    Setting(
        name=RETENTION_SETTING,
        help="days a finished job's ConfigMap record (completed, failed, rejected, "
        f"cancelled) is kept before runs-fleet deletes it (1 to {MAX_RETENTION_DAYS})",
        kind=Kind.INT,
        default=DEFAULT_RETENTION_DAYS,
        minimum=1,
    ),
)
"""Every setting the ConfigMap state store reads."""


class ConfigMapStateStore:
    """The :class:`~runs_fleet_core.ports.StateStore` port on ConfigMaps and Leases in
    the caller's namespace.

    ``clock`` times the automatic purge of expired job records (``None``: only
    :meth:`purge_expired_jobs` purges); ``page_size`` caps one page of a listing.
    """

    def __init__(
        self,
        caller: KubeCaller,
        *,
        clock: Clock | None = None,
        job_retention_days: int = DEFAULT_RETENTION_DAYS,
        page_size: int = DEFAULT_PAGE_SIZE,
        purge_interval_s: float = DEFAULT_PURGE_INTERVAL_S,
    ) -> None:
        if not 1 <= job_retention_days <= MAX_RETENTION_DAYS:
            raise ValueError(
                f"job retention must be 1 to {MAX_RETENTION_DAYS} days, not {job_retention_days}"
            )
        if page_size < 1:
            raise ValueError(f"the page size must be at least 1, not {page_size}")
        self._caller = caller
        self._clock = clock
        self.namespace = caller.namespace
        self.job_retention = timedelta(days=job_retention_days)
        self.page_size = page_size
        self.purge_interval = timedelta(seconds=purge_interval_s)
        self._last_purge: datetime | None = None
        self._converter = make_record_converter()
        self._seen = records.SeenVersions(SEEN_MAX)

    def __repr__(self) -> str:
        return f"ConfigMapStateStore(namespace={self.namespace!r})"

    def _remember(self, job: Job, obj: Any) -> Job:
        """Note that ``job``'s record was at ``obj``'s resourceVersion: a replace of that
        version can then go straight to the API server, which refuses it (409) if anything
        wrote the record since, so the check stays on the server."""
        self._seen.note(job.job_id, job.version, obj)
        return job

    def _decode(self, obj: Any, key: str, cls: type[T]) -> T:
        """The record in data key ``key`` of ConfigMap ``obj``; ``AdapterError`` naming
        the object when it holds no such record."""
        payload = records.data_of(obj, key)
        try:
            if payload is None:
                raise ValueError(f"no {key} key")
            return loads(self._converter, payload, cls)
        except ValueError as exc:
            raise AdapterError(
                f"ConfigMap {obj.metadata.name} in namespace {self.namespace} does not hold "
                f"a runs-fleet {cls.__name__} record ({exc}); delete it",
                retryable=False,
            ) from None

    async def _list(self, component: str, **labels: str) -> list[Any]:
        selector = names.selector(records.component_labels(component, **labels))
        return await records.list_config_maps(self._caller, selector, page_size=self.page_size)

    # -- jobs ---------------------------------------------------------------------
    async def put_job(self, job: Job, *, expect_version: int | None) -> Job:
        """Create (``expect_version=None``: no record of that job yet) or replace (the
        stored ``version`` must equal ``expect_version``) the job's ConfigMap; the stored
        copy gets the next version. ``ConflictError`` naming the version found when the
        condition fails; then nothing was written."""
        version = 1 if expect_version is None else expect_version + 1
        stored = attrs.evolve(job, version=version)
        payload = dumps(self._converter, stored)
        name = records.job_record_name(job.job_id)
        body = records.config_map(
            name,
            self.namespace,
            labels=records.job_labels(stored, self.job_retention),
            data={records.JOB_KEY: payload},
            write_id=uuid.uuid4().hex,
        )
        if expect_version is None:
            written = await self._create_job(job.job_id, body)
        else:
            written = await self._replace_job(job.job_id, expect_version, body)
        if stored.final:
            await self._purge_now_and_then()
        return self._remember(loads(self._converter, payload, Job), written)

    async def _create_job(self, job_id: JobId, body: dict[str, Any]) -> Any:
        try:
            return await self._caller.call(
                self._caller.core.create_namespaced_config_map, self.namespace, body
            )
        except KubeApiError as exc:
            if not exc.already_exists:
                raise
        current = await records.read_config_map(self._caller, body["metadata"]["name"])
        if current is not None and records.write_id_of(current) == _write_id(body):
            return current  # our own create, resent after its answer was lost
        found = None if current is None else self._decode(current, records.JOB_KEY, Job).version
        raise ConflictError(_conflict(job_id, None, found))

    async def _replace_job(self, job_id: JobId, expected: int, body: dict[str, Any]) -> Any:
        """Replace at the ``resourceVersion`` this store last saw the record at with
        version ``expected``, if it saw it; otherwise (or on a 409) read, check the stored
        version, replace at the read ``resourceVersion``, and on a 409 read and check again
        (a few times). Nothing is ever written without one of the two checks."""
        name = body["metadata"]["name"]
        if (seen := self._seen.take(job_id, expected)) is not None:
            body["metadata"]["resourceVersion"] = seen
            try:
                return await self._caller.call(
                    self._caller.core.replace_namespaced_config_map, name, self.namespace, body
                )
            except KubeApiError as exc:
                if not (exc.conflict or exc.not_found):
                    raise
        for attempt in range(_WRITE_ATTEMPTS + 1):
            current = await records.read_config_map(self._caller, name)
            if current is None:
                raise ConflictError(_conflict(job_id, expected, None))
            if records.write_id_of(current) == _write_id(body):
                return current  # our own replace, resent after its answer was lost
            found = self._decode(current, records.JOB_KEY, Job).version
            if found != expected:
                raise ConflictError(_conflict(job_id, expected, found))
            if attempt == _WRITE_ATTEMPTS:
                break
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            try:
                return await self._caller.call(
                    self._caller.core.replace_namespaced_config_map, name, self.namespace, body
                )
            except KubeApiError as exc:
                if not (exc.conflict or exc.not_found):
                    raise
        raise AdapterError(
            f"ConfigMap {name} (job {job_id}) in namespace {self.namespace} kept changing "
            "while the job was written; nothing was written, try again",
            retryable=True,
        )

    async def get_job(self, job_id: JobId) -> Job | None:
        """The stored job, or ``None``."""
        obj = await records.read_config_map(self._caller, records.job_record_name(job_id))
        return None if obj is None else self._remember(self._decode(obj, records.JOB_KEY, Job), obj)

    async def list_jobs(
        self, *, status: JobStatus | None = None, pool: str | None = None
    ) -> Sequence[Job]:
        """Jobs with ``status`` and/or in ``pool``, by id: a listing whose label selector
        the API server evaluates. ``pool=""`` names no pool and matches nothing."""
        if pool == "":
            return []
        labels: dict[str, str] = {}
        if status is not None:
            labels[records.STATUS] = status.value
        if pool is not None:
            labels[names.POOL] = names.label_value(pool)
        found = await self._list(records.JOB_RECORD, **labels)
        jobs = (self._remember(self._decode(obj, records.JOB_KEY, Job), obj) for obj in found)
        return sorted(
            (
                job
                for job in jobs  # a shortened pool label value could name two pools
                if (status is None or job.status is status) and (pool is None or job.pool == pool)
            ),
            key=lambda job: job.job_id,
        )

    async def purge_expired_jobs(self, now: datetime) -> int:
        """Delete the records of finished jobs whose retention ended before ``now``'s UTC
        day, at most :data:`PURGE_BATCH` of them (see :func:`~runs_fleet_k8s.
        state_records.delete_expired_jobs`); returns how many were deleted."""
        return await records.delete_expired_jobs(
            self._caller,
            today=records.utc_day(now),
            retention_days=self.job_retention.days,
            page_size=self.page_size,
            limit=PURGE_BATCH,
        )

    async def _purge_now_and_then(self) -> None:
        """Purge when the last purge of this store is ``purge_interval`` old. A failed
        purge is logged and left to the next one: the job write it follows succeeded."""
        if self._clock is None:
            return
        now = self._clock.now()
        if self._last_purge is not None and now - self._last_purge < self.purge_interval:
            return
        self._last_purge = now
        try:
            deleted = await self.purge_expired_jobs(now)
        except AdapterError as exc:
            _log.warning("could not delete expired job records (trying again later): %s", exc)
            return
        if deleted:
            _log.info("deleted %d expired job record(s) from namespace %s", deleted, self.namespace)

    # -- runner assignments ----------------------------------------------------------
    async def assign_runner(self, runner_id: RunnerId, job_id: JobId, at: datetime) -> bool:
        """Create the runner's assignment ConfigMap: ``False`` when it exists already
        (the runner is bound, to any job), unless it is our own resent create."""
        assignment = RunnerAssignment(runner_id=runner_id, job_id=job_id, assigned_at=at)
        labels = records.component_labels(
            records.ASSIGNMENT,
            **{names.JOB_ID: str(job_id), names.RUNNER: names.label_value(runner_id)},
        )
        body = records.config_map(
            records.assignment_name(runner_id),
            self.namespace,
            labels=labels,
            data={records.ASSIGNMENT_KEY: dumps(self._converter, assignment)},
            write_id=uuid.uuid4().hex,
        )
        try:
            await self._caller.call(
                self._caller.core.create_namespaced_config_map, self.namespace, body
            )
            return True
        except KubeApiError as exc:
            if not exc.already_exists:
                raise
        current = await records.read_config_map(self._caller, body["metadata"]["name"])
        return current is not None and records.write_id_of(current) == _write_id(body)

    async def get_assignment(self, runner_id: RunnerId) -> RunnerAssignment | None:
        """The job ``runner_id`` serves, or ``None`` when it is free."""
        obj = await records.read_config_map(self._caller, records.assignment_name(runner_id))
        return None if obj is None else self._decode(obj, records.ASSIGNMENT_KEY, RunnerAssignment)

    async def release_runner(self, runner_id: RunnerId, job_id: JobId) -> None:
        """Delete the assignment if it names ``job_id``, on condition that it is still
        the version read (a delete refused for a change is decided again); otherwise
        (bound to another job, or free) nothing happens."""
        name = records.assignment_name(runner_id)
        for _ in range(_WRITE_ATTEMPTS):
            current = await records.read_config_map(self._caller, name)
            if current is None:
                return
            if self._decode(current, records.ASSIGNMENT_KEY, RunnerAssignment).job_id != job_id:
                return
            version = current.metadata.resource_version
            if await records.delete_config_map(self._caller, name, resource_version=version):
                return
        raise AdapterError(
            f"ConfigMap {name} (runner {runner_id}) in namespace {self.namespace} kept "
            "changing while it was released; release it again",
            retryable=True,
        )

    async def list_assignments(self) -> Sequence[RunnerAssignment]:
        """Every current assignment, by runner id (a label-selected listing)."""
        found = await self._list(records.ASSIGNMENT)
        assignments = [self._decode(o, records.ASSIGNMENT_KEY, RunnerAssignment) for o in found]
        return sorted(assignments, key=lambda assignment: assignment.runner_id)

    # -- leases (see runs_fleet_k8s.leases) ---------------------------------------------
    async def acquire_lease(
        self, name: str, owner: str, ttl_s: float, now: datetime
    ) -> Lease | None:
        """Take ``name`` for ``owner`` if free, expired (by ``now``) or already
        ``owner``'s (which extends it, same token); ``None`` while another holds it."""
        return await leases.acquire_lease(self._caller, name, owner, ttl_s, now)

    async def renew_lease(self, lease: Lease, ttl_s: float, now: datetime) -> Lease | None:
        """Extend ``lease`` to ``now + ttl_s`` if it is still the current holding (even
        past its expiry, as long as nobody took it); ``None`` if it was lost."""
        return await leases.renew_lease(self._caller, lease, ttl_s, now)

    async def release_lease(self, lease: Lease) -> None:
        """Free the lease if ``lease`` is still the current holding; else do nothing."""
        await leases.release_lease(self._caller, lease)

    # -- pool configs ------------------------------------------------------------------
    async def put_pool(self, pool: PoolConfig) -> None:
        """Store (or overwrite: the last write wins) the config of ``pool.name``."""
        name = records.pool_config_name(pool.name)
        body = records.config_map(
            name,
            self.namespace,
            labels=records.component_labels(
                records.POOL_CONFIG, **{names.POOL: names.label_value(pool.name)}
            ),
            data={records.POOL_KEY: dumps(self._converter, pool)},
        )
        await records.write_config_map(
            self._caller, body, what=f"pool {pool.name}", attempts=_WRITE_ATTEMPTS
        )

    async def get_pool(self, name: str) -> PoolConfig | None:
        """The pool's config, or ``None``."""
        obj = await records.read_config_map(self._caller, records.pool_config_name(name))
        return None if obj is None else self._decode(obj, records.POOL_KEY, PoolConfig)

    async def list_pools(self) -> Sequence[PoolConfig]:
        """Every pool config, by name."""
        found = await self._list(records.POOL_CONFIG)
        pools = [self._decode(obj, records.POOL_KEY, PoolConfig) for obj in found]
        return sorted(pools, key=lambda pool: pool.name)

    async def delete_pool(self, name: str) -> None:
        """Remove the pool's config; removing a missing one is not an error."""
        await records.delete_config_map(self._caller, records.pool_config_name(name))


def _write_id(body: dict[str, Any]) -> str:
    return str(body["metadata"]["annotations"][records.WRITE_ID])


def _conflict(job_id: JobId, expected: int | None, stored: int | None) -> str:
    if expected is None:
        return f"job {job_id} already exists (at version {stored}); read it and decide again"
    if stored is None:
        return f"job {job_id} does not exist (expected version {expected})"
    return f"job {job_id} is at version {stored}, not {expected}: read it again and retry"


def from_context(context: AdapterContext, caller: KubeCaller) -> ConfigMapStateStore:
    """The store in the caller's namespace with the configured job retention, purging
    expired records by the deployment's clock; ``ConfigError`` naming the setting when
    the retention is out of range."""
    days = int(context.settings.get(RETENTION_SETTING, DEFAULT_RETENTION_DAYS))
    try:
        return ConfigMapStateStore(caller, clock=context.clock, job_retention_days=days)
    except ValueError as exc:
        raise ConfigError([f"{RETENTION_SETTING}: {exc}"]) from None
