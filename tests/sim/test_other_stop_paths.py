"""Two other paths that stop or terminate pool runners, with the pool loop's old race.

Each reads a runner as free (or frees it) and then acts on it, so a dispatcher can claim
the runner in between; the simulation leaves them out because their modules are not
changed here. Both tests are expected to fail until the fix in their reason is made:
``strict`` turns the first pass into a failure, the cue to drop the marker.
"""

from __future__ import annotations

from collections.abc import Sequence

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.errors import ProviderError
from runs_fleet_core.testing.contracts.state import make_job
from runs_fleet_core.testing.memory import (
    ManualClock,
    MemoryPoolProvider,
    MemoryStateStore,
    RecordingMetrics,
)
from runs_fleet_core.usecases.ephemeral import retire_idle_pools
from tests.unit.conftest import event, new_world

OTHER_JOB = JobId(500)


class ClaimingPoolProvider(MemoryPoolProvider):
    """Another dispatcher claims each runner in the instant before a stop or terminate
    call reaches the cloud; ``busy_when_acted`` lists those it won, acted on under its job.
    ``refuse_start`` makes the next start fail as a capacity error does."""

    def __init__(self, clock: ManualClock, state: MemoryStateStore) -> None:
        super().__init__(clock)
        self.state = state
        self.busy_when_acted: list[RunnerId] = []
        self.refuse_start = False

    async def start_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        if self.refuse_start:
            self.refuse_start = False
            raise ProviderError("InsufficientInstanceCapacity")
        await super().start_runners(runner_ids)

    async def stop_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        await self._claim(runner_ids)
        await super().stop_runners(runner_ids)

    async def terminate_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        await self._claim(runner_ids)
        await super().terminate_runners(runner_ids)

    async def _claim(self, runner_ids: Sequence[RunnerId]) -> None:
        for runner_id in runner_ids:
            if await self.state.assign_runner(runner_id, OTHER_JOB, self._clock.now()):
                self.busy_when_acted.append(runner_id)


async def test_retiring_an_ephemeral_pool_never_terminates_a_runner_claimed_meanwhile() -> None:
    clock, state = ManualClock(), MemoryStateStore()
    provider = ClaimingPoolProvider(clock, state)
    config = PoolConfig(name="docs", desired_running=1, ephemeral=True)
    await state.put_pool(config)
    await state.put_job(make_job(1, clock.now(), pool="docs"), expect_version=None)
    await provider.create_pool_runners(config, 1)
    clock.advance(7200)

    await retire_idle_pools(
        state=state,
        pool_providers={"memory": provider},
        default_backend="memory",
        clock=clock,
        metrics=RecordingMetrics(),
        idle_s=3600,
    )

    assert provider.busy_when_acted == []


async def test_a_warm_runner_given_back_is_never_stopped_under_another_job() -> None:
    world = new_world()
    provider = ClaimingPoolProvider(world.clock, world.state)
    world.pools = provider
    pool = PoolConfig(name="default", label="runs-fleet=pool/cpu=2", desired_stopped=1)
    await world.state.put_pool(pool)
    await provider.create_pool_runners(pool, 1, stopped=True)
    provider.refuse_start = True
    await world.intake().take(event(1, "runs-fleet=42/pool=default"))

    assert await world.dispatch_all() == ["launched"]

    assert provider.busy_when_acted == []
