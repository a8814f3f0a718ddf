"""Ephemeral pools: warm pools that appear when jobs ask for them and go when they stop.

A job whose label names a pool nobody configured (``pool=docs-build``) gets one made for
it: :func:`ensure_pool_for` writes an ephemeral :class:`PoolConfig` shaped after that
job's label. The pool loop then sizes it from demand (:func:`ephemeral_demand`, the
90th percentile of its jobs' concurrency over the last hour, see
:mod:`runs_fleet_core.domain.demand`) up to the cap it was created with, and
:func:`retire_idle_pools` removes it once it has gone ``idle_s`` without any job.

The first job of a new pool always cold-starts (there is nothing warm yet); the pool
pays off from the next pass of the pool loop on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from runs_fleet_core.domain.demand import last_activity, recent_demand
from runs_fleet_core.domain.job import Job
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RunnerPhase
from runs_fleet_core.errors import AdapterError, NotFoundError
from runs_fleet_core.ports.compute import PoolProvider
from runs_fleet_core.ports.observe import Clock, Metrics
from runs_fleet_core.ports.state import StateStore
from runs_fleet_core.settings import Kind, Setting
from runs_fleet_core.usecases.pools import ScaleDown, scale_down

_log = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 10
DEFAULT_IDLE_S = 4 * 3600.0
CREATION_LEASE_TTL_S = 60.0
"""How long one creator may hold a pool name; far longer than two StateStore writes."""

SETTINGS: tuple[Setting, ...] = (
    Setting(
        name="RUNS_FLEET_EPHEMERAL_POOL_MAX_SIZE",
        help=(
            "most idle started runners an ephemeral pool (one made for a job whose pool= "
            "names no configured pool) keeps warm, whatever its demand; taken when the pool "
            "is made, so a change applies to pools made afterwards. 0 makes no new "
            "ephemeral pools: such jobs just cold-start"
        ),
        kind=Kind.INT,
        default=DEFAULT_MAX_SIZE,
        minimum=0,
    ),
    Setting(
        name="RUNS_FLEET_EPHEMERAL_POOL_IDLE_S",
        help=(
            "seconds an ephemeral pool may go without any of its jobs being created or "
            "changing status before its idle runners are terminated and, once it has no "
            "runner left, its config deleted (default 4 hours). Keep it well below the "
            "state store's job retention (RUNS_FLEET_JOB_RETENTION_DAYS): a pool whose job "
            "records have all expired has no age and is never retired"
        ),
        kind=Kind.FLOAT,
        default=DEFAULT_IDLE_S,
        minimum=60,
    ),
)


def _creation_lease(pool: str) -> str:
    return f"ephemeral-pool:{pool}"


async def ensure_pool_for(
    job: Job, *, state: StateStore, clock: Clock, metrics: Metrics, max_size: int
) -> PoolConfig | None:
    """Make an ephemeral pool for the pool ``job`` names if no pool of that name exists.

    Returns the config this call stored, or ``None`` when it stored nothing: the job
    names no pool, the pool exists (configured or ephemeral, it is left as it is),
    ``max_size`` is 0 (ephemeral pools are off), or another caller is making it now.
    Call it with the job as stored: the new pool's age is judged from its jobs.

    The pool runs runners built from the job's label (``spec.label``) on the job's
    backend (``None``: the deployment's default), keeps nothing stopped, and keeps at
    most ``max_size`` runners started whatever its demand.

    ``put_pool`` overwrites, so creation is serialised per pool name by a short
    StateStore lease: of two dispatchers seeing the same unknown pool at once, one
    takes the lease, reads again and writes; the other gets no lease (or, once it is
    free, finds the pool) and writes nothing. The first job's label therefore shapes
    the pool, and it is created and counted (``ephemeral_pools_created``) once. What
    the lease cannot stop is a writer that takes no lease: an operator's ``put_pool``
    of the same name landing between the re-read and the write would be overwritten
    by the ephemeral config (a window of one write).
    """
    spec = job.spec
    if spec is None or spec.pool is None or max_size < 1:
        return None
    name = spec.pool
    if await state.get_pool(name) is not None:
        return None
    owner = uuid.uuid4().hex
    lease = await state.acquire_lease(
        _creation_lease(name), owner, CREATION_LEASE_TTL_S, clock.now()
    )
    if lease is None:
        return None
    try:
        if await state.get_pool(name) is not None:
            return None
        config = PoolConfig(
            name=name,
            label=spec.label,
            desired_running=max_size,
            desired_stopped=0,
            ephemeral=True,
            backend=job.backend or spec.backend,
        )
        await state.put_pool(config)
    finally:
        await state.release_lease(lease)
    _log.info("pool %s: created as an ephemeral pool for job %s", name, job.job_id)
    metrics.increment("ephemeral_pools_created", labels={"pool": name})
    return config


async def ephemeral_demand(*, state: StateStore, clock: Clock) -> dict[str, int]:
    """Runners each ephemeral pool needs at once, by pool name: the 90th percentile of
    its jobs' concurrency over the last hour (``reconcile_pools(demand=...)`` caps it
    by the pool's ``desired_running``). Configured pools are not in the result."""
    now = clock.now()
    demand: dict[str, int] = {}
    for config in await state.list_pools():
        if config.ephemeral:
            demand[config.name] = recent_demand(await state.list_jobs(pool=config.name), now)
    return demand


def _idle(jobs: Sequence[Job], now: datetime, idle_s: float) -> bool:
    """Whether a pool with ``jobs`` went ``idle_s`` without one of them created or
    changing status. A pool without any job on record is not: its age is unknown."""
    latest = last_activity(jobs)
    return latest is not None and (now - latest).total_seconds() >= idle_s


async def retire_idle_pools(
    *,
    state: StateStore,
    pool_providers: Mapping[str, PoolProvider],
    default_backend: str,
    clock: Clock,
    metrics: Metrics,
    idle_s: float = DEFAULT_IDLE_S,
) -> tuple[str, ...]:
    """Wind down the ephemeral pools that went ``idle_s`` without jobs; return the names
    of those whose config was deleted by this call.

    Idle means no job of the pool was created or changed status for ``idle_s``. Such a
    pool was necessarily made longer ago than that (it was made for a job, and that
    job's dispatch is recorded in its timeline), so a new pool is never retired. A
    pool without a single job on record is left alone: a :class:`PoolConfig` records
    no creation time, so its age is unknown. That covers a pool whose first job a
    lagging index (DynamoDB's by-pool index is eventually consistent) does not list
    yet, and a pool someone wrote by hand; with no demand it holds no runner anyway.
    Jobs that expire from the store before ``idle_s`` would leave such a pool behind,
    hence ``idle_s`` must stay below the job retention.

    Retiring terminates every runner of the pool that holds no job (its assignment is
    read from the StateStore right before, runner by runner), counted as
    ``ephemeral_pool_runners_terminated``. A runner holding a job is kept, and the
    config stays until the provider lists no runner for the pool; a later pass deletes
    it (``ephemeral_pools_retired``). Just before deleting, the pool's jobs are read
    again: one created meanwhile cancels the retirement.

    Run it from the pool-loop leader, after ``reconcile_pools``. A pool whose backend
    has no pool provider, or whose provider fails, is counted
    (``ephemeral_pool_errors``) and the pass goes on with the next pool.
    """
    retired: list[str] = []
    for config in await state.list_pools():
        if not config.ephemeral:
            continue
        if not _idle(await state.list_jobs(pool=config.name), clock.now(), idle_s):
            continue
        backend = config.backend or default_backend
        provider = pool_providers.get(backend)
        if provider is None:
            _log.warning(
                "pool %s: no pool provider for backend %r; not retired", config.name, backend
            )
            _count_error(metrics, config.name, "unknown_backend")
            continue
        try:
            if await _retire(config.name, provider, state, clock, metrics, idle_s):
                retired.append(config.name)
        except (AdapterError, NotFoundError) as error:
            reason = "runner_gone" if isinstance(error, NotFoundError) else "adapter_error"
            _log.warning("pool %s: retiring failed (%s): %s", config.name, reason, error)
            _count_error(metrics, config.name, reason)
    return tuple(retired)


def _count_error(metrics: Metrics, pool: str, reason: str) -> None:
    metrics.increment("ephemeral_pool_errors", labels={"pool": pool, "reason": reason})


async def _retire(
    name: str,
    provider: PoolProvider,
    state: StateStore,
    clock: Clock,
    metrics: Metrics,
    idle_s: float,
) -> bool:
    """Terminate the idle pool's free runners; delete its config if none is left."""
    labels = {"pool": name}
    runners = await provider.list_pool_runners(name)
    listed = sorted(r.runner_id for r in runners if r.phase is not RunnerPhase.TERMINATED)
    scale = ScaleDown(state=state, clock=clock, metrics=metrics, pool=name)
    free = await scale_down(provider.terminate_runners, listed, scale)
    if free:
        metrics.increment("ephemeral_pool_runners_terminated", len(free), labels=labels)
    left = [
        r for r in await provider.list_pool_runners(name) if r.phase is not RunnerPhase.TERMINATED
    ]
    if left:
        _log.info("pool %s: idle; %d runner(s) still to go before it is deleted", name, len(left))
        return False
    if not _idle(await state.list_jobs(pool=name), clock.now(), idle_s):
        _log.info("pool %s: a job arrived while it was being retired; kept", name)
        return False
    await state.delete_pool(name)
    _log.info("pool %s: ephemeral pool retired after %.0f s without jobs", name, idle_s)
    metrics.increment("ephemeral_pools_retired", labels=labels)
    return True
