"""The StateStore on DynamoDB: jobs, runner assignments, leases and pool configs.

Several replicas share one store, and whether a job gets exactly one runner or one
leader runs the pool loop depends on conditional writes deciding races. Each such write
here is one DynamoDB request with a ``ConditionExpression``; when the condition fails,
DynamoDB hands back the item that beat us (``ReturnValuesOnConditionCheckFailure``),
which both names the winner in the ``ConflictError`` and settles the one ambiguous
case: botocore resends a request whose answer was lost, and the resend then fails the
condition against our *own* first write. Every job and assignment write carries a
random ``write_id``, so a failure against an item with our ``write_id`` is a success.

Records are JSON (``record``) through the core's record converter; the attributes that
conditions and indexes need (``version``, ``status``, ``pool``, ``job_id``) sit beside
it. Table shapes are in :mod:`runs_fleet_ec2.tables`; the lease writes, each a
compare-and-set on one locks-table item, in :mod:`runs_fleet_ec2.dynamodb_leases`; the
item spelling both share in :mod:`runs_fleet_ec2.dynamodb_items`.

Reads of one record, the assignment listing and the lease decisions are strongly
consistent. Listing jobs by status or pool queries a global secondary index, which
DynamoDB keeps *eventually* consistent (it lags the table by well under a second): the
callers are periodic loops that act on a listed job only through a conditional write,
so a job missed now is seen on the next round. Listing every job is a Scan of the jobs
table, which only the API's "show all" needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.converters import dumps, loads, make_record_converter
from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.lease import Lease
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RunnerAssignment
from runs_fleet_core.errors import AdapterError, ConflictError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.settings import Kind, Setting
from runs_fleet_ec2 import dynamodb_leases as leases
from runs_fleet_ec2.dynamodb_items import (
    CONDITION_FAILED,
    LEASE,
    RUNNER,
    epoch_us,
    failed_condition,
    lock_key,
    number_attr,
    string_attr,
)
from runs_fleet_ec2.tables import JOBS, LOCKS, POOLS, TABLE_SETTINGS, ensure_table

__all__ = [
    "CONDITION_FAILED",
    "DEFAULT_RETENTION_DAYS",
    "LEASE",
    "RETENTION_SETTING",
    "RUNNER",
    "SETTINGS",
    "DynamoDBStateStore",
    "from_context",
]

RETENTION_SETTING = "RUNS_FLEET_JOB_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30

SETTINGS: tuple[Setting, ...] = (
    *TABLE_SETTINGS,
    Setting(
        name=RETENTION_SETTING,
        help="days a finished job's record (completed, failed, rejected, cancelled) is "
        "kept before DynamoDB's TTL deletes it",
        kind=Kind.INT,
        default=DEFAULT_RETENTION_DAYS,
        minimum=1,
    ),
)
"""Every setting the DynamoDB state store reads: table names and job retention."""


class DynamoDBStateStore:
    """The :class:`~runs_fleet_core.ports.StateStore` port on three DynamoDB tables.

    ``page_size`` caps the items of one Query or Scan page (``None``: DynamoDB's 1 MB
    pages); every listing follows ``LastEvaluatedKey`` to the end either way.
    """

    def __init__(
        self,
        caller: AwsCaller,
        *,
        jobs_table: str = JOBS.default_name,
        pools_table: str = POOLS.default_name,
        locks_table: str = LOCKS.default_name,
        job_retention_days: int = DEFAULT_RETENTION_DAYS,
        page_size: int | None = None,
    ) -> None:
        if job_retention_days < 1:
            raise ValueError(f"job retention must be at least 1 day, not {job_retention_days}")
        self._caller = caller
        self.jobs_table = jobs_table
        self.pools_table = pools_table
        self.locks_table = locks_table
        self.job_retention = timedelta(days=job_retention_days)
        self.page_size = page_size
        self._converter = make_record_converter()

    def __repr__(self) -> str:
        tables = (self.jobs_table, self.pools_table, self.locks_table)
        return f"DynamoDBStateStore(tables={tables!r})"

    async def ensure_tables(self) -> None:
        """Create the three tables when missing (see :func:`~runs_fleet_ec2.tables.
        ensure_table`); ``ConfigError`` when an existing one has another shape."""
        tables = ((JOBS, self.jobs_table), (POOLS, self.pools_table), (LOCKS, self.locks_table))
        for spec, name in tables:
            await ensure_table(self._caller, spec, name)

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await self._caller.call("dynamodb", operation, **params)

    async def _get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        answer = await self._call("get_item", TableName=table, Key=key, ConsistentRead=True)
        item: dict[str, Any] | None = answer.get("Item")
        return item

    async def _pages(self, operation: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a Query or Scan, page after page."""
        if self.page_size is not None:
            params["Limit"] = self.page_size
        items: list[dict[str, Any]] = []
        while True:
            answer = await self._call(operation, **params)
            items += answer.get("Items", [])
            if not answer.get("LastEvaluatedKey"):
                return items
            params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    # -- jobs ---------------------------------------------------------------------
    async def put_job(self, job: Job, *, expect_version: int | None) -> Job:
        """Create (``expect_version=None``: no item with that ``job_id``) or replace
        (stored ``version`` must equal ``expect_version``) in one conditional PutItem;
        the stored copy gets the next version. ``ConflictError`` when the condition
        fails, naming the version found."""
        version = 1 if expect_version is None else expect_version + 1
        stored = attrs.evolve(job, version=version)
        payload = dumps(self._converter, stored)
        write_id = uuid.uuid4().hex
        condition: dict[str, Any]
        if expect_version is None:
            condition = {
                "ConditionExpression": "attribute_not_exists(#id)",
                "ExpressionAttributeNames": {"#id": "job_id"},
            }
        else:
            condition = {
                "ConditionExpression": "#version = :expected",
                "ExpressionAttributeNames": {"#version": "version"},
                "ExpressionAttributeValues": {":expected": number_attr(expect_version)},
            }
        try:
            await self._call(
                "put_item",
                TableName=self.jobs_table,
                Item=self._job_item(stored, payload, write_id),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **condition,
            )
        except AdapterError as exc:
            found = failed_condition(exc)
            if found is None:
                raise
            if found.get("write_id") != string_attr(write_id):  # else: our own resent write
                raise ConflictError(_conflict(job.job_id, expect_version, found)) from exc
        return loads(self._converter, payload, Job)

    def _job_item(self, job: Job, payload: str, write_id: str) -> dict[str, Any]:
        item = {
            "job_id": number_attr(job.job_id),
            "version": number_attr(job.version),
            "status": string_attr(job.status.value),
            "record": string_attr(payload),
            "write_id": string_attr(write_id),
        }
        if job.pool:  # index keys cannot be empty: a job without a pool is in no pool index
            item["pool"] = string_attr(job.pool)
            item["status_job"] = string_attr(f"{job.status.value}#{job.job_id:020d}")
        if job.final:
            item["expire_at"] = number_attr(self.expire_at(job))
        return item

    def expire_at(self, job: Job) -> int:
        """When DynamoDB may delete the finished ``job`` (epoch seconds): the retention
        period after it reached its final status."""
        finished = job.timeline[-1].at if job.timeline else job.created_at
        return epoch_us(finished + self.job_retention) // 1_000_000

    async def get_job(self, job_id: JobId) -> Job | None:
        """The stored job (a strongly consistent read), or ``None``."""
        item = await self._get(self.jobs_table, {"job_id": number_attr(job_id)})
        return None if item is None else loads(self._converter, item["record"]["S"], Job)

    async def list_jobs(
        self, *, status: JobStatus | None = None, pool: str | None = None
    ) -> Sequence[Job]:
        """Jobs with ``status`` and/or in ``pool``, by id: a Query of ``by-pool`` (with
        a ``<status>#`` key prefix when both are given) or of ``by-status``; a Scan
        only when neither is. ``pool=""`` names no pool and matches nothing."""
        if pool == "":
            return []
        if pool is not None:
            key = "#pool = :pool"
            names = {"#pool": "pool"}
            values = {":pool": string_attr(pool)}
            if status is not None:
                key += " AND begins_with(#status_job, :status)"
                names["#status_job"] = "status_job"
                values[":status"] = string_attr(f"{status.value}#")
            items = await self._query_index("by-pool", key, names, values)
        elif status is not None:
            items = await self._query_index(
                "by-status",
                "#status = :status",
                {"#status": "status"},
                {":status": string_attr(status.value)},
            )
        else:
            items = await self._pages("scan", TableName=self.jobs_table, ConsistentRead=True)
        jobs = (loads(self._converter, item["record"]["S"], Job) for item in items)
        return sorted(jobs, key=lambda job: job.job_id)

    async def _query_index(
        self, index: str, key: str, names: dict[str, str], values: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return await self._pages(
            "query",
            TableName=self.jobs_table,
            IndexName=index,
            KeyConditionExpression=key,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    # -- runner assignments ----------------------------------------------------------
    async def assign_runner(self, runner_id: RunnerId, job_id: JobId, at: datetime) -> bool:
        """Bind ``runner_id`` to ``job_id`` with a PutItem that only succeeds when the
        runner has no item: ``False`` when it is bound already (to any job)."""
        assignment = RunnerAssignment(runner_id=runner_id, job_id=job_id, assigned_at=at)
        write_id = uuid.uuid4().hex
        item = {
            **lock_key(RUNNER, runner_id),
            "job_id": number_attr(job_id),
            "record": string_attr(dumps(self._converter, assignment)),
            "write_id": string_attr(write_id),
        }
        try:
            await self._call(
                "put_item",
                TableName=self.locks_table,
                Item=item,
                ConditionExpression="attribute_not_exists(#kind)",
                ExpressionAttributeNames={"#kind": "kind"},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except AdapterError as exc:
            found = failed_condition(exc)
            if found is None:
                raise
            return found.get("write_id") == string_attr(write_id)  # True: our own resent write
        return True

    async def get_assignment(self, runner_id: RunnerId) -> RunnerAssignment | None:
        """The job ``runner_id`` serves, or ``None`` when it is free."""
        item = await self._get(self.locks_table, lock_key(RUNNER, runner_id))
        if item is None:
            return None
        return loads(self._converter, item["record"]["S"], RunnerAssignment)

    async def release_runner(self, runner_id: RunnerId, job_id: JobId) -> None:
        """Delete the binding on condition that it names ``job_id``; otherwise (bound
        to another job, or free) nothing happens."""
        try:
            await self._call(
                "delete_item",
                TableName=self.locks_table,
                Key=lock_key(RUNNER, runner_id),
                ConditionExpression="#job = :job",
                ExpressionAttributeNames={"#job": "job_id"},
                ExpressionAttributeValues={":job": number_attr(job_id)},
            )
        except AdapterError as exc:
            if failed_condition(exc) is None:
                raise

    async def list_assignments(self) -> Sequence[RunnerAssignment]:
        """Every current assignment, by runner id: a strongly consistent Query of the
        ``runner`` partition of the locks table (pool scale-down trusts it)."""
        items = await self._pages(
            "query",
            TableName=self.locks_table,
            KeyConditionExpression="#kind = :kind",
            ExpressionAttributeNames={"#kind": "kind"},
            ExpressionAttributeValues={":kind": string_attr(RUNNER)},
            ConsistentRead=True,
        )
        return [loads(self._converter, i["record"]["S"], RunnerAssignment) for i in items]

    # -- leases (see runs_fleet_ec2.dynamodb_leases) ---------------------------------
    async def acquire_lease(
        self, name: str, owner: str, ttl_s: float, now: datetime
    ) -> Lease | None:
        """Take ``name`` for ``owner`` if free, expired (by ``now``) or already
        ``owner``'s (which extends it, same token); ``None`` while another holds it.
        A compare-and-set on the lease item; tokens only grow."""
        return await leases.acquire_lease(self._caller, self.locks_table, name, owner, ttl_s, now)

    async def renew_lease(self, lease: Lease, ttl_s: float, now: datetime) -> Lease | None:
        """Move the expiry of ``lease`` to ``now + ttl_s`` while owner and token are still
        the stored ones (even past the expiry, as long as nobody took it); ``None`` if it
        was lost or released."""
        return await leases.renew_lease(self._caller, self.locks_table, lease, ttl_s, now)

    async def release_lease(self, lease: Lease) -> None:
        """Remove owner and expiry if ``lease`` is still the current holding (the token
        stays, so the next holding gets a larger one); else do nothing."""
        await leases.release_lease(self._caller, self.locks_table, lease)

    # -- pool configs ------------------------------------------------------------------
    async def put_pool(self, pool: PoolConfig) -> None:
        """Store (or overwrite) the config of ``pool.name``."""
        item = {"name": string_attr(pool.name), "record": string_attr(dumps(self._converter, pool))}
        await self._call("put_item", TableName=self.pools_table, Item=item)

    async def get_pool(self, name: str) -> PoolConfig | None:
        """The pool's config, or ``None``."""
        item = await self._get(self.pools_table, {"name": string_attr(name)})
        return None if item is None else loads(self._converter, item["record"]["S"], PoolConfig)

    async def list_pools(self) -> Sequence[PoolConfig]:
        """Every pool config, by name (a Scan: the table holds nothing else)."""
        items = await self._pages("scan", TableName=self.pools_table, ConsistentRead=True)
        pools = (loads(self._converter, item["record"]["S"], PoolConfig) for item in items)
        return sorted(pools, key=lambda pool: pool.name)

    async def delete_pool(self, name: str) -> None:
        """Remove the pool's config; removing a missing one is not an error."""
        await self._call("delete_item", TableName=self.pools_table, Key={"name": string_attr(name)})


def _conflict(job_id: JobId, expected: int | None, found: dict[str, Any]) -> str:
    stored = int(found["version"]["N"]) if "version" in found else None
    if expected is None:
        return f"job {job_id} already exists (at version {stored}); read it and decide again"
    if stored is None:
        return f"job {job_id} does not exist (expected version {expected})"
    return f"job {job_id} is at version {stored}, not {expected}: read it again and retry"


def from_context(context: AdapterContext, caller: AwsCaller) -> DynamoDBStateStore:
    """The store on the tables the settings name, with the configured job retention."""
    settings = context.settings
    return DynamoDBStateStore(
        caller,
        jobs_table=settings.get(JOBS.setting, JOBS.default_name),
        pools_table=settings.get(POOLS.setting, POOLS.default_name),
        locks_table=settings.get(LOCKS.setting, LOCKS.default_name),
        job_retention_days=settings.get(RETENTION_SETTING, DEFAULT_RETENTION_DAYS),
    )
