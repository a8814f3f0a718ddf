"""A pool pass stops acting once its leader's lease is lost, and so does a tick.

A leader paused past its lease (a long GC, a frozen VM, a slow backend) wakes up
mid-pass while another replica leads. Its plan was made on what it saw before: acting on
it would create runners twice or stop what the new leader just started. The pass
confirms its lease right before each action (``fence=Leadership.confirm``).
"""

from __future__ import annotations

from collections.abc import Sequence

from runs_fleet_core.domain.pool import PoolConfig, PoolPlan
from runs_fleet_core.domain.runner import PoolRunner
from runs_fleet_core.testing.memory import (
    ManualClock,
    MemoryPoolProvider,
    MemoryStateStore,
    RecordingMetrics,
)
from runs_fleet_core.usecases.leadership import Leadership
from runs_fleet_core.usecases.pools import reconcile_pools

LEASE_S = 60.0


class PausingPoolProvider(MemoryPoolProvider):
    """A backend that answers the listing of ``pool`` only after the clock has moved
    past the lease and ``takeover`` (another replica's tick) has run."""

    def __init__(self, clock: ManualClock, pool: str, takeover: Leadership) -> None:
        super().__init__(clock)
        self._manual = clock
        self._pool = pool
        self._takeover = takeover

    async def list_pool_runners(self, pool: str) -> Sequence[PoolRunner]:
        if pool == self._pool:
            self._manual.advance(LEASE_S + 1)
            assert await self._takeover.tick()
        return await super().list_pool_runners(pool)


def _leader(
    state: MemoryStateStore, clock: ManualClock, owner: str, metrics: RecordingMetrics | None = None
) -> Leadership:
    return Leadership(
        state=state,
        clock=clock,
        metrics=metrics or RecordingMetrics(),
        owner=owner,
        chores=(),
        ttl_s=LEASE_S,
    )


async def test_a_pass_deposed_mid_way_leaves_the_rest_to_the_new_leader() -> None:
    state, clock, metrics = MemoryStateStore(), ManualClock(), RecordingMetrics()
    old, new = _leader(state, clock, "old"), _leader(state, clock, "new")
    assert await old.tick()
    provider = PausingPoolProvider(clock, "b-second", takeover=new)
    for name in ("a-first", "b-second"):
        await state.put_pool(PoolConfig(name=name, desired_running=2))

    plans = await reconcile_pools(
        state=state,
        pool_providers={"memory": provider},
        default_backend="memory",
        clock=clock,
        metrics=metrics,
        fence=old.confirm,
    )

    assert plans == [PoolPlan(pool="a-first", create_running=2)]
    assert await provider.list_pool_runners("b-second") == []
    assert metrics.count("pool_reconcile_fenced") == 1
    assert not old.leading
    assert new.leading


async def test_a_lease_that_expired_untaken_is_confirmed_and_the_pass_goes_on() -> None:
    state, clock, metrics = MemoryStateStore(), ManualClock(), RecordingMetrics()
    leader = _leader(state, clock, "slow")
    assert await leader.tick()
    clock.advance(LEASE_S + 1)
    await state.put_pool(PoolConfig(name="warm", desired_running=1))

    plans = await reconcile_pools(
        state=state,
        pool_providers={"memory": MemoryPoolProvider(clock)},
        default_backend="memory",
        clock=clock,
        metrics=metrics,
        fence=leader.confirm,
    )

    assert plans == [PoolPlan(pool="warm", create_running=1)]
    assert leader.leading


async def test_a_tick_deposed_during_a_chore_runs_no_further_chore() -> None:
    state, clock, log = MemoryStateStore(), ManualClock(), []
    new = _leader(state, clock, "new")

    async def paused() -> None:
        log.append("pools")
        clock.advance(LEASE_S + 1)
        assert await new.tick()

    async def housekeeping() -> None:
        log.append("housekeeping")

    metrics = RecordingMetrics()
    old = _leader(state, clock, "old", metrics)
    old.chores = [("pools", paused), ("housekeeping", housekeeping)]

    assert not await old.tick()

    assert log == ["pools"]
    assert metrics.count("scheduler_lease_lost", chore="housekeeping") == 1
