"""The contract every StateStore adapter must pass: conditional writes that decide races.

Several replicas share one store. Whether a job gets exactly one runner, a busy runner
is left alone and one leader runs the pool loop depends on these writes winning or
losing exactly as the port says, under concurrency. These tests pin that down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

import attrs
import pytest

from runs_fleet_core.domain.ids import JobId, RunId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.pool import SCALE_DOWN_RESERVATION, PoolConfig, Schedule
from runs_fleet_core.domain.spec import Arch, RunnerSpec
from runs_fleet_core.errors import ConflictError
from runs_fleet_core.ports.state import StateStore
from runs_fleet_core.testing.memory.observe import ManualClock


def make_job(job_id: int, at: datetime, *, pool: str | None = "default") -> Job:
    """A freshly queued job with a full spec (so a lossy round trip shows)."""
    spec = RunnerSpec(
        run_id=RunId("4242"),
        label="runs-fleet=4242/cpu=4/arch=amd64",
        cpu_min=4,
        cpu_max=4,
        arch=Arch.AMD64,
        families=("m7i",),
        pool=pool,
    ).for_job(JobId(job_id), "octo-org/app")
    return Job.new(
        job_id=JobId(job_id),
        run_id=RunId("4242"),
        repository="octo-org/app",
        at=at,
        spec=spec,
        delivery_id=f"delivery-{job_id}",
    )


def _ids(jobs: Sequence[Job]) -> list[int]:
    return sorted(job.job_id for job in jobs)


class StateStoreContract:
    """Contract tests for a :class:`~runs_fleet_core.ports.StateStore` adapter.

    Subclass it in a ``Test*`` class and provide a ``state_store`` fixture: a fresh,
    empty store (async fixtures are fine). Times come from the ``clock`` fixture, a
    ``ManualClock`` you may override (say, to start at the real time if your backend
    also expires records by its own clock).

    Example::

        class TestMyStateStore(StateStoreContract):
            @pytest.fixture
            async def state_store(self, tmp_path):
                store = await MyStateStore.open(tmp_path / "state.db")
                yield store
                await store.close()
    """

    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def clock(self) -> ManualClock:
        """The time the tests pass to the store."""
        return ManualClock()

    # -- jobs ---------------------------------------------------------------------
    async def test_a_created_job_is_stored_whole_with_a_bumped_version(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        job = make_job(1, clock.now())
        created = await state_store.put_job(job, expect_version=None)
        assert created.version > job.version
        assert created == attrs.evolve(job, version=created.version)
        assert await state_store.get_job(JobId(1)) == created

    async def test_an_unknown_job_is_none(self, state_store: StateStore) -> None:
        assert await state_store.get_job(JobId(404)) is None

    async def test_creating_a_job_that_exists_conflicts_and_keeps_the_first(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        first = await state_store.put_job(make_job(1, clock.now()), expect_version=None)
        again = make_job(1, clock.now(), pool="other")
        with pytest.raises(ConflictError):
            await state_store.put_job(again, expect_version=None)
        assert await state_store.get_job(JobId(1)) == first

    async def test_a_replace_at_the_stored_version_is_written_with_a_new_version(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        created = await state_store.put_job(make_job(1, clock.now()), expect_version=None)
        claimed = created.transition(JobStatus.CLAIMED, at=clock.advance(1), claim_owner="r1")
        stored = await state_store.put_job(claimed, expect_version=created.version)
        assert stored.version > created.version
        assert stored == attrs.evolve(claimed, version=stored.version)
        assert await state_store.get_job(JobId(1)) == stored

    async def test_a_replace_at_a_stale_version_conflicts_and_writes_nothing(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        created = await state_store.put_job(make_job(1, clock.now()), expect_version=None)
        claimed = created.transition(JobStatus.CLAIMED, at=clock.advance(1))
        current = await state_store.put_job(claimed, expect_version=created.version)
        rejected = created.transition(JobStatus.REJECTED, at=clock.advance(1), reason="late")
        with pytest.raises(ConflictError):
            await state_store.put_job(rejected, expect_version=created.version)
        assert await state_store.get_job(JobId(1)) == current

    async def test_a_replace_of_a_missing_job_conflicts(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        with pytest.raises(ConflictError):
            await state_store.put_job(make_job(1, clock.now()), expect_version=1)
        assert await state_store.get_job(JobId(1)) is None

    async def test_of_two_concurrent_replaces_from_one_version_exactly_one_wins(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        created = await state_store.put_job(make_job(1, clock.now()), expect_version=None)
        at = clock.advance(1)
        contenders = [
            created.transition(JobStatus.CLAIMED, at=at, claim_owner=owner)
            for owner in ("replica-a", "replica-b")
        ]
        results = await asyncio.gather(
            *(state_store.put_job(job, expect_version=created.version) for job in contenders),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, Job)]
        assert len(winners) == 1
        assert [type(r) for r in results if not isinstance(r, Job)] == [ConflictError]
        assert await state_store.get_job(JobId(1)) == winners[0]

    async def test_of_two_concurrent_creates_exactly_one_wins(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        jobs = [make_job(1, clock.now(), pool=pool) for pool in ("a", "b")]
        results = await asyncio.gather(
            *(state_store.put_job(job, expect_version=None) for job in jobs),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, Job)]
        assert len(winners) == 1
        assert [type(r) for r in results if not isinstance(r, Job)] == [ConflictError]
        assert await state_store.get_job(JobId(1)) == winners[0]

    async def test_jobs_are_listed_by_status_by_pool_or_both(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        for job_id, pool in ((1, "default"), (2, "gpu"), (3, None), (4, "default")):
            await state_store.put_job(make_job(job_id, clock.now(), pool=pool), expect_version=None)
        fourth = await state_store.get_job(JobId(4))
        assert fourth is not None
        claimed = fourth.transition(JobStatus.CLAIMED, at=clock.advance(1))
        await state_store.put_job(claimed, expect_version=fourth.version)

        assert _ids(await state_store.list_jobs()) == [1, 2, 3, 4]
        assert _ids(await state_store.list_jobs(status=JobStatus.QUEUED)) == [1, 2, 3]
        assert _ids(await state_store.list_jobs(pool="default")) == [1, 4]
        queued_default = await state_store.list_jobs(status=JobStatus.QUEUED, pool="default")
        assert _ids(queued_default) == [1]
        assert _ids(await state_store.list_jobs(status=JobStatus.RUNNING)) == []

    # -- runner assignments -------------------------------------------------------------
    async def test_a_runner_is_assigned_once_and_only_once(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        runner = RunnerId("runner-1")
        assert await state_store.assign_runner(runner, JobId(1), clock.now()) is True
        assert await state_store.assign_runner(runner, JobId(2), clock.advance(1)) is False
        assert await state_store.assign_runner(runner, JobId(1), clock.advance(1)) is False
        assignment = await state_store.get_assignment(runner)
        assert assignment is not None
        assert (assignment.runner_id, assignment.job_id) == (runner, 1)
        assert assignment.assigned_at == clock.now() - timedelta(seconds=2)

    async def test_of_concurrent_assignments_of_one_runner_exactly_one_wins(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        runner = RunnerId("runner-1")
        results = await asyncio.gather(
            *(state_store.assign_runner(runner, JobId(j), clock.now()) for j in (1, 2, 3))
        )
        assert sorted(results) == [False, False, True]
        assignment = await state_store.get_assignment(runner)
        assert assignment is not None
        assert assignment.job_id == [1, 2, 3][results.index(True)]

    async def test_releasing_with_another_job_keeps_the_assignment(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        runner = RunnerId("runner-1")
        await state_store.assign_runner(runner, JobId(1), clock.now())
        await state_store.release_runner(runner, JobId(2))
        assignment = await state_store.get_assignment(runner)
        assert assignment is not None
        assert assignment.job_id == 1

    async def test_a_released_runner_is_free_to_be_assigned_again(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        runner = RunnerId("runner-1")
        await state_store.assign_runner(runner, JobId(1), clock.now())
        await state_store.release_runner(runner, JobId(1))
        await state_store.release_runner(runner, JobId(1))
        assert await state_store.get_assignment(runner) is None
        assert await state_store.assign_runner(runner, JobId(2), clock.now()) is True

    async def test_every_assignment_is_listed(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        assert list(await state_store.list_assignments()) == []
        for n in (1, 2):
            await state_store.assign_runner(RunnerId(f"runner-{n}"), JobId(n), clock.now())
        listed = await state_store.list_assignments()
        assert sorted((a.runner_id, a.job_id) for a in listed) == [
            ("runner-1", 1),
            ("runner-2", 2),
        ]

    async def test_a_scale_down_reservation_holds_a_runner_like_a_job(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        runner = RunnerId("runner-1")
        assert await state_store.assign_runner(runner, SCALE_DOWN_RESERVATION, clock.now())
        assert await state_store.assign_runner(runner, JobId(1), clock.now()) is False
        listed = await state_store.list_assignments()
        assert [(a.runner_id, a.job_id) for a in listed] == [(runner, SCALE_DOWN_RESERVATION)]
        await state_store.release_runner(runner, JobId(1))
        assert await state_store.get_assignment(runner) is not None
        await state_store.release_runner(runner, SCALE_DOWN_RESERVATION)
        assert await state_store.assign_runner(runner, JobId(1), clock.now()) is True

    # -- leases ----------------------------------------------------------------------
    async def test_a_free_lease_is_acquired_until_its_ttl(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        lease = await state_store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
        assert lease is not None
        assert (lease.name, lease.owner) == ("pool-loop", "replica-a")
        assert lease.expires_at == clock.now() + timedelta(seconds=30)

    async def test_a_held_lease_is_refused_to_another_owner(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        await state_store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
        taken = await state_store.acquire_lease("pool-loop", "replica-b", 30, clock.advance(29))
        assert taken is None

    async def test_the_holder_acquiring_again_extends_it_with_the_same_token(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        first = await state_store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
        again = await state_store.acquire_lease("pool-loop", "replica-a", 30, clock.advance(10))
        assert first is not None
        assert again is not None
        assert again.token == first.token
        assert again.expires_at == clock.now() + timedelta(seconds=30)

    async def test_an_expired_lease_is_taken_over_with_a_larger_fencing_token(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        old = await state_store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
        new = await state_store.acquire_lease("pool-loop", "replica-b", 30, clock.advance(31))
        assert old is not None
        assert new is not None
        assert new.owner == "replica-b"
        assert new.token > old.token

    async def test_renewing_keeps_the_token_and_moves_the_expiry(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        lease = await state_store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
        assert lease is not None
        renewed = await state_store.renew_lease(lease, 60, clock.advance(20))
        assert renewed is not None
        assert (renewed.owner, renewed.token) == (lease.owner, lease.token)
        assert renewed.expires_at == clock.now() + timedelta(seconds=60)
        taken = await state_store.acquire_lease("pool-loop", "replica-b", 30, clock.advance(45))
        assert taken is None

    async def test_a_lease_lost_to_another_owner_cannot_be_renewed(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        lost = await state_store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
        await state_store.acquire_lease("pool-loop", "replica-b", 30, clock.advance(31))
        assert lost is not None
        assert await state_store.renew_lease(lost, 30, clock.advance(1)) is None

    async def test_a_released_lease_cannot_be_renewed_and_goes_to_a_larger_token(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        lease = await state_store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
        assert lease is not None
        await state_store.release_lease(lease)
        assert await state_store.renew_lease(lease, 30, clock.advance(1)) is None
        nxt = await state_store.acquire_lease("pool-loop", "replica-b", 30, clock.now())
        assert nxt is not None
        assert nxt.token > lease.token

    async def test_releasing_a_lost_lease_leaves_the_new_holder_in_place(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        lost = await state_store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
        holder = await state_store.acquire_lease("pool-loop", "replica-b", 30, clock.advance(31))
        assert lost is not None
        assert holder is not None
        await state_store.release_lease(lost)
        assert await state_store.acquire_lease("pool-loop", "replica-c", 30, clock.now()) is None
        assert await state_store.renew_lease(holder, 30, clock.now()) is not None

    async def test_of_concurrent_acquires_exactly_one_wins(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        owners = [f"replica-{n}" for n in range(4)]
        leases = await asyncio.gather(
            *(state_store.acquire_lease("pool-loop", o, 30, clock.now()) for o in owners)
        )
        assert len([lease for lease in leases if lease is not None]) == 1

    async def test_leases_of_different_names_are_independent(
        self, state_store: StateStore, clock: ManualClock
    ) -> None:
        a = await state_store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
        b = await state_store.acquire_lease("housekeeping", "replica-b", 30, clock.now())
        assert a is not None
        assert b is not None

    # -- pool configs ------------------------------------------------------------------
    async def test_pools_are_stored_listed_replaced_and_deleted(
        self, state_store: StateStore
    ) -> None:
        weekdays = Schedule(weekdays=(0, 1, 2, 3, 4), start_hour=8, end_hour=18, desired_running=5)
        default = PoolConfig(
            name="default", label="runs-fleet=0/cpu=2", desired_running=2, schedules=(weekdays,)
        )
        gpu = PoolConfig(name="gpu", desired_stopped=1, ephemeral=True, backend="k8s")
        await state_store.put_pool(default)
        await state_store.put_pool(gpu)
        assert await state_store.get_pool("default") == default
        assert sorted(p.name for p in await state_store.list_pools()) == ["default", "gpu"]
        resized = attrs.evolve(default, desired_running=4)
        await state_store.put_pool(resized)
        assert await state_store.get_pool("default") == resized
        await state_store.delete_pool("gpu")
        assert list(await state_store.list_pools()) == [resized]

    async def test_a_missing_pool_is_none_and_deleting_it_is_fine(
        self, state_store: StateStore
    ) -> None:
        assert await state_store.get_pool("nope") is None
        await state_store.delete_pool("nope")
        assert list(await state_store.list_pools()) == []
