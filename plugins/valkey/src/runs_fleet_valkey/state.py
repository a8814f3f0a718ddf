"""The StateStore on Valkey: jobs, runner assignments, leases and pool configs.

Several replicas share one store, and whether a job gets exactly one runner or one
leader runs the pool loop depends on conditional writes deciding races. Every such
write here is a Lua script (see :mod:`runs_fleet_valkey.state_scripts` for the key
layout), registered once per store, so the check, the write and the secondary indexes
change together or not at all. Listing reads an index set, never the keyspace
(no ``KEYS``/``SCAN``); the records it names are then fetched in pipelined pages and
re-checked against the filter, since one may have moved on between the two reads.

Leases expire by the ``now`` the caller passes (the core's injected clock), not by the
server's clock or a key TTL, so a lease means the same thing here as in every other
store. Records are JSON through the core's record converter.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from redis.asyncio import Redis

from runs_fleet_core.converters import dumps, loads, make_record_converter
from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.lease import Lease
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RunnerAssignment
from runs_fleet_core.errors import ConflictError
from runs_fleet_core.ports.queue import Queue
from runs_fleet_valkey import state_scripts
from runs_fleet_valkey.batching import ScriptBatcher
from runs_fleet_valkey.client import backend_errors, connect, server_address
from runs_fleet_valkey.queue import ValkeyQueue

DEFAULT_PREFIX = "runs-fleet"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PAGE = 500


def epoch_us(moment: datetime) -> int:
    """``moment`` as whole microseconds since the epoch (naive values count as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


class ValkeyStateStore:
    """The :class:`~runs_fleet_core.ports.StateStore` port on Valkey.

    ``client`` is owned by the store (:meth:`aclose` closes it); build both with
    :meth:`from_url`. ``prefix`` starts every key, so several deployments can share a
    server.
    """

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix:
            raise ValueError("the key prefix must not be empty")
        self._client = client
        self.prefix = prefix
        self._converter = make_record_converter()
        self._server = server_address(client)
        self._put_job = client.register_script(state_scripts.PUT_JOB)
        self._create_and_send = ScriptBatcher(
            client, client.register_script(state_scripts.CREATE_JOB_AND_SEND)
        )
        self._assign = client.register_script(state_scripts.ASSIGN_RUNNER)
        self._release = client.register_script(state_scripts.RELEASE_RUNNER)
        self._acquire = client.register_script(state_scripts.ACQUIRE_LEASE)
        self._renew = client.register_script(state_scripts.RENEW_LEASE)
        self._release_lease = client.register_script(state_scripts.RELEASE_LEASE)

    @classmethod
    def from_url(
        cls, url: str, *, socket_timeout_s: float = 10.0, **options: Any
    ) -> ValkeyStateStore:
        """A store on the server at ``url`` (see :func:`runs_fleet_valkey.client.connect`);
        ``options`` are the constructor's keyword arguments. Connects on first use."""
        return cls(connect(url, socket_timeout_s=socket_timeout_s), **options)

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()

    def _key(self, *parts: object) -> str:
        return ":".join([self.prefix, *(str(part) for part in parts)])

    # -- jobs ---------------------------------------------------------------------
    async def put_job(self, job: Job, *, expect_version: int | None) -> Job:
        """Create (``expect_version=None``) or replace (stored version must equal
        ``expect_version``) ``job`` and its index entries in one script; the stored copy
        gets the next version. ``ConflictError`` when the condition fails."""
        version = 1 if expect_version is None else expect_version + 1
        stored = attrs.evolve(job, version=version)
        payload = dumps(self._converter, stored)
        args: list[str | int] = [self.prefix, job.job_id]
        args.append("" if expect_version is None else expect_version)
        args += [version, job.status.value, job.pool or "", payload]
        with backend_errors("job write"):
            written, current = await self._put_job(keys=[self._key("job", job.job_id)], args=args)
        if not written:
            raise ConflictError(_conflict(job.job_id, expect_version, int(current)))
        return loads(self._converter, payload, Job)

    def sends_to(self, queue: Queue) -> bool:
        """The outbox works with a Valkey queue on the same server and database."""
        return isinstance(queue, ValkeyQueue) and queue.server == self._server

    async def create_job_and_send(self, job: Job, message: JobMessage, queue: Queue) -> Job | None:
        """Create ``job`` and add ``message`` to ``queue``'s stream in one script: a
        webhook costs one round trip, and no crash can leave one without the other."""
        if not isinstance(queue, ValkeyQueue) or not self.sends_to(queue):
            raise TypeError("the Valkey outbox sends only to a Valkey queue on its own server")
        stored = attrs.evolve(job, version=1)
        payload = dumps(self._converter, stored)
        send_keys, send_args = queue.send_arguments(message)
        args: list[str | int] = [self.prefix, job.job_id, job.status.value, job.pool or ""]
        with backend_errors("job write and send"):
            created = await self._create_and_send(
                keys=[self._key("job", job.job_id), *send_keys], args=[*args, payload, *send_args]
            )
        return stored if created else None

    async def get_job(self, job_id: JobId) -> Job | None:
        """The stored job, or ``None``."""
        with backend_errors("job read"):
            payload = await self._client.hget(self._key("job", job_id), "data")
        return None if payload is None else loads(self._converter, payload, Job)

    async def list_jobs(
        self, *, status: JobStatus | None = None, pool: str | None = None
    ) -> Sequence[Job]:
        """Jobs with ``status`` and/or in ``pool`` (all when both are ``None``), by id,
        read from the index sets. ``pool=""`` names no pool and matches nothing."""
        if pool == "":
            return []
        indexes = []
        if status is not None:
            indexes.append(self._key("jobs-by-status", status.value))
        if pool is not None:
            indexes.append(self._key("jobs-by-pool", pool))
        with backend_errors("job listing"):
            if len(indexes) == 2:
                ids = await self._client.sinter(indexes)
            else:
                ids = await self._client.smembers(indexes[0] if indexes else self._key("jobs-all"))
            payloads = await self._fetch([self._key("job", i) for i in ids], "data")
        jobs = [loads(self._converter, payload, Job) for payload in payloads]
        return sorted(
            (
                job
                for job in jobs
                if (status is None or job.status is status) and (pool is None or job.pool == pool)
            ),
            key=lambda job: job.job_id,
        )

    async def _fetch(self, keys: Sequence[str], field: str) -> list[str]:
        """``field`` of each hash in ``keys`` (pipelined by pages), skipping missing ones."""
        found: list[str] = []
        for start in range(0, len(keys), _PAGE):
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys[start : start + _PAGE]:
                    pipe.hget(key, field)
                found += [value for value in await pipe.execute() if value is not None]
        return found

    # -- runner assignments ----------------------------------------------------------
    async def assign_runner(self, runner_id: RunnerId, job_id: JobId, at: datetime) -> bool:
        """Bind ``runner_id`` to ``job_id`` unless it is bound already (to any job)."""
        assignment = RunnerAssignment(runner_id=runner_id, job_id=job_id, assigned_at=at)
        keys = [self._key("runner", runner_id), self._key("runners")]
        args: list[str | int] = [runner_id, job_id, dumps(self._converter, assignment)]
        with backend_errors("runner assignment"):
            return bool(await self._assign(keys=keys, args=args))

    async def get_assignment(self, runner_id: RunnerId) -> RunnerAssignment | None:
        """The job ``runner_id`` serves, or ``None`` when it is free."""
        with backend_errors("assignment read"):
            payload = await self._client.hget(self._key("runner", runner_id), "data")
        return None if payload is None else loads(self._converter, payload, RunnerAssignment)

    async def release_runner(self, runner_id: RunnerId, job_id: JobId) -> None:
        """Free ``runner_id`` if it is bound to ``job_id``; otherwise do nothing."""
        keys = [self._key("runner", runner_id), self._key("runners")]
        with backend_errors("runner release"):
            await self._release(keys=keys, args=[runner_id, job_id])

    async def list_assignments(self) -> Sequence[RunnerAssignment]:
        """Every current assignment, by runner id, read through the runner index."""
        with backend_errors("assignment listing"):
            runner_ids = sorted(await self._client.smembers(self._key("runners")))
            payloads = await self._fetch([self._key("runner", r) for r in runner_ids], "data")
        return [loads(self._converter, payload, RunnerAssignment) for payload in payloads]

    # -- leases ----------------------------------------------------------------------
    async def acquire_lease(
        self, name: str, owner: str, ttl_s: float, now: datetime
    ) -> Lease | None:
        """Take ``name`` for ``owner`` if free, expired (by ``now``) or already
        ``owner``'s (which extends it, same token); ``None`` while another holds it. A
        new holding's token comes from a counter that only grows."""
        expires_at = now + timedelta(seconds=ttl_s)
        keys = [self._key("lease", name), self._key("lease-token", name)]
        with backend_errors("lease acquisition"):
            token = await self._acquire(
                keys=keys, args=[owner, epoch_us(now), epoch_us(expires_at)]
            )
        if token is None:
            return None
        return Lease(name=name, owner=owner, token=int(token), expires_at=expires_at)

    async def renew_lease(self, lease: Lease, ttl_s: float, now: datetime) -> Lease | None:
        """Extend ``lease`` to ``now + ttl_s`` if it is still the current holding (even
        past its expiry, as long as nobody took it); ``None`` if it was lost."""
        expires_at = now + timedelta(seconds=ttl_s)
        args: list[str | int] = [lease.owner, lease.token, epoch_us(expires_at)]
        with backend_errors("lease renewal"):
            renewed = await self._renew(keys=[self._key("lease", lease.name)], args=args)
        return attrs.evolve(lease, expires_at=expires_at) if renewed else None

    async def release_lease(self, lease: Lease) -> None:
        """Free the lease if ``lease`` is still the current holding; else do nothing."""
        with backend_errors("lease release"):
            await self._release_lease(
                keys=[self._key("lease", lease.name)], args=[lease.owner, lease.token]
            )

    # -- pool configs ------------------------------------------------------------------
    async def put_pool(self, pool: PoolConfig) -> None:
        """Store (or overwrite) the config of ``pool.name``."""
        payload = dumps(self._converter, pool)
        with backend_errors("pool write"):
            await self._client.hset(self._key("pools"), pool.name, payload)

    async def get_pool(self, name: str) -> PoolConfig | None:
        """The pool's config, or ``None``."""
        with backend_errors("pool read"):
            payload = await self._client.hget(self._key("pools"), name)
        return None if payload is None else loads(self._converter, payload, PoolConfig)

    async def list_pools(self) -> Sequence[PoolConfig]:
        """Every pool config, by name."""
        with backend_errors("pool listing"):
            pools = await self._client.hgetall(self._key("pools"))
        return [loads(self._converter, pools[name], PoolConfig) for name in sorted(pools)]

    async def delete_pool(self, name: str) -> None:
        """Remove the pool's config; removing a missing one is not an error."""
        with backend_errors("pool deletion"):
            await self._client.hdel(self._key("pools"), name)


def _conflict(job_id: JobId, expected: int | None, stored: int) -> str:
    if expected is None:
        return f"job {job_id} already exists (at version {stored})"
    if stored < 0:
        return f"job {job_id} does not exist (expected version {expected})"
    return f"job {job_id} is at version {stored}, not {expected}"
