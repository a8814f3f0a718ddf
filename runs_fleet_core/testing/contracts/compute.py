"""The contracts every Provider and PoolProvider adapter must pass.

"No job gets two runners" rests on ``create_runner`` being idempotent by runner name;
housekeeping rests on ``list_runners`` and ``describe_runner`` telling the truth; warm
pools rest on phases changing as asked. These tests pin that down for every backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

import pytest

from runs_fleet_core.domain.ids import JobId, RunId, RunnerId, runner_name_for
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import PoolRunner, RunnerPhase
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import NotFoundError
from runs_fleet_core.ports.compute import PoolProvider, Provider

_ALIVE = frozenset({RunnerPhase.PENDING, RunnerPhase.RUNNING})
_SETTLING = frozenset({RunnerPhase.PENDING, RunnerPhase.STOPPING})


class ProviderContract:
    """Contract tests for a :class:`~runs_fleet_core.ports.Provider` adapter.

    Subclass it in a ``Test*`` class and provide a ``provider`` fixture: a provider
    with no runners yet (async fixtures are fine). Override the ``runner_spec`` fixture
    if your backend cannot satisfy a 2-CPU Linux spec, and ``unknown_runner_id`` with an
    id in your backend's format that never existed.

    Example::

        class TestMyProvider(ProviderContract):
            unknown_runner_id = "i-00000000000000000"
            @pytest.fixture
            def provider(self, cloud_server):
                return MyProvider(endpoint=cloud_server.url, region="us-east-1")
    """

    pytestmark = pytest.mark.asyncio
    unknown_runner_id: ClassVar[str] = "never-created-0"

    @pytest.fixture
    def runner_spec(self) -> RunnerSpec:
        """The spec (without a job) that every test's runners are created from."""
        return RunnerSpec(run_id=RunId("31337"), label="runs-fleet=31337/cpu=2", pool="default")

    async def create(self, provider: Provider, spec: RunnerSpec, job_id: int) -> RunnerId:
        """Create the runner of ``job_id``'s first attempt; its id."""
        bound = spec.for_job(JobId(job_id), "octo-org/app")
        result = await provider.create_runner(bound, runner_name=runner_name_for(JobId(job_id), 1))
        return result.runner_id

    async def test_the_provider_has_a_name(self, provider: Provider) -> None:
        assert isinstance(provider.name, str)
        assert provider.name

    async def test_a_created_runner_is_alive_and_listed_with_its_job(
        self, provider: Provider, runner_spec: RunnerSpec
    ) -> None:
        spec = runner_spec.for_job(JobId(101), "octo-org/app")
        result = await provider.create_runner(spec, runner_name=runner_name_for(JobId(101), 1))
        assert result.provider == provider.name
        state = await provider.describe_runner(result.runner_id)
        assert (state.runner_id, state.job_id) == (result.runner_id, 101)
        assert state.phase in _ALIVE
        listed = {s.runner_id: s for s in await provider.list_runners()}
        assert listed[result.runner_id].job_id == 101

    async def test_creating_twice_with_one_runner_name_gives_the_same_single_runner(
        self, provider: Provider, runner_spec: RunnerSpec
    ) -> None:
        first = await self.create(provider, runner_spec, 101)
        second = await self.create(provider, runner_spec, 101)
        assert second == first
        runners = [s for s in await provider.list_runners() if s.job_id == 101]
        assert [s.runner_id for s in runners] == [first]

    async def test_concurrent_creates_with_one_runner_name_start_one_runner(
        self, provider: Provider, runner_spec: RunnerSpec
    ) -> None:
        ids = await asyncio.gather(*(self.create(provider, runner_spec, 101) for _ in range(3)))
        assert len(set(ids)) == 1
        assert [s.runner_id for s in await provider.list_runners() if s.job_id == 101] == [ids[0]]

    async def test_different_runner_names_get_different_runners(
        self, provider: Provider, runner_spec: RunnerSpec
    ) -> None:
        first = await self.create(provider, runner_spec, 101)
        second = await self.create(provider, runner_spec, 102)
        assert first != second
        listed = {s.runner_id: s.job_id for s in await provider.list_runners()}
        assert (listed[first], listed[second]) == (101, 102)

    async def test_a_terminated_runner_is_described_as_terminated_and_not_listed(
        self, provider: Provider, runner_spec: RunnerSpec
    ) -> None:
        runner = await self.create(provider, runner_spec, 101)
        await provider.terminate_runner(runner)
        assert (await provider.describe_runner(runner)).phase is RunnerPhase.TERMINATED
        assert runner not in {s.runner_id for s in await provider.list_runners()}

    async def test_terminating_a_runner_twice_is_not_an_error(
        self, provider: Provider, runner_spec: RunnerSpec
    ) -> None:
        runner = await self.create(provider, runner_spec, 101)
        await provider.terminate_runner(runner)
        await provider.terminate_runner(runner)
        assert (await provider.describe_runner(runner)).phase is RunnerPhase.TERMINATED

    async def test_describing_a_runner_that_never_existed_raises_not_found(
        self, provider: Provider
    ) -> None:
        with pytest.raises(NotFoundError):
            await provider.describe_runner(RunnerId(self.unknown_runner_id))


