"""The Kubernetes provider against the fake API server: the Provider contract, then what
Kubernetes adds (the Job's shape, config ownership, network policies, failures).

The official client talks HTTP to the fake server, which validates every body strictly
and runs the Job controller and garbage collector, so a runner here goes through what it
would in a cluster: its Job makes a pod, the pod's phase is what a kubelet reports
(``set_pod_phase``), finished Jobs expire after their TTL and take their dependents along.
As dispatch does, each runner's config is stored before its runner is created.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from runs_fleet_core.catalog import CORE_SETTINGS
from runs_fleet_core.domain.ids import JobId, RunnerId, runner_name_for
from runs_fleet_core.domain.labels import parse_label
from runs_fleet_core.domain.runner import RunnerConfig, RunnerPhase
from runs_fleet_core.errors import NotFoundError, ProviderError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.settings import load_settings
from runs_fleet_core.testing.contracts import ProviderContract
from runs_fleet_core.testing.memory import ManualClock, RecordingMetrics
from runs_fleet_k8s import manifests, provider
from runs_fleet_k8s.client import KubeCaller
from runs_fleet_k8s.configs import SecretConfigStore
from runs_fleet_k8s.manifests import RunnerPodSettings
from runs_fleet_k8s.provider import K8sProvider
from tests.kube_api.fixtures import KubeApi

IMAGE = "ghcr.io/octo-org/runs-fleet-runner:1.0"
JIT = "jit-config-that-must-stay-secret"
TTL_S = 300


@pytest.fixture(autouse=True)
def every_body_is_valid(kube_api: KubeApi) -> Iterator[None]:
    """Whatever a test does, runs-fleet never sends a body the API server refuses."""
    yield
    assert kube_api.server.invalid_bodies == []


@pytest.fixture(autouse=True)
def runner_service_account(kube_api: KubeApi) -> None:
    """The runners' service account, which the Helm chart creates (without it the Job
    controller cannot create pods)."""
    for name in ("runs-fleet-runner", "ci-runner"):
        body = {"metadata": {"name": name}}
        kube_api.server.create("serviceaccounts", body, namespace=kube_api.namespace)


@pytest.fixture
async def caller(kube_api: KubeApi) -> AsyncIterator[KubeCaller]:
    kube = KubeCaller(kube_api.api_client(), namespace=kube_api.namespace, timeout_s=10)
    yield kube
    kube.close()


@pytest.fixture
def configs(caller: KubeCaller) -> SecretConfigStore:
    return SecretConfigStore(caller)


def make_provider(caller: KubeCaller, **changes: Any) -> K8sProvider:
    page_size = changes.pop("page_size", 250)
    settings = RunnerPodSettings(**{"image": IMAGE, "job_ttl_s": TTL_S, **changes})
    return K8sProvider(caller, settings, clock=ManualClock(), page_size=page_size)


async def store_config(configs: SecretConfigStore, job_id: int, attempt: int = 1) -> str:
    """Store the runner config of ``job_id`` as dispatch does before creating its runner;
    the runner name."""
    name = runner_name_for(JobId(job_id), attempt)
    await configs.put(
        RunnerId(name),
        RunnerConfig(
            runner_name=name,
            job_id=JobId(job_id),
            repository="octo-org/app",
            jit_config=JIT,
            settings={"report_token": "report-token-secret"},
        ),
    )
    return name


async def launch(
    kube: K8sProvider, configs: SecretConfigStore, label: str, job_id: int = 7001
) -> RunnerId:
    name = await store_config(configs, job_id)
    spec = parse_label(label).for_job(JobId(job_id), "octo-org/app")
    return (await kube.create_runner(spec, runner_name=name)).runner_id


def pods_of(kube_api: KubeApi, job: str) -> list[dict[str, Any]]:
    pods = kube_api.server.objects("pods", kube_api.namespace)
    return [p for p in pods if p["metadata"]["labels"].get("job-name") == job]


class TestK8sProvider(ProviderContract):
    @pytest.fixture
    async def provider(self, caller: KubeCaller, configs: SecretConfigStore) -> K8sProvider:
        for job_id in (101, 102):
            await store_config(configs, job_id)
        return make_provider(caller)


# -- the Job ----------------------------------------------------------------------------


async def test_the_job_asks_for_what_the_label_says(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    kube = make_provider(caller)
    label = "runs-fleet=9/cpu=4+8/ram=16/disk=80/arch=arm64/spot=false/pool=default"
    runner = await launch(kube, configs, label)
    job = kube_api.server.get("jobs", kube_api.namespace, runner)
    assert job is not None
    labels = job["metadata"]["labels"]
    assert labels["runs-fleet.io/job-id"] == "7001"
    assert labels["runs-fleet.io/run-id"] == "9"
    assert (labels["runs-fleet.io/pool"], labels["runs-fleet.io/arch"]) == ("default", "arm64")
    assert labels["runs-fleet.io/spot"] == "false"
    (pod,) = pods_of(kube_api, runner)
    spec = pod["spec"]
    (runner_container,) = spec["containers"]
    assert runner_container["image"] == IMAGE
    assert runner_container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "80Gi"},
        "limits": {"cpu": "8", "memory": "16Gi", "ephemeral-storage": "80Gi"},
    }
    assert spec["nodeSelector"]["kubernetes.io/arch"] == "arm64"
    required = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "karpenter.sh/capacity-type", "operator": "NotIn", "values": ["spot"]}
    ]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    assert runner_container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


async def test_a_spot_job_tolerates_the_clusters_spot_taint_and_prefers_spot(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    runner = await launch(make_provider(caller, spot_scheduling="aks"), configs, "runs-fleet=9")
    (pod,) = pods_of(kube_api, runner)
    assert {
        "key": "kubernetes.azure.com/scalesetpriority",
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    } in pod["spec"]["tolerations"]
    preferred = pod["spec"]["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert preferred[0]["preference"]["matchExpressions"][0]["values"] == ["spot"]


async def test_the_runner_config_is_owned_by_the_job_and_deleted_with_it(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    runner = await launch(make_provider(caller), configs, "runs-fleet=9/cpu=2")
    server, ns = kube_api.server, kube_api.namespace
    job = server.get("jobs", ns, runner)
    assert job is not None
    for resource in ("configmaps", "secrets"):
        (config,) = server.objects(resource, ns)
        (owner,) = config["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "Job",
            runner,
            job["metadata"]["uid"],
        )
    (pod,) = pods_of(kube_api, runner)
    server.set_pod_phase(ns, pod["metadata"]["name"], "Succeeded")
    server.advance(TTL_S + 1)
    assert server.objects("jobs", ns) == []
    assert server.objects("configmaps", ns) == []
    assert server.objects("secrets", ns) == []
    assert await configs.get(RunnerId(runner)) is None


async def test_the_jit_config_appears_nowhere_but_in_the_secret(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    await launch(make_provider(caller), configs, "runs-fleet=9/cpu=2/private=true")
    server, ns = kube_api.server, kube_api.namespace
    for resource in ("jobs", "pods", "configmaps", "networkpolicies"):
        assert JIT not in str(server.objects(resource, ns))


async def test_a_missing_runner_config_fails_the_create_for_a_retry_that_repairs_it(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    kube = make_provider(caller)
    spec = parse_label("runs-fleet=9/cpu=2").for_job(JobId(7001), "octo-org/app")
    name = runner_name_for(JobId(7001), 1)
    with pytest.raises(ProviderError, match=r"runner config \S+ is missing") as caught:
        await kube.create_runner(spec, runner_name=name)
    assert caught.value.retryable is True
    await store_config(configs, 7001)
    result = await kube.create_runner(spec, runner_name=name)
    (config_map,) = kube_api.server.objects("configmaps", kube_api.namespace)
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == result.details["job_uid"]
    assert len(kube_api.server.objects("jobs", kube_api.namespace)) == 1


# -- private jobs -----------------------------------------------------------------------


async def test_a_private_job_is_fenced_in_before_its_pod_exists(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    runner = await launch(make_provider(caller), configs, "runs-fleet=9/cpu=2/private=true")
    server, ns = kube_api.server, kube_api.namespace
    (policy,) = server.objects("networkpolicies", ns)
    assert policy["metadata"]["name"] == runner
    assert policy["spec"]["podSelector"] == {"matchLabels": {"runs-fleet.io/job-id": "7001"}}
    job = server.get("jobs", ns, runner)
    assert job is not None
    assert policy["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    creates = [r.resource for r in server.requests if r.verb == "create"]
    assert creates.index("networkpolicies") < creates.index("jobs")


async def test_a_public_job_gets_no_network_policy(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    await launch(make_provider(caller), configs, "runs-fleet=9/cpu=2")
    assert kube_api.server.objects("networkpolicies", kube_api.namespace) == []


# -- idempotence ------------------------------------------------------------------------


async def test_concurrent_creates_make_one_job_and_one_pod(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    kube = make_provider(caller)
    name = await store_config(configs, 7001)
    spec = parse_label("runs-fleet=9/cpu=2/private=true").for_job(JobId(7001), "octo-org/app")
    results = await asyncio.gather(
        kube.create_runner(spec, runner_name=name), kube.create_runner(spec, runner_name=name)
    )
    assert results[0] == results[1]
    ns = kube_api.namespace
    assert [j["metadata"]["name"] for j in kube_api.server.objects("jobs", ns)] == [name]
    assert len(pods_of(kube_api, name)) == 1
    assert len(kube_api.server.objects("networkpolicies", ns)) == 1


async def test_a_foreign_job_with_the_runners_name_is_not_taken_for_the_runner(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    name = await store_config(configs, 7001)
    spec = parse_label("runs-fleet=9/cpu=2").for_job(JobId(7001), "octo-org/app")
    settings = RunnerPodSettings(image="busybox", namespace=kube_api.namespace)
    foreign = manifests.runner_job(spec, name, settings)
    foreign["metadata"]["annotations"] = {}
    kube_api.server.create("jobs", foreign, namespace=kube_api.namespace)
    with pytest.raises(ProviderError, match="is not the Job of runner") as caught:
        await make_provider(caller).create_runner(spec, runner_name=name)
    assert caught.value.retryable is False


# -- terminating and describing ---------------------------------------------------------


async def test_terminating_stops_the_pod_and_the_ttl_removes_the_runner_entirely(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    kube = make_provider(caller)
    runner = await launch(kube, configs, "runs-fleet=9/cpu=2/private=true")
    server, ns = kube_api.server, kube_api.namespace
    (pod,) = pods_of(kube_api, runner)
    server.set_pod_phase(ns, pod["metadata"]["name"], "Running")
    await kube.terminate_runner(runner)
    assert pods_of(kube_api, runner) == []
    state = await kube.describe_runner(runner)
    assert state.phase is RunnerPhase.TERMINATED
    assert state.details["terminated_at"] == "2026-01-05T09:00:00+00:00"
    assert "BackoffLimitExceeded" in state.details["reason"]
    assert runner not in {s.runner_id for s in await kube.list_runners()}
    job = server.get("jobs", ns, runner)
    assert job is not None
    assert job["spec"]["activeDeadlineSeconds"] == 1
    server.advance(TTL_S + 1)
    for resource in ("jobs", "pods", "configmaps", "secrets", "networkpolicies"):
        assert server.objects(resource, ns) == [], resource
    with pytest.raises(NotFoundError, match=runner):
        await kube.describe_runner(runner)
    await kube.terminate_runner(runner)  # gone for good: still not an error


async def test_describe_follows_the_pod_through_its_life(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    kube = make_provider(caller)
    runner = await launch(kube, configs, "runs-fleet=9/cpu=2/pool=default")
    state = await kube.describe_runner(runner)
    assert (state.phase, state.job_id, state.pool) == (RunnerPhase.PENDING, 7001, "default")
    assert state.runner_name == runner_name_for(JobId(7001), 1)
    assert state.launched_at is not None
    (pod,) = pods_of(kube_api, runner)
    kube_api.server.set_pod_phase(kube_api.namespace, pod["metadata"]["name"], "Running")
    state = await kube.describe_runner(runner)
    assert state.phase is RunnerPhase.RUNNING
    assert state.details["pod_name"] == pod["metadata"]["name"]
    assert state.details["node_name"]
    assert (await kube.list_runners())[0].phase is RunnerPhase.RUNNING
    kube_api.server.set_pod_phase(
        kube_api.namespace, pod["metadata"]["name"], "Failed", exit_code=137
    )
    state = await kube.describe_runner(runner)
    assert state.phase is RunnerPhase.TERMINATED
    assert "BackoffLimitExceeded" in state.details["reason"]
    assert await kube.list_runners() == []


async def test_describe_says_why_a_pod_waits_for_a_node(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    kube = make_provider(caller)
    runner = await launch(kube, configs, "runs-fleet=9/cpu=64")
    (pod,) = pods_of(kube_api, runner)
    message = "0/3 nodes are available: 3 Insufficient cpu."
    scheduler_says = {
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastTransitionTime": "2026-01-05T09:00:00Z",
                }
            ],
        }
    }
    await caller.call(
        caller.core.patch_namespaced_pod_status,
        pod["metadata"]["name"],
        kube_api.namespace,
        scheduler_says,
        _content_type="application/merge-patch+json",
    )
    state = await kube.describe_runner(runner)
    assert state.phase is RunnerPhase.PENDING
    assert state.details["reason"] == f"Unschedulable: {message}"


async def test_listing_reads_every_page(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    kube = make_provider(caller, page_size=2)
    runners = [await launch(kube, configs, "runs-fleet=9/cpu=2", job_id) for job_id in range(1, 6)]
    listed = await kube.list_runners()
    assert sorted(s.runner_id for s in listed) == sorted(runners)
    assert {s.job_id for s in listed} == {1, 2, 3, 4, 5}
    assert kube_api.server.request_count("list", "jobs") == 3


# -- failures ---------------------------------------------------------------------------


async def test_an_rbac_denial_is_final_names_the_permission_and_leaves_nothing(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    kube_api.server.forbid("create", "jobs")
    with pytest.raises(ProviderError) as caught:
        await launch(make_provider(caller), configs, "runs-fleet=9/cpu=2/private=true")
    assert caught.value.retryable is False
    assert "403 Forbidden" in str(caught.value)
    assert 'cannot create resource "jobs"' in str(caught.value)
    # the network policy made for a Job that will never exist does not stay behind
    assert kube_api.server.objects("networkpolicies", kube_api.namespace) == []


async def test_a_quota_rejection_is_retried_later_with_the_quota_named(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    message = (
        'jobs.batch "runs-fleet-7001-1" is forbidden: exceeded quota: ci-jobs, '
        "requested: count/jobs.batch=1, used: count/jobs.batch=20, limited: count/jobs.batch=20"
    )
    kube_api.server.fail_next(
        "create", "jobs", status=403, reason="Forbidden", message=message, times=2
    )
    caller.max_attempts = 2  # the client retries a quota rejection once, then gives up
    with pytest.raises(ProviderError) as caught:
        await launch(make_provider(caller), configs, "runs-fleet=9/cpu=2")
    assert caught.value.retryable is True
    assert "exceeded quota: ci-jobs" in str(caught.value)
    assert kube_api.server.objects("jobs", kube_api.namespace) == []


async def test_an_invalid_job_is_final(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    why = (
        'Job.batch "runs-fleet-7001-1" is invalid: '
        "spec.template.spec.containers[0].image: Required value"
    )
    kube_api.server.fail_next("create", "jobs", status=422, reason="Invalid", message=why)
    with pytest.raises(ProviderError, match="422 Invalid") as caught:
        await launch(make_provider(caller), configs, "runs-fleet=9/cpu=2")
    assert caught.value.retryable is False
    assert "Required value" in str(caught.value)


async def test_a_family_label_without_a_node_label_fails_before_any_request(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    kube = make_provider(caller, family_label="")
    name = await store_config(configs, 7001)
    before = kube_api.server.request_count()
    spec = parse_label("runs-fleet=9/family=c7g").for_job(JobId(7001), "octo-org/app")
    with pytest.raises(ProviderError, match="RUNS_FLEET_KUBE_FAMILY_LABEL") as caught:
        await kube.create_runner(spec, runner_name=name)
    assert caught.value.retryable is False
    assert kube_api.server.request_count() == before


# -- wiring -----------------------------------------------------------------------------


async def test_from_context_reads_the_runner_pod_settings(
    kube_api: KubeApi, caller: KubeCaller, configs: SecretConfigStore
) -> None:
    definitions = {s.name: s for s in (*CORE_SETTINGS, *provider.SETTINGS)}
    settings = load_settings(
        {
            "RUNS_FLEET_MODE": "k8s",
            "RUNS_FLEET_KUBE_RUNNER_IMAGE": IMAGE,
            "RUNS_FLEET_KUBE_SERVICE_ACCOUNT": "ci-runner",
        },
        definitions,
        require=False,
    )
    context = AdapterContext(settings=settings, clock=ManualClock(), metrics=RecordingMetrics())
    kube = provider.from_context(context, caller)
    assert kube.name == "k8s"
    runner = await launch(kube, configs, "runs-fleet=9/cpu=2")
    job = kube_api.server.get("jobs", kube_api.namespace, runner)
    assert job is not None
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "ci-runner"
