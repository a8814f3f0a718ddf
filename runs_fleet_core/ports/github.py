"""The GitHub port: the few API calls runs-fleet needs, behind one interface.

The adapter caches installation tokens until shortly before they expire, retries with
bounded backoff, honours ``Retry-After`` on 403/429, and raises ``GitHubError`` with
``retryable`` set accordingly. Tokens, registration tokens and JIT configs never appear
in its errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from runs_fleet_core.domain.ids import JobId


@attrs.frozen(kw_only=True)
class GitHubRunner:
    runner_id: int
    name: str
    busy: bool
    status: str
    labels: tuple[str, ...] = ()


@attrs.frozen(kw_only=True, repr=False)
class JitConfig:
    """A just-in-time runner registration: binds one runner to one job. Secret."""

    runner_id: int
    encoded: str

    def __repr__(self) -> str:
        return f"JitConfig(runner_id={self.runner_id}, encoded='***')"


@attrs.frozen(kw_only=True, repr=False)
class RunnerRegistration:
    """What a runner needs to register itself with ``config.sh``: a registration
    token (a secret, valid one hour) and ``url``, the web URL of the repository
    (``https://github.com/OWNER/REPO``) or organization (``https://github.com/OWNER``)
    it registers in."""

    token: str
    url: str

    def __repr__(self) -> str:
        return f"RunnerRegistration(url={self.url!r}, token='***')"


@attrs.frozen(kw_only=True)
class JobStatusReport:
    """GitHub's view of a job: ``status`` (queued, in_progress, completed, waiting)
    and ``conclusion`` once completed."""

    job_id: JobId
    status: str
    conclusion: str | None = None
    runner_name: str | None = None
    run_attempt: int = 1


@attrs.frozen(kw_only=True)
class QueuedJob:
    """A job GitHub holds queued for a runner: what a ``queued`` webhook would carry.
    ``created_at`` is when GitHub queued it (``None`` if GitHub did not say)."""

    job_id: JobId
    run_id: int
    run_attempt: int
    repository: str
    labels: tuple[str, ...]
    created_at: datetime | None = None


@runtime_checkable
class GitHub(Protocol):
    async def create_jit_config(
        self, repository: str, *, runner_name: str, labels: Sequence[str]
    ) -> JitConfig:
        """A JIT config for an ephemeral runner named ``runner_name``.

        If an idle runner of that name is already registered (a re-delivery after a
        crash), it is replaced, so calling twice never fails and never leaves two.
        """
        ...

    async def registration_token(self, repository: str) -> RunnerRegistration:
        """A registration token for a runner of ``repository`` (in the adapter's runner
        scope) and the URL it registers at: the fallback where JIT configs are
        unavailable. Weaker than a JIT config: the runner it registers may take any
        queued job whose labels it has, and the token could register other runners
        until it expires."""
        ...

    async def list_runners(self, repository: str) -> Sequence[GitHubRunner]: ...

    async def delete_runner(self, repository: str, runner_id: int) -> None:
        """Deregister a runner. Deleting one already gone is not an error."""
        ...

    async def get_job(self, repository: str, job_id: JobId) -> JobStatusReport:
        """The job's current status as GitHub knows it; ``NotFoundError`` if GitHub
        has no such job in ``repository``."""
        ...

    async def list_queued_jobs(self, repository: str) -> Sequence[QueuedJob]:
        """Every job of ``repository`` that GitHub holds queued for a runner, from its
        queued and in-progress workflow runs. Adapters should ask conditionally
        (``If-None-Match``), so asking again about a quiet repository is cheap."""
        ...

    async def rerun_job(self, repository: str, job_id: JobId) -> None:
        """Ask GitHub to run the finished job ``job_id`` again: GitHub queues it as a
        new job (a new id, the run's next attempt) and sends its ``queued`` webhook."""
        ...


@runtime_checkable
class GitHubAccessCheck(Protocol):
    """Optional, for a GitHub adapter that can tell whether it is set up right."""

    async def access_problems(self, repositories: Sequence[str]) -> list[str]:
        """What stops the adapter from serving ``repositories`` (with none: from
        talking to GitHub at all), each problem naming the setting or the App
        configuration to fix; empty when all is well. Never raises for GitHub's
        answers: they are what it reports."""
        ...
