"""Warm-pool planning: desired sizes, the rules of ``plan_pool``, and its invariants."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.planning import desired_sizes, plan_pool, schedule_applies
from runs_fleet_core.domain.pool import PoolConfig, PoolPlan, Schedule
from runs_fleet_core.domain.runner import PoolRunner, RunnerPhase

# 2024-06-05 is a Wednesday (weekday 2).
NOW = datetime(2024, 6, 5, 12, 0, tzinfo=UTC)
P = RunnerPhase


def at(weekday: int, hour: int, minute: int = 0) -> datetime:
    """A UTC moment in the week of 2024-06-03 (Monday = 0)."""
    return datetime(2024, 6, 3 + weekday, hour, minute, tzinfo=UTC)


def runner(rid: str, phase: RunnerPhase, idle_min: float | None = 60.0) -> PoolRunner:
    idle = None if idle_min is None else NOW - timedelta(minutes=idle_min)
    return PoolRunner(runner_id=RunnerId(rid), pool="p", phase=phase, idle_since=idle)


def ids(*names: str) -> tuple[RunnerId, ...]:
    return tuple(RunnerId(n) for n in names)


def pool(running: int = 0, stopped: int = 0, **kw: object) -> PoolConfig:
    return PoolConfig(name="p", desired_running=running, desired_stopped=stopped, **kw)  # type: ignore[arg-type]


# -- desired sizes ----------------------------------------------------------------------

WEEKDAY_9_TO_17 = Schedule(
    weekdays=(0, 1, 2, 3, 4), start_hour=9, end_hour=17, desired_running=5, desired_stopped=2
)
FRIDAY_NIGHT = Schedule(
    weekdays=(4,), start_hour=22, end_hour=6, desired_running=7, desired_stopped=3
)

SIZE_CASES = [
    ("no schedule uses the pool's sizes", pool(1, 2), at(2, 12), None, (1, 2)),
    (
        "matching weekday and hour",
        pool(1, 2, schedules=(WEEKDAY_9_TO_17,)),
        at(2, 12),
        None,
        (5, 2),
    ),
    ("start hour is inclusive", pool(1, 2, schedules=(WEEKDAY_9_TO_17,)), at(2, 9), None, (5, 2)),
    ("end hour is exclusive", pool(1, 2, schedules=(WEEKDAY_9_TO_17,)), at(2, 17), None, (1, 2)),
    ("weekday mismatch", pool(1, 2, schedules=(WEEKDAY_9_TO_17,)), at(5, 12), None, (1, 2)),
    (
        "wrap: evening of the start day",
        pool(1, 1, schedules=(FRIDAY_NIGHT,)),
        at(4, 23),
        None,
        (7, 3),
    ),
    (
        "wrap: early hours of the next day",
        pool(1, 1, schedules=(FRIDAY_NIGHT,)),
        at(5, 5),
        None,
        (7, 3),
    ),
    ("wrap: end hour exclusive", pool(1, 1, schedules=(FRIDAY_NIGHT,)), at(5, 6), None, (1, 1)),
    (
        "wrap: early hours belong to the previous day",
        pool(1, 1, schedules=(FRIDAY_NIGHT,)),
        at(4, 5),
        None,
        (1, 1),
    ),
    (
        "wrap: evening of a day not listed",
        pool(1, 1, schedules=(FRIDAY_NIGHT,)),
        at(5, 23),
        None,
        (1, 1),
    ),
    (
        "wrap: Sunday night into Monday",
        pool(
            0, 0, schedules=(Schedule(weekdays=(6,), start_hour=20, end_hour=2, desired_running=4),)
        ),
        at(0, 1),
        None,
        (4, 0),
    ),
    (
        "end hour 24 covers the last hour",
        pool(0, 0, schedules=(Schedule(start_hour=18, end_hour=24, desired_running=2),)),
        at(3, 23, 59),
        None,
        (2, 0),
    ),
    (
        "an empty window never matches",
        pool(1, 0, schedules=(Schedule(start_hour=8, end_hour=8, desired_running=9),)),
        at(2, 8),
        None,
        (1, 0),
    ),
    (
        "the first matching schedule wins",
        pool(
            0,
            0,
            schedules=(Schedule(start_hour=0, end_hour=24, desired_running=3), WEEKDAY_9_TO_17),
        ),
        at(2, 12),
        None,
        (3, 0),
    ),
    (
        "a later schedule applies when earlier ones do not",
        pool(0, 0, schedules=(FRIDAY_NIGHT, WEEKDAY_9_TO_17)),
        at(2, 12),
        None,
        (5, 2),
    ),
    (
        "now is converted to UTC",
        pool(1, 2, schedules=(WEEKDAY_9_TO_17,)),
        datetime(2024, 6, 5, 1, 0, tzinfo=timezone(timedelta(hours=-10))),
        None,
        (5, 2),
    ),
    ("ephemeral without demand runs nothing", pool(5, 2, ephemeral=True), NOW, None, (0, 0)),
    ("ephemeral follows demand", pool(5, 2, ephemeral=True), NOW, 3, (3, 0)),
    ("ephemeral demand is capped", pool(5, 2, ephemeral=True), NOW, 9, (5, 0)),
    (
        "ephemeral cap comes from the schedule",
        pool(1, 0, ephemeral=True, schedules=(WEEKDAY_9_TO_17,)),
        at(2, 12),
        9,
        (5, 0),
    ),
    ("demand is ignored for fixed pools", pool(1, 2), NOW, 9, (1, 2)),
]


@pytest.mark.parametrize(
    ("config", "now", "demand", "expected"),
    [c[1:] for c in SIZE_CASES],
    ids=[c[0] for c in SIZE_CASES],
)
def test_desired_sizes(
    config: PoolConfig, now: datetime, demand: int | None, expected: tuple[int, int]
) -> None:
    assert desired_sizes(config, now, demand=demand) == expected


# -- plan rules ---------------------------------------------------------------------------

PLAN_CASES = [
    (
        "empty pool is filled",
        pool(2, 1),
        [],
        set(),
        PoolPlan(pool="p", create_running=2, create_stopped=1),
    ),
    (
        "at size does nothing",
        pool(1, 1),
        [runner("a", P.RUNNING), runner("b", P.STOPPED)],
        set(),
        PoolPlan(pool="p"),
    ),
    (
        "stopped runners start before new ones are created",
        pool(3, 1),
        [runner("s1", P.STOPPED)],
        set(),
        PoolPlan(pool="p", start=ids("s1"), create_running=2, create_stopped=1),
    ),
    (
        "the longest stopped starts first",
        pool(1, 1),
        [runner("new", P.STOPPED, 5), runner("old", P.STOPPED, 50)],
        set(),
        PoolPlan(pool="p", start=ids("old")),
    ),
    (
        "unknown idle_since counts as the longest stopped",
        pool(1, 1),
        [runner("old", P.STOPPED, 50), runner("nodate", P.STOPPED, None)],
        set(),
        PoolPlan(pool="p", start=ids("nodate")),
    ),
    (
        "only runners past the idle timeout scale down",
        pool(0, 0, idle_timeout_s=600),
        [runner("fresh", P.RUNNING, 5), runner("old", P.RUNNING, 11)],
        set(),
        PoolPlan(pool="p", terminate=ids("old")),
    ),
    (
        "idle exactly the timeout is eligible",
        pool(0, 0, idle_timeout_s=600),
        [runner("a", P.RUNNING, 10)],
        set(),
        PoolPlan(pool="p", terminate=ids("a")),
    ),
    (
        "unknown idle_since is eligible for scale-down",
        pool(0, 0),
        [runner("a", P.RUNNING, None)],
        set(),
        PoolPlan(pool="p", terminate=ids("a")),
    ),
    (
        "longest idle scale down first",
        pool(1, 0),
        [runner("a", P.RUNNING, 20), runner("b", P.RUNNING, 90), runner("c", P.RUNNING, 40)],
        set(),
        PoolPlan(pool="p", terminate=ids("b", "c")),
    ),
    (
        "scale-down stops while stopped is short, then terminates",
        pool(0, 1),
        [runner("a", P.RUNNING, 20), runner("b", P.RUNNING, 90)],
        set(),
        PoolPlan(pool="p", stop=ids("b"), terminate=ids("a")),
    ),
    (
        "scale-down terminates when stopped is full",
        pool(0, 1),
        [runner("a", P.RUNNING, 20), runner("s", P.STOPPED)],
        set(),
        PoolPlan(pool="p", terminate=ids("a")),
    ),
    (
        "too many stopped: the longest stopped go",
        pool(0, 1),
        [runner("s1", P.STOPPED, 5), runner("s2", P.STOPPED, 500), runner("s3", P.STOPPED, 50)],
        set(),
        PoolPlan(pool="p", terminate=ids("s2", "s3")),
    ),
    (
        "starting refills stopped and terminates no started runner",
        pool(2, 1),
        [runner("s1", P.STOPPED, 5), runner("s2", P.STOPPED, 500), runner("s3", P.STOPPED, 50)],
        set(),
        PoolPlan(pool="p", start=ids("s2", "s3")),
    ),
    (
        "pending counts as idle running",
        pool(2, 0),
        [runner("a", P.PENDING, None), runner("b", P.RUNNING)],
        set(),
        PoolPlan(pool="p"),
    ),
    (
        "pending is never scaled down",
        pool(0, 0),
        [runner("a", P.PENDING, None), runner("b", P.PENDING, 90)],
        set(),
        PoolPlan(pool="p"),
    ),
    (
        "unknown phase is not counted nor touched",
        pool(1, 0),
        [runner("u", P.UNKNOWN, None)],
        set(),
        PoolPlan(pool="p", create_running=1),
    ),
    (
        "stopping counts as stopped but is never touched",
        pool(0, 0),
        [runner("x", P.STOPPING)],
        set(),
        PoolPlan(pool="p"),
    ),
    (
        "stopping fills the stopped size",
        pool(0, 1),
        [runner("x", P.STOPPING), runner("s", P.STOPPED)],
        set(),
        PoolPlan(pool="p", terminate=ids("s")),
    ),
    (
        "terminated runners are ignored",
        pool(1, 1),
        [runner("t1", P.TERMINATED), runner("t2", P.TERMINATED)],
        set(),
        PoolPlan(pool="p", create_running=1, create_stopped=1),
    ),
    (
        "assigned runners are not counted",
        pool(1, 1),
        [runner("busy", P.RUNNING), runner("claimed", P.STOPPED)],
        {"busy", "claimed"},
        PoolPlan(pool="p", create_running=1, create_stopped=1),
    ),
    (
        "a claimed stopped runner is neither started nor terminated",
        pool(1, 0),
        [runner("claimed", P.STOPPED, 500)],
        {"claimed"},
        PoolPlan(pool="p", create_running=1),
    ),
    (
        "ephemeral: no demand scales everything idle down",
        pool(4, 0, ephemeral=True),
        [runner("a", P.RUNNING), runner("s", P.STOPPED)],
        set(),
        PoolPlan(pool="p", terminate=ids("a", "s")),
    ),
]


@pytest.mark.parametrize(
    ("config", "runners", "assigned", "expected"),
    [c[1:] for c in PLAN_CASES],
    ids=[c[0] for c in PLAN_CASES],
)
def test_plan_rules(
    config: PoolConfig, runners: list[PoolRunner], assigned: set[str], expected: PoolPlan
) -> None:
    plan = plan_pool(config, runners, {RunnerId(a) for a in assigned}, NOW)
    assert plan == expected


@pytest.mark.parametrize(
    ("demand", "expected"),
    [
        (1, PoolPlan(pool="p", start=ids("s2"), terminate=ids("s1", "s3"))),
        (3, PoolPlan(pool="p", start=ids("s1", "s2", "s3"))),
        (9, PoolPlan(pool="p", start=ids("s1", "s2", "s3"), create_running=1)),
    ],
)
def test_ephemeral_pool_starts_stopped_runners_for_demand_up_to_the_cap(
    demand: int, expected: PoolPlan
) -> None:
    config = pool(4, 3, ephemeral=True)
    stopped = [runner("s1", P.STOPPED, 5), runner("s2", P.STOPPED, 50), runner("s3", P.STOPPED, 20)]
    assert plan_pool(config, stopped, set(), NOW, demand=demand) == expected


@pytest.mark.parametrize("phase", list(RunnerPhase))
@pytest.mark.parametrize("config", [pool(0, 0), pool(5, 5), pool(0, 0, ephemeral=True)])
def test_assigned_runner_of_any_phase_is_never_touched(
    phase: RunnerPhase, config: PoolConfig
) -> None:
    runners = [runner("busy", phase, None), runner("idle", P.RUNNING, 999)]
    plan = plan_pool(config, runners, {RunnerId("busy")}, NOW)
    assert RunnerId("busy") not in plan.start + plan.stop + plan.terminate


def test_plan_does_not_depend_on_listing_order() -> None:
    runners = [
        runner(f"r{i}", phase, i * 7.0)
        for i, phase in enumerate(
            [P.RUNNING, P.STOPPED, P.RUNNING, P.PENDING, P.STOPPED, P.RUNNING, P.STOPPED]
        )
    ]
    config = pool(1, 1)
    expected = plan_pool(config, runners, set(), NOW)
    shuffled = list(runners)
    for seed in range(20):
        random.Random(seed).shuffle(shuffled)
        assert plan_pool(config, shuffled, set(), NOW) == expected


def test_a_runner_listed_twice_is_planned_once() -> None:
    config = pool(0, 0)
    plan = plan_pool(config, [runner("a", P.RUNNING), runner("a", P.RUNNING)], set(), NOW)
    assert plan == PoolPlan(pool="p", terminate=ids("a"))


# -- properties -----------------------------------------------------------------------------

PHASES = list(RunnerPhase)
schedules = st.builds(
    Schedule,
    weekdays=st.lists(st.integers(0, 6), max_size=7, unique=True).map(tuple),
    start_hour=st.integers(0, 24),
    end_hour=st.integers(0, 24),
    desired_running=st.integers(0, 6),
    desired_stopped=st.integers(0, 6),
)
configs = st.builds(
    PoolConfig,
    name=st.just("p"),
    desired_running=st.integers(0, 6),
    desired_stopped=st.integers(0, 6),
    idle_timeout_s=st.integers(0, 3600),
    schedules=st.lists(schedules, max_size=3).map(tuple),
    ephemeral=st.booleans(),
)
moments = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
)


@st.composite
def situations(
    draw: st.DrawFn,
) -> tuple[PoolConfig, list[PoolRunner], set[RunnerId], datetime, int | None]:
    now = draw(moments)
    count = draw(st.integers(0, 12))
    runners = []
    for i in range(count):
        offset = draw(st.none() | st.integers(-600, 7200))
        idle = None if offset is None else now - timedelta(seconds=offset)
        runners.append(
            PoolRunner(
                runner_id=RunnerId(f"r{i:02}"),
                pool="p",
                phase=draw(st.sampled_from(PHASES)),
                idle_since=idle,
            )
        )
    assigned = {r.runner_id for r in runners if draw(st.booleans())}
    demand = draw(st.none() | st.integers(-1, 10))
    return draw(configs), runners, assigned, now, demand


def simulate(runners: Sequence[PoolRunner], plan: PoolPlan) -> dict[str, RunnerPhase]:
    """The pool's phases once every action of ``plan`` has taken effect."""
    phases: dict[str, RunnerPhase] = {
        r.runner_id: r.phase for r in runners if r.phase is not P.TERMINATED
    }
    phases.update(dict.fromkeys(plan.start, P.RUNNING))
    phases.update(dict.fromkeys(plan.stop, P.STOPPED))
    for rid in plan.terminate:
        del phases[rid]
    phases.update({f"new-run-{i}": P.RUNNING for i in range(plan.create_running)})
    phases.update({f"new-stop-{i}": P.STOPPED for i in range(plan.create_stopped)})
    return phases


