"""The simulator's own HTTP endpoints, under ``/_simulator/`` (not GitHub's API).

Two groups: the *simulated runner protocol* that ``run.sh`` speaks (acquire a job,
complete it, disconnect), authenticated by the secret inside the runner's JIT config
(or the ``.runner`` file the simulated ``config.sh`` wrote after registering the runner
with a registration token, :mod:`~runs_fleet_github_simulator.registrations`);
and a *control API* through which a demo or a test in another process creates runner
groups, queues jobs (possibly held back), releases held jobs, cancels jobs, presets
results, loses runners, re-sends deliveries, injects faults and reads the call log and
the re-runs. The control API is unauthenticated: bind the simulator to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runs_fleet_github_simulator.bodies import runner_json
from runs_fleet_github_simulator.payloads import workflow_job_json
from runs_fleet_github_simulator.records import ORGANIZATION, Delivery, Job, Runner
from runs_fleet_github_simulator.registrations import register_with_token
from runs_fleet_github_simulator.simulator import ApiError, GitHubSimulator

PREFIX = "/_simulator"
MAX_WAIT_S = 30.0
DISCONNECT_POLL_S = 0.2
JOB_OPTIONS = ("run_id", "name", "workflow_name", "head_branch", "conclusion", "duration_s", "held")
Endpoint = Callable[[GitHubSimulator, Request, dict[str, Any]], Awaitable[Response]]


def _delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "delivery_id": delivery.delivery_id,
        "event": delivery.event,
        "action": delivery.action,
        "job_id": delivery.job_id,
        "status_code": delivery.status_code,
        "attempts": len(delivery.attempts),
    }


def _runner(sim: GitHubSimulator, body: dict[str, Any]) -> Runner:
    runner_id, secret = body.get("runner_id"), body.get("secret")
    if not isinstance(runner_id, int) or not isinstance(secret, str):
        raise ApiError(400, "runner_id (integer) and secret (string) are required")
    runner = sim.authenticate_runner(runner_id, secret)
    if runner is None:
        raise ApiError(404, "no such runner (deleted, completed, or a wrong secret)")
    return runner


async def _unless_hung_up(request: Request, waiting: Awaitable[Job | None]) -> Job | None:
    """Await ``waiting`` unless the client hangs up first; then cancel it and raise
    ``ConnectionResetError`` (a killed runner must not be handed a job by its orphaned
    long poll)."""
    task = asyncio.ensure_future(waiting)
    while not task.done():
        await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if not task.done() and await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise ConnectionResetError("the runner hung up")
    return task.result()


async def acquire(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Runner protocol: wait up to ``wait_s`` for a job; 200 with it, 204 without. A
    runner that hangs up meanwhile is shown offline, as GitHub shows a dead runner."""
    runner = _runner(sim, body)
    wait_s = min(float(body.get("wait_s", 10.0)), MAX_WAIT_S)
    try:
        job = await _unless_hung_up(request, sim.acquire(runner, max(wait_s, 0.0)))
    except ConnectionResetError:
        await sim.disconnect(runner)
        return Response(status_code=204)
    if job is None:
        return Response(status_code=204)
    answer = {
        "job_id": job.job_id,
        "run_id": job.run_id,
        "name": job.name,
        "repository": job.repository,
        "conclusion": job.planned_conclusion,
        "duration_s": job.duration_s,
    }
    return JSONResponse({"job": answer})


