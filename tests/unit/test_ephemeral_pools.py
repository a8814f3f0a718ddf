"""Ephemeral pools: made for a job naming an unknown pool, sized from demand, retired."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runs_fleet_core.domain.demand import (
    concurrency_samples,
    last_activity,
    percentile,
    recent_demand,
)
from runs_fleet_core.domain.ids import JobId, RunId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.labels import parse_label
from runs_fleet_core.domain.planning import count_idle
from runs_fleet_core.domain.pool import PoolConfig, PoolPlan
from runs_fleet_core.domain.runner import PoolRunner
from runs_fleet_core.errors import ProviderError
from runs_fleet_core.testing.memory import (
    ManualClock,
    MemoryPoolProvider,
    MemoryStateStore,
    RecordingMetrics,
)
from runs_fleet_core.usecases.ephemeral import (
    SETTINGS,
    ensure_pool_for,
    ephemeral_demand,
    retire_idle_pools,
)
from runs_fleet_core.usecases.pools import reconcile_pools

REPO = "octo-org/widgets"
NOW = ManualClock().now()
HOUR = 3600.0
IDLE_S = 4 * HOUR
_job_ids = itertools.count(1000)


def make_job(
    created: datetime,
    *,
    ended: datetime | None = None,
    running: datetime | None = None,
    label: str = "runs-fleet=42/cpu=4/pool=docs",
) -> Job:
    """A job of the label's pool, queued at ``created``, running from ``running``,
    completed at ``ended`` (each only when given)."""
    job_id = JobId(next(_job_ids))
    spec = parse_label(label).for_job(job_id, REPO)
    job = Job.new(job_id=job_id, run_id=RunId("42"), repository=REPO, at=created, spec=spec)
    if running is not None:
        job = job.transition(JobStatus.RUNNING, at=running)
    if ended is not None:
        job = job.transition(JobStatus.COMPLETED, at=ended)
    return job


def minutes_ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


class Fleet:
    """A memory backend, its state, clock and metrics, and the ephemeral-pool use cases."""

    def __init__(self) -> None:
        self.clock = ManualClock(NOW)
        self.state = MemoryStateStore()
        self.metrics = RecordingMetrics()
        self.pools = MemoryPoolProvider(self.clock)
        self.providers: dict[str, MemoryPoolProvider] = {"memory": self.pools}

    async def store(self, job: Job) -> Job:
        return await self.state.put_job(job, expect_version=None)

    async def ensure(self, job: Job, max_size: int = 10) -> PoolConfig | None:
        return await ensure_pool_for(
            job, state=self.state, clock=self.clock, metrics=self.metrics, max_size=max_size
        )

    async def pool_loop(self) -> list[PoolPlan]:
        """One pass as the scheduler runs it: demand, reconcile."""
        demand = await ephemeral_demand(state=self.state, clock=self.clock)
        return await reconcile_pools(
            state=self.state,
            pool_providers=self.providers,
            default_backend="memory",
            clock=self.clock,
            metrics=self.metrics,
            demand=demand,
        )

    async def retire(self) -> tuple[str, ...]:
        return await retire_idle_pools(
            state=self.state,
            pool_providers=self.providers,
            default_backend="memory",
            clock=self.clock,
            metrics=self.metrics,
            idle_s=IDLE_S,
        )

    async def idle(self, pool: str) -> tuple[int, int]:
        runners = await self.pools.list_pool_runners(pool)
        assigned = {a.runner_id for a in await self.state.list_assignments()}
        return count_idle(runners, assigned)

    async def runner_ids(self, pool: str) -> list[RunnerId]:
        return sorted(r.runner_id for r in await self.pools.list_pool_runners(pool))

    async def pool_names(self) -> list[str]:
        return [config.name for config in await self.state.list_pools()]


# -- making a pool for a job ------------------------------------------------------------


async def test_a_job_naming_an_unknown_pool_gets_an_ephemeral_pool() -> None:
    fleet = Fleet()
    job = await fleet.store(make_job(NOW, label="runs-fleet=42/cpu=4/pool=docs/backend=k8s"))

    created = await fleet.ensure(job, max_size=6)

    assert created == PoolConfig(
        name="docs",
        label="runs-fleet=42/cpu=4/pool=docs/backend=k8s",
        desired_running=6,
        desired_stopped=0,
        ephemeral=True,
        backend="k8s",
    )
    assert await fleet.state.list_pools() == [created]
    assert fleet.metrics.count("ephemeral_pools_created", pool="docs") == 1


async def test_a_pool_is_made_once_however_many_of_its_jobs_arrive() -> None:
    fleet = Fleet()
    first, second = make_job(NOW), make_job(NOW, label="runs-fleet=42/cpu=16/pool=docs")

    assert await fleet.ensure(first) is not None
    assert await fleet.ensure(second) is None
    assert [c.label for c in await fleet.state.list_pools()] == ["runs-fleet=42/cpu=4/pool=docs"]
    assert fleet.metrics.count("ephemeral_pools_created") == 1


async def test_concurrent_dispatchers_make_one_pool_from_one_job() -> None:
    fleet = Fleet()
    jobs = [make_job(NOW, label=f"runs-fleet=42/cpu={cpu}/pool=docs") for cpu in (1, 2, 4, 8)]

    results = await asyncio.gather(*(fleet.ensure(job) for job in jobs))

    created = [config for config in results if config is not None]
    assert len(created) == 1
    assert await fleet.state.list_pools() == created
    assert created[0].label in {job.spec.label for job in jobs}  # type: ignore[union-attr]
    assert fleet.metrics.count("ephemeral_pools_created", pool="docs") == 1


async def test_a_dispatcher_that_waited_for_the_creator_does_not_write_again() -> None:
    """One that saw no pool, then got the creation lease after the creator released it,
    reads again and finds the pool."""
    fleet = Fleet()
    real_get_pool = fleet.state.get_pool
    late = make_job(NOW, label="runs-fleet=42/cpu=16/pool=docs")

    async def first_read_before_the_creator(name: str) -> PoolConfig | None:
        fleet.state.get_pool = real_get_pool  # type: ignore[method-assign]
        seen = await real_get_pool(name)
        assert await fleet.ensure(make_job(NOW)) is not None  # the creator runs meanwhile
        return seen

    fleet.state.get_pool = first_read_before_the_creator  # type: ignore[method-assign]

    assert await fleet.ensure(late) is None
    assert [c.label for c in await fleet.state.list_pools()] == ["runs-fleet=42/cpu=4/pool=docs"]
    assert fleet.metrics.count("ephemeral_pools_created") == 1


@pytest.mark.parametrize("ephemeral", [False, True], ids=["configured", "ephemeral"])
async def test_an_existing_pool_is_left_as_it_is(ephemeral: bool) -> None:
    fleet = Fleet()
    existing = PoolConfig(
        name="docs", label="runs-fleet=pool/cpu=2", desired_running=2, ephemeral=ephemeral
    )
    await fleet.state.put_pool(existing)

    assert await fleet.ensure(make_job(NOW)) is None
    assert await fleet.state.list_pools() == [existing]
    assert fleet.metrics.count("ephemeral_pools_created") == 0


@pytest.mark.parametrize(
    ("label", "max_size"),
    [("runs-fleet=42/cpu=4", 10), ("runs-fleet=42/cpu=4/pool=docs", 0)],
    ids=["no pool named", "ephemeral pools off"],
)
async def test_no_pool_is_made_when_none_is_named_or_the_feature_is_off(
    label: str, max_size: int
) -> None:
    fleet = Fleet()

    assert await fleet.ensure(make_job(NOW, label=label), max_size=max_size) is None
    assert await fleet.state.list_pools() == []


# -- demand -----------------------------------------------------------------------------

Span = tuple[float, float | None]
"""A job as (minutes before NOW it was created, minutes before NOW it completed or None)."""

RELAY: list[Span] = [(m + 20, m) for m in (0, 20, 40)]
"""Three 20-minute jobs one after the other, the last ending now."""

DEMAND_CASES: list[tuple[str, list[Span], int]] = [
    ("no jobs", [], 0),
    ("steady 3 concurrent all hour", [(90, None)] * 3, 3),
    ("steady 3 as a relay of 20-minute jobs", RELAY * 3, 3),
    ("a 6-minute burst of 5 in an idle hour (a tenth of it)", [(30, 24)] * 5, 5),
    ("a 5-minute burst of 5 in an idle hour (less than a tenth)", [(30, 25)] * 5, 0),
    ("jobs begun before the hour and still running", [(180, None)] * 2, 2),
    ("jobs that ended before the hour", [(120, 61)] * 4, 0),
    ("2 all hour plus a 6-minute burst of 3 more", [(90, None)] * 2 + [(10, 4)] * 3, 5),
    ("2 all hour plus a 3-minute burst of 3 more", [(90, None)] * 2 + [(10, 7)] * 3, 2),
]


def jobs_of(spans: Sequence[Span]) -> list[Job]:
    return [
        make_job(minutes_ago(start), ended=None if end is None else minutes_ago(end))
        for start, end in spans
    ]


@pytest.mark.parametrize(
    ("spans", "expected"),
    [case[1:] for case in DEMAND_CASES],
    ids=[case[0] for case in DEMAND_CASES],
)
def test_demand_is_the_90th_percentile_of_concurrency_over_the_last_hour(
    spans: list[Span], expected: int
) -> None:
    assert recent_demand(jobs_of(spans), NOW) == expected


def test_samples_are_taken_every_minute_of_the_last_hour_up_to_now() -> None:
    before_the_hour = make_job(minutes_ago(75))
    arrived_now = make_job(NOW)
    # 6 minutes that do not line up with the minute grid still cover 6 samples.
    burst = make_job(minutes_ago(20.5), ended=minutes_ago(14.5))

    samples = concurrency_samples([before_the_hour, arrived_now, burst], NOW)

    assert len(samples) == 60
    assert samples.count(1) == 53
    assert samples.count(2) == 7  # the burst's 6 minutes, and now
    assert samples[-1] == 2


@pytest.mark.parametrize(
    ("samples", "percent", "expected"),
    [
        ([], 90, 0),
        ([0] * 54 + [5] * 6, 90, 5),
        ([0] * 55 + [5] * 5, 90, 0),
        ([7, 1, 3], 100, 7),
        ([7, 1, 3], 0, 1),
        ([4] * 10, 90, 4),
        (list(range(1, 11)), 90, 10),
        (list(range(1, 12)), 90, 10),
    ],
)
def test_percentile_is_nearest_rank_with_an_exact_rank_rounded_up(
    samples: list[int], percent: int, expected: int
) -> None:
    assert percentile(samples, percent) == expected


_span = st.tuples(
    st.floats(min_value=-30, max_value=180, allow_nan=False),
    st.one_of(st.none(), st.floats(min_value=0, max_value=120, allow_nan=False)),
)


def _job_from(span: tuple[float, float | None]) -> Job:
    """A job created ``start`` minutes before NOW (negative: in the future), lasting
    ``length`` minutes (``None``: still running)."""
    start, length = span
    return make_job(
        minutes_ago(start), ended=None if length is None else minutes_ago(start - length)
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_span, max_size=12), _span)
def test_demand_is_bounded_by_the_peak_and_never_drops_when_a_job_is_added(
    spans: list[tuple[float, float | None]], extra: tuple[float, float | None]
) -> None:
    jobs = [_job_from(span) for span in spans]

    demand = recent_demand(jobs, NOW)

    assert 0 <= demand <= max(concurrency_samples(jobs, NOW), default=0) <= len(jobs)
    assert recent_demand([*jobs, _job_from(extra)], NOW) >= demand


def test_last_activity_is_the_latest_creation_or_status_change() -> None:
    jobs = [
        make_job(minutes_ago(300), running=minutes_ago(290), ended=minutes_ago(200)),
        make_job(minutes_ago(250), running=minutes_ago(240)),
    ]

    assert last_activity(jobs) == minutes_ago(200)
    assert last_activity([]) is None


async def test_demand_sizes_an_ephemeral_pools_running_runners_up_to_its_cap() -> None:
    fleet = Fleet()
    await fleet.state.put_pool(PoolConfig(name="fixed", desired_running=1))
    for _ in range(3):
        await fleet.store(make_job(minutes_ago(90), running=minutes_ago(88)))
    for _ in range(4):
        await fleet.store(make_job(minutes_ago(90), label="runs-fleet=42/pool=capped"))
    await fleet.ensure(await fleet.store(make_job(NOW)))
    capped = await fleet.store(make_job(NOW, label="runs-fleet=42/pool=capped"))
    await fleet.ensure(capped, max_size=2)

    assert await ephemeral_demand(state=fleet.state, clock=fleet.clock) == {"capped": 4, "docs": 3}
    plans = await fleet.pool_loop()

    assert PoolPlan(pool="docs", create_running=3) in plans
    assert await fleet.idle("docs") == (3, 0)
    assert await fleet.idle("capped") == (2, 0)
    assert await fleet.idle("fixed") == (1, 0)


async def test_an_ephemeral_pool_shrinks_when_its_demand_goes() -> None:
    fleet = Fleet()
    jobs = [await fleet.store(make_job(minutes_ago(90), running=minutes_ago(88))) for _ in range(3)]
    await fleet.ensure(jobs[0])
    await fleet.pool_loop()
    assert await fleet.idle("docs") == (3, 0)
    for job in jobs:
        done = job.transition(JobStatus.COMPLETED, at=fleet.clock.now())
        await fleet.state.put_job(done, expect_version=job.version)

    fleet.clock.advance(HOUR + 60)
    await fleet.pool_loop()

    assert await fleet.idle("docs") == (0, 0)
    assert await fleet.pool_names() == ["docs"]


# -- retirement -------------------------------------------------------------------------


async def _used_pool(fleet: Fleet, *, runners: int = 2) -> Job:
    """A pool made for a job at NOW that ran it for 10 minutes, with ``runners`` warm."""
    job = await fleet.store(make_job(NOW))
    await fleet.ensure(job)
    await fleet.pools.create_pool_runners(await _config(fleet, "docs"), runners)
    fleet.clock.advance(600)
    done = job.transition(JobStatus.COMPLETED, at=fleet.clock.now())
    return await fleet.state.put_job(done, expect_version=job.version)


async def _config(fleet: Fleet, name: str) -> PoolConfig:
    config = await fleet.state.get_pool(name)
    assert config is not None
    return config


async def test_a_new_pool_is_not_retired() -> None:
    fleet = Fleet()
    await fleet.ensure(await fleet.store(make_job(NOW)))

    assert await fleet.retire() == ()
    fleet.clock.advance(IDLE_S - 1)
    assert await fleet.retire() == ()
    assert await fleet.pool_names() == ["docs"]


async def test_a_pool_idle_for_four_hours_is_retired_with_its_idle_runners() -> None:
    fleet = Fleet()
    await _used_pool(fleet, runners=2)
    fleet.clock.advance(IDLE_S - 1)
    assert await fleet.retire() == ()

    fleet.clock.advance(1)
    retired = await fleet.retire()

    assert retired == ("docs",)
    assert await fleet.pool_names() == []
    assert await fleet.runner_ids("docs") == []
    assert fleet.metrics.count("ephemeral_pool_runners_terminated", pool="docs") == 2
    assert fleet.metrics.count("ephemeral_pools_retired", pool="docs") == 1


async def test_a_runner_holding_a_job_is_kept_and_the_pool_waits_for_it() -> None:
    fleet = Fleet()
    long_job = await fleet.store(make_job(NOW, running=NOW))
    await fleet.ensure(long_job)
    busy, *_ = await fleet.pools.create_pool_runners(await _config(fleet, "docs"), 3)
    assert await fleet.state.assign_runner(busy, long_job.job_id, NOW)
    fleet.clock.advance(IDLE_S + 60)

    assert await fleet.retire() == ()
    assert await fleet.runner_ids("docs") == [busy]
    assert busy not in {rid for _, rids in fleet.pools.calls for rid in rids}
    assert await fleet.pool_names() == ["docs"]

    await fleet.pools.terminate_runners([busy])  # its agent finished and the runner went
    await fleet.state.release_runner(busy, long_job.job_id)
    assert await fleet.retire() == ("docs",)
    assert await fleet.pool_names() == []


async def test_a_runner_claimed_after_the_pool_was_listed_is_kept() -> None:
    fleet = Fleet()
    await _used_pool(fleet, runners=2)
    claimed, idle = await fleet.runner_ids("docs")
    fleet.clock.advance(IDLE_S)
    real_list = fleet.pools.list_pool_runners

    async def list_then_a_dispatcher_claims(pool: str) -> Sequence[PoolRunner]:
        runners = await real_list(pool)
        await fleet.state.assign_runner(claimed, JobId(7), fleet.clock.now())
        return runners

    fleet.pools.list_pool_runners = list_then_a_dispatcher_claims  # type: ignore[method-assign]

    assert await fleet.retire() == ()
    assert fleet.pools.calls == [("terminate", (idle,))]
    assert await fleet.runner_ids("docs") == [claimed]
    assert fleet.metrics.count("pool_scale_down_skipped", pool="docs") == 1


async def test_a_job_arriving_while_the_pool_is_retired_keeps_it() -> None:
    fleet = Fleet()
    await _used_pool(fleet)
    fleet.clock.advance(IDLE_S)
    real_terminate = fleet.pools.terminate_runners

    async def terminate_as_a_job_arrives(runner_ids: Sequence[RunnerId]) -> None:
        await real_terminate(runner_ids)
        await fleet.store(make_job(fleet.clock.now()))

    fleet.pools.terminate_runners = terminate_as_a_job_arrives  # type: ignore[method-assign]

    assert await fleet.retire() == ()
    assert await fleet.pool_names() == ["docs"]


async def test_configured_pools_and_ephemeral_pools_without_jobs_are_never_retired() -> None:
    fleet = Fleet()
    configured = PoolConfig(name="fixed", desired_running=1)
    hand_made = PoolConfig(name="handmade", desired_running=3, ephemeral=True)
    for config in (configured, hand_made):
        await fleet.state.put_pool(config)
        await fleet.pools.create_pool_runners(config, 1)
    await fleet.store(make_job(NOW, label="runs-fleet=42/pool=fixed"))
    fleet.clock.advance(10 * IDLE_S)

    assert await fleet.retire() == ()
    assert await fleet.state.list_pools() == [configured, hand_made]
    assert len(await fleet.runner_ids("fixed")) == len(await fleet.runner_ids("handmade")) == 1
    assert fleet.pools.calls == []


async def test_a_pool_whose_backend_fails_is_counted_and_others_still_retire() -> None:
    fleet = Fleet()
    flaky = MemoryPoolProvider(fleet.clock, name="flaky")
    fleet.providers["flaky"] = flaky
    await _used_pool(fleet)
    for name, backend in (("flaky", "flaky"), ("lost", "gone")):
        await fleet.store(make_job(NOW, label=f"runs-fleet=42/pool={name}"))
        config = PoolConfig(name=name, ephemeral=True, backend=backend)
        await fleet.state.put_pool(config)
    await flaky.create_pool_runners(await _config(fleet, "flaky"), 1)
    flaky.fail_next.append(ProviderError("backend unreachable"))
    fleet.clock.advance(IDLE_S + 600)

    assert await fleet.retire() == ("docs",)
    assert await fleet.pool_names() == ["flaky", "lost"]
    assert fleet.metrics.count("ephemeral_pool_errors", pool="flaky", reason="adapter_error") == 1
    assert fleet.metrics.count("ephemeral_pool_errors", pool="lost", reason="unknown_backend") == 1


async def test_a_retired_pool_is_made_again_by_its_next_job() -> None:
    fleet = Fleet()
    await _used_pool(fleet)
    fleet.clock.advance(IDLE_S)
    assert await fleet.retire() == ("docs",)

    assert await fleet.ensure(await fleet.store(make_job(fleet.clock.now()))) is not None
    assert await fleet.pool_names() == ["docs"]
    assert fleet.metrics.count("ephemeral_pools_created", pool="docs") == 2


def test_settings_are_declared_with_their_defaults() -> None:
    assert {s.name: (s.default, s.minimum) for s in SETTINGS} == {
        "RUNS_FLEET_EPHEMERAL_POOL_MAX_SIZE": (10, 0),
        "RUNS_FLEET_EPHEMERAL_POOL_IDLE_S": (IDLE_S, 60),
    }