class PoolProviderContract:
    """Contract tests for a :class:`~runs_fleet_core.ports.PoolProvider` adapter.

    Subclass it in a ``Test*`` class and provide a ``pool_provider`` fixture: a provider
    with no pool runners yet (async fixtures are fine). Override ``pool_config`` if your
    backend needs another label, and ``settle_timeout_s`` if runners pass through
    ``pending``/``stopping`` for long (tests wait that long for phases to settle).

    Example::

        class TestMyPoolProvider(PoolProviderContract):
            settle_timeout_s = 30.0
            @pytest.fixture
            def pool_provider(self, cloud_server):
                return MyPoolProvider(endpoint=cloud_server.url, region="us-east-1")
    """

    pytestmark = pytest.mark.asyncio
    settle_timeout_s: ClassVar[float] = 10.0

    @pytest.fixture
    def pool_config(self) -> PoolConfig:
        """The pool the tests fill (a second one is derived from it by name)."""
        return PoolConfig(name="contract", label="runs-fleet=0/cpu=2", desired_running=2)

    async def settled(self, pool_provider: PoolProvider, pool: str) -> dict[RunnerId, RunnerPhase]:
        """The pool's runners and phases once none is pending or stopping."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_timeout_s
        while True:
            runners: Sequence[PoolRunner] = await pool_provider.list_pool_runners(pool)
            assert all(r.pool == pool for r in runners)
            if loop.time() >= deadline or not any(r.phase in _SETTLING for r in runners):
                return {r.runner_id: r.phase for r in runners}
            await asyncio.sleep(0.1)

    async def test_the_pool_provider_has_a_name(self, pool_provider: PoolProvider) -> None:
        assert isinstance(pool_provider.name, str)
        assert pool_provider.name

    async def test_created_runners_are_listed_running_in_their_pool(
        self, pool_provider: PoolProvider, pool_config: PoolConfig
    ) -> None:
        ids = await pool_provider.create_pool_runners(pool_config, 2)
        assert len(set(ids)) == 2
        phases = await self.settled(pool_provider, pool_config.name)
        assert phases == dict.fromkeys(ids, RunnerPhase.RUNNING)

    async def test_runners_created_stopped_end_up_stopped(
        self, pool_provider: PoolProvider, pool_config: PoolConfig
    ) -> None:
        ids = await pool_provider.create_pool_runners(pool_config, 2, stopped=True)
        phases = await self.settled(pool_provider, pool_config.name)
        assert phases == dict.fromkeys(ids, RunnerPhase.STOPPED)

    async def test_creating_zero_runners_creates_none(
        self, pool_provider: PoolProvider, pool_config: PoolConfig
    ) -> None:
        assert list(await pool_provider.create_pool_runners(pool_config, 0)) == []
        assert list(await pool_provider.list_pool_runners(pool_config.name)) == []

    async def test_only_the_named_runners_stop_and_start_again(
        self, pool_provider: PoolProvider, pool_config: PoolConfig
    ) -> None:
        first, second = await pool_provider.create_pool_runners(pool_config, 2)
        await self.settled(pool_provider, pool_config.name)
        await pool_provider.stop_runners([first])
        phases = await self.settled(pool_provider, pool_config.name)
        assert phases == {first: RunnerPhase.STOPPED, second: RunnerPhase.RUNNING}
        await pool_provider.start_runners([first])
        phases = await self.settled(pool_provider, pool_config.name)
        assert phases == {first: RunnerPhase.RUNNING, second: RunnerPhase.RUNNING}

    async def test_starting_running_and_stopping_stopped_runners_change_nothing(
        self, pool_provider: PoolProvider, pool_config: PoolConfig
    ) -> None:
        running = await pool_provider.create_pool_runners(pool_config, 1)
        stopped = await pool_provider.create_pool_runners(pool_config, 1, stopped=True)
        await self.settled(pool_provider, pool_config.name)
        await pool_provider.start_runners(running)
        await pool_provider.stop_runners(stopped)
        phases = await self.settled(pool_provider, pool_config.name)
        assert phases == {running[0]: RunnerPhase.RUNNING, stopped[0]: RunnerPhase.STOPPED}

    async def test_terminated_runners_leave_the_pool_and_terminating_again_is_fine(
        self, pool_provider: PoolProvider, pool_config: PoolConfig
    ) -> None:
        first, second = await pool_provider.create_pool_runners(pool_config, 2)
        await pool_provider.terminate_runners([first])
        await pool_provider.terminate_runners([first])
        assert list(await self.settled(pool_provider, pool_config.name)) == [second]

    async def test_pools_do_not_see_each_others_runners(
        self, pool_provider: PoolProvider, pool_config: PoolConfig
    ) -> None:
        other = PoolConfig(name=f"{pool_config.name}-other", label=pool_config.label)
        mine = await pool_provider.create_pool_runners(pool_config, 1)
        theirs = await pool_provider.create_pool_runners(other, 2)
        assert list(await self.settled(pool_provider, pool_config.name)) == list(mine)
        assert sorted(await self.settled(pool_provider, other.name)) == sorted(theirs)

    async def test_a_pool_without_runners_lists_none(self, pool_provider: PoolProvider) -> None:
        assert list(await pool_provider.list_pool_runners("no-such-pool")) == []
