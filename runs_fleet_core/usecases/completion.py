"""Completion: webhooks and agent reports move a job to running and to its end.

``in_progress`` marks the job running and checks that the runner GitHub chose is the
one launched for it (a mismatch is recorded and counted); ``completed`` and the agent's
final report end the job, delete its runner config and free its warm-pool runner. A
spot interruption requeues the job once, on-demand, with its original labels.
Everything here is idempotent: webhooks arrive late, twice or out of order.

A runner that vanishes while running its job (spot reclaim, instance or pod lost)
cannot be replaced by runs-fleet: GitHub gave the job to that runner and fails it when
the runner stops answering. The job records why its runner was lost, and when GitHub's
``completed`` says ``failure``, it is re-run through GitHub's API if the operator asked
for that (``rerun_lost_jobs``: re-run while the run's attempt is at most that many, so
1 re-runs once); a job whose runner ended on its own (the agent reported its exit) is a
genuine failure and never re-run.
"""

from __future__ import annotations

import contextlib
import enum
import logging

import attrs

from runs_fleet_core.domain.ids import JobId, RunnerId, runner_name_for
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.messages import AgentEvent, AgentReport, JobMessage, WorkflowJobEvent
from runs_fleet_core.errors import AdapterError, ConflictError, NotFoundError
from runs_fleet_core.ports import Clock, ConfigStore, GitHub, Metrics, Queue, StateStore

_log = logging.getLogger(__name__)
RERUN_SETTING = "RUNS_FLEET_RERUN_LOST_JOBS"


class CompletionOutcome(enum.StrEnum):
    UPDATED = "updated"
    REQUEUED = "requeued"
    UNCHANGED = "unchanged"
    UNKNOWN_JOB = "unknown_job"


