"""The admin API refuses whoever may not use it, the agent endpoints refuse calls
without a runner's credential, and no answer carries a secret.

The routes come from the app :func:`~runs_fleet_server.app.create_app` builds: every
route under ``/api/`` is checked, so a route added later is covered without touching
this module. The server runs in memory mode with the real GitHub App client against the
simulated GitHub, so the runner configs hold real-shaped JIT configs (or registration
tokens), report tokens and installation tokens, made by the real flow: a pool the pool
loop filled, a cold job and a warm-pool job dispatched by the worker, a rejected job,
an agent report. Answers are searched with the secret scanner's own search
(:mod:`tests.secret_search`): every secret value the deployment holds, and every shape of
a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from starlette.routing import Route

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.job import JobStatus
from runs_fleet_core.testing.memory import ManualClock
from runs_fleet_github_simulator import AppKeyPair, GitHubSimulator, SimulatorServer
from runs_fleet_k8s.client import KubeCaller
from runs_fleet_k8s.identity import TokenReviewIdentity
from runs_fleet_scheduler.scheduler import build_leadership
from runs_fleet_server.app import create_app
from tests import secret_scan
from tests.integration.github_sim_fixture import APP_ID, ORG_REPO, WEBHOOK_SECRET
from tests.integration.test_server import TIMEOUT_S, Server, running
from tests.kube_api.fixtures import KubeApi
from tests.secret_search import Secrets, find

pytest_plugins = ["tests.integration.github_sim_fixture"]

ADMIN_TOKEN = "admin-token-of-the-security-test"
POOL = "ci"
COLD_LABEL = "runs-fleet=77/cpu=2"
POOL_BODY = {
    "label": f"runs-fleet=pool/cpu=2/pool={POOL}",
    "desired_running": 2,
    "desired_stopped": 0,
}
WARM_LABEL = f"runs-fleet=78/cpu=2/pool={POOL}"
REMOTE_CLIENT = ("203.0.113.7", 4242)
WRONG_CREDENTIALS = [
    {},
    {"Authorization": "Bearer not-the-admin-token"},
    {"Authorization": ADMIN_TOKEN},
    {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
]


@attrs.define
class Deployment:
    """A populated server, the ids of what it made and every secret it holds."""

    server: Server
    jobs: list[int]
    runner: str
    secrets: Secrets

    def leaks(self, response: httpx.Response) -> list[str]:
        found = find(self.secrets, response.text, "answer", "body")
        return [f"{hit.kind}: {hit.excerpt}" for hit in found]


def api_routes(server: Server, prefix: str, *, but: str = "") -> list[tuple[str, Route]]:
    """``(method, route)`` of every route of the server's app under ``prefix`` (and not
    under ``but``)."""
    app = create_app(server.services)
    found = [
        (method, route)
        for route in app.routes
        if isinstance(route, Route)
        and route.path.startswith(prefix)
        and not (but and route.path.startswith(but))
        for method in sorted(route.methods or ())
        if method != "HEAD"
    ]
    assert found, f"the app has no route under {prefix}"
    return found


def paths(route: Route, deployment: Deployment) -> Iterator[str]:
    """The route's path with each parameter filled with every value this deployment
    knows for it (any other parameter: a value nothing has)."""
    known: dict[str, list[Any]] = {"job_id": deployment.jobs, "name": [POOL]}
    names = list(route.param_convertors)
    values = [known.get(name, ["0"]) for name in names]
    for combination in itertools.product(*values):
        yield route.url_path_for(route.name, **dict(zip(names, map(str, combination), strict=True)))


def body(method: str) -> dict[str, Any] | None:
    """What a call of ``method`` sends: a pool config to every route that takes a body."""
    return None if method in ("GET", "DELETE") else POOL_BODY


async def snapshot(server: Server) -> tuple[Any, ...]:
    """Everything an API call could change: jobs, pools, runner configs, the queue."""
    adapters = server.services.adapters
    jobs = sorted(await adapters.state.list_jobs(), key=lambda job: job.job_id)
    pools = sorted(await adapters.state.list_pools(), key=lambda pool: pool.name)
    configs = {key: await adapters.configs.get(key) for key in await adapters.configs.list_ids()}
    dead = list(await adapters.queue.dead_letters())
    return jobs, pools, configs, server.queue.pending_count(), dead


@contextlib.asynccontextmanager
async def deployment(
    github_server: SimulatorServer,
    app_keys: AppKeyPair,
    tmp_path: Path,
    *,
    admin_token: str | None = ADMIN_TOKEN,
    registration: str = "jit",
) -> AsyncIterator[Deployment]:
    key = tmp_path / "app.pem"
    key.write_bytes(app_keys.private_pem)
    env = {
        "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "RUNS_FLEET_GITHUB_ADAPTER": "github",
        "RUNS_FLEET_GITHUB_APP_ID": str(APP_ID),
        "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE": str(key),
        "RUNS_FLEET_GITHUB_API_URL": github_server.url,
        "RUNS_FLEET_RUNNER_REGISTRATION": registration,
    }
    if admin_token:
        env["RUNS_FLEET_ADMIN_TOKEN"] = admin_token
        secret_scan.register_secret(admin_token, "admin token")
    async with running(**env) as server:
        github_server.sim.webhook_url = str(server.client.base_url.join("/webhook"))
        yield await _populate(server, github_server.sim, admin_token)


async def _populate(server: Server, sim: GitHubSimulator, admin_token: str | None) -> Deployment:
    """A pool the pool loop filled, a cold and a warm-pool job launched, a rejected job,
    and a ``started`` report for the cold one."""
    adapters = server.services.adapters
    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
    created = await server.client.put(f"/api/pools/{POOL}", json=POOL_BODY, headers=headers)
    assert created.status_code == 201, created.text
    assert await build_leadership(adapters, owner="security-test").tick()
    cold = await sim.queue_job(ORG_REPO, [COLD_LABEL], run_id=77)
    warm = await sim.queue_job(ORG_REPO, [WARM_LABEL], run_id=78)
    rejected = await sim.queue_job(ORG_REPO, ["runs-fleet=79/cpu=banana"], run_id=79)
    await _until_launched(server, cold, warm)
    cold_job = await adapters.state.get_job(JobId(cold))
    assert cold_job is not None and cold_job.runner_name is not None
    config = await adapters.configs.get(RunnerId(cold_job.runner_name))  # a cold runner's key
    assert config is not None
    token = config.settings["report_token"]
    report = {"job_id": cold, "runner_name": cold_job.runner_name, "event": "started"}
    answer = await server.client.post(
        "/api/agent/reports",
        json=report | {"at": "2026-01-05T09:00:00Z"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 202, answer.text
    secrets = await _secrets(server, sim, admin_token)
    return Deployment(server, [cold, warm, rejected], cold_job.runner_name, secrets)


async def _until_launched(server: Server, *job_ids: int) -> None:
    """Until each job is launching on a runner (whose config is stored by then)."""
    statuses: list[JobStatus | None] = []
    for _ in range(int(TIMEOUT_S / 0.02)):
        jobs = [await server.services.adapters.state.get_job(JobId(job)) for job in job_ids]
        statuses = [job.status if job and job.runner_id else None for job in jobs]
        if all(status is JobStatus.LAUNCHING for status in statuses):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"jobs {job_ids} were not all launched: {statuses}")


async def _secrets(server: Server, sim: GitHubSimulator, admin_token: str | None) -> Secrets:
    """Every secret value the deployment holds (also registered with the session's
    scanner, so the suite's output is checked for them too)."""
    values = [(WEBHOOK_SECRET, "webhook secret")]
    values += [(admin_token, "admin token")] if admin_token else []
    configs = server.services.adapters.configs
    for runner_id in await configs.list_ids():
        config = await configs.get(runner_id)
        assert config is not None
        values += [(config.jit_config, "JIT config")] if config.jit_config else []
        token = config.registration_token
        values += [(token, "registration token")] if token else []
        values.append((config.settings["report_token"], "report token"))
    values += [(token, "installation token") for token in sim.tokens]
    values += [(token, "registration token") for token in sim.registration_tokens]
    secrets = Secrets()
    for value, kind in values:
        secrets.add(value, kind)
        secret_scan.register_secret(value, kind)
    return secrets


@pytest.fixture
async def guarded(
    github_server: SimulatorServer, app_keys: AppKeyPair, tmp_path: Path
) -> AsyncIterator[Deployment]:
    """A populated deployment with ``RUNS_FLEET_ADMIN_TOKEN`` set."""
    async with deployment(github_server, app_keys, tmp_path) as populated:
        yield populated


# -- the admin API -----------------------------------------------------------------------


async def test_with_an_admin_token_every_api_route_refuses_a_missing_or_wrong_one(
    guarded: Deployment,
) -> None:
    server = guarded.server
    routes = api_routes(server, "/api/", but="/api/agent/")
    assert {("GET", "/api/jobs"), ("PUT", "/api/pools/{name}")} <= {
        (method, route.path) for method, route in routes
    }
    before = await snapshot(server)
    for method, route in routes:
        for path in paths(route, guarded):
            for headers in WRONG_CREDENTIALS:
                answer = await server.client.request(
                    method, path, json=body(method), headers=headers
                )
                assert answer.status_code == 401, (method, path, headers, answer.text)
                assert answer.headers["www-authenticate"] == "Bearer"
                assert not guarded.leaks(answer), (method, path)
    assert await snapshot(server) == before


async def test_without_an_admin_token_the_api_refuses_every_other_host(
    github_server: SimulatorServer, app_keys: AppKeyPair, tmp_path: Path
) -> None:
    async with deployment(github_server, app_keys, tmp_path, admin_token=None) as open_:
        server = open_.server
        transport = httpx.ASGITransport(app=create_app(server.services), client=REMOTE_CLIENT)
        before = await snapshot(server)
        async with httpx.AsyncClient(transport=transport, base_url="http://runs-fleet") as remote:
            for method, route in api_routes(server, "/api/", but="/api/agent/"):
                for path in paths(route, open_):
                    answer = await remote.request(method, path, json=body(method))
                    assert answer.status_code == 403, (method, path, answer.text)
                    assert "RUNS_FLEET_ADMIN_TOKEN" in answer.json()["error"]
                    assert not open_.leaks(answer), (method, path)
        assert await snapshot(server) == before
        assert (await server.client.get("/api/jobs")).status_code == 200  # loopback: served


@pytest.mark.parametrize("registration", ["jit", "token"])
async def test_no_answer_of_the_api_carries_a_secret(
    github_server: SimulatorServer, app_keys: AppKeyPair, tmp_path: Path, registration: str
) -> None:
    async with deployment(
        github_server, app_keys, tmp_path, registration=registration
    ) as populated:
        server = populated.server
        right = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        routes = api_routes(server, "/api/", but="/api/agent/")
        reads_first = sorted(routes, key=lambda found: found[0] != "GET")
        answered = []
        for method, route in reads_first:
            for path in paths(route, populated):
                answer = await server.client.request(method, path, json=body(method), headers=right)
                assert answer.status_code != 401, (method, path)
                assert not populated.leaks(answer), (method, path)
                answered.append((method, path, answer.status_code))
        assert ("GET", f"/api/jobs/{populated.jobs[0]}", 200) in answered
        metrics = await server.client.get("/metrics")  # labels must not carry one either
        assert metrics.status_code == 200 and not populated.leaks(metrics)


# -- the agent endpoints -----------------------------------------------------------------


async def test_agent_endpoints_refuse_calls_without_the_runners_credential(
    guarded: Deployment, kube_api: KubeApi
) -> None:
    """The report token of another runner, the admin token or nothing: 401, and nothing
    changes. The config endpoint checks pod tokens with the Kubernetes TokenReview
    identity, as a Kubernetes deployment does."""
    server = guarded.server
    identity = TokenReviewIdentity(
        KubeCaller(kube_api.api_client(), namespace=kube_api.namespace), clock=ManualClock()
    )
    server.services.adapters = attrs.evolve(
        server.services.adapters, runner_identities={"k8s": identity}
    )
    warm = await server.services.adapters.state.get_job(JobId(guarded.jobs[1]))
    assert warm is not None and warm.runner_id is not None
    other = await server.services.adapters.configs.get(RunnerId(warm.runner_id))
    assert other is not None
    credentials = [*WRONG_CREDENTIALS, {"Authorization": f"Bearer {ADMIN_TOKEN}"}]
    credentials.append({"Authorization": f"Bearer {other.settings['report_token']}"})
    before = await snapshot(server)
    report = {
        "job_id": guarded.jobs[0],
        "runner_name": guarded.runner,
        "event": "finished",
        "at": "2026-01-05T09:05:00Z",
        "exit_code": 0,
    }
    for method, route in api_routes(server, "/api/agent/"):
        payload = None if method == "GET" else report
        for headers in credentials:
            answer = await server.client.request(method, route.path, json=payload, headers=headers)
            assert answer.status_code == 401, (method, route.path, headers, answer.text)
            assert not guarded.leaks(answer), (method, route.path)
    assert await snapshot(server) == before
