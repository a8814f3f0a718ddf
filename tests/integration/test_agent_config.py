"""``GET /api/agent/config`` with Kubernetes TokenReview as the runner identity check:
a pool pod's bound service account token gets that pod's config and nothing else.

The server runs in memory mode with the ``k8s`` plugin's TokenReview identity wired in,
against the fake Kubernetes API server, which issues and reviews tokens as a real API
server does (bound to a pod, for an audience, until they expire or the pod goes).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.testing.memory import ManualClock
from runs_fleet_k8s.client import KubeCaller
from runs_fleet_k8s.identity import TokenReviewIdentity
from tests.integration.test_server import running
from tests.kube_api.fixtures import KubeApi

pytestmark = pytest.mark.asyncio
RUNNER_ACCOUNT = "runs-fleet-runner"


def _pod(kube: KubeApi, name: str, account: str = RUNNER_ACCOUNT) -> dict[str, Any]:
    kube.server.controllers_enabled = False
    return kube.server.create(
        "pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "serviceAccountName": account,
                "containers": [{"name": "runner", "image": "example/runner:1"}],
            },
        },
        namespace=kube.namespace,
    )


def _token(kube: KubeApi, pod: dict[str, Any], audience: str = "runs-fleet") -> str:
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client())
    answer = core.create_namespaced_service_account_token(
        pod["spec"]["serviceAccountName"],
        kube.namespace,
        {
            "spec": {
                "audiences": [audience],
                "expirationSeconds": 3600,
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            }
        },
    )
    return str(answer.status.token)


@pytest.fixture
def kube(kube_api: KubeApi) -> KubeApi:
    for account in (RUNNER_ACCOUNT, "other"):
        kube_api.server.create(
            "serviceaccounts", {"metadata": {"name": account}}, namespace=kube_api.namespace
        )
    return kube_api


@pytest.fixture
def identity(kube: KubeApi) -> TokenReviewIdentity:
    caller = KubeCaller(kube.api_client(), namespace=kube.namespace)
    return TokenReviewIdentity(caller, clock=ManualClock())


@contextlib.asynccontextmanager
async def _server(identity: TokenReviewIdentity) -> AsyncIterator[Any]:
    async with running(with_worker=False) as server:
        server.services.adapters = attrs.evolve(
            server.services.adapters, runner_identities={"k8s": identity}
        )
        yield server


def _config(job_id: int) -> RunnerConfig:
    return RunnerConfig(
        runner_name=f"runs-fleet-{job_id}-1",
        job_id=JobId(job_id),
        repository="octo-org/app",
        jit_config="secret-jit-" + str(job_id),
        settings={"report_token": "t", "report_url": "http://x/api/agent/reports"},
    )


async def _get(client: httpx.AsyncClient, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await client.get("/api/agent/config", headers=headers)


async def test_a_pod_gets_its_own_config_once_it_has_one(
    kube: KubeApi, identity: TokenReviewIdentity
) -> None:
    mine, other = _pod(kube, "pool-a"), _pod(kube, "pool-b")
    async with _server(identity) as server:
        configs = server.services.adapters.configs
        token = _token(kube, mine)
        waiting = await _get(server.client, token)
        assert waiting.status_code == 204 and waiting.headers["Retry-After"]
        await configs.put(RunnerId("pool-a"), _config(1))
        await configs.put(RunnerId("pool-b"), _config(2))
        served = await _get(server.client, token)
        assert served.status_code == 200
        assert served.json()["job_id"] == 1 and served.json()["jit_config"] == "secret-jit-1"
        assert served.headers["Cache-Control"] == "no-store"
        theirs = await _get(server.client, _token(kube, other))
        assert theirs.json()["job_id"] == 2


@pytest.mark.parametrize("case", ["missing", "forged", "other audience", "other account"])
async def test_a_credential_that_proves_no_runner_gets_401_and_no_config(
    kube: KubeApi, identity: TokenReviewIdentity, case: str
) -> None:
    pod = _pod(kube, "pool-a", account="other" if case == "other account" else RUNNER_ACCOUNT)
    token = {
        "missing": None,
        "forged": "not-a-token",
        "other audience": _token(kube, pod, audience="vault"),
        "other account": _token(kube, pod),
    }[case]
    async with _server(identity) as server:
        await server.services.adapters.configs.put(RunnerId("pool-a"), _config(1))
        answer = await _get(server.client, token)
        assert answer.status_code == 401
        assert "secret-jit" not in answer.text


async def test_the_token_of_a_deleted_pod_proves_nothing(
    kube: KubeApi, identity: TokenReviewIdentity
) -> None:
    pod = _pod(kube, "pool-a")
    token = _token(kube, pod)
    assert await identity.runner_for(token) == "pool-a"
    from kubernetes import client

    client.CoreV1Api(kube.api_client()).delete_namespaced_pod("pool-a", kube.namespace)
    fresh = TokenReviewIdentity(identity.caller, clock=ManualClock())  # no cached answer
    assert await fresh.runner_for(token) is None


async def test_answers_are_cached_so_a_polling_agent_costs_one_review(
    kube: KubeApi, identity: TokenReviewIdentity
) -> None:
    token = _token(kube, _pod(kube, "pool-a"))
    before = kube.server.request_count(resource="tokenreviews")
    for _ in range(5):
        assert await identity.runner_for(token) == "pool-a"
    assert kube.server.request_count(resource="tokenreviews") - before == 1


async def test_without_a_runner_identity_the_endpoint_is_not_there() -> None:
    async with running(with_worker=False) as server:
        answer = await _get(server.client, "anything")
        assert answer.status_code == 404
