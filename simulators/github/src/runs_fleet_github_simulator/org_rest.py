"""The simulated REST endpoints of organization runners and runner groups.

They take an installation token of the organization in the path; any other caller, and
any account that is not an organization, gets 404 as on GitHub.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runs_fleet_github_simulator import bodies
from runs_fleet_github_simulator.payloads import JSON
from runs_fleet_github_simulator.records import RunnerGroup
from runs_fleet_github_simulator.rest import (
    NOT_FOUND,
    jit_request,
    page_of,
    runners_page,
)
from runs_fleet_github_simulator.routing import AuthKind, Context, Handler, github_route
from runs_fleet_github_simulator.simulator import ApiError, GitHubSimulator


def _org(ctx: Context) -> str:
    """The organization in the path, if the caller's installation is on it (else 404)."""
    org = str(ctx.param("org"))
    account = ctx.caller_installation.account
    if not ctx.sim.is_organization(org) or account.login.lower() != org.lower():
        raise ApiError(404, NOT_FOUND)
    return account.login


def runner_group_json(group: RunnerGroup, api_url: str) -> JSON:
    """A ``runner-groups-org`` entry."""
    base = f"{api_url}/orgs/{group.org}/actions/runner-groups/{group.group_id}"
    return {
        "id": group.group_id,
        "name": group.name,
        "visibility": group.visibility,
        "default": group.default,
        "runners_url": f"{base}/runners",
        "hosted_runners_url": f"{base}/hosted-runners",
        "inherited": False,
        "allows_public_repositories": False,
        "restricted_to_workflows": False,
        "selected_workflows": [],
        "workflow_restrictions_read_only": False,
    }


async def generate_org_jitconfig(ctx: Context) -> Response:
    """``POST /orgs/{org}/actions/runners/generate-jitconfig``."""
    org = _org(ctx)
    name, group, labels, folder = jit_request(ctx.body)
    try:
        runner = ctx.sim.register_org_jit_runner(
            org, name=name, labels=labels, runner_group_id=group, work_folder=folder
        )
    except LookupError:
        raise ApiError(404, NOT_FOUND) from None
    except FileExistsError as exc:
        raise ApiError(409, str(exc)) from None
    body = {
        "runner": bodies.runner_json(runner),
        "encoded_jit_config": ctx.sim.encode_jit_config(runner),
    }
    return JSONResponse(body, status_code=201)


async def org_registration_token(ctx: Context) -> Response:
    """``POST /orgs/{org}/actions/runners/registration-token``."""
    org = _org(ctx)
    token = ctx.sim.issue_registration_token(ctx.caller_installation.installation_id, org)
    body = bodies.registration_token_json(token.value, token.expires_at)
    return JSONResponse(body, status_code=201)


async def list_org_runners(ctx: Context) -> Response:
    """``GET /orgs/{org}/actions/runners`` (``name``, ``per_page``, ``page``)."""
    return runners_page(ctx, ctx.sim.org_runners(_org(ctx)))


async def get_org_runner(ctx: Context) -> Response:
    """``GET /orgs/{org}/actions/runners/{runner_id}``."""
    org = _org(ctx)
    runner = ctx.sim.runners.get(ctx.param("runner_id"))
    if runner is None or (runner.org or "").lower() != org.lower():
        raise ApiError(404, NOT_FOUND)
    return JSONResponse(bodies.runner_json(runner))


async def delete_org_runner(ctx: Context) -> Response:
    """``DELETE /orgs/{org}/actions/runners/{runner_id}``: 422 while it runs a job."""
    org = _org(ctx)
    runner = ctx.sim.runners.get(ctx.param("runner_id"))
    if runner is None or (runner.org or "").lower() != org.lower():
        raise ApiError(404, NOT_FOUND)
    if runner.busy:
        raise ApiError(422, f"Bad request - Runner {runner.name} is still running a job")
    del ctx.sim.runners[runner.runner_id]
    return Response(status_code=204)


async def list_runner_groups(ctx: Context) -> Response:
    """``GET /orgs/{org}/actions/runner-groups`` (``per_page``, ``page``)."""
    org = _org(ctx)
    groups = ctx.sim.runner_groups_of(org)
    chunk, links = page_of(ctx.request, groups)
    body = {
        "total_count": len(groups),
        "runner_groups": [runner_group_json(g, ctx.sim.api_url) for g in chunk],
    }
    return JSONResponse(body, headers=links)


def org_routes(sim: GitHubSimulator) -> list[Route]:
    """Every simulated organization runner endpoint."""
    runners = "/orgs/{org}/actions/runners"
    table: list[tuple[str, str, AuthKind, Handler]] = [
        ("POST", f"{runners}/generate-jitconfig", "installation", generate_org_jitconfig),
        ("POST", f"{runners}/registration-token", "installation", org_registration_token),
        ("GET", runners, "installation", list_org_runners),
        ("GET", f"{runners}/{{runner_id:int}}", "installation", get_org_runner),
        ("DELETE", f"{runners}/{{runner_id:int}}", "installation", delete_org_runner),
        ("GET", "/orgs/{org}/actions/runner-groups", "installation", list_runner_groups),
    ]
    return [github_route(sim, method, path, kind, fn) for method, path, kind, fn in table]
