"""What every simulated REST endpoint does around its own logic, as GitHub does it:
parse the JSON body, authenticate, count the call against the caller's rate limit,
answer errors in GitHub's shape with ``X-RateLimit-*`` headers, and log the call.

Every successful ``GET`` carries a weak ``ETag`` (a SHA-256 of the body); a request
whose ``If-None-Match`` names the current one gets ``304 Not Modified`` without a
body, which, as on GitHub, does not count against the rate limit.

Injected faults (:meth:`GitHubSimulator.inject_fault`) apply first, so a test can make
any endpoint fail or throttle regardless of credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runs_fleet_github_simulator import auth
from runs_fleet_github_simulator.bodies import error_json, validation_error_json
from runs_fleet_github_simulator.directory import RateBudget
from runs_fleet_github_simulator.records import App, Call, Fault, Installation
from runs_fleet_github_simulator.simulator import ApiError, GitHubSimulator

AuthKind = Literal["app", "installation", "any"]

_FAULT_MESSAGES = {
    403: "You have exceeded a secondary rate limit. Please wait a few minutes before you "
    "try again.",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Server Error",
    503: "Service Unavailable",
}


@dataclass
class Context:
    """One REST call as a handler sees it."""

    sim: GitHubSimulator
    request: Request
    body: Any
    budget: RateBudget
    app: App | None = None
    installation: Installation | None = None

    def param(self, name: str) -> Any:
        """A path parameter."""
        return self.request.path_params[name]

    @property
    def caller_app(self) -> App:
        """The authenticated App (on App endpoints)."""
        assert self.app is not None
        return self.app

    @property
    def caller_installation(self) -> Installation:
        """The authenticated installation (on token endpoints)."""
        assert self.installation is not None
        return self.installation


Handler = Callable[[Context], Awaitable[Response]]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """GitHub's error answer: ``validation-error-simple`` for 422, else ``basic-error``."""
    body = validation_error_json(message, []) if status == 422 else error_json(status, message)
    return JSONResponse(body, status_code=status, headers=headers)


def _fault_response(sim: GitHubSimulator, fault: Fault) -> Response:
    status = fault.status or 500
    headers = sim.budget("anonymous").headers()
    message = _FAULT_MESSAGES.get(status, "Simulated failure")
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    if fault.reset_in is not None:
        reset = int(sim.clock()) + fault.reset_in
        headers |= RateBudget(limit=sim.rate_limit, used=sim.rate_limit, reset=reset).headers()
        message = "API rate limit exceeded. (simulated)"
    return error_response(status, message, headers)


def etag(body: bytes) -> str:
    """The weak ``ETag`` of an answer with ``body``."""
    return f'W/"{hashlib.sha256(body).hexdigest()}"'


def _names(if_none_match: str | None, tag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``tag`` (compared weakly)."""
    if if_none_match is None:
        return False
    wanted = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in wanted or tag.removeprefix("W/") in wanted


def _conditional(request: Request, response: Response) -> Response:
    """``response`` with its ``ETag``, or ``304 Not Modified`` if the client has it."""
    if request.method != "GET" or response.status_code != 200:
        return response
    tag = etag(bytes(response.body))
    if _names(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers={"ETag": tag})
    response.headers["ETag"] = tag
    return response


def _authenticate(ctx: Context, kind: AuthKind) -> str:
    """Fill in the caller; return its rate-limit bucket."""
    headers = ctx.request.headers
    if kind == "app":
        ctx.app = auth.authenticate_app(ctx.sim, headers)
        return f"app:{ctx.app.app_id}"
    if kind == "installation":
        ctx.installation = auth.authenticate_installation(ctx.sim, headers)
        return f"installation:{ctx.installation.installation_id}"
    token = auth.credentials(headers)
    installation = ctx.sim.installation_of_token(token) if token else None
    if installation is not None:
        ctx.installation = installation
        return f"installation:{installation.installation_id}"
    return "anonymous"


async def _serve(ctx: Context, kind: AuthKind, handler: Handler) -> Response:
    sim = ctx.sim
    fault = sim.take_fault(ctx.request.method, ctx.request.url.path)
    if fault is not None:
        await asyncio.sleep(fault.delay_s)
        if fault.status is not None:
            return _fault_response(sim, fault)
    counted = False
    try:
        bucket = _authenticate(ctx, kind)
        ctx.budget = sim.budget(bucket)
        if kind != "any" and ctx.budget.remaining == 0:
            message = f"API rate limit exceeded for {bucket.replace(':', ' ID ')}."
            raise ApiError(403, message)
        counted = kind != "any"
        response = _conditional(ctx.request, await handler(ctx))
    except ApiError as exc:
        response = error_response(exc.status, exc.message)
    if counted and response.status_code != 304:
        ctx.budget.used += 1
    response.headers.update(ctx.budget.headers())
    return response


def github_route(
    sim: GitHubSimulator, method: str, path: str, kind: AuthKind, handler: Handler
) -> Route:
    """A Starlette route serving ``handler`` the way GitHub serves an endpoint."""

    async def endpoint(request: Request) -> Response:
        arrived = sim.clock()
        raw = await request.body()
        body: Any = None
        ctx = Context(sim=sim, request=request, body=None, budget=sim.budget("anonymous"))
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            response = error_response(400, "Problems parsing JSON")
        else:
            ctx.body = body
            response = await _serve(ctx, kind, handler)
        query = dict(request.query_params)
        sim.record(Call(method, request.url.path, query, body, response.status_code, arrived))
        return response

    return Route(path, endpoint, methods=[method])
