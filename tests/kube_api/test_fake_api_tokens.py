"""Service account tokens: TokenRequest issues them (optionally bound to a pod), and
TokenReview says who they belong to while they are valid."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube_api.fixtures import KubeApi
from tests.kube_api.samples import IMAGE, NS, failure

AUDIENCE = "runs-fleet"


@pytest.fixture
def runner_pod(core: Any) -> Any:
    core.create_namespaced_service_account(NS, {"metadata": {"name": "runner"}})
    return core.create_namespaced_pod(
        NS,
        {
            "metadata": {"name": "runner-1"},
            "spec": {
                "serviceAccountName": "runner",
                "containers": [{"name": "runner", "image": IMAGE}],
            },
        },
    )


def issue(core: Any, pod: Any | None = None, **spec: Any) -> str:
    body: dict[str, Any] = {"spec": {"audiences": [AUDIENCE], **spec}}
    if pod is not None:
        body["spec"]["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod.metadata.name,
            "uid": pod.metadata.uid,
        }
    issued = core.create_namespaced_service_account_token("runner", NS, body)
    assert issued.status.expiration_timestamp is not None
    token: str = issued.status.token
    return token


def review(authentication: Any, token: str, audiences: list[str] | None = None) -> Any:
    body = {"spec": {"token": token, "audiences": audiences or [AUDIENCE]}}
    return authentication.create_token_review(body).status


def test_a_review_names_the_service_account_and_audiences(
    core: Any, authentication: Any, runner_pod: Any
) -> None:
    status = review(authentication, issue(core))
    assert status.authenticated is True
    assert status.user.username == f"system:serviceaccount:{NS}:runner"
    assert f"system:serviceaccounts:{NS}" in status.user.groups
    assert status.audiences == [AUDIENCE]
    assert not status.user.extra


def test_a_pod_bound_token_names_the_pod_until_it_is_deleted(
    core: Any, authentication: Any, runner_pod: Any
) -> None:
    token = issue(core, runner_pod)
    status = review(authentication, token)
    assert status.user.extra == {
        "authentication.kubernetes.io/pod-name": ["runner-1"],
        "authentication.kubernetes.io/pod-uid": [runner_pod.metadata.uid],
    }
    core.delete_namespaced_pod("runner-1", NS)
    status = review(authentication, token)
    assert not status.authenticated
    assert "deleted" in status.error


def test_the_token_is_a_jwt_with_kubernetes_claims(core: Any, runner_pod: Any) -> None:
    payload = issue(core, runner_pod).split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == f"system:serviceaccount:{NS}:runner"
    assert claims["aud"] == [AUDIENCE]
    assert claims["kubernetes.io"]["pod"]["name"] == "runner-1"


def test_an_expired_token_is_not_authenticated(
    kube_api: KubeApi, core: Any, authentication: Any, runner_pod: Any
) -> None:
    token = issue(core, expirationSeconds=600)
    kube_api.server.advance(599)
    assert review(authentication, token).authenticated
    kube_api.server.advance(2)
    assert "expired" in review(authentication, token).error


def test_a_token_for_other_audiences_is_not_authenticated(
    core: Any, authentication: Any, runner_pod: Any
) -> None:
    status = review(authentication, issue(core), audiences=["someone-else"])
    assert not status.authenticated
    assert "invalid for the target audiences" in status.error


def test_an_unknown_token_is_not_authenticated(authentication: Any) -> None:
    status = review(authentication, "forged.token.value")
    assert not status.authenticated
    assert status.user.username is None


def test_a_token_for_a_missing_service_account_is_not_found(core: Any) -> None:
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_service_account_token("ghost", NS, {"spec": {}})
    assert exc.value.status == 404
    assert failure(exc)["message"] == 'serviceaccounts "ghost" not found'


def test_a_binding_to_a_recreated_pod_is_a_conflict(core: Any, runner_pod: Any) -> None:
    body = {
        "spec": {
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "runner-1", "uid": "x"}
        }
    }
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_service_account_token("runner", NS, body)
    assert exc.value.status == 409


def test_tokens_live_at_least_ten_minutes(core: Any, runner_pod: Any) -> None:
    with pytest.raises(ApiException) as exc:
        issue(core, expirationSeconds=60)
    assert exc.value.status == 422
    assert "may not specify a duration less than 10 minutes" in failure(exc)["message"]


def test_an_issued_token_for_the_api_audience_can_call_the_api(
    kube_api: KubeApi, core: Any, runner_pod: Any
) -> None:
    issued = core.create_namespaced_service_account_token("runner", NS, {"spec": {}})
    as_runner: Any = client.CoreV1Api(kube_api.api_client(token=issued.status.token))
    assert as_runner.read_namespaced_pod("runner-1", NS).metadata.name == "runner-1"
    kube_api.server.forbid("get", "pods")
    with pytest.raises(ApiException) as exc:
        as_runner.read_namespaced_pod("runner-1", NS)
    assert (
        f'User "system:serviceaccount:{NS}:runner" cannot get resource "pods"'
        in failure(exc)["message"]
    )