@attrs.define(kw_only=True)
class Completion:
    state: StateStore
    configs: ConfigStore
    queue: Queue
    clock: Clock
    metrics: Metrics
    max_conflicts: int = 5
    github: GitHub | None = None
    rerun_lost_jobs: int = 0
    max_attempts: int = 3
    """Runners a job may get (see ``RUNS_FLEET_MAX_ATTEMPTS``) when each one breaks
    before taking it."""

    async def job_started(self, event: WorkflowJobEvent) -> CompletionOutcome:
        """Handle ``in_progress``: the job runs on ``event.runner_name``, which is
        recorded as the job's observed runner (housekeeping must not reap it)."""
        outcome = await self._move(event.job_id, JobStatus.RUNNING)
        if event.runner_name and outcome is not CompletionOutcome.UNKNOWN_JOB:
            await self._observe_runner(event.job_id, event.runner_name)
        return outcome

    async def _observe_runner(self, job_id: JobId, runner_name: str) -> None:
        """Record the runner GitHub gave the job to, counting a mismatch when it is not
        the one launched for the job. Counted here, not on the move to running: the
        agent's ``started`` report, sent when its runner starts (before GitHub hands it
        any job), usually moved the job to running already."""
        for _ in range(self.max_conflicts):
            job = await self.state.get_job(job_id)
            if job is None or job.observed_runner == runner_name:
                return
            try:
                await self.state.put_job(
                    attrs.evolve(job, observed_runner=runner_name), expect_version=job.version
                )
            except ConflictError:
                continue
            self._check_runner(job, runner_name)
            return

    async def job_finished(self, event: WorkflowJobEvent) -> CompletionOutcome:
        """Handle ``completed``: the job ended with ``event.conclusion``; a failure
        caused by a lost runner is re-run when the policy allows (see above)."""
        status = JobStatus.CANCELLED if event.conclusion == "cancelled" else JobStatus.COMPLETED
        outcome = await self._move(event.job_id, status, reason=f"conclusion: {event.conclusion}")
        if outcome is CompletionOutcome.UPDATED and event.conclusion == "failure":
            await self._after_lost_runner(event)
        return outcome

    async def _after_lost_runner(self, event: WorkflowJobEvent) -> None:
        """Re-run the failed job if its runner vanished and the policy allows; the
        job's reason then says what was done."""
        job = await self.state.get_job(event.job_id)
        if job is None or job.runner_lost is None or job.runner_exit is not None:
            return
        outcome, note = await self._rerun(job, event.run_attempt)
        self.metrics.increment("lost_runner_failures", labels={"rerun": outcome})
        reason = f"conclusion: failure, its runner was lost ({job.runner_lost}); {note}"
        _log.info("job %s of %s: %s", job.job_id, job.repository, reason)
        for _ in range(self.max_conflicts):
            try:
                await self.state.put_job(
                    attrs.evolve(job, reason=reason), expect_version=job.version
                )
                return
            except ConflictError:
                fresh = await self.state.get_job(job.job_id)
                if fresh is None:
                    return
                job = fresh

    async def _rerun(self, job: Job, run_attempt: int) -> tuple[str, str]:
        """Ask GitHub to re-run ``job`` if the policy allows: (outcome, what was done)."""
        if self.github is None or self.rerun_lost_jobs < 1:
            return "skipped", f"not re-run: {RERUN_SETTING} is 0"
        if run_attempt > self.rerun_lost_jobs:
            return "skipped", f"not re-run: run attempt {run_attempt} is past {RERUN_SETTING}"
        try:
            await self.github.rerun_job(job.repository, job.job_id)
        except AdapterError as exc:
            return "refused", f"refused: GitHub did not re-run it: {exc}"
        return "requested", "re-run requested: GitHub queues it again as a new job"

    async def runner_lost(self, job_id: JobId, runner_name: str, why: str) -> CompletionOutcome:
        """Record that ``runner_name`` vanished while running job ``job_id`` (GitHub
        will fail the job); only for the runner GitHub gave the job to, and not once
        the agent reported that runner's own exit."""
        for _ in range(self.max_conflicts):
            job = await self.state.get_job(job_id)
            if job is None:
                return CompletionOutcome.UNKNOWN_JOB
            if (
                job.final
                or job.observed_runner != runner_name
                or job.runner_lost is not None
                or job.runner_exit is not None
            ):
                return CompletionOutcome.UNCHANGED
            try:
                await self.state.put_job(
                    attrs.evolve(job, runner_lost=why), expect_version=job.version
                )
            except ConflictError:
                continue
            self.metrics.increment("runners_lost")
            return CompletionOutcome.UPDATED
        raise ConflictError(f"job {job_id} kept changing while being updated; try again")

    async def agent_reported(self, report: AgentReport) -> CompletionOutcome:
        """Handle the agent's own account of its job.

        GitHub's ``completed`` webhook is what ends a job that ran: the runner's exit
        code says nothing reliable about the job's result. So a ``finished`` or
        ``failed`` report never ends a job that started; a ``failed`` report for a job
        that never started (the runner broke before taking it) gets the job a fresh
        runner (see :meth:`_runner_broke`). An ``interrupted`` runner requeues its job
        unless GitHub gave the job to another runner, which still runs it.
        """
        if report.event is AgentEvent.STARTED:
            return await self._move(report.job_id, JobStatus.RUNNING)
        job = await self.state.get_job(report.job_id)
        if job is None:
            return CompletionOutcome.UNKNOWN_JOB
        if report.event is AgentEvent.INTERRUPTED:
            why = report.detail or "runner interrupted"
            if job.taken_by_its_runner and job.runner_name == report.runner_name:
                return await self.runner_lost(job.job_id, report.runner_name, why)
            if job.observed_runner not in (None, report.runner_name):
                return CompletionOutcome.UNCHANGED  # GitHub gave it to another runner
            return await self._requeue(report.job_id, why)
        self.metrics.increment("agent_exits", labels={"event": report.event.value})
        if report.event is AgentEvent.FAILED and job.entered(JobStatus.RUNNING) is None:
            detail = report.detail or f"exit code {report.exit_code}"
            return await self._runner_broke(job, report.runner_name, detail)
        mine = report.runner_name == job.runner_name
        if mine and not job.final and report.exit_code is not None and job.runner_exit is None:
            await self._note_exit(job, report.exit_code)
        return CompletionOutcome.UNCHANGED

    async def _move(
        self,
        job_id: JobId,
        status: JobStatus,
        *,
        reason: str | None = None,
    ) -> CompletionOutcome:
        for _ in range(self.max_conflicts):
            job = await self.state.get_job(job_id)
            if job is None:
                return CompletionOutcome.UNKNOWN_JOB
            if job.status is status or not job.can_become(status):
                return CompletionOutcome.UNCHANGED
            moved = job.transition(
                status, at=self.clock.now(), reason=reason, claim_owner=None, claim_expires_at=None
            )
            try:
                await self.state.put_job(moved, expect_version=job.version)
            except ConflictError:
                continue
            if status.final:
                await self._clean_up(moved)
            self._observe(moved)
            return CompletionOutcome.UPDATED
        raise ConflictError(f"job {job_id} kept changing while being updated; try again")

    async def _note_exit(self, job: Job, exit_code: int) -> None:
        """Record the exit code the agent reported for the job's runner (it ended on
        its own, so a failure that follows is the job's, not a lost runner's)."""
        with contextlib.suppress(ConflictError):
            await self.state.put_job(
                attrs.evolve(job, runner_exit=exit_code), expect_version=job.version
            )

    def _check_runner(self, job: Job, runner_name: str) -> None:
        if job.runner_name is not None and job.runner_name != runner_name:
            self.metrics.increment("runner_mismatches")

    async def forget_runner(self, job: Job) -> None:
        """Delete the runner config of ``job``'s current attempt and free its warm runner
        (the job ended, or it is about to be dispatched again)."""
        await self._clean_up(job)

    async def _clean_up(self, job: Job) -> None:
        """Delete the job's runner config and free its warm runner, whatever path it took.

        A warm runner is found through the assignments too: when its agent reports the
        job started before the dispatcher recorded the runner on the job (a fast agent,
        or a dispatcher that died), the job never names it, and the runner would stay
        bound to a finished job, never reused nor scaled down."""
        cold = RunnerId(runner_name_for(job.job_id, job.attempt))
        await self.configs.delete(cold)
        if job.runner_id is not None:
            if job.runner_id != cold:  # a warm runner's config is under its own id
                await self.configs.delete(job.runner_id)
            await self.state.release_runner(job.runner_id, job.job_id)
        for assignment in await self.state.list_assignments():
            if assignment.job_id == job.job_id and assignment.runner_id != job.runner_id:
                await self.configs.delete(assignment.runner_id)
                await self.state.release_runner(assignment.runner_id, job.job_id)

    def _observe(self, job: Job) -> None:
        self.metrics.increment("jobs_" + job.status.value)
        queued, entered = job.entered(JobStatus.QUEUED), job.entered(job.status)
        if job.status is JobStatus.RUNNING and queued and entered:
            self.metrics.observe("job_start_seconds", (entered - queued).total_seconds())

    async def _runner_broke(self, job: Job, runner_name: str, detail: str) -> CompletionOutcome:
        """The runner launched for ``job`` exited before taking it, so it never will.

        Failing the job here would leave it queued at GitHub with nothing to run it (a
        job "waiting for a runner" forever), so GitHub decides: a job it still has
        queued (or that it cannot be asked about) is dispatched again as its next
        attempt, with a fresh runner, until ``max_attempts`` runners broke; then it
        fails, naming the cause. A job GitHub gave to some runner meanwhile (its
        ``in_progress`` webhook is late or lost) is left to its webhooks and healing.
        A report from the runner of an earlier attempt changes nothing.
        """
        if job.final or runner_name != job.runner_name:
            return CompletionOutcome.UNCHANGED
        gone = False  # the job (or its run) was deleted: it needs no runner any more
        if self.github is not None:
            try:
                seen = await self.github.get_job(job.repository, job.job_id)
            except AdapterError as exc:
                _log.warning("job %s: GitHub's view of it is unavailable: %s", job.job_id, exc)
            except NotFoundError:
                gone = True
            else:
                if seen.status != "queued":
                    return CompletionOutcome.UNCHANGED
        why = f"runner failed before the job ran: {detail}"
        if gone or job.spec is None or job.attempt >= self.max_attempts:
            tried = "" if gone else f" ({job.attempt} runner(s) tried)"
            return await self._move(job.job_id, JobStatus.FAILED, reason=why + tried)
        await self._clean_up(job)
        spec = job.spec.for_job(job.job_id, job.repository, job.attempt + 1)
        now = self.clock.now()
        again = job.next_attempt(
            spec, status=JobStatus.REQUEUED, at=now, reason=f"{why}; dispatched again"
        )
        stored = await self.state.put_job(again, expect_version=job.version)
        await self.queue.send(JobMessage.for_job(stored, enqueued_at=now))
        self.metrics.increment("jobs_requeued")
        return CompletionOutcome.REQUEUED

    async def _requeue(self, job_id: JobId, why: str) -> CompletionOutcome:
        """Requeue an interrupted job once, on-demand, keeping its labels and spec."""
        job = await self.state.get_job(job_id)
        if job is None:
            return CompletionOutcome.UNKNOWN_JOB
        if job.spec is None or not job.can_become(JobStatus.REQUEUED):
            return CompletionOutcome.UNCHANGED
        if job.attempt > 1 or not job.spec.spot:
            return await self._move(job_id, JobStatus.FAILED, reason=f"runner lost again: {why}")
        await self._clean_up(job)
        spec = job.spec.on_demand().for_job(job.job_id, job.repository, job.attempt + 1)
        now = self.clock.now()
        requeued = job.next_attempt(spec, status=JobStatus.REQUEUED, at=now, reason=why)
        stored = await self.state.put_job(requeued, expect_version=job.version)
        await self.queue.send(JobMessage.for_job(stored, enqueued_at=now))
        self.metrics.increment("jobs_requeued")
        return CompletionOutcome.REQUEUED
