"""A workflow job's life in runs-fleet, as an explicit state machine.

Every status change goes through :meth:`Job.transition`, which refuses moves the
machine does not allow and appends a timestamped entry to the job's timeline (the
phase timeline later feeds latency metrics). ``Job`` is immutable: a transition returns
a new value, and the StateStore's conditional write decides which value wins.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import attrs

from runs_fleet_core.domain.ids import JobId, RunId, RunnerId
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import IllegalTransition


class JobStatus(enum.StrEnum):
    """Where a job is. ``completed``, ``failed``, ``rejected`` and ``cancelled`` are final."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    LAUNCHING = "launching"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
    REQUEUED = "requeued"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.REJECTED, JobStatus.CANCELLED}
)

_S = JobStatus
# GitHub's webhooks arrive late, twice or out of order, so a job may be seen running or
# finished before runs-fleet has launched anything for it: those edges are legal.
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    _S.QUEUED: frozenset(
        {_S.CLAIMED, _S.REJECTED, _S.RUNNING, _S.COMPLETED, _S.FAILED, _S.CANCELLED}
    ),
    _S.CLAIMED: frozenset(
        {_S.LAUNCHING, _S.QUEUED, _S.RUNNING, _S.COMPLETED, _S.FAILED, _S.CANCELLED}
    ),
    _S.LAUNCHING: frozenset(
        {_S.RUNNING, _S.QUEUED, _S.COMPLETED, _S.FAILED, _S.REQUEUED, _S.CANCELLED}
    ),
    _S.RUNNING: frozenset({_S.COMPLETED, _S.FAILED, _S.REQUEUED, _S.CANCELLED}),
    _S.REQUEUED: frozenset({_S.CLAIMED, _S.RUNNING, _S.COMPLETED, _S.FAILED, _S.CANCELLED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.CANCELLED: frozenset(),
}


@attrs.frozen(kw_only=True)
class PhaseChange:
    """One entry of a job's timeline: it entered ``status`` at ``at``."""

    status: JobStatus
    at: datetime
    reason: str | None = None


@attrs.frozen(kw_only=True)
class Job:
    """One GitHub workflow job that asked for a runs-fleet runner.

    ``version`` is owned by the StateStore (0 = never stored); ``claim_owner`` and
    ``claim_expires_at`` form the dispatch lease; ``runner_name`` is the name the runner
    launched for it registers with GitHub, ``runner_id`` the provider's id for it.
    ``observed_runner`` is the runner GitHub says actually runs the job (from
    ``in_progress``): with equal labels GitHub may hand a job to a runner launched for
    another one, and that runner is then busy with this job. ``runner_lost`` says why
    the runner GitHub gave the job to vanished while running it (GitHub then fails the
    job); ``runner_exit`` is the exit code the agent reported when its runner ended on
    its own, which rules a vanished runner out.
    """

    job_id: JobId
    run_id: RunId
    repository: str
    status: JobStatus
    created_at: datetime
    spec: RunnerSpec | None = None
    attempt: int = 1
    reason: str | None = None
    runner_id: RunnerId | None = None
    runner_name: str | None = None
    observed_runner: str | None = None
    runner_lost: str | None = None
    runner_exit: int | None = None
    backend: str | None = None
    pool: str | None = None
    claim_owner: str | None = None
    claim_expires_at: datetime | None = None
    enqueued_at: datetime | None = None
    delivery_id: str | None = None
    timeline: tuple[PhaseChange, ...] = ()
    version: int = 0

    @classmethod
    def new(
        cls,
        *,
        job_id: JobId,
        run_id: RunId,
        repository: str,
        at: datetime,
        spec: RunnerSpec | None = None,
        delivery_id: str | None = None,
    ) -> Job:
        """A freshly queued job, its timeline starting at ``at``."""
        return cls(
            job_id=job_id,
            run_id=run_id,
            repository=repository,
            status=JobStatus.QUEUED,
            created_at=at,
            spec=spec,
            pool=spec.pool if spec else None,
            attempt=spec.attempt if spec else 1,
            delivery_id=delivery_id,
            timeline=(PhaseChange(status=JobStatus.QUEUED, at=at),),
        )

    @property
    def final(self) -> bool:
        return self.status.final

    def can_become(self, status: JobStatus) -> bool:
        return status in ALLOWED_TRANSITIONS[self.status]

    def transition(
        self, status: JobStatus, *, at: datetime, reason: str | None = None, **changes: Any
    ) -> Job:
        """This job in ``status`` from ``at`` on, with ``changes`` applied.

        Raises :class:`IllegalTransition` when the state machine has no such edge
        (including "to the same status": callers decide what a repeat means).
        """
        if not self.can_become(status):
            raise IllegalTransition(f"job {self.job_id} cannot go from {self.status} to {status}")
        entry = PhaseChange(status=status, at=at, reason=reason)
        fields: dict[str, Any] = {
            "status": status,
            "timeline": (*self.timeline, entry),
            **changes,
        }
        if reason is not None:
            fields["reason"] = reason
        return attrs.evolve(self, **fields)

    def next_attempt(
        self, spec: RunnerSpec, *, status: JobStatus, at: datetime, reason: str
    ) -> Job:
        """This job waiting for dispatch again as ``spec``'s attempt, in ``status``
        (``requeued`` after a launch, ``queued`` before one): its runner and claim are
        forgotten. The timeline gets the entry even when the status stays the same, so
        the job's time in it counts from ``at``."""
        return attrs.evolve(
            self,
            status=status,
            timeline=(*self.timeline, PhaseChange(status=status, at=at, reason=reason)),
            reason=reason,
            spec=spec,
            attempt=spec.attempt,
            runner_id=None,
            runner_name=None,
            claim_owner=None,
            claim_expires_at=None,
            enqueued_at=at,
        )

    @property
    def taken_by_its_runner(self) -> bool:
        """Whether GitHub gave the job to the runner launched for it (``in_progress``
        named that runner): from then on GitHub, not runs-fleet, decides its fate."""
        return self.observed_runner is not None and self.observed_runner == self.runner_name

    def entered(self, status: JobStatus) -> datetime | None:
        """When the job last entered ``status`` (``None`` if it never did)."""
        for change in reversed(self.timeline):
            if change.status is status:
                return change.at
        return None

    def claim_active(self, now: datetime) -> bool:
        """Whether a dispatcher holds an unexpired claim on this job."""
        return (
            self.claim_owner is not None
            and self.claim_expires_at is not None
            and self.claim_expires_at > now
        )
