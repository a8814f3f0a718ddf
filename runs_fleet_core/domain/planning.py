"""Deciding what to do to a warm pool, as a pure function of what is observed.

Keeping the decision free of I/O makes the rules that protect busy runners testable
exhaustively (the reconcile use case only executes what this returns). The rules:

Desired sizes (:func:`desired_sizes`)
    The first :class:`Schedule` whose window contains ``now`` (taken in UTC; a naive
    ``now`` is read as UTC) gives ``(desired_running, desired_stopped)``; otherwise the
    pool's own. A window is ``[start_hour, end_hour)`` on each of its ``weekdays``. When
    ``start_hour > end_hour`` it wraps past midnight and belongs to the weekday it
    *started* on: ``weekdays=(4,)``, 22→6 covers Friday 22:00 to Saturday 06:00. A window
    with ``start_hour == end_hour`` is empty. Ephemeral pools keep nothing stopped and run
    ``min(demand, desired_running)`` (``None`` or negative demand counts as 0).

Which runners the plan may touch
    * A runner in ``assigned`` holds a job: never started, stopped or terminated, and not
      counted, whatever its phase (a sweep once terminated stopped instances that were
      claimed but not yet started).
    * ``TERMINATED`` runners are ignored entirely; ``UNKNOWN`` ones are left alone and
      not counted.
    * Idle running = unassigned ``RUNNING`` or ``PENDING`` (booting).
      Idle stopped = unassigned ``STOPPED``, plus unassigned ``STOPPING`` (in transit:
      counted so that the next pass does not create a spare while one is being stopped,
      but never acted on).
    * ``PENDING`` runners are never scaled down (they are still booting; EC2 cannot stop
      a pending instance); they become eligible once ``RUNNING``.

Too few idle running
    Start idle stopped runners first, longest stopped first (``idle_since`` oldest; an
    unknown ``idle_since`` counts as the oldest); create the rest running. Every start
    lowers the stopped count, which the stopped rule below refills.

Too many idle running
    Only ``RUNNING`` runners idle for at least ``idle_timeout_s`` are scaled down (an
    unknown ``idle_since`` is treated as idle forever, hence eligible), longest idle
    first. Each is stopped while the stopped count is below its desired size, else
    terminated.

Stopped count
    Too few: create the rest stopped. Too many: terminate the excess among ``STOPPED``
    runners not being started, longest stopped first.

Every tuple in the plan is sorted by runner id so that equal situations give equal plans.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.pool import PoolConfig, PoolPlan, Schedule
from runs_fleet_core.domain.runner import PoolRunner, RunnerPhase

_RUNNING_PHASES = frozenset({RunnerPhase.RUNNING, RunnerPhase.PENDING})
_STOPPED_PHASES = frozenset({RunnerPhase.STOPPED, RunnerPhase.STOPPING})


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def schedule_applies(schedule: Schedule, now: datetime) -> bool:
    """Whether ``now`` (UTC) falls inside ``schedule``'s window.

    A wrapping window (``start_hour > end_hour``) belongs to the weekday it started on,
    so its early-morning hours match when the *previous* day is in ``weekdays``.
    """
    moment = _utc(now)
    weekday, hour = moment.weekday(), moment.hour
    start, end = schedule.start_hour, schedule.end_hour
    if start < end:
        return weekday in schedule.weekdays and start <= hour < end
    if start > end:
        started_today = weekday in schedule.weekdays and hour >= start
        started_yesterday = (weekday - 1) % 7 in schedule.weekdays and hour < end
        return started_today or started_yesterday
    return False


def desired_sizes(
    config: PoolConfig, now: datetime, *, demand: int | None = None
) -> tuple[int, int]:
    """The ``(running, stopped)`` idle sizes ``config`` asks for at ``now``.

    The first matching schedule wins over the pool's own sizes. For an ephemeral pool
    the running size is ``demand`` capped by the desired running size, and nothing is
    kept stopped.
    """
    running, stopped = config.desired_running, config.desired_stopped
    for schedule in config.schedules:
        if schedule_applies(schedule, now):
            running, stopped = schedule.desired_running, schedule.desired_stopped
            break
    running, stopped = max(running, 0), max(stopped, 0)
    if config.ephemeral:
        return min(max(demand or 0, 0), running), 0
    return running, stopped


def _oldest_first(runners: Iterable[PoolRunner]) -> list[PoolRunner]:
    """Longest idle first: unknown ``idle_since`` first, then oldest, ties by id."""

    def key(runner: PoolRunner) -> tuple[int, float, str]:
        if runner.idle_since is None:
            return (0, 0.0, runner.runner_id)
        return (1, _utc(runner.idle_since).timestamp(), runner.runner_id)

    return sorted(runners, key=key)


def _idle_long_enough(runner: PoolRunner, now: datetime, timeout_s: int) -> bool:
    if runner.idle_since is None:
        return True
    return (_utc(now) - _utc(runner.idle_since)).total_seconds() >= timeout_s


def _ids(runners: Iterable[PoolRunner]) -> tuple[RunnerId, ...]:
    return tuple(sorted(r.runner_id for r in runners))


def _unassigned(runners: Sequence[PoolRunner], assigned: AbstractSet[RunnerId]) -> list[PoolRunner]:
    """Runners free of any job, not terminated; a runner listed twice counts once."""
    free: dict[RunnerId, PoolRunner] = {}
    for runner in runners:
        if runner.runner_id not in assigned and runner.phase is not RunnerPhase.TERMINATED:
            free.setdefault(runner.runner_id, runner)
    return list(free.values())


def count_idle(runners: Sequence[PoolRunner], assigned: AbstractSet[RunnerId]) -> tuple[int, int]:
    """How many runners are idle ``(running, stopped)`` by the rules above: what the
    plan compares with the desired sizes (``PENDING`` counts as running, ``STOPPING``
    as stopped; assigned, ``UNKNOWN`` and ``TERMINATED`` runners are not counted)."""
    free = _unassigned(runners, assigned)
    running = sum(1 for r in free if r.phase in _RUNNING_PHASES)
    stopped = sum(1 for r in free if r.phase in _STOPPED_PHASES)
    return running, stopped


def _scale_down(
    running: Sequence[PoolRunner],
    excess: int,
    stopped_count: int,
    want_stopped: int,
    config: PoolConfig,
    now: datetime,
) -> tuple[list[PoolRunner], list[PoolRunner]]:
    """Up to ``excess`` idle-long-enough RUNNING runners to stop (while the stopped
    count is short) or terminate, longest idle first."""
    eligible = _oldest_first(
        r
        for r in running
        if r.phase is RunnerPhase.RUNNING and _idle_long_enough(r, now, config.idle_timeout_s)
    )
    stop: list[PoolRunner] = []
    terminate: list[PoolRunner] = []
    for runner in eligible[:excess]:
        if stopped_count + len(stop) < want_stopped:
            stop.append(runner)
        else:
            terminate.append(runner)
    return stop, terminate


def plan_pool(
    config: PoolConfig,
    runners: Sequence[PoolRunner],
    assigned: AbstractSet[RunnerId],
    now: datetime,
    *,
    demand: int | None = None,
) -> PoolPlan:
    """What to start, stop, terminate and create so ``config``'s pool reaches its sizes.

    ``runners`` is what the provider lists for the pool; ``assigned`` the ids the
    StateStore says hold a job (those never appear in the plan). ``demand`` sizes an
    ephemeral pool. See the module docstring for the rules.
    """
    want_running, want_stopped = desired_sizes(config, now, demand=demand)
    free = _unassigned(runners, assigned)
    running = [r for r in free if r.phase in _RUNNING_PHASES]
    stopped = _oldest_first(r for r in free if r.phase is RunnerPhase.STOPPED)
    stopped_count = sum(1 for r in free if r.phase in _STOPPED_PHASES)

    start: list[PoolRunner] = []
    stop: list[PoolRunner] = []
    terminate: list[PoolRunner] = []
    create_running = 0
    if len(running) < want_running:
        start = stopped[: want_running - len(running)]
        create_running = want_running - len(running) - len(start)
        stopped_count -= len(start)
    elif len(running) > want_running:
        excess = len(running) - want_running
        stop, terminate = _scale_down(running, excess, stopped_count, want_stopped, config, now)
        stopped_count += len(stop)

    if stopped_count > want_stopped:
        terminate += stopped[len(start) :][: stopped_count - want_stopped]

    return PoolPlan(
        pool=config.name,
        start=_ids(start),
        stop=_ids(stop),
        terminate=_ids(terminate),
        create_running=create_running,
        create_stopped=max(want_stopped - stopped_count, 0),
    )
