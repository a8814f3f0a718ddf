"""The simulated REST endpoints of workflow runs: listing a repository's runs, listing a
run's jobs, and re-running a job.

They take an installation token that covers the repository, like the other repository
endpoints. Of the run listing's filters only ``status`` is applied; ``created``,
``branch``, ``actor``, ``event``, ``head_sha``, ``check_suite_id`` and
``exclude_pull_requests`` are accepted and ignored.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runs_fleet_github_simulator.payloads import workflow_job_json
from runs_fleet_github_simulator.rest import NOT_FOUND, accessible_repo, page_of
from runs_fleet_github_simulator.routing import AuthKind, Context, Handler, github_route
from runs_fleet_github_simulator.runs import RUN_CONCLUSIONS, RUN_STATUSES, workflow_run_json
from runs_fleet_github_simulator.simulator import ApiError, GitHubSimulator

JOB_FILTERS = ("latest", "all")


def _invalid(name: str, value: str, allowed: tuple[str, ...]) -> ApiError:
    return ApiError(
        422, f"Invalid request.\n\n{value!r} is not a valid {name} (one of {', '.join(allowed)})."
    )


async def list_workflow_runs(ctx: Context) -> Response:
    """``GET /repos/{owner}/{repo}/actions/runs`` (``status``, ``per_page``, ``page``):
    newest first; a conclusion as ``status`` keeps the runs completed with it."""
    repo = accessible_repo(ctx)
    runs = ctx.sim.workflow_runs(repo.full_name)
    if (status := ctx.request.query_params.get("status")) is not None:
        if status not in RUN_STATUSES + RUN_CONCLUSIONS:
            raise _invalid("status", status, RUN_STATUSES + RUN_CONCLUSIONS)
        runs = [run for run in runs if run.matches(status)]
    chunk, links = page_of(ctx.request, runs)
    body = {
        "total_count": len(runs),
        "workflow_runs": [
            workflow_run_json(run, repo, ctx.sim.sender, ctx.sim.api_url) for run in chunk
        ],
    }
    return JSONResponse(body, headers=links)


async def list_run_jobs(ctx: Context) -> Response:
    """``GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs`` (``filter``: ``latest``,
    the most recent execution of each job, or ``all``; ``per_page``, ``page``)."""
    repo = accessible_repo(ctx)
    run = ctx.sim.workflow_run(repo.full_name, ctx.param("run_id"))
    if run is None:
        raise ApiError(404, NOT_FOUND)
    which = ctx.request.query_params.get("filter", "latest")
    if which not in JOB_FILTERS:
        raise _invalid("filter", which, JOB_FILTERS)
    jobs = run.latest_jobs() if which == "latest" else list(run.jobs)
    chunk, links = page_of(ctx.request, jobs)
    body = {
        "total_count": len(jobs),
        "jobs": [workflow_job_json(job, ctx.sim.api_url) for job in chunk],
    }
    return JSONResponse(body, headers=links)


async def rerun_job(ctx: Context) -> Response:
    """``POST /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun``: 201 with ``{}``;
    403 while the job's run has a job not completed."""
    repo = accessible_repo(ctx)
    job = ctx.sim.jobs.get(ctx.param("job_id"))
    if job is None or job.repository.lower() != repo.full_name.lower():
        raise ApiError(404, NOT_FOUND)
    if ctx.body is not None and not isinstance(ctx.body, dict):
        raise ApiError(422, "Invalid request.\n\nThe body must be a JSON object.")
    await ctx.sim.rerun_job(job.job_id)
    return JSONResponse({}, status_code=201)


def runs_routes(sim: GitHubSimulator) -> list[Route]:
    """Every simulated workflow-run endpoint."""
    actions = "/repos/{owner}/{repo}/actions"
    table: list[tuple[str, str, AuthKind, Handler]] = [
        ("GET", f"{actions}/runs", "installation", list_workflow_runs),
        ("GET", f"{actions}/runs/{{run_id:int}}/jobs", "installation", list_run_jobs),
        ("POST", f"{actions}/jobs/{{job_id:int}}/rerun", "installation", rerun_job),
    ]
    return [github_route(sim, method, path, kind, fn) for method, path, kind, fn in table]
