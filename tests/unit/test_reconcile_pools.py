"""The pool loop: plans executed against the in-memory adapters, busy runners spared."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.planning import count_idle
from runs_fleet_core.domain.pool import SCALE_DOWN_RESERVATION, PoolConfig, PoolPlan
from runs_fleet_core.domain.runner import PoolRunner, RunnerAssignment
from runs_fleet_core.errors import NotFoundError, ProviderError
from runs_fleet_core.testing.memory import (
    ManualClock,
    MemoryPoolProvider,
    MemoryStateStore,
    RecordingMetrics,
)
from runs_fleet_core.usecases.pools import STALE_RESERVATION_S, reconcile_pools

ACTIONS = {"start", "stop", "terminate"}


class StaleAssignmentsStore(MemoryStateStore):
    """Lists no assignment at all, as if read before a job claimed a runner."""

    async def list_assignments(self) -> Sequence[RunnerAssignment]:
        return []


class BrokenPoolProvider(MemoryPoolProvider):
    """A backend whose API is down."""

    async def list_pool_runners(self, pool: str) -> Sequence[PoolRunner]:
        raise ProviderError("backend unreachable")


class Fleet:
    """One memory backend, its state and metrics, and a way to run a reconcile pass."""

    def __init__(self, state: MemoryStateStore | None = None) -> None:
        self.clock = ManualClock()
        self.state = state if state is not None else MemoryStateStore()
        self.metrics = RecordingMetrics()
        self.provider = MemoryPoolProvider(self.clock, name="memory")
        self.providers: dict[str, MemoryPoolProvider] = {"memory": self.provider}

    async def reconcile(self, demand: dict[str, int] | None = None) -> list[PoolPlan]:
        return await reconcile_pools(
            state=self.state,
            pool_providers=self.providers,
            default_backend="memory",
            clock=self.clock,
            metrics=self.metrics,
            demand=demand,
        )

    async def idle(self, pool: str) -> tuple[int, int]:
        runners = await self.provider.list_pool_runners(pool)
        assigned = {a.runner_id for a in await self.state.list_assignments()}
        return count_idle(runners, assigned)

    async def runner_ids(self, pool: str) -> list[RunnerId]:
        return sorted(r.runner_id for r in await self.provider.list_pool_runners(pool))

    def acted_on(self) -> set[RunnerId]:
        """Every runner id passed to stop or terminate."""
        return {
            rid
            for method, rids in self.provider.calls
            if method in ("stop", "terminate")
            for rid in rids
        }


async def test_empty_pool_is_filled_to_its_desired_sizes() -> None:
    fleet = Fleet()
    await fleet.state.put_pool(PoolConfig(name="warm", desired_running=2, desired_stopped=1))

    plans = await fleet.reconcile()

    assert plans == [PoolPlan(pool="warm", create_running=2, create_stopped=1)]
    assert await fleet.idle("warm") == (2, 1)
    assert fleet.metrics.count("pool_runners_created", pool="warm") == 3
    assert fleet.metrics.count("pool_runners_created", pool="warm", state="stopped") == 1
    assert fleet.metrics.gauge_value("pool_idle_running", pool="warm") == 0


async def test_a_pool_at_size_makes_no_provider_call() -> None:
    fleet = Fleet()
    await fleet.state.put_pool(PoolConfig(name="warm", desired_running=1, desired_stopped=1))
    await fleet.reconcile()
    fleet.provider.calls.clear()

    plans = await fleet.reconcile()

    assert plans == [PoolPlan(pool="warm")]
    assert [m for m, _ in fleet.provider.calls if m in ACTIONS] == []
    assert fleet.metrics.gauge_value("pool_idle_running", pool="warm") == 1
    assert fleet.metrics.gauge_value("pool_idle_stopped", pool="warm") == 1


async def test_assigned_runner_is_never_stopped_even_when_over_desired() -> None:
    fleet = Fleet()
    config = PoolConfig(name="warm", desired_running=2, idle_timeout_s=60)
    await fleet.state.put_pool(config)
    await fleet.reconcile()
    busy, idle = await fleet.runner_ids("warm")
    assert await fleet.state.assign_runner(busy, JobId(7), fleet.clock.now())
    await fleet.state.put_pool(attrs.evolve(config, desired_running=0))
    fleet.clock.advance(3600)

    plans = await fleet.reconcile()

    assert plans == [PoolPlan(pool="warm", terminate=(idle,))]
    assert busy not in fleet.acted_on()
    assert busy in await fleet.runner_ids("warm")


async def test_runner_assigned_between_plan_and_execution_is_not_stopped() -> None:
    fleet = Fleet(state=StaleAssignmentsStore())
    config = PoolConfig(name="warm", desired_running=2, idle_timeout_s=60)
    await fleet.state.put_pool(config)
    await fleet.reconcile()
    claimed = await fleet.runner_ids("warm")
    for job, runner_id in enumerate(claimed, start=1):
        assert await fleet.state.assign_runner(runner_id, JobId(job), fleet.clock.now())
    await fleet.state.put_pool(attrs.evolve(config, desired_running=0, desired_stopped=1))
    fleet.clock.advance(3600)

    (plan,) = await fleet.reconcile()

    assert (plan.stop, plan.terminate) == ((), ())
    assert fleet.acted_on() == set()
    assert await fleet.runner_ids("warm") == claimed
    assert fleet.metrics.count("pool_scale_down_skipped", pool="warm") == 2


async def test_failing_provider_for_one_pool_does_not_block_another() -> None:
    fleet = Fleet()
    fleet.providers["broken"] = BrokenPoolProvider(fleet.clock, name="broken")
    await fleet.state.put_pool(PoolConfig(name="a-down", desired_running=1, backend="broken"))
    await fleet.state.put_pool(PoolConfig(name="b-up", desired_running=1))
    await fleet.state.put_pool(PoolConfig(name="c-up", desired_running=1, backend="memory"))

    plans = await fleet.reconcile()

    assert sorted(p.pool for p in plans) == ["b-up", "c-up"]
    assert await fleet.idle("b-up") == (1, 0)
    assert await fleet.idle("c-up") == (1, 0)
    assert fleet.metrics.count("pool_reconcile_errors", pool="a-down", reason="adapter_error") == 1
    assert fleet.metrics.count("pool_reconcile_errors", pool="b-up") == 0


@pytest.mark.parametrize(
    "error",
    [ProviderError("throttled"), NotFoundError("runner gone")],
    ids=["adapter error", "runner gone"],
)
async def test_a_pool_failing_mid_execution_is_counted_and_the_pass_goes_on(
    error: Exception,
) -> None:
    fleet = Fleet()
    flaky = MemoryPoolProvider(fleet.clock, name="flaky")
    flaky.fail_next.append(error)
    fleet.providers["flaky"] = flaky
    await fleet.state.put_pool(PoolConfig(name="a-flaky", desired_running=1, backend="flaky"))
    await fleet.state.put_pool(PoolConfig(name="b-fine", desired_running=1))

    plans = await fleet.reconcile()

    assert [p.pool for p in plans] == ["b-fine"]
    assert fleet.metrics.count("pool_reconcile_errors", pool="a-flaky") == 1
    assert await fleet.idle("b-fine") == (1, 0)
    assert [p.pool for p in await fleet.reconcile()] == ["a-flaky", "b-fine"]


async def test_unknown_backend_is_counted_and_skipped() -> None:
    fleet = Fleet()
    await fleet.state.put_pool(PoolConfig(name="gpu", desired_running=1, backend="k8s"))
    await fleet.state.put_pool(PoolConfig(name="warm", desired_running=1))

    plans = await fleet.reconcile()

    assert [p.pool for p in plans] == ["warm"]
    assert fleet.metrics.count("pool_reconcile_errors", pool="gpu", reason="unknown_backend") == 1
    assert await fleet.idle("gpu") == (0, 0)


async def test_ephemeral_pool_is_sized_from_demand() -> None:
    fleet = Fleet()
    await fleet.state.put_pool(PoolConfig(name="burst", desired_running=3, ephemeral=True))

    plans = await fleet.reconcile(demand={"burst": 5, "other": 1})

    assert plans == [PoolPlan(pool="burst", create_running=3)]
    assert await fleet.idle("burst") == (3, 0)


async def test_stopped_runners_are_started_before_new_ones_are_created() -> None:
    fleet = Fleet()
    config = PoolConfig(name="warm", desired_stopped=2)
    await fleet.state.put_pool(config)
    await fleet.reconcile()
    stopped = await fleet.runner_ids("warm")
    await fleet.state.put_pool(attrs.evolve(config, desired_running=3, desired_stopped=0))

    plans = await fleet.reconcile()

    assert plans == [PoolPlan(pool="warm", start=tuple(stopped), create_running=1)]
    assert ("start", stopped) in [(m, sorted(r)) for m, r in fleet.provider.calls]
    assert fleet.metrics.count("pool_runners_started", pool="warm") == 2
    assert await fleet.idle("warm") == (3, 0)


class ClaimingPoolProvider(MemoryPoolProvider):
    """A backend where a dispatcher claims each runner in the instant between the pool
    loop's decision and the stop or terminate call reaching the cloud."""

    def __init__(self, clock: ManualClock, state: MemoryStateStore) -> None:
        super().__init__(clock, name="memory")
        self.state = state
        self.claims: list[bool] = []
        self.busy_when_acted: list[RunnerId] = []

    async def stop_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        await self._claim_then_check(runner_ids)
        await super().stop_runners(runner_ids)

    async def terminate_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        await self._claim_then_check(runner_ids)
        await super().terminate_runners(runner_ids)

    async def _claim_then_check(self, runner_ids: Sequence[RunnerId]) -> None:
        for runner_id in runner_ids:
            self.claims.append(
                await self.state.assign_runner(runner_id, JobId(500), self._clock.now())
            )
            assignment = await self.state.get_assignment(runner_id)
            if assignment is not None and assignment.job_id != SCALE_DOWN_RESERVATION:
                self.busy_when_acted.append(runner_id)


