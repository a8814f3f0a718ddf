"""What runs-fleet did with a job and what happens next, in plain words.

``runs-fleet jobs why`` prints this for the record it reads from the server: one story
per status (a headline, then sentences with the recorded reasons and errors quoted on
lines of their own) and the job's timeline relative to when it was queued. It works on
the core's :class:`Job`, so it can be tested without a server and knows nothing of HTTP.

Some reasons are worded by the dispatcher ("attempt N failed, retrying: …",
"dead-lettered, gave up after N attempts: …"); they are recognised by those words, and
any other reason is quoted as it was recorded.
"""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, datetime, timedelta

from runs_fleet_core.domain.job import Job, JobStatus

TEXT_WIDTH = 100
DISCOVERED = "discovered-"
RETRYING = re.compile(r"attempt (\d+) failed, retrying: (.*)", re.DOTALL)
DEAD_LETTERED = re.compile(r"dead-lettered, gave up after (\d+) attempts: (.*)", re.DOTALL)

_S = JobStatus


def explain(job: Job, now: datetime, *, width: int = TEXT_WIDTH) -> str:
    """What runs-fleet did with ``job`` and what happens next, as of ``now``: a headline,
    a paragraph (errors and reasons quoted on lines of their own, never wrapped, so they
    can be searched for and copied), and the timeline."""
    headline, parts = _STORIES[job.status](job, now)
    if (job.delivery_id or "").startswith(DISCOVERED):
        parts = [
            "runs-fleet found this job among the jobs GitHub held queued: its queued "
            "webhook never arrived.",
            *parts,
        ]
    attempt = f", attempt {job.attempt}" if job.attempt > 1 else ""
    lines = [f"job {job.job_id} of {job.repository} (run {job.run_id}){attempt}: {headline}"]
    prose: list[str] = []
    for part in [*parts, _Quote()]:  # the empty quote at the end flushes the prose
        if not isinstance(part, _Quote):
            prose.append(part)
            continue
        wrapped = " ".join(prose)
        lines += textwrap.wrap(wrapped, width, break_long_words=False, break_on_hyphens=False)
        lines += [f"    {part}"] if part else []
        prose = []
    return "\n".join([*lines, "", *timeline(job, now)]) + "\n"


def timeline(job: Job, now: datetime) -> list[str]:
    """The job's status changes, each at its offset from the first one; the latest
    claim, launch and start name the worker and runner (the record keeps only those)."""
    if not job.timeline:
        return ["no status changes recorded"]
    start = job.timeline[0].at
    lines = [f"timeline (UTC, from {_clock(start, now, day=True)}):"]
    last = {change.status: i for i, change in enumerate(job.timeline)}
    requeued = last.get(_S.REQUEUED, -1)
    for i, change in enumerate(job.timeline):
        text, latest = change.status.value, last[change.status] == i
        if change.status is _S.CLAIMED and latest and job.claim_owner:
            text += f" by {job.claim_owner}"
            if job.claim_expires_at:
                text += f" (claim until {_clock(job.claim_expires_at, now)})"
        elif change.status is _S.LAUNCHING and latest and i > requeued and job.runner_name:
            text += f" {_runner(job)}"
        elif change.status is _S.RUNNING and latest and (job.observed_runner or job.runner_name):
            text += f" on {job.observed_runner or job.runner_name}"
        if change.reason:
            text += f": {change.reason}"
        lines.append(f"  {'+' + span(change.at - start):>8}  {text}")
    return lines


# -- one story per status: a headline, and sentences with the quotes among them ----------


class _Quote(str):
    """A recorded reason or error, printed as it is on a line of its own."""


_Story = tuple[str, list[str]]


def _rejected(job: Job, now: datetime) -> _Story:
    return "rejected", [
        f"runs-fleet refused it {_ago(job.entered(_S.REJECTED), now)}, when GitHub queued "
        "it, and will start no runner for it. The reason:",
        _reason(job),
        "Change the runs-on label as it says and re-run the job; 'runs-fleet labels explain "
        "LABEL' checks a label before you push.",
    ]


