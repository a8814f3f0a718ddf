"""The APScheduler loop with real timers, on the in-memory adapters."""

from __future__ import annotations

import asyncio

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