@pytest.mark.parametrize(("stopped", "verb"), [(1, "stop"), (0, "terminate")])
async def test_a_claim_racing_the_scale_down_call_cannot_take_the_runner(
    stopped: int, verb: str
) -> None:
    fleet = Fleet()
    claiming = ClaimingPoolProvider(fleet.clock, fleet.state)
    fleet.providers["memory"] = fleet.provider = claiming
    config = PoolConfig(name="warm", desired_running=1, idle_timeout_s=60)
    await fleet.state.put_pool(config)
    await fleet.reconcile()
    (runner,) = await fleet.runner_ids("warm")
    await fleet.state.put_pool(attrs.evolve(config, desired_running=0, desired_stopped=stopped))
    fleet.clock.advance(3600)

    await fleet.reconcile()

    assert (verb, (runner,)) in claiming.calls
    assert claiming.claims == [False]
    assert claiming.busy_when_acted == []
    assert await fleet.state.list_assignments() == []


async def test_a_scaled_down_runner_is_released_and_can_be_claimed() -> None:
    fleet = Fleet()
    config = PoolConfig(name="warm", desired_running=1, idle_timeout_s=60)
    await fleet.state.put_pool(config)
    await fleet.reconcile()
    (runner,) = await fleet.runner_ids("warm")
    await fleet.state.put_pool(attrs.evolve(config, desired_running=0, desired_stopped=1))
    fleet.clock.advance(3600)

    (plan,) = await fleet.reconcile()

    assert plan.stop == (runner,)
    assert await fleet.state.list_assignments() == []
    assert await fleet.state.assign_runner(runner, JobId(9), fleet.clock.now())