def idle_counts(phases: dict[str, RunnerPhase], assigned: set[RunnerId]) -> tuple[int, int]:
    free = [p for rid, p in phases.items() if rid not in assigned]
    return (
        sum(p in (P.RUNNING, P.PENDING) for p in free),
        sum(p in (P.STOPPED, P.STOPPING) for p in free),
    )


def scale_down_eligible(
    runners: Sequence[PoolRunner], assigned: set[RunnerId], config: PoolConfig, now: datetime
) -> int:
    return sum(
        r.runner_id not in assigned
        and r.phase is P.RUNNING
        and (r.idle_since is None or (now - r.idle_since).total_seconds() >= config.idle_timeout_s)
        for r in runners
    )


@settings(max_examples=1000, deadline=None)
@given(situations())
def test_plan_invariants(
    situation: tuple[PoolConfig, list[PoolRunner], set[RunnerId], datetime, int | None],
) -> None:
    config, runners, assigned, now, demand = situation
    plan = plan_pool(config, runners, assigned, now, demand=demand)
    named = plan.start + plan.stop + plan.terminate

    assert not assigned.intersection(named)  # (a) busy runners are untouched
    assert len(named) == len(set(named))  # (b) one action per runner
    assert set(named) <= {r.runner_id for r in runners}  # (d) only known runners
    assert all(t == tuple(sorted(t)) for t in (plan.start, plan.stop, plan.terminate))

    # (c) the plan reaches the desired sizes wherever enough runners may be acted on
    want_running, want_stopped = desired_sizes(config, now, demand=demand)
    before_running, _ = idle_counts({r.runner_id: r.phase for r in runners}, assigned)
    stuck = max(
        before_running - want_running - scale_down_eligible(runners, assigned, config, now), 0
    )
    in_transit = sum(r.runner_id not in assigned and r.phase is P.STOPPING for r in runners)
    after = idle_counts(simulate(runners, plan), assigned)
    assert after == (want_running + stuck, max(want_stopped, in_transit))


