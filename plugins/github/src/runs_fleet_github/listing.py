"""Reading GitHub's paginated lists conditionally, and what the client reads from them.

GitHub answers a GET with an ``ETag``; the same GET sent again with ``If-None-Match``
gets ``304 Not Modified`` when nothing changed, and an authorized 304 does not count
against the installation's rate limit. :class:`ConditionalCache` keeps the latest 200
answer of each page (by path and query, least recently used first out), so asking
again about a quiet repository, which is what looking for queued jobs every minute
mostly is, costs nothing from the budget.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.errors import GitHubError, NotFoundError
from runs_fleet_core.ports.github import GitHubRunner, QueuedJob
from runs_fleet_github.transport import expect_status, github_message

DEFAULT_CACHED_PAGES = 1024
PER_PAGE = 100
MAX_PAGES = 10
QUEUED_RUN_STATUSES = ("queued", "in_progress")
Key = tuple[str, tuple[tuple[str, str], ...]]
GetPage = Callable[[dict[str, str | int], dict[str, str]], Awaitable[httpx.Response]]
"""``(query, headers)`` → GitHub's answer to one GET of a list page."""
ListPages = Callable[[str, str, Mapping[str, str | int]], Awaitable[list[Any]]]
"""``(path, key, query)`` → the items under ``key`` of every page of a list."""


def unexpected(method: str, path: str) -> GitHubError:
    """The error for an answer that is not shaped as GitHub documents it."""
    return GitHubError(f"GitHub {method} {path}: unexpected answer", retryable=True)


def page_key(path: str, params: Mapping[str, str | int]) -> Key:
    """What identifies one page of a list: its path and its query."""
    return path, tuple(sorted((name, str(value)) for name, value in params.items()))


class ConditionalCache:
    """The latest answer to each of at most ``limit`` GETs, with its ETag."""

    def __init__(self, limit: int = DEFAULT_CACHED_PAGES) -> None:
        self._limit = limit
        self._pages: OrderedDict[Key, tuple[str, Any]] = OrderedDict()
        self.not_modified = 0

    def request_headers(self, key: Key) -> dict[str, str]:
        """``If-None-Match`` with the ETag of the page's latest answer, if there is one."""
        cached = self._pages.get(key)
        return {"If-None-Match": cached[0]} if cached is not None else {}

    def unchanged(self, key: Key, response: httpx.Response) -> Any | None:
        """The cached body when ``response`` is a 304 to the page's ETag; else None."""
        cached = self._pages.get(key)
        if response.status_code != 304 or cached is None:
            return None
        self._pages.move_to_end(key)
        self.not_modified += 1
        return cached[1]

    def keep(self, key: Key, response: httpx.Response, body: Any) -> None:
        """Remember a 200 answer's ``body`` under its ETag (an answer without one is
        forgotten: there is nothing to ask again with)."""
        etag = response.headers.get("etag")
        if etag is None:
            self._pages.pop(key, None)
            return
        self._pages[key] = (etag, body)
        self._pages.move_to_end(key)
        while len(self._pages) > self._limit:
            self._pages.popitem(last=False)


async def read_pages(
    get: GetPage,
    cache: ConditionalCache,
    path: str,
    key: str,
    query: Mapping[str, str | int],
    *,
    max_pages: int = MAX_PAGES,
) -> list[Any]:
    """The items under ``key`` of every page of the list at ``path`` (up to
    ``max_pages``), each page asked conditionally: a 304 reuses the page kept from
    before, at no cost to the rate budget; ``NotFoundError`` on a 404."""
    found: list[Any] = []
    for page in range(1, max_pages + 1):
        params: dict[str, str | int] = {**query, "per_page": PER_PAGE, "page": page}
        cache_key = page_key(path, params)
        response = await get(params, cache.request_headers(cache_key))
        if response.status_code == 404:
            raise NotFoundError(f"GitHub has no {path} ({github_message(response)})")
        data = cache.unchanged(cache_key, response)
        if data is None:
            expect_status(response, "GET", path, 200)
            try:
                data = response.json()
            except ValueError:
                raise unexpected("GET", path) from None
            cache.keep(cache_key, response, data)
        try:
            batch, total = list(data[key]), int(data["total_count"])
        except (KeyError, TypeError, ValueError):
            raise unexpected("GET", path) from None
        found += batch
        if not batch or len(found) >= total:
            break
    return found


def parse_time(value: Any) -> datetime | None:
    """GitHub's ISO 8601 timestamp (``...Z``) as an aware datetime; None if absent."""
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def runner_of(data: Any) -> GitHubRunner:
    """A runner of a runners list."""
    return GitHubRunner(
        runner_id=int(data["id"]),
        name=str(data["name"]),
        busy=bool(data["busy"]),
        status=str(data["status"]),
        labels=tuple(str(label["name"]) for label in data.get("labels", [])),
    )


def queued_job(repository: str, data: Any) -> QueuedJob | None:
    """The job of a run's jobs list if GitHub holds it queued for a runner."""
    if data.get("status") != "queued":
        return None
    return QueuedJob(
        job_id=JobId(int(data["id"])),
        run_id=int(data["run_id"]),
        run_attempt=int(data.get("run_attempt") or 1),
        repository=repository,
        labels=tuple(str(label) for label in data.get("labels", [])),
        created_at=parse_time(data.get("created_at")),
    )


async def queued_jobs(list_pages: ListPages, repository: str, runs_path: str) -> list[QueuedJob]:
    """The queued jobs of ``repository``'s queued and in-progress workflow runs (listed
    at ``runs_path``), by job id; a run deleted meanwhile is skipped."""
    found: dict[JobId, QueuedJob] = {}
    for status in QUEUED_RUN_STATUSES:
        for run in await list_pages(runs_path, "workflow_runs", {"status": status}):
            try:
                jobs_path = f"{runs_path}/{int(run['id'])}/jobs"
            except (KeyError, TypeError, ValueError):
                raise unexpected("GET", runs_path) from None
            try:
                jobs = await list_pages(jobs_path, "jobs", {"filter": "latest"})
            except NotFoundError:
                continue
            for item in jobs:
                try:
                    job = queued_job(repository, item)
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise unexpected("GET", jobs_path) from None
                if job is not None:
                    found[job.job_id] = job
    return [found[job_id] for job_id in sorted(found)]