def _queued(job: Job, now: datetime) -> _Story:
    since = job.entered(_S.QUEUED) or job.created_at
    reason = _reason(job, missing="")
    if retrying := RETRYING.fullmatch(reason):
        attempt, error = retrying.groups()
        return "queued, waiting to be retried", [
            f"Dispatch attempt {attempt} failed {_ago(since, now)} and the job waits in the "
            "queue to be tried again; the worker backs off between attempts, for at most a "
            "few minutes. The error was:",
            _Quote(error),
            "If the next attempts fail too, runs-fleet gives up after RUNS_FLEET_MAX_ATTEMPTS "
            "attempts and dead-letters the job.",
        ]
    if dead := DEAD_LETTERED.fullmatch(reason):
        attempts, error = dead.groups()
        return "queued, but given up on (dead-lettered)", [
            f"runs-fleet gave up on it {_ago(since, now)} after "
            f"{_count(int(attempts), 'failed dispatch attempt')} and moved its message to the "
            "dead-letter queue: it will not get a runner unless an operator redrives the "
            "dead letter to the job queue or the job is re-run in GitHub. The last error was:",
            _Quote(error),
        ]
    parts = [
        f"It has waited {span(now - since, precise=False)} for a worker to take it (queued "
        f"at {_clock(since, now)} UTC)."
    ]
    if job.enqueued_at is None and job.spec is not None:
        parts.append(
            "Its message has not reached the queue yet; the scheduler sends it again once the "
            "job is a minute old."
        )
    parts += ["The last note on it:", reason] if reason else []
    return "queued", parts + _overdue(job, since, now)


def _claimed(job: Job, now: datetime) -> _Story:
    since = job.entered(_S.CLAIMED) or job.created_at
    backend = f" on {job.backend}" if job.backend else ""
    parts = [
        f"Worker {job.claim_owner or '(unnamed)'} claimed it {_ago(since, now)} and is getting "
        f"it a runner{backend}; none has been created yet."
    ]
    if job.claim_expires_at and job.claim_expires_at <= now:
        parts.append(
            f"The claim expired at {_clock(job.claim_expires_at, now)} UTC, so that worker may "
            "have stopped; another worker takes the job over when its message is delivered "
            "again."
        )
    elif job.claim_expires_at:
        parts.append(f"The claim holds until {_clock(job.claim_expires_at, now)} UTC.")
    return "claimed", _history(job) + parts + _overdue(job, since, now)


def _launching(job: Job, now: datetime) -> _Story:
    since = job.entered(_S.LAUNCHING) or job.created_at
    if job.runner_id is None:
        launch = (
            f"runs-fleet has been creating runner {_runner(job)} for "
            f"{span(now - since, precise=False)}; the backend has not given its id yet."
        )
    else:
        launch = (
            f"Runner {_runner(job)} was launched for it {_ago(since, now)} (at "
            f"{_clock(since, now)} UTC) and has not registered with GitHub yet: GitHub has not "
            "reported the job in progress."
        )
    return "launching", [*_history(job), launch, *_overdue(job, since, now)]


def _running(job: Job, now: datetime) -> _Story:
    since = job.entered(_S.RUNNING) or job.created_at
    queued = job.timeline[0].at if job.timeline else since
    when = (
        f"for {span(now - since, precise=False)} (since {_clock(since, now)} UTC); it started "
        f"{span(since - queued)} after it was queued."
    )
    launched, observed = job.runner_name, job.observed_runner
    if observed and launched and observed != launched:
        parts = [
            f"It has been running on {observed} {when}",
            f"GitHub gave it to {observed}, another runner of ours with equal labels, not to "
            f"{_runner(job)} that was launched for it; {launched} is left for another job "
            "with the same labels, and housekeeping removes it if it has not taken one "
            "within RUNS_FLEET_ORPHAN_GRACE_S of this job's start.",
        ]
    elif observed or launched:
        shown = _runner(job) if observed in (None, launched) else observed
        parts = [f"It has been running on {shown} {when}"]
    else:
        parts = [f"It has been running {when} GitHub has not said on which runner."]
    if job.runner_lost is not None:
        parts += [
            "Its runner was lost while running it:",
            _Quote(job.runner_lost),
            "No other runner can take a job GitHub gave to that one: GitHub fails it once "
            "the runner stops answering, and RUNS_FLEET_RERUN_LOST_JOBS decides whether "
            "runs-fleet has GitHub re-run it then.",
        ]
    return "running", _history(job) + parts + _overdue(job, since, now)


def _requeued(job: Job, now: datetime) -> _Story:
    since = job.entered(_S.REQUEUED) or job.created_at
    on_demand = job.spec is not None and not job.spec.spot
    capacity = " on on-demand capacity (its spec now says spot=false)" if on_demand else ""
    return "requeued", [
        f"Its runner was lost {_ago(since, now)} and runs-fleet requeued it. The reason:",
        _reason(job),
        f"Attempt {job.attempt} waits for a worker to launch a new runner{capacity}.",
        *_overdue(job, since, now),
    ]


