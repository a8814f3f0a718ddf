"""The APScheduler loop with real timers, on the in-memory adapters."""

from __future__ import annotations

import asyncio
import logging

import pytest

from runs_fleet_core.catalog import CORE_SETTINGS
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.plugins import PluginManager
from runs_fleet_core.ports import SystemClock
from runs_fleet_core.settings import load_settings
from runs_fleet_core.wiring import build_adapters
from runs_fleet_scheduler.scheduler import build_leadership, run_scheduler


def _adapters():  # type: ignore[no-untyped-def]
    settings = load_settings(
        {"RUNS_FLEET_MODE": "memory"}, {s.name: s for s in CORE_SETTINGS}, require=False
    )
    return build_adapters(settings, PluginManager().adapters(), SystemClock())


async def test_the_leader_fills_a_pool_and_a_second_replica_stays_idle() -> None:
    adapters = _adapters()
    await adapters.state.put_pool(PoolConfig(name="ci", desired_running=2))
    leaders = [build_leadership(adapters, owner=name) for name in ("a", "b")]
    stop = asyncio.Event()
    loops = [
        asyncio.create_task(run_scheduler(leader, stop, interval_s=0.05)) for leader in leaders
    ]
    try:
        for _ in range(100):
            if len(await adapters.pool_providers["memory"].list_pool_runners("ci")) == 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # several more ticks: nothing more is created
        runners = await adapters.pool_providers["memory"].list_pool_runners("ci")
        assert len(runners) == 2
        assert sum(leader.leading for leader in leaders) == 1
    finally:
        stop.set()
        await asyncio.gather(*loops)
    assert all(leader.lease is None for leader in leaders)
    assert (
        await adapters.state.acquire_lease("runs-fleet-scheduler", "c", 60, adapters.clock.now())
        is not None
    )


def test_a_dead_passs_reservations_are_released_after_twice_the_lease_at_least_a_minute() -> None:
    from runs_fleet_scheduler.scheduler import stale_reservation_s

    assert stale_reservation_s(180) == 360
    assert stale_reservation_s(5) == 60


async def test_a_stopping_scheduler_lets_the_tick_in_progress_finish_then_resigns() -> None:
    adapters = _adapters()
    leadership = build_leadership(adapters, owner="a")
    started, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_chore() -> None:
        started.set()
        await release.wait()
        finished.set()

    leadership.chores = [("slow", slow_chore)]
    stop = asyncio.Event()
    loop = asyncio.create_task(run_scheduler(leadership, stop, interval_s=60))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.sleep(0.1)
    assert not loop.done() and leadership.lease is not None  # still finishing the chore
    release.set()
    await asyncio.wait_for(loop, 5)
    assert finished.is_set() and leadership.lease is None


async def test_a_tick_hung_past_the_grace_is_cancelled_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapters = _adapters()
    leadership = build_leadership(adapters, owner="a")
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hung_chore() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    leadership.chores = [("hung", hung_chore)]
    stop = asyncio.Event()
    loop = asyncio.create_task(run_scheduler(leadership, stop, interval_s=60, grace_s=0.2))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert cancelled.is_set() and leadership.lease is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert "cancelled by shutdown" in caplog.text
    # the lease is free for another replica at once
    assert await adapters.state.acquire_lease("runs-fleet-scheduler", "b", 60, adapters.clock.now())
