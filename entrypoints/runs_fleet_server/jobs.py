"""``GET /api/jobs`` and ``GET /api/jobs/{job_id}``: what runs-fleet did with each job.

Read-only and free of secrets (a job record holds none: JIT configs and report tokens
live in the runner configs, which this API never reads). With
``RUNS_FLEET_ADMIN_TOKEN`` set it needs ``Authorization: Bearer <token>``; without one it
answers loopback clients only, so an unconfigured server does not publish its jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import attrs
import cattrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runs_fleet_core.converters import make_record_converter
from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_server.bootstrap import Services
from runs_fleet_server.common import UNAVAILABLE, admin_denied, error

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
TIMEOUT_S = 5.0
SUMMARY_FIELDS = (
    "job_id",
    "run_id",
    "repository",
    "status",
    "attempt",
    "reason",
    "backend",
    "pool",
    "runner_id",
    "runner_name",
    "created_at",
)


class _BadQuery(Exception):
    pass


@attrs.define
class JobsApi:
    """The jobs API handlers, bound to the process's services."""

    services: Services
    converter: cattrs.Converter = attrs.field(factory=make_record_converter, init=False)

    async def list_jobs(self, request: Request) -> Response:
        """Jobs by id, filtered by ``status``, ``repo`` and ``pool``; ``limit`` per page,
        ``cursor`` = the ``next_cursor`` of the previous page."""
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            status, repo, pool, limit, cursor = _query(request)
        except _BadQuery as exc:
            return error(400, str(exc))
        try:
            async with asyncio.timeout(TIMEOUT_S):
                found = await self.services.adapters.state.list_jobs(status=status, pool=pool)
        except UNAVAILABLE:
            return error(503, "the state store is unavailable; try again later")
        page, more = _page(found, repo=repo, cursor=cursor, limit=limit)
        return JSONResponse(
            {
                "jobs": [self._summary(job) for job in page],
                "next_cursor": str(page[-1].job_id) if more else None,
            }
        )

    async def get_job(self, request: Request) -> Response:
        """One job with its spec and timeline; 404 when runs-fleet never saw it."""
        if (denied := self._denied(request)) is not None:
            return denied
        job_id = JobId(request.path_params["job_id"])
        try:
            async with asyncio.timeout(TIMEOUT_S):
                job = await self.services.adapters.state.get_job(job_id)
        except UNAVAILABLE:
            return error(503, "the state store is unavailable; try again later")
        if job is None:
            return error(404, f"job {job_id} is not known to runs-fleet")
        return JSONResponse(self._detail(job))

    def _denied(self, request: Request) -> Response | None:
        return admin_denied(request, self.services.admin_token, "the jobs API")

    def _summary(self, job: Job) -> dict[str, Any]:
        raw = self.converter.unstructure(job)
        return {name: raw[name] for name in SUMMARY_FIELDS}

    def _detail(self, job: Job) -> dict[str, Any]:
        raw: dict[str, Any] = self.converter.unstructure(job)
        raw.pop("version", None)
        return raw


def _query(request: Request) -> tuple[JobStatus | None, str | None, str | None, int, int]:
    params = request.query_params
    status_text = params.get("status")
    try:
        status = JobStatus(status_text) if status_text else None
    except ValueError:
        allowed = ", ".join(s.value for s in JobStatus)
        raise _BadQuery(f"status must be one of {allowed}") from None
    limit = _int(params.get("limit"), "limit", DEFAULT_LIMIT)
    if not 1 <= limit <= MAX_LIMIT:
        raise _BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
    cursor = _int(params.get("cursor"), "cursor", 0)
    pool = params.get("pool")
    return status, params.get("repo") or None, pool.lower() if pool else None, limit, cursor


def _int(text: str | None, name: str, default: int) -> int:
    if not text:
        return default
    if not text.isdigit() or len(text) > 20:
        raise _BadQuery(f"{name} must be a whole number")
    return int(text)


def _page(
    jobs: Sequence[Job], *, repo: str | None, cursor: int, limit: int
) -> tuple[list[Job], bool]:
    """The jobs after ``cursor`` (by id) of ``repo``, at most ``limit``, and whether
    there are more."""
    wanted = sorted(
        (
            job
            for job in jobs
            if job.job_id > cursor and (repo is None or job.repository.lower() == repo.lower())
        ),
        key=lambda job: job.job_id,
    )
    return wanted[:limit], len(wanted) > limit