def _ended(job: Job, now: datetime) -> _Story:
    end = job.entered(job.status) or job.created_at
    took = span(end - (job.timeline[0].at if job.timeline else job.created_at))
    verb = {_S.COMPLETED: "completed", _S.CANCELLED: "was cancelled", _S.FAILED: "failed"}
    ran = job.observed_runner or job.runner_name
    parts = [
        f"It {verb[job.status]} {_ago(end, now)} (at {_clock(end, now)} UTC), {took} after "
        "it was queued. The reason:",
        _reason(job),
        f"It ran on {ran}." if ran and job.entered(_S.RUNNING) else "It never started running.",
    ]
    if job.runner_lost is not None:
        after = job.reason if job.reason and job.reason != parts[1] else job.runner_lost
        parts += ["Its runner was lost while running it:", _Quote(after)]
    return job.status.value, parts


_STORIES = {
    _S.REJECTED: _rejected,
    _S.QUEUED: _queued,
    _S.CLAIMED: _claimed,
    _S.LAUNCHING: _launching,
    _S.RUNNING: _running,
    _S.REQUEUED: _requeued,
    _S.COMPLETED: _ended,
    _S.CANCELLED: _ended,
    _S.FAILED: _ended,
}


def _history(job: Job) -> list[str]:
    """How an attempt after the first came to be: the runner lost before it."""
    lost = next((c for c in reversed(job.timeline) if c.status is _S.REQUEUED), None)
    if job.attempt <= 1 or lost is None:
        return []
    on_demand = ", on on-demand capacity," if job.spec is not None and not job.spec.spot else ""
    return [
        f"This is attempt {job.attempt}{on_demand} after the runner of attempt "
        f"{job.attempt - 1} was lost ({lost.reason or 'no reason recorded'})."
    ]


def _overdue(job: Job, since: datetime, now: datetime) -> list[str]:
    """A warning when the job has been in its status longer than housekeeping allows
    (it then counts in ``runs_fleet_jobs_stuck``), with where to look."""
    from runs_fleet_core.usecases.housekeeping import DEFAULT_PHASE_TIMEOUTS_S

    limit = DEFAULT_PHASE_TIMEOUTS_S.get(job.status)
    if limit is None or (now - since).total_seconds() <= limit:
        return []
    hint = {
        _S.CLAIMED: "the worker may be stuck on its backend.",
        _S.LAUNCHING: "the runner may have failed to boot or to reach GitHub; look at its "
        "log on the backend.",
        _S.RUNNING: "the job may hang; look at it in GitHub.",
    }.get(job.status, "are the workers running, and can they reach the queue?")
    expected = span(timedelta(seconds=limit), precise=False)
    return [
        f"That is longer than runs-fleet expects ({expected}), and it counts the job in "
        f"runs_fleet_jobs_stuck: {hint}"
    ]


# -- small pieces ------------------------------------------------------------------------


def _reason(job: Job, missing: str = "(no reason was recorded)") -> _Quote:
    """The reason of the job's current status (not one left over from an earlier one)."""
    latest = job.timeline[-1] if job.timeline else None
    reason = latest.reason if latest and latest.status is job.status else job.reason
    return _Quote(reason or missing)


def _runner(job: Job) -> str:
    """``name (backend id)`` of the runner launched for the job, as far as known."""
    where = " ".join(part for part in (job.backend, job.runner_id) if part)
    pool = f", pool {job.pool}" if job.pool else ""
    return f"{job.runner_name or '(unnamed)'}" + (f" ({where}{pool})" if where or pool else "")


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _ago(at: datetime | None, now: datetime) -> str:
    return "at an unrecorded time" if at is None else f"{span(now - at, precise=False)} ago"


def span(delta: timedelta, *, precise: bool = True) -> str:
    """A duration for people: ``0.4s`` (``0s`` when not ``precise``), ``12s``,
    ``3m12s``, ``2h05m``, ``3d04h``; a negative one (clocks apart) counts as 0."""
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 10 and precise:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _clock(at: datetime, now: datetime, *, day: bool = False) -> str:
    """``HH:MM:SS`` in UTC, with the date when it is not today's (or ``day``)."""
    at, today = at.astimezone(UTC), now.astimezone(UTC).date()
    return at.strftime("%Y-%m-%d %H:%M:%S" if day or at.date() != today else "%H:%M:%S")
