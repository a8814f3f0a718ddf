"""Reconciling warm pools: observe, plan, act, once per pool per pass.

The decision is :func:`~runs_fleet_core.domain.planning.plan_pool`'s (pure, tested
exhaustively); this module does the I/O around it and closes the two races a pure plan
cannot see:

* A job may claim a runner between the plan and its execution. Reading the assignment
  again right before acting does not close that race (a dispatcher can claim the runner
  between the read and the stop), so every runner is *reserved* before it is stopped or
  terminated: bound to :data:`~runs_fleet_core.domain.pool.SCALE_DOWN_RESERVATION` by the
  StateStore's atomic ``assign_runner``, the very write dispatch claims runners with. A
  runner holding a job cannot be reserved and is kept; a reserved one cannot be claimed.
  The reservation is released once the provider call returns or fails, so a stopped
  runner is then free to be claimed (and started) by a job.
* A leader may lose its lease mid-pass (paused past its TTL while another replica took
  over). Given a ``fence`` (``Leadership.confirm``: a renewal under the lease's fencing
  token), the pass confirms its lease right before every provider action and stops at
  the first refusal, releasing what it reserved.

A pass that dies between reserving and releasing leaves reservations behind; the next
pass releases those older than ``stale_reservation_s``, longer than any provider call
(each has a timeout) takes; the scheduler sets it from its lease's lifetime, which no
live pass outlasts without confirming its lease. One pool's failure is counted and
logged, and the other pools still get reconciled.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

import attrs

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.planning import count_idle, plan_pool
from runs_fleet_core.domain.pool import SCALE_DOWN_RESERVATION, PoolConfig, PoolPlan
from runs_fleet_core.errors import AdapterError, ConflictError, NotFoundError
from runs_fleet_core.ports.compute import PoolProvider
from runs_fleet_core.ports.observe import Clock, Metrics
from runs_fleet_core.ports.state import StateStore

_log = logging.getLogger(__name__)

Fence = Callable[[], Awaitable[bool]]
"""Says, when awaited, whether the pass's lease is still held (``Leadership.confirm``)."""
Action = Callable[[Sequence[RunnerId]], Awaitable[None]]
"""A provider call that takes runners out of service (``stop_runners``, ...)."""

STALE_RESERVATION_S = 900.0
"""Age past which a scale-down reservation is taken for one a dead pass left behind."""


class LeaseLostError(ConflictError):
    """The pool loop's lease was taken over or released while a pass was running: the
    pass stops acting and leaves the pools to the current leader."""


@attrs.frozen(kw_only=True)
class ScaleDown:
    """What :func:`scale_down` needs besides the runners: where reservations are
    written, when, what is counted, and the lease that must still be held."""

    state: StateStore
    clock: Clock
    metrics: Metrics
    pool: str
    fence: Fence | None = None


async def reconcile_pools(
    *,
    state: StateStore,
    pool_providers: Mapping[str, PoolProvider],
    default_backend: str,
    clock: Clock,
    metrics: Metrics,
    demand: Mapping[str, int] | None = None,
    fence: Fence | None = None,
    stale_reservation_s: float = STALE_RESERVATION_S,
) -> list[PoolPlan]:
    """Bring every pool in ``state`` to its desired idle sizes and return the plans run.

    Call it from ONE leader only (the caller holds the pool-loop lease) and pass that
    lease's ``fence``: two replicas reconciling at once would each create the missing
    runners. Busy runners are safe either way (see the module docstring). Once the
    fence reports the lease lost, the pass stops (counted as ``pool_reconcile_fenced``)
    and returns the plans of the pools it finished.

    Each pool is served by ``pool_providers[config.backend or default_backend]``; a pool
    whose backend is not there is skipped and counted (``pool_reconcile_errors``,
    ``reason=unknown_backend``). ``demand`` (pool name → runners wanted now) sizes
    ephemeral pools. An :class:`AdapterError` from one pool is counted
    (``reason=adapter_error``; ``runner_gone`` for a ``NotFoundError``, a runner that
    vanished since it was listed) and the pass goes on with the next pool; such a pool
    is left out of the result, as is a skipped one. A returned plan lists what was actually
    asked of the provider: runners that could not be reserved (they hold a job) are
    removed from its ``stop``/``terminate``.
    """
    plans: list[PoolPlan] = []
    try:
        await _confirm(fence)
        await release_stale_reservations(
            state=state, clock=clock, metrics=metrics, older_than_s=stale_reservation_s
        )
        for config in await state.list_pools():
            backend = config.backend or default_backend
            provider = pool_providers.get(backend)
            if provider is None:
                _log.warning(
                    "pool %s: no pool provider for backend %r; skipped", config.name, backend
                )
                _count_error(metrics, config.name, "unknown_backend")
                continue
            wanted = None if demand is None else demand.get(config.name)
            scale = ScaleDown(
                state=state, clock=clock, metrics=metrics, pool=config.name, fence=fence
            )
            try:
                plans.append(await _reconcile_pool(config, provider, scale, wanted))
            except (AdapterError, NotFoundError) as error:
                # NotFoundError: a runner vanished (self-terminated) since it was listed.
                reason = "runner_gone" if isinstance(error, NotFoundError) else "adapter_error"
                _log.warning("pool %s: reconcile failed (%s): %s", config.name, reason, error)
                _count_error(metrics, config.name, reason)
    except LeaseLostError as error:
        _log.warning("pool loop stopped after %d pool(s): %s", len(plans), error)
        metrics.increment("pool_reconcile_fenced")
    return plans


