"""Messages that cross process boundaries: queue messages, webhook events, agent reports.

Each has a cattrs converter in ``runs_fleet_core.converters``; nothing here builds
dicts by hand.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from runs_fleet_core.domain.ids import JobId, RunId
from runs_fleet_core.domain.job import Job
from runs_fleet_core.domain.spec import RunnerSpec


@attrs.frozen(kw_only=True)
class JobMessage:
    """The queue message that asks a dispatcher to get a runner for one job attempt."""

    job_id: JobId
    run_id: RunId
    repository: str
    spec: RunnerSpec
    attempt: int = 1
    enqueued_at: datetime | None = None

    @classmethod
    def for_job(cls, job: Job, *, enqueued_at: datetime) -> JobMessage:
        """The message that asks for a runner for ``job``'s current attempt."""
        if job.spec is None:
            raise ValueError(f"job {job.job_id} has no runner spec to dispatch")
        return cls(
            job_id=job.job_id,
            run_id=job.run_id,
            repository=job.repository,
            spec=job.spec,
            attempt=job.attempt,
            enqueued_at=enqueued_at,
        )

    @property
    def dedup_id(self) -> str:
        """Job id + attempt: equal for duplicates, different for a deliberate retry."""
        return f"{self.job_id}:{self.attempt}"


class WorkflowJobAction(enum.StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    WAITING = "waiting"


@attrs.frozen(kw_only=True)
class WorkflowJobEvent:
    """The fields of a GitHub ``workflow_job`` webhook that runs-fleet acts on."""

    action: WorkflowJobAction
    job_id: JobId
    run_id: int
    run_attempt: int
    repository: str
    labels: tuple[str, ...]
    delivery_id: str = ""
    runner_name: str | None = None
    conclusion: str | None = None
    installation_id: int | None = None


class AgentEvent(enum.StrEnum):
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@attrs.frozen(kw_only=True)
class AgentReport:
    """What the runner-side agent tells the orchestrator about its one job."""

    job_id: JobId
    runner_name: str
    event: AgentEvent
    at: datetime
    exit_code: int | None = None
    detail: str | None = None
