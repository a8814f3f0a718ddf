"""Intake: a ``workflow_job`` ``queued`` webhook becomes a durable job message.

GitHub gives a webhook about ten seconds and does not redeliver, so intake does the
least that makes the job safe: record it, enqueue it, answer. Everything slow happens
in dispatch. A duplicate delivery, or a second webhook for a job already taken in,
queues nothing. A label runs-fleet cannot honour is recorded as a rejected job with a
reason a workflow author understands, never silently dropped.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Collection
from datetime import datetime

import attrs

from runs_fleet_core.domain.ids import JobId, RunId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.labels import LabelDefaults, parse_runs_on
from runs_fleet_core.domain.messages import JobMessage, WorkflowJobEvent
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import ConflictError, LabelError
from runs_fleet_core.ports import Clock, JobOutbox, Metrics, Queue, StateStore


class IntakeOutcome(enum.StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    IGNORED = "ignored"


@attrs.frozen(kw_only=True)
class IntakeResult:
    outcome: IntakeOutcome
    job_id: JobId
    reason: str | None = None


@attrs.define(kw_only=True)
class Intake:
    """Takes ``queued`` events in. ``backends`` are the backends this deployment
    enables; ``default_backend`` serves labels without ``backend=``."""

    state: StateStore
    queue: Queue
    clock: Clock
    metrics: Metrics
    labels: LabelDefaults
    backends: Collection[str]
    default_backend: str
    _outbox: JobOutbox | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.state, JobOutbox) and self.state.sends_to(self.queue):
            self._outbox = self.state

    async def take(self, event: WorkflowJobEvent) -> IntakeResult:
        """Record and enqueue the job of a ``queued`` event (idempotent)."""
        reason: str | None
        try:
            spec = parse_runs_on(event.labels, defaults=self.labels)
        except LabelError as exc:
            spec, reason = None, f"label not accepted: {exc}"
        else:
            if spec is None:
                return IntakeResult(outcome=IntakeOutcome.IGNORED, job_id=event.job_id)
            reason = self._backend_problem(spec)
        new = self._new_job(event, spec, reason)
        if self._outbox is not None and new.status is JobStatus.QUEUED:
            if await self._record_and_send(self._outbox, new):
                return IntakeResult(outcome=IntakeOutcome.QUEUED, job_id=new.job_id)
            job = None
        else:
            job = await self._record(new)
        if job is None:  # seen before: send only what was recorded but never sent
            existing = await self.state.get_job(event.job_id)
            if existing is None or existing.enqueued_at or existing.status != JobStatus.QUEUED:
                return self._duplicate(existing, event.job_id)
            job = existing
        if job.status is JobStatus.REJECTED:
            self.metrics.increment("jobs_rejected", labels={"repository": job.repository})
            return IntakeResult(
                outcome=IntakeOutcome.REJECTED, job_id=job.job_id, reason=job.reason
            )
        await self._enqueue(job)
        return IntakeResult(outcome=IntakeOutcome.QUEUED, job_id=job.job_id)

    def _backend_problem(self, spec: RunnerSpec) -> str | None:
        backend = spec.backend or self.default_backend
        if backend in self.backends:
            return None
        enabled = ", ".join(sorted(self.backends)) or "none"
        return (
            f"label not accepted: backend={backend} is not enabled in this deployment "
            f"(enabled: {enabled}); remove backend= or ask the operators to add it "
            "to RUNS_FLEET_BACKENDS"
        )

    def _duplicate(self, job: Job | None, job_id: JobId) -> IntakeResult:
        """A delivery of a job seen before. A job whose label was refused is refused
        again, with its reason: answering "duplicate" would say it was queued."""
        self.metrics.increment("webhooks_duplicate")
        if job is not None and job.status is JobStatus.REJECTED:
            return IntakeResult(outcome=IntakeOutcome.REJECTED, job_id=job_id, reason=job.reason)
        reason = job.reason if job is not None else None
        return IntakeResult(outcome=IntakeOutcome.DUPLICATE, job_id=job_id, reason=reason)

    def _new_job(self, event: WorkflowJobEvent, spec: RunnerSpec | None, reason: str | None) -> Job:
        now = self.clock.now()
        bound = spec.for_job(event.job_id, event.repository) if spec else None
        job = Job.new(
            job_id=event.job_id,
            run_id=RunId(str(event.run_id)),
            repository=event.repository,
            at=now,
            spec=bound,
            delivery_id=event.delivery_id or None,
        )
        if bound is not None:
            job = attrs.evolve(job, backend=bound.backend or self.default_backend)
        if reason is not None:
            job = job.transition(JobStatus.REJECTED, at=now, reason=reason)
        return job

    async def _record(self, job: Job) -> Job | None:
        """Create the job record; ``None`` if it exists (a duplicate delivery, or another
        replica got there first). Creating first spares new jobs, the common case, a read."""
        try:
            return await self.state.put_job(job, expect_version=None)
        except ConflictError:
            return None

    async def _record_and_send(self, outbox: JobOutbox, job: Job) -> bool:
        """Record the job and queue its message in one step; ``False`` if it existed."""
        job = attrs.evolve(job, enqueued_at=job.created_at)
        message = JobMessage.for_job(job, enqueued_at=job.created_at)
        if await outbox.create_job_and_send(job, message, self.queue) is None:
            return False
        self.metrics.increment("jobs_queued", labels={"backend": job.backend or ""})
        return True

    async def _enqueue(self, job: Job) -> None:
        await enqueue_job(job, queue=self.queue, state=self.state, at=self.clock.now())
        self.metrics.increment("jobs_queued", labels={"backend": job.backend or ""})


async def enqueue_job(job: Job, *, queue: Queue, state: StateStore, at: datetime) -> None:
    """Send ``job``'s message, then mark the job enqueued. A conflict on the mark means a
    dispatcher moved the job on already: it has the message, so that is fine."""
    await queue.send(JobMessage.for_job(job, enqueued_at=at))
    with contextlib.suppress(ConflictError):
        await state.put_job(attrs.evolve(job, enqueued_at=at), expect_version=job.version)