def _count_error(metrics: Metrics, pool: str, reason: str) -> None:
    metrics.increment("pool_reconcile_errors", labels={"pool": pool, "reason": reason})


async def _confirm(fence: Fence | None) -> None:
    if fence is not None and not await fence():
        raise LeaseLostError("the pool-loop lease was lost to another replica")


async def _reconcile_pool(
    config: PoolConfig, provider: PoolProvider, scale: ScaleDown, demand: int | None
) -> PoolPlan:
    """Observe one pool, plan it, report its idle sizes, execute the plan."""
    # Runners first, assignments second: a runner claimed before the assignments are
    # read is seen as busy; one claimed later cannot be reserved when its turn comes.
    runners = await provider.list_pool_runners(config.name)
    assigned = {a.runner_id for a in await scale.state.list_assignments()}
    plan = plan_pool(config, runners, assigned, scale.clock.now(), demand=demand)
    idle_running, idle_stopped = count_idle(runners, assigned)
    labels = {"pool": config.name}
    scale.metrics.gauge("pool_idle_running", idle_running, labels=labels)
    scale.metrics.gauge("pool_idle_stopped", idle_stopped, labels=labels)
    return await _execute(plan, config, provider, scale)


async def _execute(
    plan: PoolPlan, config: PoolConfig, provider: PoolProvider, scale: ScaleDown
) -> PoolPlan:
    """Carry ``plan`` out (adding capacity first) and return what was asked for."""
    labels = {"pool": plan.pool}
    if plan.start:
        await _confirm(scale.fence)
        await provider.start_runners(list(plan.start))
        scale.metrics.increment("pool_runners_started", len(plan.start), labels=labels)
    for count, stopped in ((plan.create_running, False), (plan.create_stopped, True)):
        if count:
            await _confirm(scale.fence)
            created = await provider.create_pool_runners(config, count, stopped=stopped)
            scale.metrics.increment(
                "pool_runners_created",
                len(created),
                labels={**labels, "state": "stopped" if stopped else "running"},
            )
    stop = await scale_down(provider.stop_runners, plan.stop, scale)
    if stop:
        scale.metrics.increment("pool_runners_stopped", len(stop), labels=labels)
    terminate = await scale_down(provider.terminate_runners, plan.terminate, scale)
    if terminate:
        scale.metrics.increment("pool_runners_terminated", len(terminate), labels=labels)
    return attrs.evolve(plan, stop=tuple(stop), terminate=tuple(terminate))


async def scale_down(
    action: Action, runner_ids: Sequence[RunnerId], scale: ScaleDown
) -> list[RunnerId]:
    """Reserve each of ``runner_ids``, ``action`` the reserved ones, release them all;
    return those acted on.

    A runner that cannot be reserved holds a job (or another pass's reservation): it is
    kept and counted (``pool_scale_down_skipped``). The fence is confirmed after
    reserving and before acting; when the lease is lost nothing is acted on and
    :class:`LeaseLostError` is raised. Reservations are released whatever happens,
    also when ``action`` fails.
    """
    if not runner_ids:
        return []
    reserved: list[RunnerId] = []
    try:
        for runner_id in runner_ids:
            if await scale.state.assign_runner(
                runner_id, SCALE_DOWN_RESERVATION, scale.clock.now()
            ):
                reserved.append(runner_id)
            else:
                _log.info("pool %s: runner %s holds a job; kept", scale.pool, runner_id)
                scale.metrics.increment("pool_scale_down_skipped", labels={"pool": scale.pool})
        if reserved:
            await _confirm(scale.fence)
            await action(list(reserved))
    finally:
        for runner_id in reserved:
            await scale.state.release_runner(runner_id, SCALE_DOWN_RESERVATION)
    return reserved


async def release_stale_reservations(
    *, state: StateStore, clock: Clock, metrics: Metrics, older_than_s: float
) -> list[RunnerId]:
    """Release the scale-down reservations made at least ``older_than_s`` ago (a pass
    died holding them, so the runners would otherwise be neither claimed nor scaled
    down); return their runners, counted as ``pool_reservations_expired``."""
    now = clock.now()
    stale = [
        a.runner_id
        for a in await state.list_assignments()
        if a.job_id == SCALE_DOWN_RESERVATION
        and (now - a.assigned_at).total_seconds() >= older_than_s
    ]
    for runner_id in stale:
        _log.warning("runner %s: scale-down reservation left behind; released", runner_id)
        await state.release_runner(runner_id, SCALE_DOWN_RESERVATION)
        metrics.increment("pool_reservations_expired")
    return stale
