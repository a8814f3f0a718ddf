"""The subset of GitHub's REST API that runs-fleet calls, served by the simulator.

Paths, status codes and bodies follow GitHub's REST API description (the tests check
every body against it): App endpoints authenticate with the App's JWT, repository
endpoints with an installation token that covers the repository's owner.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runs_fleet_github_simulator import bodies
from runs_fleet_github_simulator.payloads import workflow_job_json
from runs_fleet_github_simulator.records import ORGANIZATION, Installation, Repository, Runner
from runs_fleet_github_simulator.routing import AuthKind, Context, Handler, github_route
from runs_fleet_github_simulator.simulator import ApiError, GitHubSimulator

NOT_FOUND = "Not Found"
MAX_PER_PAGE = 100
T = TypeVar("T")


def accessible_repo(ctx: Context) -> Repository:
    """The repository in the path, if the caller's installation covers it (else 404)."""
    repo = ctx.sim.repository(f"{ctx.param('owner')}/{ctx.param('repo')}")
    account = ctx.caller_installation.account
    if repo is None or repo.owner.login.lower() != account.login.lower():
        raise ApiError(404, NOT_FOUND)
    return repo


def _installation_answer(ctx: Context, installation: Installation | None) -> Response:
    if installation is None:
        raise ApiError(404, NOT_FOUND)
    body = bodies.installation_json(installation, ctx.caller_app, ctx.sim.api_url)
    return JSONResponse(body)


async def get_app(ctx: Context) -> Response:
    """``GET /app``."""
    app = ctx.caller_app
    count = sum(1 for i in ctx.sim.installations.values() if i.app_id == app.app_id)
    return JSONResponse(bodies.integration_json(app, ctx.sim.api_url, count))


async def get_repo_installation(ctx: Context) -> Response:
    """``GET /repos/{owner}/{repo}/installation``."""
    repo = ctx.sim.repository(f"{ctx.param('owner')}/{ctx.param('repo')}")
    found = repo and ctx.sim.installation_for(repo.owner.login, ctx.caller_app.app_id)
    return _installation_answer(ctx, found or None)


async def get_org_installation(ctx: Context) -> Response:
    """``GET /orgs/{org}/installation``: only for organizations."""
    account = ctx.sim.accounts.get(str(ctx.param("org")).lower())
    found = None
    if account is not None and account.type == ORGANIZATION:
        found = ctx.sim.installation_for(account.login, ctx.caller_app.app_id)
    return _installation_answer(ctx, found)


async def get_user_installation(ctx: Context) -> Response:
    """``GET /users/{username}/installation``: any account."""
    found = ctx.sim.installation_for(str(ctx.param("username")), ctx.caller_app.app_id)
    return _installation_answer(ctx, found)


async def create_access_token(ctx: Context) -> Response:
    """``POST /app/installations/{installation_id}/access_tokens``."""
    installation = ctx.sim.installations.get(ctx.param("installation_id"))
    if installation is None or installation.app_id != ctx.caller_app.app_id:
        raise ApiError(404, NOT_FOUND)
    if ctx.body is not None and not isinstance(ctx.body, dict):
        raise ApiError(422, "Invalid request.\n\nThe body must be a JSON object.")
    token = ctx.sim.issue_token(installation.installation_id)
    body = bodies.installation_token_json(token.value, token.expires_at)
    return JSONResponse(body, status_code=201)


def jit_request(body: Any) -> tuple[str, int, list[str], str]:
    """The validated fields of a generate-jitconfig body (``ApiError(422)`` if not)."""
    if not isinstance(body, dict):
        raise ApiError(422, "Invalid request.\n\nThe body must be a JSON object.")
    problems = []
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append('"name" wasn\'t supplied.')
    group = body.get("runner_group_id")
    if type(group) is not int:
        problems.append(f"For 'properties/runner_group_id', {json.dumps(group)} is not an integer.")
    labels = body.get("labels")
    if not isinstance(labels, list) or not 1 <= len(labels) <= 100:
        problems.append("For 'properties/labels', the runner needs 1 to 100 labels.")
    elif not all(isinstance(label, str) and label.strip() for label in labels):
        problems.append("For 'items', every label must be a non-empty string.")
    folder = body.get("work_folder", "_work")
    if not isinstance(folder, str):
        problems.append(f"For 'properties/work_folder', {json.dumps(folder)} is not a string.")
    if problems:
        raise ApiError(422, "Invalid request.\n\n" + "\n".join(problems))
    return str(name), int(str(group)), [str(label) for label in labels or []], str(folder)


async def generate_jitconfig(ctx: Context) -> Response:
    """``POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig``."""
    repo = accessible_repo(ctx)
    name, group, labels, folder = jit_request(ctx.body)
    runner = ctx.sim.register_jit_runner(
        repo.full_name, name=name, labels=labels, runner_group_id=group, work_folder=folder
    )
    body = {
        "runner": bodies.runner_json(runner),
        "encoded_jit_config": ctx.sim.encode_jit_config(runner),
    }
    return JSONResponse(body, status_code=201)