async def complete(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Runner protocol: finish the runner's job with ``conclusion``."""
    job = await sim.complete(_runner(sim, body), str(body.get("conclusion", "")))
    return JSONResponse({"job_id": job.job_id, "conclusion": job.conclusion})


async def disconnect(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Runner protocol: the runner stops without a job."""
    await sim.disconnect(_runner(sim, body))
    return Response(status_code=204)


async def register_runner(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Runner protocol: ``config.sh`` registers an ephemeral runner with a registration
    token (``{token, url, name, labels, ephemeral}``); 201 with the runner and the
    ``config`` its ``run.sh`` runs with."""
    token, url, name = body.get("token"), body.get("url"), body.get("name")
    labels = body.get("labels", [])
    if not all(isinstance(v, str) and v for v in (token, url, name)):
        raise ApiError(400, "token, url and name (non-empty strings) are required")
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise ApiError(400, "labels must be a list of non-empty strings")
    if body.get("ephemeral") is not True:
        raise ApiError(422, "the simulator has only ephemeral runners: pass --ephemeral")
    runner = register_with_token(sim, token=str(token), url=str(url), name=str(name), labels=labels)
    answer = {"runner": runner_json(runner), "config": sim.runner_document(runner)}
    return JSONResponse(answer, status_code=201)


async def list_registrations(
    sim: GitHubSimulator, request: Request, body: dict[str, Any]
) -> Response:
    """Control: every runner registered with a registration token, oldest first."""
    fields = ("token", "url", "name", "labels", "runner_id", "at")
    return JSONResponse(
        [{name: getattr(r, name) for name in fields} for r in sim.token_registrations]
    )


async def lose_runner(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: the runner's machine is gone; 200 with the job it was running (now
    completed ``failure``), 204 if it was idle (now offline)."""
    job = await sim.lose_runner(int(request.path_params["runner_id"]))
    if job is None:
        return Response(status_code=204)
    return JSONResponse(workflow_job_json(job, sim.api_url))


async def add_repository(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: create a repository (and install the App on its owner)."""
    try:
        repo = sim.add_repository(
            str(body.get("full_name", "")),
            owner_type=str(body.get("owner_type", ORGANIZATION)),
            installed=bool(body.get("installed", True)),
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    installation = sim.installation_for(repo.owner.login, sim.app.app_id)
    answer = {
        "full_name": repo.full_name,
        "id": repo.repo_id,
        "installation_id": installation.installation_id if installation else None,
    }
    return JSONResponse(answer, status_code=201)


async def add_runner_group(
    sim: GitHubSimulator, request: Request, body: dict[str, Any]
) -> Response:
    """Control: create a runner group in an organization; its id."""
    try:
        group = sim.add_runner_group(str(body.get("org", "")), str(body.get("name", "")))
    except (ValueError, KeyError) as exc:
        raise ApiError(400, str(exc)) from None
    return JSONResponse({"id": group.group_id, "name": group.name}, status_code=201)


async def queue_job(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: queue a job (sends its ``queued`` webhook)."""
    labels = body.get("labels")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ApiError(400, "labels must be a list of strings")
    options = {key: body[key] for key in JOB_OPTIONS if key in body}
    try:
        job_id = await sim.queue_job(str(body.get("repository", "")), labels, **options)
    except (ValueError, TypeError) as exc:
        raise ApiError(400, str(exc)) from None
    delivery = sim.deliveries_for(job_id, "queued")[-1]
    return JSONResponse({"job_id": job_id, "delivery_id": delivery.delivery_id}, status_code=201)


async def list_jobs(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: every job, as the REST API shows it."""
    return JSONResponse([workflow_job_json(job, sim.api_url) for job in sim.jobs.values()])


def _job_id(request: Request, sim: GitHubSimulator) -> int:
    job_id = int(request.path_params["job_id"])
    if job_id not in sim.jobs:
        raise ApiError(404, f"no job {job_id}")
    return job_id


async def cancel_job(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: cancel a job (sends ``completed`` with ``cancelled``)."""
    await sim.cancel_job(_job_id(request, sim))
    return Response(status_code=204)


async def release_job(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: let runners take a held job; ``{"runner_name": …}`` only that runner."""
    runner_name = body.get("runner_name")
    if runner_name is not None and not isinstance(runner_name, str):
        raise ApiError(400, "runner_name must be a string")
    await sim.release_job(_job_id(request, sim), runner_name)
    return Response(status_code=204)


async def set_result(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: preset a job's conclusion (and duration) for the simulated runner."""
    try:
        sim.set_job_result(
            _job_id(request, sim), str(body.get("conclusion")), body.get("duration_s")
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return Response(status_code=204)


async def list_reruns(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: every job re-run, oldest first, with the job the re-run created."""
    return JSONResponse([{"job_id": old, "new_job_id": new} for old, new in sim.reruns])


async def list_deliveries(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: every webhook delivery made, oldest first."""
    return JSONResponse([_delivery_json(d) for d in sim.deliveries])


async def resend(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: ``redeliver`` (same id) or ``duplicate`` (new id) a delivery."""
    delivery_id, how = request.path_params["delivery_id"], request.path_params["how"]
    if how not in ("redeliver", "duplicate"):
        raise ApiError(404, f"unknown action {how}")
    try:
        sent = await (sim.redeliver if how == "redeliver" else sim.duplicate)(delivery_id)
    except KeyError:
        raise ApiError(404, f"no delivery {delivery_id}") from None
    return JSONResponse(_delivery_json(sent))


async def inject_fault(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: make the next calls of a REST path fail (see ``inject_fault``)."""
    try:
        sim.inject_fault(**body)
    except TypeError as exc:
        raise ApiError(400, str(exc)) from None
    return Response(status_code=201)


async def set_webhooks(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: ``{"drop": true}`` records later deliveries as not sent, as when GitHub
    fails to deliver (it does not redeliver on its own); ``{"drop": false}`` sends again."""
    drop = body.get("drop")
    if not isinstance(drop, bool):
        raise ApiError(400, 'expected {"drop": true} or {"drop": false}')
    sim.drop_webhooks = drop
    return Response(status_code=204)


async def list_calls(sim: GitHubSimulator, request: Request, body: dict[str, Any]) -> Response:
    """Control: the REST calls served (``?method=&path=`` filter them)."""
    query = request.query_params
    calls = sim.calls(query.get("method"), query.get("path"))
    fields = ("method", "path", "query", "body", "status", "at")
    return JSONResponse([{name: getattr(c, name) for name in fields} for c in calls])


def _route(sim: GitHubSimulator, method: str, path: str, endpoint: Endpoint) -> Route:
    async def serve(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        try:
            return await endpoint(sim, request, body)
        except ApiError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)

    return Route(PREFIX + path, serve, methods=[method])


def control_routes(sim: GitHubSimulator) -> list[Route]:
    """The runner protocol and the control API."""
    table: list[tuple[str, str, Endpoint]] = [
        ("POST", "/runners/acquire", acquire),
        ("POST", "/runners/complete", complete),
        ("POST", "/runners/disconnect", disconnect),
        ("POST", "/runner-registrations", register_runner),
        ("GET", "/runner-registrations", list_registrations),
        ("POST", "/runners/{runner_id:int}/lost", lose_runner),
        ("POST", "/repositories", add_repository),
        ("POST", "/runner-groups", add_runner_group),
        ("POST", "/jobs", queue_job),
        ("GET", "/jobs", list_jobs),
        ("POST", "/jobs/{job_id:int}/cancel", cancel_job),
        ("POST", "/jobs/{job_id:int}/release", release_job),
        ("POST", "/jobs/{job_id:int}/result", set_result),
        ("GET", "/reruns", list_reruns),
        ("GET", "/deliveries", list_deliveries),
        ("POST", "/deliveries/{delivery_id}/{how}", resend),
        ("POST", "/faults", inject_fault),
        ("POST", "/webhooks", set_webhooks),
        ("GET", "/calls", list_calls),
    ]
    return [_route(sim, method, path, endpoint) for method, path, endpoint in table]
