"""Runs the leader-only chores on a timer with APScheduler.

Every replica runs this loop; :class:`~runs_fleet_core.usecases.leadership.Leadership`
makes sure only the lease holder acts. A tick that is still running when the next one
is due is skipped rather than stacked (``max_instances=1``, ``coalesce``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from runs_fleet_core.usecases.completion import Completion
from runs_fleet_core.usecases.discovery import DEFAULT_DISCOVER_AFTER_S, Discovery
from runs_fleet_core.usecases.ephemeral import DEFAULT_IDLE_S, ephemeral_demand, retire_idle_pools
from runs_fleet_core.usecases.healing import (
    DEFAULT_HEAL_AFTER_S,
    DEFAULT_RELAUNCH_AFTER_S,
    Healer,
)
from runs_fleet_core.usecases.housekeeping import DEFAULT_ORPHAN_GRACE_S, Housekeeper
from runs_fleet_core.usecases.intake import Intake
from runs_fleet_core.usecases.leadership import DEFAULT_LEASE_S, Chore, Leadership
from runs_fleet_core.usecases.pools import reconcile_pools
from runs_fleet_core.wiring import Adapters

DEFAULT_INTERVAL_S = 60.0
# how long a stopping scheduler lets the tick in progress finish before cancelling it
DEFAULT_STOP_GRACE_S = 10.0

_log = logging.getLogger(__name__)


def replica_name() -> str:
    """A name for this process in leases: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


MIN_STALE_RESERVATION_S = 60.0


def completion_for(
    adapters: Adapters, *, rerun_lost_jobs: int = 0, max_attempts: int = 3
) -> Completion:
    """Completion wired to ``adapters`` (``rerun_lost_jobs`` and ``max_attempts``: see
    the settings ``RUNS_FLEET_RERUN_LOST_JOBS`` and ``RUNS_FLEET_MAX_ATTEMPTS``)."""
    return Completion(
        state=adapters.state,
        configs=adapters.configs,
        queue=adapters.queue,
        clock=adapters.clock,
        metrics=adapters.metrics,
        github=adapters.github,
        rerun_lost_jobs=rerun_lost_jobs,
        max_attempts=max_attempts,
    )


def build_leadership(
    adapters: Adapters,
    *,
    owner: str | None = None,
    demand: Mapping[str, int] | None = None,
    ephemeral_idle_s: float = DEFAULT_IDLE_S,
    lease_s: float = DEFAULT_LEASE_S,
    heal_after_s: float = DEFAULT_HEAL_AFTER_S,
    relaunch_after_s: float = DEFAULT_RELAUNCH_AFTER_S,
    discover_after_s: float = DEFAULT_DISCOVER_AFTER_S,
    orphan_grace_s: float = DEFAULT_ORPHAN_GRACE_S,
    completion: Completion | None = None,
    intake: Intake | None = None,
) -> Leadership:
    """The leader's chores wired to ``adapters``: reconcile pools (ephemeral ones sized
    from recent demand, ``demand`` overriding it), retire ephemeral pools idle for
    ``ephemeral_idle_s``, then housekeeping (orphan runners removed once
    ``orphan_grace_s`` old), then healing (jobs whose webhook never
    came, settled against GitHub's view of them), then, given ``intake`` and a positive
    ``discover_after_s``, discovery (jobs GitHub holds queued that runs-fleet never
    heard of)."""
    completion = completion or completion_for(adapters)
    healer = Healer(
        state=adapters.state,
        queue=adapters.queue,
        github=adapters.github,
        completion=completion,
        providers=adapters.providers,
        clock=adapters.clock,
        metrics=adapters.metrics,
        check_after_s=heal_after_s,
        relaunch_after_s=relaunch_after_s,
    )
    housekeeper = Housekeeper(
        state=adapters.state,
        queue=adapters.queue,
        configs=adapters.configs,
        providers=adapters.providers,
        clock=adapters.clock,
        metrics=adapters.metrics,
        orphan_grace_s=orphan_grace_s,
        github=adapters.github,
    )

    async def pools() -> object:
        wanted = await ephemeral_demand(state=adapters.state, clock=adapters.clock)
        plans = await reconcile_pools(
            state=adapters.state,
            pool_providers=adapters.pool_providers,
            default_backend=adapters.wiring.default_backend,
            clock=adapters.clock,
            metrics=adapters.metrics,
            demand={**wanted, **(demand or {})},
            fence=leadership.confirm,
            stale_reservation_s=stale_reservation_s(lease_s),
        )
        await retire_idle_pools(
            state=adapters.state,
            pool_providers=adapters.pool_providers,
            default_backend=adapters.wiring.default_backend,
            clock=adapters.clock,
            metrics=adapters.metrics,
            idle_s=ephemeral_idle_s,
        )
        return plans

    chores: list[tuple[str, Chore]] = [
        ("pools", pools),
        ("housekeeping", housekeeper.run),
        ("healing", healer.heal),
    ]
    if intake is not None and discover_after_s > 0:
        discovery = Discovery(
            state=adapters.state,
            github=adapters.github,
            intake=intake,
            clock=adapters.clock,
            metrics=adapters.metrics,
            after_s=discover_after_s,
        )
        chores.append(("discovery", discovery.discover))
    leadership = Leadership(
        state=adapters.state,
        clock=adapters.clock,
        metrics=adapters.metrics,
        owner=owner or replica_name(),
        chores=chores,
        ttl_s=lease_s,
    )
    return leadership


def stale_reservation_s(lease_s: float) -> float:
    """How old a scale-down reservation must be to belong to a pass that died: a pass
    acts only while it holds the lease (it confirms the lease before each action), so
    after twice the lease's lifetime its maker is dead or deposed; never less than a
    minute, longer than any provider call takes (each has a timeout)."""
    return max(2 * lease_s, MIN_STALE_RESERVATION_S)


async def run_scheduler(
    leadership: Leadership,
    stop: asyncio.Event,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    grace_s: float = DEFAULT_STOP_GRACE_S,
) -> None:
    """Tick ``leadership`` every ``interval_s`` (first tick at once) until ``stop`` is
    set; then stop the timer, let a tick in progress finish (``grace_s`` at most, after
    which it is cancelled: every chore is safe to interrupt and runs again on the next
    leader), and resign the lease so another replica takes over at once."""
    running: set[asyncio.Task[object]] = set()

    async def tick() -> None:
        task = asyncio.current_task()
        assert task is not None
        running.add(task)
        try:
            await leadership.tick()
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            # cancelled by the shutdown below, past its grace: not a failure to report
            _log.info("scheduler: the tick in progress was cancelled by shutdown")
        finally:
            running.discard(task)

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(
        tick,
        "interval",
        seconds=interval_s,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(1, int(interval_s)),
        id="leadership",
    )
    scheduler.start()
    try:
        await stop.wait()
    finally:
        scheduler.pause()  # no new tick; shutting down now would cancel the one running
        await _finish(running, grace_s)
        scheduler.shutdown(wait=False)
        await leadership.resign()


async def _finish(ticks: set[asyncio.Task[object]], grace_s: float) -> None:
    """Wait up to ``grace_s`` for ``ticks``, then cancel those still running and wait
    for them to end."""
    pending = set(ticks)
    if pending:
        _log.info("scheduler: waiting up to %.0f s for the tick in progress", grace_s)
        _, pending = await asyncio.wait(pending, timeout=grace_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