def page_params(request: Request) -> tuple[int, int]:
    """The ``per_page`` (default 30, at most 100) and ``page`` query parameters."""
    try:
        per_page = int(request.query_params.get("per_page", "30"))
        page = int(request.query_params.get("page", "1"))
    except ValueError:
        raise ApiError(422, "Invalid request.\n\nper_page and page must be integers.") from None
    return min(max(per_page, 1), MAX_PER_PAGE), max(page, 1)


def link_header(request: Request, page: int, last: int) -> dict[str, str]:
    """GitHub's ``Link`` header to the neighbouring, first and last pages."""
    links = []
    for rel, number in (("prev", page - 1), ("next", page + 1), ("first", 1), ("last", last)):
        if 1 <= number <= last and number != page:
            url = request.url.include_query_params(page=number)
            links.append(f'<{url}>; rel="{rel}"')
    return {"Link": ", ".join(links)} if links else {}


def page_of(request: Request, items: Sequence[T]) -> tuple[Sequence[T], dict[str, str]]:
    """The page of ``items`` the request asks for, and its ``Link`` header."""
    per_page, page = page_params(request)
    last = max((len(items) + per_page - 1) // per_page, 1)
    return items[(page - 1) * per_page : page * per_page], link_header(request, page, last)


async def list_runners(ctx: Context) -> Response:
    """``GET /repos/{owner}/{repo}/actions/runners`` (``name``, ``per_page``, ``page``)."""
    repo = accessible_repo(ctx)
    return runners_page(ctx, ctx.sim.runners_of(repo.full_name))


def runners_page(ctx: Context, runners: list[Runner]) -> Response:
    """One page of ``runners`` (filtered by the ``name`` query parameter), with the
    ``Link`` header GitHub sends: the shape of every runner listing."""
    if (name := ctx.request.query_params.get("name")) is not None:
        runners = [r for r in runners if r.name == name]
    chunk, links = page_of(ctx.request, runners)
    body = {"total_count": len(runners), "runners": [bodies.runner_json(r) for r in chunk]}
    return JSONResponse(body, headers=links)


async def get_runner(ctx: Context) -> Response:
    """``GET /repos/{owner}/{repo}/actions/runners/{runner_id}``."""
    repo = accessible_repo(ctx)
    runner = ctx.sim.runners.get(ctx.param("runner_id"))
    if runner is None or runner.repository.lower() != repo.full_name.lower():
        raise ApiError(404, NOT_FOUND)
    return JSONResponse(bodies.runner_json(runner))


async def delete_runner(ctx: Context) -> Response:
    """``DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}``."""
    repo = accessible_repo(ctx)
    ctx.sim.remove_runner(repo.full_name, ctx.param("runner_id"))
    return Response(status_code=204)


async def registration_token(ctx: Context) -> Response:
    """``POST /repos/{owner}/{repo}/actions/runners/registration-token``."""
    repo = accessible_repo(ctx)
    installation_id = ctx.caller_installation.installation_id
    token = ctx.sim.issue_registration_token(installation_id, repo.full_name)
    body = bodies.registration_token_json(token.value, token.expires_at)
    return JSONResponse(body, status_code=201)


async def get_job(ctx: Context) -> Response:
    """``GET /repos/{owner}/{repo}/actions/jobs/{job_id}``."""
    repo = accessible_repo(ctx)
    job = ctx.sim.jobs.get(ctx.param("job_id"))
    if job is None or job.repository.lower() != repo.full_name.lower():
        raise ApiError(404, NOT_FOUND)
    return JSONResponse(workflow_job_json(job, ctx.sim.api_url))


async def rate_limit(ctx: Context) -> Response:
    """``GET /rate_limit``: not counted against the limit."""
    budget = ctx.budget
    return JSONResponse(bodies.rate_limit_json(budget.limit, budget.used, budget.reset))


def rest_routes(sim: GitHubSimulator) -> list[Route]:
    """Every simulated REST endpoint."""
    repo = "/repos/{owner}/{repo}"
    runners = f"{repo}/actions/runners"
    table: list[tuple[str, str, AuthKind, Handler]] = [
        ("GET", "/app", "app", get_app),
        ("GET", f"{repo}/installation", "app", get_repo_installation),
        ("GET", "/orgs/{org}/installation", "app", get_org_installation),
        ("GET", "/users/{username}/installation", "app", get_user_installation),
        (
            "POST",
            "/app/installations/{installation_id:int}/access_tokens",
            "app",
            create_access_token,
        ),
        ("POST", f"{runners}/generate-jitconfig", "installation", generate_jitconfig),
        ("POST", f"{runners}/registration-token", "installation", registration_token),
        ("GET", runners, "installation", list_runners),
        ("GET", f"{runners}/{{runner_id:int}}", "installation", get_runner),
        ("DELETE", f"{runners}/{{runner_id:int}}", "installation", delete_runner),
        ("GET", f"{repo}/actions/jobs/{{job_id:int}}", "installation", get_job),
        ("GET", "/rate_limit", "any", rate_limit),
    ]
    return [github_route(sim, method, path, kind, fn) for method, path, kind, fn in table]
