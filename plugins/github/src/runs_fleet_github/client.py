"""The GitHub port over GitHub's REST API, authenticated as a GitHub App.

Each method is one small conversation with GitHub about one repository: register a
just-in-time runner (replacing an idle one left by an earlier attempt with the same
name), hand out a registration token, list or delete runners, read a job's status.
Runners live in the repository or in its organization (:mod:`runs_fleet_github.scope`);
the repository's owner picks the installation, so one client serves every organization
and user the App is installed on. Runner registrations go through a token bucket and
every call through the installation's rate ledger (:mod:`runs_fleet_github.budget`).
Status codes that mean something for the operation (404, 409, 422) are handled here;
transport-level trouble and throttling are :mod:`runs_fleet_github.transport`'s.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.errors import GitHubError, NotFoundError
from runs_fleet_core.ports import Clock, Metrics, SystemClock
from runs_fleet_core.ports.github import (
    GitHubRunner,
    JitConfig,
    JobStatusReport,
    QueuedJob,
    RunnerRegistration,
)
from runs_fleet_github.auth import AppAuth
from runs_fleet_github.budget import RateLedger, TokenBucket
from runs_fleet_github.keys import load_app_key
from runs_fleet_github.listing import (
    ConditionalCache,
    queued_jobs,
    read_pages,
    runner_of,
    unexpected,
)
from runs_fleet_github.scope import (
    GroupChoice,
    RunnerGroups,
    Scope,
    no_jit_configs,
    registration_url,
    runners_path,
    split_repository,
)
from runs_fleet_github.transport import Api, RetryPolicy, Sleep, expect_status, github_message

log = logging.getLogger("runs_fleet_github")

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_JIT_PER_MINUTE = 60.0


def _repo_path(repository: str) -> str:
    """``/repos/owner/name`` for ``owner/name``; ``GitHubError`` for anything else."""
    owner, name = split_repository(repository)
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


class GitHubAppClient:
    """The :class:`~runs_fleet_core.ports.GitHub` port as GitHub App ``app_id``.

    ``private_key``: the App's key, PEM or base64 of PEM (``ConfigError`` if invalid).
    ``api_url``: ``https://api.github.com``, or ``https://HOST/api/v3`` on GitHub
    Enterprise Server. ``timeout_s`` bounds every HTTP call; ``retry`` bounds retries.
    ``scope``: repository or organization runners. ``runner_group``: the group JIT
    runners join, by id or (organization scope) by name; ``runner_group_id`` is the
    older spelling of a group chosen by id. ``jit_per_minute``/``jit_burst``: the
    token bucket runner registrations share. ``metrics``: where the rate budget and
    throttled calls are reported. ``clock``/``sleep``/``rng``/``transport`` are
    injectable for tests.
    """

    def __init__(
        self,
        *,
        app_id: int,
        private_key: str | bytes,
        api_url: str = DEFAULT_API_URL,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        runner_group_id: int = 1,
        scope: Scope = Scope.REPO,
        runner_group: GroupChoice | None = None,
        jit_per_minute: float = DEFAULT_JIT_PER_MINUTE,
        jit_burst: int | None = None,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = load_app_key(private_key)
        self._clock = clock or SystemClock()
        self.scope = scope
        choice = runner_group or GroupChoice(group_id=runner_group_id)
        self.runner_group_id = choice.group_id
        self.api = Api(
            base_url=api_url,
            clock=self._clock,
            timeout_s=timeout_s,
            retry=retry,
            sleep=sleep,
            rng=rng,
            transport=transport,
            metrics=metrics,
        )
        self.auth = AppAuth(app_id=app_id, key=key, api=self.api, clock=self._clock)
        self._groups = RunnerGroups(choice, self.owner_call)
        self.registrations = TokenBucket(
            per_minute=jit_per_minute, burst=jit_burst, clock=self._clock, sleep=sleep,
            metrics=metrics,
        )  # fmt: skip
        self.ledger = RateLedger(
            clock=self._clock, sleep=sleep, max_wait_s=self.api.retry.max_wait_s, metrics=metrics
        )
        self.pages = ConditionalCache()

    def __repr__(self) -> str:
        return f"GitHubAppClient(app_id={self.auth.app_id}, scope={self.scope.value})"

    async def create_jit_config(
        self, repository: str, *, runner_name: str, labels: Sequence[str]
    ) -> JitConfig:
        """Register ephemeral runner ``runner_name`` with ``labels`` and return its JIT
        config; an idle runner of that name is replaced, a busy one is an error. Waits
        for the registration budget rather than exceeding it."""
        path = f"{runners_path(self.scope, repository)}/generate-jitconfig"
        await self.registrations.acquire()
        response = await self._jit_request(repository, path, runner_name, labels)
        if response.status_code == 409:
            await self._replace_idle(repository, runner_name)
            response = await self._jit_request(repository, path, runner_name, labels)
            if response.status_code == 409:
                raise GitHubError(
                    f"runner {runner_name!r} of {repository} was registered again meanwhile",
                    retryable=True,
                )
        if response.status_code == 404:
            raise no_jit_configs(self.scope, self.api.base_url, repository)
        expect_status(response, "POST", path, 201)
        try:
            data = response.json()
            jit = JitConfig(
                runner_id=int(data["runner"]["id"]), encoded=str(data["encoded_jit_config"])
            )
        except (ValueError, KeyError, TypeError):
            raise unexpected("POST", path) from None
        log.info("registered JIT runner %s (id %s) for %s", runner_name, jit.runner_id, repository)
        return jit

    async def _jit_request(
        self, repository: str, path: str, runner_name: str, labels: Sequence[str]
    ) -> httpx.Response:
        """One generate-jitconfig request; in organization scope a 404 for a group
        resolved by name drops the cached id and asks once more with a fresh one."""
        owner = split_repository(repository)[0]
        for attempt in (1, 2):
            group_id = (
                await self._groups.group_id(owner)
                if self.scope is Scope.ORG
                else self._groups.choice.group_id
            )
            body = {
                "name": runner_name,
                "runner_group_id": group_id,
                "labels": list(labels),
                "work_folder": "_work",
            }
            response = await self._call(repository, "POST", path, json=body)
            renamed = self.scope is Scope.ORG and self._groups.choice.name is not None
            if response.status_code != 404 or not renamed or attempt == 2:
                return response
            self._groups.forget(owner)
        raise AssertionError("unreachable")  # pragma: no cover

    async def registration_token(self, repository: str) -> RunnerRegistration:
        """A runner registration token for ``repository`` (valid one hour), in the
        configured scope, with the web URL a runner registers at. Weaker than a JIT
        config: any job with matching labels may take the runner it registers, so it
        is only for where JIT is unavailable."""
        path = f"{runners_path(self.scope, repository)}/registration-token"
        url = registration_url(self.scope, self.api.base_url, repository)
        await self.registrations.acquire()
        response = await self._call(repository, "POST", path)
        expect_status(response, "POST", path, 201)
        try:
            token = response.json()["token"]
        except (ValueError, KeyError, TypeError):
            raise unexpected("POST", path) from None
        if not isinstance(token, str) or not token:
            raise unexpected("POST", path)
        log.info("got a runner registration token for %s", url)
        return RunnerRegistration(token=token, url=url)

    async def list_runners(self, repository: str) -> Sequence[GitHubRunner]:
        """Every runner registered in ``repository`` (all pages); in organization
        scope, every runner of its organization."""
        return await self._runners(repository)

    async def delete_runner(self, repository: str, runner_id: int) -> None:
        """Deregister runner ``runner_id``; one already gone is fine."""
        path = f"{runners_path(self.scope, repository)}/{int(runner_id)}"
        response = await self._call(repository, "DELETE", path)
        if response.status_code == 404:
            return
        expect_status(response, "DELETE", path, 204)

    async def get_job(self, repository: str, job_id: JobId) -> JobStatusReport:
        """GitHub's view of job ``job_id``; ``NotFoundError`` if it has none."""
        path = f"{_repo_path(repository)}/actions/jobs/{int(job_id)}"
        response = await self._call(repository, "GET", path)
        if response.status_code == 404:
            raise NotFoundError(f"GitHub has no job {job_id} in {repository}")
        expect_status(response, "GET", path, 200)
        try:
            data = response.json()
            return JobStatusReport(
                job_id=job_id,
                status=str(data["status"]),
                conclusion=data.get("conclusion"),
                runner_name=data.get("runner_name"),
                run_attempt=int(data.get("run_attempt") or 1),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise unexpected("GET", path) from None

    async def list_queued_jobs(self, repository: str) -> Sequence[QueuedJob]:
        """The jobs GitHub holds queued in ``repository``: the queued jobs of its queued
        and in-progress workflow runs (a run with one job done and one waiting for a
        runner is in progress). Every page is asked conditionally, so a repository
        where nothing changed costs no rate budget."""
        runs_path = f"{_repo_path(repository)}/actions/runs"
        return await queued_jobs(functools.partial(self._list, repository), repository, runs_path)

    async def rerun_job(self, repository: str, job_id: JobId) -> None:
        """Re-run finished job ``job_id`` (GitHub queues it anew under a new id);
        ``NotFoundError`` if GitHub has no such job, ``GitHubError`` if it refuses."""
        path = f"{_repo_path(repository)}/actions/jobs/{int(job_id)}/rerun"
        response = await self._call(repository, "POST", path)
        if response.status_code == 404:
            raise NotFoundError(f"GitHub has no job {job_id} in {repository} to re-run")
        if response.status_code == 403:
            raise GitHubError(
                f"GitHub refused to re-run job {job_id} of {repository} "
                f"({github_message(response)}): the job must have finished, and the App "
                "needs the Actions permission (read and write)",
                retryable=False,
            )
        expect_status(response, "POST", path, 201)
        log.info("asked GitHub to re-run job %s of %s", job_id, repository)

    async def access_problems(self, repositories: Sequence[str]) -> list[str]:
        """Whether the App's id, key, installations and permissions let this client
        serve ``repositories``: see :mod:`runs_fleet_github.access`."""
        from runs_fleet_github.access import access_problems

        return await access_problems(self, repositories)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self.api.aclose()

    async def __aenter__(self) -> GitHubAppClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _call(
        self,
        repository: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str | int] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One call about ``repository`` with its owner's installation."""
        owner = split_repository(repository)[0]
        return await self.owner_call(owner, method, path, json=json, params=params, headers=headers)

    async def owner_call(
        self,
        owner: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str | int] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One call with ``owner``'s installation token, within its rate budget; on
        401 (revoked or expired early) once more with a new token. A new token refused
        too is a ``GitHubError`` naming what to check: the installation on ``owner``."""
        await self.ledger.wait_for_budget(owner)
        for fresh in (False, True):
            token = await self.auth.token(owner)
            response = await self.api.request(
                method, path, credential=token, json=json, params=params, headers=headers
            )
            if response.status_code != 401:
                break
            self.auth.forget_token(owner, token)
            if fresh:
                self.ledger.note(owner, response.headers)
                raise GitHubError(
                    f"GitHub refused a new token of App {self.auth.app_id}'s installation "
                    f"on {owner} too ({github_message(response)}) on {method} {path}: the "
                    f"installation may be suspended or removed; check it in {owner}'s "
                    "settings → GitHub Apps → the App → Configure, and that "
                    "RUNS_FLEET_GITHUB_APP_ID names the App installed there",
                    retryable=True,
                )
        self.ledger.note(owner, response.headers)
        return response

    async def _runners(self, repository: str, name: str | None = None) -> list[GitHubRunner]:
        path = runners_path(self.scope, repository)
        query = {"name": name} if name is not None else {}
        items = await self._list(repository, path, "runners", query)
        try:
            return [runner_of(item) for item in items]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise unexpected("GET", path) from None

    async def _list(
        self, repository: str, path: str, key: str, query: Mapping[str, str | int]
    ) -> list[Any]:
        """Every page of the list at ``path`` about ``repository``, asked conditionally
        (:func:`runs_fleet_github.listing.read_pages`)."""

        async def get(params: dict[str, str | int], headers: dict[str, str]) -> httpx.Response:
            return await self._call(repository, "GET", path, params=params, headers=headers)

        return await read_pages(get, self.pages, path, key, query)

    async def _replace_idle(self, repository: str, runner_name: str) -> None:
        """Delete the idle runner(s) named ``runner_name``; ``GitHubError`` if busy."""
        for runner in await self._runners(repository, name=runner_name):
            if runner.name != runner_name:
                continue
            if runner.busy:
                raise GitHubError(
                    f"runner {runner_name!r} of {repository} is busy and cannot be replaced",
                    retryable=False,
                )
            log.info(
                "replacing idle runner %s (id %s) in %s", runner_name, runner.runner_id, repository
            )
            path = f"{runners_path(self.scope, repository)}/{runner.runner_id}"
            response = await self._call(repository, "DELETE", path)
            if response.status_code == 422:
                raise GitHubError(
                    f"runner {runner_name!r} of {repository} became busy and cannot be replaced",
                    retryable=False,
                )
            if response.status_code != 404:
                expect_status(response, "DELETE", path, 204)
