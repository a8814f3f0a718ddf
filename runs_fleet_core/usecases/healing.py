"""Healing: settle jobs that wait on a webhook that may never come, by asking GitHub.

GitHub does not redeliver a webhook that failed, and a job that waits for one waits
forever: the ``completed`` that never arrived leaves a job "running" and its runner
reaped only much later; the ``queued`` job whose runner never registered (it died while
booting, its JIT config was lost) is "waiting for a runner" in GitHub's UI for good.
The leader asks GitHub about every unfinished job whose status has not changed for
``check_after_s``, oldest first and at most ``max_per_pass`` per pass (each is one API
call against the installation's rate budget), and does what the missing webhook would
have done:

* GitHub says ``completed``: the job ends with GitHub's conclusion and its runner config
  is removed, exactly as the ``completed`` webhook does.
* GitHub says ``in_progress``: the job runs on the runner GitHub names.
* GitHub says ``queued`` and runs-fleet has a job that should have had a runner by now
  (past ``relaunch_after_s``):
  - a runner was launched for it (and never took it, or started and never got it): that
    runner is removed (unless GitHub gave it another job, which it is left to run) and
    the job is dispatched again as its next attempt, up to ``max_attempts``; then it
    fails with the reason;
  - no runner was launched for this attempt yet (a queue backlog, or a message lost with
    a worker): its message is sent again, same attempt. That spends no attempt: a slow
    queue must not fail jobs that no runner ever failed.
  ``waiting`` (an environment's approval) is left alone.
* GitHub does not know the job (deleted run, repository gone): it is cancelled.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import attrs

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.messages import JobMessage, WorkflowJobAction, WorkflowJobEvent
from runs_fleet_core.errors import AdapterError, ConflictError, NotFoundError
from runs_fleet_core.ports import Clock, GitHub, Metrics, Provider, Queue, StateStore
from runs_fleet_core.ports.github import JobStatusReport
from runs_fleet_core.usecases.completion import Completion

_log = logging.getLogger(__name__)

UNFINISHED = (
    JobStatus.QUEUED,
    JobStatus.CLAIMED,
    JobStatus.LAUNCHING,
    JobStatus.REQUEUED,
    JobStatus.RUNNING,
)
_NEVER = datetime.min.replace(tzinfo=UTC)
DEFAULT_HEAL_AFTER_S = 600.0
DEFAULT_RELAUNCH_AFTER_S = 900.0
WAITING_FOR_A_RUNNER = frozenset(
    {JobStatus.QUEUED, JobStatus.CLAIMED, JobStatus.LAUNCHING, JobStatus.REQUEUED}
)


@attrs.frozen(kw_only=True)
class HealingReport:
    """What one pass did, by job id."""

    checked: tuple[int, ...] = ()
    finished: tuple[int, ...] = ()
    started: tuple[int, ...] = ()
    relaunched: tuple[int, ...] = ()
    resent: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()
    cancelled: tuple[int, ...] = ()


@attrs.define(kw_only=True)
class Healer:
    state: StateStore
    queue: Queue
    github: GitHub
    completion: Completion
    providers: Mapping[str, Provider]
    clock: Clock
    metrics: Metrics
    check_after_s: float = DEFAULT_HEAL_AFTER_S
    relaunch_after_s: float = DEFAULT_RELAUNCH_AFTER_S
    max_attempts: int = 3
    max_per_pass: int = 50
    _asked: dict[JobId, datetime] = attrs.field(factory=dict, init=False)
    """When this leader last asked GitHub about each job: the least recently asked go
    first, so jobs that stay quiet (waiting for an approval) do not starve the others."""

    async def heal(self) -> HealingReport:
        """Check the jobs that have been quiet too long against GitHub (see above)."""
        done: dict[str, list[int]] = {k: [] for k in ("checked", "finished", "started")}
        done |= {k: [] for k in ("relaunched", "resent", "failed", "cancelled")}
        for job in await self._quiet_jobs():
            done["checked"].append(int(job.job_id))
            try:
                report = await self.github.get_job(job.repository, job.job_id)
            except NotFoundError:
                await self._cancel(job)
                done["cancelled"].append(int(job.job_id))
                continue
            except AdapterError as exc:
                self.metrics.increment("healing_errors")
                _log.warning("job %s: GitHub's view of it is unavailable: %s", job.job_id, exc)
                continue
            try:
                outcome = await self._settle(job, report)
            except ConflictError:
                # the job moved on meanwhile (a webhook, a report): the next pass looks again
                self.metrics.increment("healing_conflicts")
                continue
            if outcome:
                done[outcome].append(int(job.job_id))
                self.metrics.increment("jobs_healed", labels={"how": outcome})
        return HealingReport(**{k: tuple(v) for k, v in done.items()})

    async def _quiet_jobs(self) -> list[Job]:
        now = self.clock.now()
        quiet = []
        for status in UNFINISHED:
            for job in await self.state.list_jobs(status=status):
                since = job.entered(job.status) or job.created_at
                if (now - since).total_seconds() >= self.check_after_s:
                    quiet.append((self._asked.get(job.job_id, _NEVER), since, job))
        quiet.sort(key=lambda entry: (entry[0], entry[1], entry[2].job_id))
        chosen = [job for _, _, job in quiet[: self.max_per_pass]]
        self._asked = {job.job_id: self._asked.get(job.job_id, _NEVER) for _, _, job in quiet}
        self._asked.update({job.job_id: now for job in chosen})
        return chosen

    async def _settle(self, job: Job, report: JobStatusReport) -> str | None:
        if report.status == "completed":
            await self.completion.job_finished(
                self._event(job, report, WorkflowJobAction.COMPLETED)
            )
            return "finished"
        if report.status == "in_progress":
            if job.status is JobStatus.RUNNING:
                return None
            await self.completion.job_started(
                self._event(job, report, WorkflowJobAction.IN_PROGRESS)
            )
            return "started"
        if report.status == "queued" and self._wants_a_runner(job):
            since = max(job.entered(job.status) or job.created_at, job.enqueued_at or _NEVER)
            if (self.clock.now() - since).total_seconds() < self.relaunch_after_s:
                return None
            if job.runner_id is None and job.status is not JobStatus.RUNNING:
                return await self._resend(job)
            return await self._relaunch(job)
        return None  # waiting for an approval, or GitHub lags behind a runner we saw

    @staticmethod
    def _wants_a_runner(job: Job) -> bool:
        """Whether runs-fleet still owes the job a runner: it waits for one, or its
        runner started (the agent said so) but GitHub never gave it the job."""
        if job.status is JobStatus.RUNNING:
            return job.observed_runner is None
        return job.status in WAITING_FOR_A_RUNNER

    async def _resend(self, job: Job) -> str:
        """Send the job's message again, same attempt (see the module docstring): a copy
        still queued is dropped by the queue or handled once by dispatch, as any
        duplicate is. The send is recorded first, so the next pass waits again."""
        now = self.clock.now()
        stored = await self.state.put_job(
            attrs.evolve(job, enqueued_at=now), expect_version=job.version
        )
        await self.queue.send(JobMessage.for_job(stored, enqueued_at=now))
        _log.info("job %s: no runner launched yet; its message was sent again", job.job_id)
        return "resent"

    async def _relaunch(self, job: Job) -> str:
        """Remove the runner that never took the job and dispatch it again."""
        if job.attempt >= self.max_attempts or job.spec is None:
            why = f"no runner took the job in {job.attempt} attempt(s); GitHub still has it queued"
            with contextlib.suppress(ConflictError):
                await self.state.put_job(
                    job.transition(JobStatus.FAILED, at=self.clock.now(), reason=why),
                    expect_version=job.version,
                )
            return "failed"
        spec = job.spec.for_job(job.job_id, job.repository, job.attempt + 1)
        before_launch = job.status in (JobStatus.QUEUED, JobStatus.CLAIMED)
        requeued = job.next_attempt(
            spec,
            status=JobStatus.QUEUED if before_launch else JobStatus.REQUEUED,
            at=self.clock.now(),
            reason=f"attempt {job.attempt} never got a runner GitHub saw; dispatched again",
        )
        # the next attempt is recorded before the old runner goes: its "gone" event
        # then names no runner of this job, instead of requeueing it a second time
        stored = await self.state.put_job(requeued, expect_version=job.version)
        await self._remove_runner(job)
        await self.completion.forget_runner(job)
        await self.queue.send(
            JobMessage.for_job(stored, enqueued_at=stored.enqueued_at or stored.created_at)
        )
        return "relaunched"

    async def _remove_runner(self, job: Job) -> None:
        """Terminate the runner launched for ``job``, unless GitHub gave that runner
        another job (equal labels) that is not finished: it is left to run that one."""
        provider = self.providers.get(job.backend or "")
        if job.runner_id is None or provider is None:
            return
        if (other := await self._running_on(job)) is not None:
            _log.info("job %s: runner %s runs job %s (GitHub gave it that job); not removed",
                      job.job_id, job.runner_name, other.job_id)  # fmt: skip
            return
        try:
            await provider.terminate_runner(job.runner_id)
        except AdapterError as exc:  # housekeeping reaps it later as an orphan
            _log.warning("job %s: runner %s not removed: %s", job.job_id, job.runner_id, exc)

    async def _running_on(self, job: Job) -> Job | None:
        """The unfinished job other than ``job`` that GitHub runs on ``job``'s runner."""
        if job.runner_name is None:
            return None
        for status in UNFINISHED:
            for other in await self.state.list_jobs(status=status):
                if other.job_id != job.job_id and other.observed_runner == job.runner_name:
                    return other
        return None

    async def _cancel(self, job: Job) -> None:
        with contextlib.suppress(ConflictError):
            cancelled = job.transition(
                JobStatus.CANCELLED,
                at=self.clock.now(),
                reason="GitHub no longer has this job (its run or repository was deleted)",
            )
            stored = await self.state.put_job(cancelled, expect_version=job.version)
            await self.completion.forget_runner(stored)

    @staticmethod
    def _event(job: Job, report: JobStatusReport, action: WorkflowJobAction) -> WorkflowJobEvent:
        return WorkflowJobEvent(
            action=action,
            job_id=job.job_id,
            run_id=int(job.run_id),
            run_attempt=report.run_attempt,
            repository=job.repository,
            labels=job.spec.labels if job.spec else (),
            delivery_id="",
            runner_name=report.runner_name,
            conclusion=report.conclusion,
        )
