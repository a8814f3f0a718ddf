"""A stateful stand-in for the GitHub API, for unit tests and the "memory" mode.

It registers runners per repository the way GitHub does (a JIT config registers an
offline runner; the same name replaces an idle one and is refused while busy), and
reports job statuses that the test sets in ``jobs``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
from collections.abc import Sequence

import attrs

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.errors import GitHubError, NotFoundError
from runs_fleet_core.ports.github import (
    GitHubRunner,
    JitConfig,
    JobStatusReport,
    QueuedJob,
    RunnerRegistration,
)


class FakeGitHub:
    """The :class:`~runs_fleet_core.ports.GitHub` port, in memory.

    ``jobs``: what :meth:`get_job` reports, keyed by job id (set by the test).
    ``queued``: the jobs :meth:`list_queued_jobs` lists, by repository (set by the test).
    ``reruns``: ``(repository, job id)`` of every :meth:`rerun_job` call.
    ``jit_requests``/``registrations``: the repository of every :meth:`create_jit_config`
    and :meth:`registration_token` call that succeeded.
    ``fail_next``: exceptions popped (first one first) and raised by the next call of
    any port method before it does anything, to simulate outages and throttling.
    """

    def __init__(self) -> None:
        self.jobs: dict[JobId, JobStatusReport] = {}
        self.queued: dict[str, list[QueuedJob]] = {}
        self.reruns: list[tuple[str, JobId]] = []
        self.jit_requests: list[str] = []
        self.registrations: list[str] = []
        self.fail_next: list[Exception] = []
        self._runners: dict[str, dict[int, GitHubRunner]] = {}
        self._ids = itertools.count(1)

    async def create_jit_config(
        self, repository: str, *, runner_name: str, labels: Sequence[str]
    ) -> JitConfig:
        """Register an offline runner ``runner_name`` (replacing an idle one of that
        name) and return its JIT config; ``GitHubError`` if that name is busy."""
        await self._call()
        runners = self._runners.setdefault(repository, {})
        for existing in list(runners.values()):
            if existing.name != runner_name:
                continue
            if existing.busy:
                raise GitHubError(
                    f"runner {runner_name!r} of {repository} is busy and cannot be replaced",
                    retryable=False,
                )
            del runners[existing.runner_id]
        runner_id = next(self._ids)
        runners[runner_id] = GitHubRunner(
            runner_id=runner_id,
            name=runner_name,
            busy=False,
            status="offline",
            labels=tuple(labels),
        )
        document = {"runner_id": runner_id, "secret": secrets.token_urlsafe(32)}
        encoded = base64.b64encode(json.dumps(document).encode()).decode()
        self.jit_requests.append(repository)
        return JitConfig(runner_id=runner_id, encoded=encoded)

    async def registration_token(self, repository: str) -> RunnerRegistration:
        """A fresh random registration token for ``repository`` on github.com."""
        await self._call()
        self.registrations.append(repository)
        return RunnerRegistration(
            token=f"FAKE{secrets.token_urlsafe(24)}", url=f"https://github.com/{repository}"
        )

    async def list_runners(self, repository: str) -> Sequence[GitHubRunner]:
        """The runners registered in ``repository``, by id."""
        await self._call()
        runners = self._runners.get(repository, {})
        return [runners[key] for key in sorted(runners)]

    async def delete_runner(self, repository: str, runner_id: int) -> None:
        """Deregister a runner; an unknown one is fine."""
        await self._call()
        self._runners.get(repository, {}).pop(runner_id, None)

    async def get_job(self, repository: str, job_id: JobId) -> JobStatusReport:
        """``jobs[job_id]``; ``NotFoundError`` when the test set none."""
        await self._call()
        report = self.jobs.get(job_id)
        if report is None:
            raise NotFoundError(f"job {job_id} not found in {repository}")
        return report

    async def list_queued_jobs(self, repository: str) -> Sequence[QueuedJob]:
        """``queued[repository]``."""
        await self._call()
        return list(self.queued.get(repository, ()))

    async def rerun_job(self, repository: str, job_id: JobId) -> None:
        """Record the re-run; ``GitHubError`` (not retryable) unless ``jobs`` says the
        job is completed, as GitHub refuses to re-run a job that has not finished."""
        await self._call()
        report = self.jobs.get(job_id)
        if report is None or report.status != "completed":
            raise GitHubError(f"job {job_id} of {repository} cannot be re-run", retryable=False)
        self.reruns.append((repository, job_id))

    def set_runner_state(
        self, repository: str, runner_id: int, *, busy: bool, status: str = "online"
    ) -> None:
        """Change a registered runner as GitHub would once it connects or takes a job."""
        runners = self._runners.get(repository, {})
        if runner_id not in runners:
            raise NotFoundError(f"runner {runner_id} is not registered in {repository}")
        runners[runner_id] = attrs.evolve(runners[runner_id], busy=busy, status=status)

    async def _call(self) -> None:
        await asyncio.sleep(0)
        if self.fail_next:
            raise self.fail_next.pop(0)
