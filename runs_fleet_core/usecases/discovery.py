"""Discovery: pick up ``runs-fleet=`` jobs whose ``queued`` webhook never arrived.

GitHub does not redeliver a webhook that failed (the orchestrator was down, a proxy
dropped it, the App's webhook was briefly misconfigured), and a job nobody heard of
waits "for a runner" until it times out a day later. Healing can only settle jobs
runs-fleet knows; this finds the others. The leader asks GitHub, for each repository
runs-fleet served within ``window_s``, which jobs it holds queued, and hands every
``runs-fleet=`` job queued for at least ``after_s`` that has no record to intake,
exactly as its webhook would have been (so labels are checked, and a webhook that
arrives after all queues nothing twice).

Each repository costs a few listing calls, asked conditionally by the GitHub adapter:
a repository where nothing changed costs no rate budget. At most ``max_per_pass``
repositories are asked per pass, those asked least recently first.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import attrs

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.job import JobStatus
from runs_fleet_core.domain.labels import MARKER
from runs_fleet_core.domain.messages import WorkflowJobAction, WorkflowJobEvent
from runs_fleet_core.errors import AdapterError, NotFoundError
from runs_fleet_core.ports import Clock, GitHub, Metrics, StateStore
from runs_fleet_core.ports.github import QueuedJob
from runs_fleet_core.usecases.intake import Intake, IntakeOutcome

_log = logging.getLogger(__name__)

DEFAULT_DISCOVER_AFTER_S = 120.0
DEFAULT_WINDOW_S = 24 * 3600.0
DEFAULT_RESEED_S = 600.0
DELIVERY_PREFIX = "discovered-"
_NEVER = datetime.min.replace(tzinfo=UTC)


@attrs.frozen(kw_only=True)
class DiscoveryReport:
    """What one pass did: the repositories asked and the jobs handed to intake."""

    repositories: tuple[str, ...] = ()
    discovered: tuple[int, ...] = ()


@attrs.define(kw_only=True)
class Discovery:
    state: StateStore
    github: GitHub
    intake: Intake
    clock: Clock
    metrics: Metrics
    after_s: float = DEFAULT_DISCOVER_AFTER_S
    window_s: float = DEFAULT_WINDOW_S
    reseed_s: float = DEFAULT_RESEED_S
    max_per_pass: int = 50
    _served: dict[str, datetime] = attrs.field(factory=dict, init=False)
    """Repositories runs-fleet served, keyed in lower case, with their latest job."""
    _names: dict[str, str] = attrs.field(factory=dict, init=False)
    _asked: dict[str, datetime] = attrs.field(factory=dict, init=False)
    _seeded_at: datetime | None = attrs.field(default=None, init=False)

    async def discover(self) -> DiscoveryReport:
        """Ask GitHub about the repositories due this pass; queue what it holds that
        runs-fleet never heard of."""
        now = self.clock.now()
        asked: list[str] = []
        found: list[int] = []
        for repository in await self._due(now):
            self._asked[repository.lower()] = now
            try:
                queued = await self.github.list_queued_jobs(repository)
            except NotFoundError:
                self._forget(repository)  # the repository is gone or the App lost access
                continue
            except AdapterError as exc:
                self.metrics.increment("discovery_errors")
                _log.warning("cannot list the queued jobs of %s: %s", repository, exc)
                continue
            asked.append(repository)
            for job in queued:
                if await self._unheard_of(job, now) and await self._take(job):
                    found.append(int(job.job_id))
        return DiscoveryReport(repositories=tuple(asked), discovered=tuple(found))

    async def _due(self, now: datetime) -> list[str]:
        """The repositories to ask this pass, least recently asked first."""
        await self._refresh(now)
        horizon = now - timedelta(seconds=self.window_s)
        for key in [key for key, seen in self._served.items() if seen < horizon]:
            self._forget(self._names[key])
        keys = sorted(self._served, key=lambda key: (self._asked.get(key, _NEVER), key))
        return [self._names[key] for key in keys[: self.max_per_pass]]

    async def _refresh(self, now: datetime) -> None:
        """Note the repositories of the jobs runs-fleet has: every status once per
        ``reseed_s`` and while none is known (a new leader starts that way), only
        unfinished ones otherwise."""
        reseed = (
            self._seeded_at is None
            or not self._served
            or (now - self._seeded_at).total_seconds() >= self.reseed_s
        )
        statuses = list(JobStatus) if reseed else [s for s in JobStatus if not s.final]
        for status in statuses:
            for job in await self.state.list_jobs(status=status):
                self._note(job.repository, job.created_at)
        if reseed:
            self._seeded_at = now

    def _note(self, repository: str, at: datetime) -> None:
        key = repository.lower()
        if at > self._served.get(key, _NEVER):
            self._served[key] = at
            self._names[key] = repository

    def _forget(self, repository: str) -> None:
        key = repository.lower()
        for known in (self._served, self._names, self._asked):
            known.pop(key, None)

    async def _unheard_of(self, job: QueuedJob, now: datetime) -> bool:
        """A ``runs-fleet=`` job queued long enough for its webhook to have come, of
        which runs-fleet has no record."""
        if not any(label.strip().lower().startswith(MARKER) for label in job.labels):
            return False
        if job.created_at is not None and (now - job.created_at).total_seconds() < self.after_s:
            return False
        return await self.state.get_job(JobId(job.job_id)) is None

    async def _take(self, job: QueuedJob) -> bool:
        event = WorkflowJobEvent(
            action=WorkflowJobAction.QUEUED,
            job_id=job.job_id,
            run_id=job.run_id,
            run_attempt=job.run_attempt,
            repository=job.repository,
            labels=job.labels,
            delivery_id=f"{DELIVERY_PREFIX}{job.job_id}",
        )
        try:
            result = await self.intake.take(event)
        except AdapterError as exc:
            self.metrics.increment("discovery_errors")
            _log.warning("job %s of %s not queued yet: %s", job.job_id, job.repository, exc)
            return False
        if result.outcome in (IntakeOutcome.QUEUED, IntakeOutcome.REJECTED):
            self.metrics.increment("jobs_discovered", labels={"outcome": result.outcome.value})
            _log.warning(
                "job %s of %s was queued on GitHub with no webhook received: %s",
                job.job_id,
                job.repository,
                result.outcome.value,
            )
            return True
        return False