@settings(max_examples=300, deadline=None)
@given(situations())
def test_replanning_after_a_plan_creates_nothing(
    situation: tuple[PoolConfig, list[PoolRunner], set[RunnerId], datetime, int | None],
) -> None:
    config, runners, assigned, now, demand = situation
    phases = simulate(runners, plan_pool(config, runners, assigned, now, demand=demand))
    settled = [
        PoolRunner(runner_id=RunnerId(rid), pool="p", phase=phase, idle_since=now)
        for rid, phase in phases.items()
    ]
    again = plan_pool(config, settled, assigned, now, demand=demand)
    assert (again.start, again.create_running, again.create_stopped) == ((), 0, 0)


def hours_covered(schedule: Schedule) -> set[tuple[int, int]]:
    """Oracle: every (weekday, hour) a schedule covers, expanded hour by hour."""
    covered = set()
    for day in schedule.weekdays:
        if schedule.start_hour < schedule.end_hour:
            covered |= {(day, h) for h in range(schedule.start_hour, schedule.end_hour)}
        elif schedule.start_hour > schedule.end_hour:
            covered |= {(day, h) for h in range(schedule.start_hour, 24)}
            covered |= {((day + 1) % 7, h) for h in range(schedule.end_hour)}
    return covered


@settings(max_examples=500, deadline=None)
@given(schedules, moments)
def test_schedule_window_matches_hour_by_hour_expansion(schedule: Schedule, now: datetime) -> None:
    assert schedule_applies(schedule, now) == ((now.weekday(), now.hour) in hours_covered(schedule))