async def test_reservations_are_released_when_the_scale_down_call_fails() -> None:
    fleet = Fleet()
    config = PoolConfig(name="warm", desired_running=2, idle_timeout_s=60)
    await fleet.state.put_pool(config)
    await fleet.reconcile()
    await fleet.state.put_pool(attrs.evolve(config, desired_running=0))
    fleet.clock.advance(3600)
    fleet.provider.fail_next.append(ProviderError("throttled"))

    assert await fleet.reconcile() == []

    assert fleet.metrics.count("pool_reconcile_errors", reason="adapter_error") == 1
    assert await fleet.state.list_assignments() == []
    assert len(await fleet.runner_ids("warm")) == 2


async def test_a_reservation_left_by_a_dead_pass_is_released_once_stale() -> None:
    fleet = Fleet()
    config = PoolConfig(name="warm", desired_running=1, idle_timeout_s=60)
    await fleet.state.put_pool(config)
    await fleet.reconcile()
    (runner,) = await fleet.runner_ids("warm")
    await fleet.state.assign_runner(runner, SCALE_DOWN_RESERVATION, fleet.clock.now())
    await fleet.state.put_pool(attrs.evolve(config, desired_running=0))
    fleet.clock.advance(STALE_RESERVATION_S - 1)

    assert await fleet.reconcile() == [PoolPlan(pool="warm")]
    assert await fleet.state.get_assignment(runner) is not None
    fleet.clock.advance(1)

    assert await fleet.reconcile() == [PoolPlan(pool="warm", terminate=(runner,))]
    assert fleet.metrics.count("pool_reservations_expired") == 1
    assert await fleet.state.list_assignments() == []
