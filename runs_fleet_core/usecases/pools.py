"""Reconciling warm pools: observe, plan, act, once per pool per pass.

The decision is :func:`~runs_fleet_core.domain.planning.plan_pool`'s (pure, tested
exhaustively); this module does the I/O around it. Its one extra duty is the race a pure
plan cannot see: a job may claim a runner between the plan and its execution, so every
runner is checked against the StateStore's assignments again right before it is stopped
or terminated ("busy" comes from shared state, never from what this pass saw earlier).
One pool's failure is counted and logged, and the other pools still get reconciled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import attrs

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.planning import count_idle, plan_pool
from runs_fleet_core.domain.pool import PoolConfig, PoolPlan
from runs_fleet_core.errors import AdapterError, NotFoundError
from runs_fleet_core.ports.compute import PoolProvider
from runs_fleet_core.ports.observe import Clock, Metrics
from runs_fleet_core.ports.state import StateStore

_log = logging.getLogger(__name__)


async def reconcile_pools(
    *,
    state: StateStore,
    pool_providers: Mapping[str, PoolProvider],
    default_backend: str,
    clock: Clock,
    metrics: Metrics,
    demand: Mapping[str, int] | None = None,
) -> list[PoolPlan]:
    """Bring every pool in ``state`` to its desired idle sizes and return the plans run.

    Call it from ONE leader only (the caller holds the pool-loop lease): two replicas
    reconciling at once would each create the missing runners.

    Each pool is served by ``pool_providers[config.backend or default_backend]``; a pool
    whose backend is not there is skipped and counted (``pool_reconcile_errors``,
    ``reason=unknown_backend``). ``demand`` (pool name → runners wanted now) sizes
    ephemeral pools. An :class:`AdapterError` from one pool is counted
    (``reason=adapter_error``; ``runner_gone`` for a ``NotFoundError``, a runner that
    vanished since it was listed) and the pass goes on with the next pool; such a pool
    is left out of the result, as is a skipped one. A returned plan lists what was actually
    asked of the provider: runners found assigned at the last moment are removed from
    its ``stop``/``terminate``.
    """
    plans: list[PoolPlan] = []
    for config in await state.list_pools():
        backend = config.backend or default_backend
        provider = pool_providers.get(backend)
        if provider is None:
            _log.warning("pool %s: no pool provider for backend %r; skipped", config.name, backend)
            _count_error(metrics, config.name, "unknown_backend")
            continue
        wanted = None if demand is None else demand.get(config.name)
        try:
            plans.append(await _reconcile_pool(config, provider, state, clock, metrics, wanted))
        except (AdapterError, NotFoundError) as error:
            # NotFoundError: a runner vanished (self-terminated) since it was listed.
            reason = "runner_gone" if isinstance(error, NotFoundError) else "adapter_error"
            _log.warning("pool %s: reconcile failed (%s): %s", config.name, reason, error)
            _count_error(metrics, config.name, reason)
    return plans


def _count_error(metrics: Metrics, pool: str, reason: str) -> None:
    metrics.increment("pool_reconcile_errors", labels={"pool": pool, "reason": reason})


async def _reconcile_pool(
    config: PoolConfig,
    provider: PoolProvider,
    state: StateStore,
    clock: Clock,
    metrics: Metrics,
    demand: int | None,
) -> PoolPlan:
    """Observe one pool, plan it, report its idle sizes, execute the plan."""
    # Runners first, assignments second: a runner claimed before the assignments are
    # read is seen as busy; one claimed later is caught by the check before acting.
    runners = await provider.list_pool_runners(config.name)
    assigned = {a.runner_id for a in await state.list_assignments()}
    plan = plan_pool(config, runners, assigned, clock.now(), demand=demand)
    idle_running, idle_stopped = count_idle(runners, assigned)
    labels = {"pool": config.name}
    metrics.gauge("pool_idle_running", idle_running, labels=labels)
    metrics.gauge("pool_idle_stopped", idle_stopped, labels=labels)
    return await _execute(plan, config, provider, state, metrics)


async def _execute(
    plan: PoolPlan,
    config: PoolConfig,
    provider: PoolProvider,
    state: StateStore,
    metrics: Metrics,
) -> PoolPlan:
    """Carry ``plan`` out (adding capacity first) and return what was asked for."""
    labels = {"pool": plan.pool}
    if plan.start:
        await provider.start_runners(list(plan.start))
        metrics.increment("pool_runners_started", len(plan.start), labels=labels)
    for count, stopped in ((plan.create_running, False), (plan.create_stopped, True)):
        if count:
            created = await provider.create_pool_runners(config, count, stopped=stopped)
            metrics.increment(
                "pool_runners_created",
                len(created),
                labels={**labels, "state": "stopped" if stopped else "running"},
            )
    stop = await _still_free(plan.stop, state, metrics, plan.pool)
    if stop:
        await provider.stop_runners(stop)
        metrics.increment("pool_runners_stopped", len(stop), labels=labels)
    terminate = await _still_free(plan.terminate, state, metrics, plan.pool)
    if terminate:
        await provider.terminate_runners(terminate)
        metrics.increment("pool_runners_terminated", len(terminate), labels=labels)
    return attrs.evolve(plan, stop=tuple(stop), terminate=tuple(terminate))


async def _still_free(
    runner_ids: Sequence[RunnerId], state: StateStore, metrics: Metrics, pool: str
) -> list[RunnerId]:
    """The runners among ``runner_ids`` that still hold no job, read just now."""
    free: list[RunnerId] = []
    for runner_id in runner_ids:
        if await state.get_assignment(runner_id) is None:
            free.append(runner_id)
        else:
            _log.info("pool %s: runner %s was assigned meanwhile; kept", pool, runner_id)
            metrics.increment("pool_scale_down_skipped", labels={"pool": pool})
    return free
