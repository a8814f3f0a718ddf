"""Housekeeping: find and remove what the happy path left behind.

* Orphan runners: a runner the provider still has whose job is finished, unknown, or
  served by another runner, or that GitHub passed over (it gave the runner's job to
  another runner with the same labels and this one took no other job). Terminated after
  a grace period, ``RUNS_FLEET_ORPHAN_GRACE_S`` (a runner just launched may not have its
  job recorded yet).
* Stale runner configs: configs whose job is finished or unknown (they hold secrets).
* Unsent jobs: queued jobs whose message never reached the queue (intake crashed between
  recording and enqueueing) are enqueued again.
* Stuck jobs: non-final jobs that stayed in one phase longer than its timeout are
  reported, so that healing against GitHub can act on them.

Only the leader runs this (the caller holds a lease): two replicas must not reap the
same runner twice or race over the same config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta

import attrs

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.runner import RunnerPhase, RunnerState
from runs_fleet_core.errors import AdapterError
from runs_fleet_core.ports import Clock, ConfigStore, GitHub, Metrics, Provider, Queue, StateStore
from runs_fleet_core.usecases.intake import enqueue_job

_log = logging.getLogger(__name__)

DEFAULT_ORPHAN_GRACE_S = 600.0
DEFAULT_PHASE_TIMEOUTS_S: Mapping[JobStatus, float] = {
    JobStatus.QUEUED: 900,
    JobStatus.CLAIMED: 300,
    JobStatus.LAUNCHING: 900,
    JobStatus.REQUEUED: 900,
    JobStatus.RUNNING: 6 * 3600,
}


@attrs.frozen(kw_only=True)
class HousekeepingReport:
    orphans: tuple[RunnerState, ...] = ()
    terminated: tuple[RunnerId, ...] = ()
    stale_configs: tuple[RunnerId, ...] = ()
    resent: tuple[int, ...] = ()
    stuck: tuple[Job, ...] = ()


def is_orphan(
    runner: RunnerState,
    job: Job | None,
    now: datetime,
    grace_s: float,
    busy_names: AbstractSet[str] = frozenset(),
) -> bool:
    """Whether ``runner`` serves no live job. Pool runners without a job are not orphans
    (pool reconciliation owns them); nothing younger than ``grace_s`` is; nor is a runner
    GitHub reports running an unfinished job (``busy_names``), whichever job it was
    launched for."""
    if runner.phase is RunnerPhase.TERMINATED or runner.job_id is None:
        return False
    if (runner.runner_name or runner.runner_id) in busy_names:
        return False
    if runner.launched_at and (now - runner.launched_at).total_seconds() < grace_s:
        return False
    if job is None or job.final:
        return True
    if job.runner_id is not None and job.runner_id != runner.runner_id:
        return True
    return _passed_over(runner, job, now, grace_s)


def _passed_over(runner: RunnerState, job: Job, now: datetime, grace_s: float) -> bool:
    """GitHub gave ``runner``'s job to another runner (same labels), and ``runner`` has
    not taken any other job since: it would sit idle until its job ends. ``grace_s``
    counts from the swap, so a runner that took another job in the meantime is seen
    busy (its ``in_progress`` has arrived) before it could be removed."""
    name = runner.runner_name or runner.runner_id
    if (
        job.status is not JobStatus.RUNNING
        or not job.observed_runner
        or job.observed_runner == name
    ):
        return False
    swapped = job.entered(JobStatus.RUNNING)
    return swapped is not None and (now - swapped).total_seconds() >= grace_s


@attrs.define(kw_only=True)
class Housekeeper:
    state: StateStore
    queue: Queue
    configs: ConfigStore
    providers: Mapping[str, Provider]
    clock: Clock
    metrics: Metrics
    orphan_grace_s: float = DEFAULT_ORPHAN_GRACE_S
    unsent_after_s: float = 60.0
    phase_timeouts_s: Mapping[JobStatus, float] = DEFAULT_PHASE_TIMEOUTS_S
    github: GitHub | None = None
    """Asked, before an orphan is removed, whether GitHub shows its runner busy: a JIT
    runner may take any job with its labels, and that job's ``in_progress`` webhook
    may be late or lost, so only GitHub knows the runner is working."""

    async def run(self) -> HousekeepingReport:
        """One pass of every chore; one failing backend does not stop the others."""
        orphans, terminated = await self.reap_orphans()
        return HousekeepingReport(
            orphans=orphans,
            terminated=terminated,
            stale_configs=await self.delete_stale_configs(),
            resent=await self.resend_unsent(),
            stuck=await self.find_stuck(),
        )

    async def reap_orphans(self) -> tuple[tuple[RunnerState, ...], tuple[RunnerId, ...]]:
        found: list[RunnerState] = []
        terminated: list[RunnerId] = []
        now = self.clock.now()
        busy = await self._busy_runner_names()
        at_github: dict[str, frozenset[str] | None] = {}
        for name, provider in sorted(self.providers.items()):
            try:
                runners = await provider.list_runners()
            except AdapterError:
                self.metrics.increment("housekeeping_errors", labels={"backend": name})
                continue
            for runner in runners:
                job = await self.state.get_job(runner.job_id) if runner.job_id else None
                if not is_orphan(runner, job, now, self.orphan_grace_s, busy):
                    continue
                if not await self._idle_at_github(runner, job, at_github):
                    self.metrics.increment("orphans_spared", labels={"backend": name})
                    continue
                found.append(runner)
                try:
                    await provider.terminate_runner(runner.runner_id)
                except AdapterError:
                    self.metrics.increment("housekeeping_errors", labels={"backend": name})
                    continue
                terminated.append(runner.runner_id)
                self.metrics.increment("orphans_terminated", labels={"backend": name})
        return tuple(found), tuple(terminated)

    async def _idle_at_github(
        self,
        runner: RunnerState,
        job: Job | None,
        seen: dict[str, frozenset[str] | None],
    ) -> bool:
        """Whether GitHub shows ``runner`` idle (or does not know it): the runners of the
        job's repository are listed once per pass (``seen``: repository → busy runner
        names, ``None`` when GitHub could not say). A runner GitHub could not be asked
        about is kept for the next pass: removing a busy runner fails a job."""
        name = runner.runner_name
        if self.github is None or job is None or not name:
            return True
        repository = job.repository
        if repository not in seen:
            try:
                listed = await self.github.list_runners(repository)
            except AdapterError as exc:
                _log.warning("runners of %s not listed at GitHub: %s", repository, exc)
                seen[repository] = None
            else:
                seen[repository] = frozenset(r.name for r in listed if r.busy)
        busy = seen[repository]
        if busy is None:
            return False
        if name in busy:
            _log.info(
                "runner %s (launched for job %s) is busy at GitHub with another job; kept",
                name,
                job.job_id,
            )
            return False
        return True

    async def _busy_runner_names(self) -> set[str]:
        """Runners GitHub reports running a job that is not finished yet."""
        busy = set()
        for status in (JobStatus.RUNNING, JobStatus.LAUNCHING, JobStatus.REQUEUED):
            busy |= {
                j.observed_runner
                for j in await self.state.list_jobs(status=status)
                if j.observed_runner
            }
        return busy

    async def delete_stale_configs(self) -> tuple[RunnerId, ...]:
        deleted = []
        for runner_id in await self.configs.list_ids():
            config = await self.configs.get(runner_id)
            if config is None:
                continue
            job = await self.state.get_job(config.job_id)
            if job is None or job.final:
                await self.configs.delete(runner_id)
                deleted.append(runner_id)
        return tuple(deleted)

    async def resend_unsent(self) -> tuple[int, ...]:
        now = self.clock.now()
        resent = []
        for job in await self.state.list_jobs(status=JobStatus.QUEUED):
            if job.enqueued_at or job.spec is None:
                continue
            if (now - job.created_at).total_seconds() < self.unsent_after_s:
                continue
            await enqueue_job(job, queue=self.queue, state=self.state, at=now)
            resent.append(int(job.job_id))
        return tuple(resent)

    async def find_stuck(self) -> tuple[Job, ...]:
        now = self.clock.now()
        stuck = []
        for status, timeout in self.phase_timeouts_s.items():
            for job in await self.state.list_jobs(status=status):
                since = job.entered(status) or job.created_at
                if now - since > timedelta(seconds=timeout):
                    stuck.append(job)
        self.metrics.gauge("jobs_stuck", float(len(stuck)))
        return tuple(stuck)
