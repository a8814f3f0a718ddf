"""How many runners an ephemeral pool should keep warm, judged from its recent jobs.

An ephemeral pool has no size of its own: it keeps started about as many idle runners
as it has recently needed at once. "Recently needed" is a pure function of the pool's
job records and ``now``, so the sizing rule can be tested exhaustively:

Active
    A job is active from its ``created_at`` (when runs-fleet first saw it queued) until
    it entered a final status (completed, failed, rejected, cancelled). A job that is
    not final is active until now, wherever it is (queued, launching, running,
    requeued): it holds or waits for a runner either way. A job never finalised because
    its last webhook was lost therefore counts until its record is settled
    (housekeeping reports such stuck jobs).

Samples
    The number of active jobs is sampled at ``now`` and every minute before it, 60
    samples covering the last hour. A job is counted at instant ``t`` when
    ``created_at <= t < end``. A job that began before the hour and is still running
    counts in every sample; one that ended before the hour counts in none. A burst of
    ``k`` whole minutes inside the hour covers exactly ``k`` sample instants wherever
    it falls, so the result does not depend on how a burst lines up with the minute
    grid.

Demand: the 90th percentile of the samples
    The level the concurrency reached in at least one sample in ten: sorted from
    highest, the ``ceil(n / 10)``-th sample (the 6th highest of 60). Equivalently,
    nearest-rank with the rank ``floor(0.9 n) + 1`` in ascending order, i.e. a rank that
    falls exactly on a sample (``0.9 n`` whole) is rounded *up* to the next one. The
    textbook nearest rank (``ceil(0.9 n)``) would size a pool that was busy with 5 jobs
    for exactly 6 minutes of the hour at 0, so the next burst of such a team would
    cold-start every job; with this rule a pool busy for a tenth of the hour or more
    keeps its burst size warm, and one busy for less (5 minutes of 60) keeps nothing.
    Short spikes are ignored; regular use is served.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from runs_fleet_core.domain.job import Job

WINDOW = timedelta(hours=1)
"""How far back demand looks."""
SAMPLE_STEP = timedelta(minutes=1)
"""Time between two samples: ``WINDOW / SAMPLE_STEP`` samples (60)."""
PERCENT = 90
"""The percentile of the samples that sizes a pool."""


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def active_span(job: Job) -> tuple[datetime, datetime | None]:
    """``(start, end)`` of the time ``job`` was active, ``end`` exclusive; ``end`` is
    ``None`` while the job is not final.

    A final job's end is when it last entered its final status; a record without that
    timeline entry ends at its latest entry, and never before it started.
    """
    start = _utc(job.created_at)
    if not job.final:
        return start, None
    ended = job.entered(job.status)
    if ended is None:
        ended = max((change.at for change in job.timeline), default=start, key=_utc)
    return start, max(start, _utc(ended))


def concurrency_samples(
    jobs: Iterable[Job],
    now: datetime,
    *,
    window: timedelta = WINDOW,
    step: timedelta = SAMPLE_STEP,
) -> tuple[int, ...]:
    """How many of ``jobs`` were active at each sample instant, oldest first.

    The instants are ``now - k * step`` for ``k`` from ``window // step - 1`` down to 0
    (60 of them by default, the last one ``now`` itself).
    """
    count = window // step
    if count < 1:
        raise ValueError(f"a window of {window} holds no sample every {step}")
    spans = [active_span(job) for job in jobs]
    end_of_window = _utc(now)
    instants = [end_of_window - k * step for k in range(count - 1, -1, -1)]
    return tuple(
        sum(1 for start, end in spans if start <= t and (end is None or t < end)) for t in instants
    )


def percentile(samples: Sequence[int], percent: int = PERCENT) -> int:
    """The ``percent``-th percentile of ``samples`` by the rule of this module: the
    ``ceil(n * (100 - percent) / 100)``-th highest sample (at least the first), i.e.
    nearest rank with an exact rank rounded up. 0 when there are no samples."""
    if not 0 <= percent <= 100:
        raise ValueError(f"a percentile must be between 0 and 100, not {percent}")
    if not samples:
        return 0
    from_top = max(-(-len(samples) * (100 - percent) // 100), 1)
    return sorted(samples, reverse=True)[from_top - 1]


def recent_demand(jobs: Iterable[Job], now: datetime) -> int:
    """The runners a pool with these ``jobs`` needs at once: the 90th percentile of its
    concurrency over the last hour (see the module docstring)."""
    return percentile(concurrency_samples(jobs, now))


def last_activity(jobs: Iterable[Job]) -> datetime | None:
    """The latest moment any of ``jobs`` was created or changed status (``None`` when
    there are none): when the pool was last asked for, started on or finished with."""
    moments: list[datetime] = []
    for job in jobs:
        moments.append(_utc(job.created_at))
        moments.extend(_utc(change.at) for change in job.timeline)
    return max(moments, default=None)
