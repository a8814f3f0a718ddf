"""The Kubernetes pool provider against the fake API server: the PoolProvider contract,
then what Deployments add (pods leaving with a job, refills, scale-down that never picks a
pod of its own, stopped pods that keep their place, placeholders, RBAC errors).

The fake cluster has no kubelet of its own: :class:`Kubelet` below plays one, starting
every new pod and restarting a container whose image was patched, as a node would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import kubernetes_validate
import pytest

from runs_fleet_core.catalog import CORE_SETTINGS
from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RunnerPhase
from runs_fleet_core.errors import ConflictError, NotFoundError, ProviderError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.settings import load_settings
from runs_fleet_core.testing.contracts import PoolProviderContract
from runs_fleet_core.testing.memory import ManualClock, RecordingMetrics
from runs_fleet_k8s import manifests, names, pool, pool_pod_api, pool_pods
from runs_fleet_k8s.client import KubeCaller
from runs_fleet_k8s.manifests import RunnerPodSettings
from runs_fleet_k8s.pool import K8sPoolProvider, bind_pool_pod, end_pool_pod
from tests.kube_api.fixtures import KubeApi

RUNNER_IMAGE = "ghcr.io/octo-org/runs-fleet-runner:1.0"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
PUBLIC_URL = "http://runs-fleet.runs-fleet.svc:8080"
LINUX = PoolConfig(name="linux", label="runs-fleet=0/cpu=2/arch=arm64", desired_running=3)


class Kubelet:
    """Starts every new pod (Running, ready) and restarts a container whose image no
    longer is the one it runs, through the fake server's control API."""

    def __init__(self, kube_api: KubeApi) -> None:
        self.server = kube_api.server
        self.namespace = kube_api.namespace
        self.paused = False

    def sync(self) -> None:
        if self.paused:
            return
        for pod in self.server.objects("pods", self.namespace):
            status = pod.get("status") or {}
            if pod["metadata"].get("deletionTimestamp") or status.get("phase") in (
                "Succeeded",
                "Failed",
            ):
                continue
            images = {c["name"]: c["image"] for c in pod["spec"]["containers"]}
            reported = {s["name"]: s["image"] for s in status.get("containerStatuses") or []}
            if status.get("phase") != "Running" or reported != images:
                with contextlib.suppress(KeyError):  # deleted meanwhile
                    self.server.set_pod_phase(self.namespace, pod["metadata"]["name"], "Running")

    async def run(self) -> None:
        while True:
            self.sync()
            await asyncio.sleep(0.02)


class World:
    """One fake cluster, its kubelet, and pool providers on it."""

    def __init__(self, kube_api: KubeApi, kubelet: Kubelet) -> None:
        self.api = kube_api
        self.server = kube_api.server
        self.kubelet = kubelet
        self.namespace = kube_api.namespace
        self.clock = ManualClock()
        self.metrics = RecordingMetrics()
        self.caller = KubeCaller(kube_api.api_client(), namespace=self.namespace, timeout_s=5)
        self.settings = RunnerPodSettings(image=RUNNER_IMAGE, namespace=self.namespace)

    def pools(self, **kwargs: Any) -> K8sPoolProvider:
        kwargs.setdefault("public_url", PUBLIC_URL)
        kwargs.setdefault("wait_s", 5.0)
        kwargs.setdefault("poll_interval_s", 0.02)
        return K8sPoolProvider(
            self.caller, self.settings, clock=self.clock, metrics=self.metrics, **kwargs
        )

    def pod(self, name: str) -> dict[str, Any] | None:
        return self.server.get("pods", self.namespace, name)

    def pods(self, component: str = "pool-runner") -> list[dict[str, Any]]:
        return [
            p
            for p in self.server.objects("pods", self.namespace)
            if p["metadata"]["labels"].get(names.COMPONENT) == component
        ]

    def members(self, pool_name: str = "linux") -> set[str]:
        return {
            p["metadata"]["name"]
            for p in self.pods()
            if p["metadata"]["labels"].get(names.POOL) == pool_name
            and p["metadata"]["labels"].get(names.POOL_MEMBER) == "true"
        }

    def deployment(self, name: str) -> dict[str, Any]:
        found = self.server.get("deployments", self.namespace, name)
        assert found is not None, f"no Deployment {name}"
        return found

    def replicas(self, pool_name: str = "linux") -> int:
        return int(self.deployment(names.pool_deployment_name(pool_name))["spec"]["replicas"])


@pytest.fixture
async def world(kube_api: KubeApi) -> AsyncIterator[World]:
    """The fake cluster with the runner service account the Helm chart makes, and a
    kubelet running."""
    kube_api.server.create(
        "serviceaccounts", {"metadata": {"name": "runs-fleet-runner"}}, kube_api.namespace
    )
    kubelet = Kubelet(kube_api)
    task = asyncio.create_task(kubelet.run())
    built = World(kube_api, kubelet)
    try:
        yield built
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        built.caller.close()
    assert kube_api.server.invalid_bodies == []


class TestK8sPoolProvider(PoolProviderContract):
    settle_timeout_s: ClassVar[float] = 5.0

    @pytest.fixture
    def pool_provider(self, world: World) -> K8sPoolProvider:
        return world.pools()


# -- what a pool is on the cluster ----------------------------------------------------


async def test_a_pool_is_a_deployment_of_agent_pods_that_ask_the_server_for_config(
    world: World,
) -> None:
    [runner] = await world.pools().create_pool_runners(LINUX, 1)
    deployment = world.deployment("runs-fleet-pool-linux")
    selector = {
        names.POOL: "linux",
        names.POOL_MEMBER: "true",
        names.COMPONENT: "pool-runner",
    }
    assert deployment["spec"]["selector"] == {"matchLabels": selector}
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"][pool_pods.POOL_STATE] == "running"
    [container] = template["spec"]["containers"]
    assert "command" not in container and "args" not in container
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RUNS_FLEET_CONFIG_URL"] == PUBLIC_URL + "/api/agent/config"
    assert container["resources"]["requests"]["cpu"] == "2"
    assert template["spec"]["nodeSelector"]["kubernetes.io/arch"] == "arm64"
    assert template["spec"]["restartPolicy"] == "Always"
    assert world.pod(runner) is not None
    assert world.members() == {runner}
    assert world.metrics.count("k8s_pool_pods_added", pool="linux", state="running") == 1


async def test_a_second_call_reuses_the_deployment_and_raises_its_replicas(
    world: World,
) -> None:
    pools = world.pools()
    first = await pools.create_pool_runners(LINUX, 1)
    second = await pools.create_pool_runners(LINUX, 2)
    assert world.replicas() == 3
    assert len(set(first) | set(second)) == 3
    assert world.members() == set(first) | set(second)


async def test_concurrent_scale_ups_both_count(world: World) -> None:
    pools = world.pools()
    await pools.create_pool_runners(LINUX, 1)  # the Deployment exists
    await asyncio.gather(pools.create_pool_runners(LINUX, 1), pools.create_pool_runners(LINUX, 2))
    assert world.replicas() == 4
    assert len(world.members()) == 4


async def test_a_stopped_runner_is_the_same_pod_running_the_pause_image(world: World) -> None:
    pools = world.pools()
    [runner] = await pools.create_pool_runners(LINUX, 1, stopped=True)
    pod = world.pod(runner)
    assert pod is not None
    assert pod["spec"]["containers"][0]["image"] == PAUSE_IMAGE
    assert pod["metadata"]["labels"][pool_pods.POOL_STATE] == "stopped"
    assert pod["metadata"]["annotations"][pool_pods.IDLE_SINCE] == "2026-01-05T09:00:00Z"
    world.clock.advance(60)
    await pools.start_runners([runner])
    pod = world.pod(runner)
    assert pod is not None
    assert pod["spec"]["containers"][0]["image"] == RUNNER_IMAGE
    assert pod["metadata"]["labels"][pool_pods.POOL_STATE] == "running"
    assert world.members() == {runner}  # same pod, same place in the pool
    world.kubelet.sync()
    [listed] = await pools.list_pool_runners("linux")
    assert listed.phase is RunnerPhase.RUNNING
    assert listed.idle_since == datetime(2026, 1, 5, 9, 1, tzinfo=UTC)


async def test_a_stop_is_stopping_until_the_kubelet_restarts_the_container(
    world: World,
) -> None:
    pools = world.pools()
    [runner] = await pools.create_pool_runners(LINUX, 1)
    world.kubelet.sync()
    world.kubelet.paused = True
    await pools.stop_runners([runner])
    assert [r.phase for r in await pools.list_pool_runners("linux")] == [RunnerPhase.STOPPING]
    world.kubelet.paused = False
    world.kubelet.sync()
    assert [r.phase for r in await pools.list_pool_runners("linux")] == [RunnerPhase.STOPPED]
    world.kubelet.paused = True
    await pools.start_runners([runner])
    assert [r.phase for r in await pools.list_pool_runners("linux")] == [RunnerPhase.PENDING]


async def test_unscheduled_pods_are_pending(world: World) -> None:
    world.kubelet.paused = True
    pools = world.pools(wait_s=0.2)
    [runner] = await pools.create_pool_runners(LINUX, 1)
    [listed] = await pools.list_pool_runners("linux")
    assert (listed.runner_id, listed.phase) == (runner, RunnerPhase.PENDING)


async def test_starting_or_stopping_what_is_not_a_pool_pod_is_not_found(world: World) -> None:
    pools = world.pools()
    [runner] = await pools.create_pool_runners(LINUX, 1)
    world.server.create(
        "pods",
        {
            "metadata": {"name": "cold-runner", "labels": {names.COMPONENT: "runner"}},
            "spec": {"containers": [{"name": "runner", "image": RUNNER_IMAGE}]},
        },
        namespace=world.namespace,
    )
    for ids in (["cold-runner"], [runner, "never-created"], ["Not_A_Pod_Name"]):
        with pytest.raises(NotFoundError, match="no live warm-pool pod"):
            await pools.stop_runners([RunnerId(i) for i in ids])
    pod = world.pod(runner)
    assert pod is not None
    assert pod["spec"]["containers"][0]["image"] == RUNNER_IMAGE  # nothing changed


# -- taking a job, refills and scale-down --------------------------------------------


async def test_a_bound_pod_leaves_the_deployment_which_refills_while_it_stays_listed(
    world: World,
) -> None:
    pools = world.pools()
    first, second = await pools.create_pool_runners(LINUX, 2)
    assert await bind_pool_pod(world.caller, first, "4242") is True
    labels = (world.pod(first) or {})["metadata"]["labels"]
    assert (labels[names.POOL_MEMBER], labels[names.JOB_ID]) == ("false", "4242")
    members = world.members()
    assert len(members) == 2 and second in members and first not in members
    assert world.replicas() == 2
    listed = {r.runner_id for r in await pools.list_pool_runners("linux")}
    assert listed == members | {first}


async def test_binding_is_idempotent_for_one_job_and_refused_for_another(
    world: World,
) -> None:
    [runner] = await world.pools().create_pool_runners(LINUX, 1)
    assert await bind_pool_pod(world.caller, runner, "4242") is True
    assert await bind_pool_pod(world.caller, runner, "4242") is True
    with pytest.raises(ConflictError, match="already took job 4242"):
        await bind_pool_pod(world.caller, runner, "4343")


async def test_binding_an_id_that_is_no_pool_pod_is_false(world: World) -> None:
    assert await bind_pool_pod(world.caller, "runs-fleet-4242-1", "4242") is False
    assert await bind_pool_pod(world.caller, "Upper_Case", "4242") is False


async def test_end_pool_pod_deletes_a_bound_pod_only(world: World) -> None:
    first, second = await world.pools().create_pool_runners(LINUX, 2)
    await end_pool_pod(world.caller, second)  # still a member: no job ended
    await end_pool_pod(world.caller, "never-created")
    assert world.pod(second) is not None
    await bind_pool_pod(world.caller, first, "4242")
    await end_pool_pod(world.caller, first)
    assert world.pod(first) is None
    assert world.replicas() == 2 and len(world.members()) == 2


async def test_terminating_one_of_three_idle_pods_leaves_exactly_the_other_two(
    world: World,
) -> None:
    pools = world.pools()
    ids = await pools.create_pool_runners(LINUX, 3)
    world.kubelet.sync()
    await pools.terminate_runners([ids[0]])
    assert world.pod(ids[0]) is None
    assert world.members() == set(ids[1:])
    assert world.replicas() == 2
    assert sorted(r.runner_id for r in await pools.list_pool_runners("linux")) == sorted(ids[1:])


async def test_a_bound_pod_survives_terminating_the_others_and_any_scale_down(
    world: World,
) -> None:
    pools = world.pools()
    ids = await pools.create_pool_runners(LINUX, 3)
    await bind_pool_pod(world.caller, ids[1], "4242")
    await pools.terminate_runners([RunnerId(i) for i in world.members()])
    assert world.replicas() == 0
    assert world.members() == set()
    await pool.scale_by(world.caller, names.pool_deployment_name("linux"), 5)
    await pool.scale_by(world.caller, names.pool_deployment_name("linux"), -5)
    assert world.pod(ids[1]) is not None
    assert [r.runner_id for r in await pools.list_pool_runners("linux")] == [ids[1]]


async def test_terminating_a_bound_pod_after_its_job_deletes_it_without_scaling(
    world: World,
) -> None:
    pools = world.pools()
    first, _ = await pools.create_pool_runners(LINUX, 2)
    await bind_pool_pod(world.caller, first, "4242")
    await pools.terminate_runners([first])
    assert world.pod(first) is None
    assert world.replicas() == 2 and len(world.members()) == 2


async def test_a_pod_claimed_while_it_is_terminated_is_left_to_its_job(world: World) -> None:
    pools = world.pools()
    [runner] = await pools.create_pool_runners(LINUX, 1)
    claimed = False

    def claim_when_released(event: Any) -> None:
        nonlocal claimed
        labels = event.obj["metadata"].get("labels") or {}
        name = event.obj["metadata"]["name"]
        if name == runner and labels.get(names.POOL_MEMBER) == "false" and not claimed:
            claimed = True
            world.server.store.defer(lambda: asyncio.run(_bind_now(world, runner)))

    world.server.store.listeners.append(claim_when_released)
    try:
        await pools.terminate_runners([runner])
    finally:
        world.server.store.listeners.remove(claim_when_released)
    assert claimed
    pod = world.pod(runner)
    assert pod is not None and pod["metadata"]["labels"][names.JOB_ID] == "4242"


async def _bind_now(world: World, runner: str) -> None:
    caller = KubeCaller(world.api.api_client(), namespace=world.namespace)
    try:
        assert await bind_pool_pod(caller, runner, "4242") is True
    finally:
        caller.close()


async def test_listing_reads_every_page(world: World) -> None:
    ids = await world.pools().create_pool_runners(LINUX, 3)
    before = world.server.request_count("list", "pods")
    found = await pool_pod_api.Pods(world.caller, page_size=1).matching(
        pool_pods.pool_selector("linux")
    )
    assert sorted(pool_pods.name_of(p) for p in found) == sorted(ids)
    assert world.server.request_count("list", "pods") - before == 3


async def test_terminating_what_is_no_pool_pod_leaves_it_alone(world: World) -> None:
    world.server.create(
        "pods",
        {
            "metadata": {"name": "someone-else", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        },
        namespace=world.namespace,
    )
    await world.pools().terminate_runners([RunnerId("someone-else"), RunnerId("gone")])
    assert world.pod("someone-else") is not None


# -- creating: waits, labels, settings --------------------------------------------------


async def test_no_pod_in_time_is_a_retryable_error_naming_the_deployment(world: World) -> None:
    world.server.controllers_enabled = False
    with pytest.raises(ProviderError, match="runs-fleet-pool-linux was scaled up by 2") as exc:
        await world.pools(wait_s=0.2).create_pool_runners(LINUX, 2)
    assert exc.value.retryable


@pytest.mark.parametrize(
    ("label", "why"),
    [
        ("runs-fleet=0/cpu=lots", "its label is invalid"),
        ("ubuntu-latest", "is not a runs-fleet label"),
        ("runs-fleet=0/pool=other", "names pool other"),
    ],
)
async def test_a_bad_pool_label_is_a_permanent_error(world: World, label: str, why: str) -> None:
    with pytest.raises(ProviderError, match=why) as exc:
        await world.pools().create_pool_runners(PoolConfig(name="linux", label=label), 1)
    assert not exc.value.retryable
    assert world.server.objects("deployments", world.namespace) == []


async def test_without_a_public_url_pools_cannot_be_made(world: World) -> None:
    with pytest.raises(ProviderError, match="RUNS_FLEET_PUBLIC_URL is not set") as exc:
        await world.pools(public_url=None).create_pool_runners(LINUX, 1)
    assert not exc.value.retryable


async def test_an_rbac_denial_names_the_kubernetes_reason_and_is_permanent(
    world: World,
) -> None:
    world.server.forbid("create", "deployments")
    with pytest.raises(ProviderError, match="403 Forbidden") as exc:
        await world.pools().create_pool_runners(LINUX, 1)
    assert not exc.value.retryable
    assert "grant the orchestrator's service account" in str(exc.value)
    world.server.forbid("list", "pods")
    with pytest.raises(ProviderError, match="403 Forbidden"):
        await world.pools().list_pool_runners("linux")


async def test_placeholders_reserve_nodes_for_the_pool_and_are_never_runners(
    world: World,
) -> None:
    pools = world.pools(placeholders=True)
    ids = await pools.create_pool_runners(LINUX, 1)
    placeholder = world.deployment(manifests.placeholder_deployment_name("linux"))
    assert placeholder["spec"]["replicas"] == LINUX.desired_running
    template = placeholder["spec"]["template"]["spec"]
    assert template["priorityClassName"] == "runs-fleet-placeholder"
    priority = world.server.get("priorityclasses", None, "runs-fleet-placeholder")
    assert priority is not None and priority["value"] < 0
    for obj in (placeholder, priority):
        kubernetes_validate.validate(
            _without_server_fields(obj), kubernetes_validate.latest_version(), strict=True
        )
    assert len(world.pods("placeholder")) == LINUX.desired_running
    assert [r.runner_id for r in await pools.list_pool_runners("linux")] == list(ids)
    bigger = PoolConfig(name="linux", label=LINUX.label, desired_running=5)
    await pools.create_pool_runners(bigger, 1)
    assert world.deployment(manifests.placeholder_deployment_name("linux"))["spec"]["replicas"] == 5


async def test_without_placeholders_none_are_made(world: World) -> None:
    await world.pools().create_pool_runners(LINUX, 1)
    assert world.pods("placeholder") == []
    assert world.server.objects("priorityclasses") == []


def _without_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    plain = dict(obj)
    plain.pop("status", None)
    return plain


def test_from_context_reads_the_pool_settings() -> None:
    definitions = {s.name: s for s in (*CORE_SETTINGS, *manifests.SETTINGS, *pool.SETTINGS)}
    env = {
        "RUNS_FLEET_MODE": "k8s",
        "RUNS_FLEET_KUBE_RUNNER_IMAGE": RUNNER_IMAGE,
        "RUNS_FLEET_PUBLIC_URL": PUBLIC_URL,
        "RUNS_FLEET_KUBE_POOL_WAIT_S": "12",
        "RUNS_FLEET_KUBE_POOL_PLACEHOLDERS": "true",
    }
    context = AdapterContext(
        settings=load_settings(env, definitions, require=False),
        clock=ManualClock(),
        metrics=RecordingMetrics(),
    )
    caller = KubeCaller(_unused_client(), namespace="runs-fleet")
    try:
        provider = pool.from_context(context, caller)
    finally:
        caller.close()
    assert (provider.name, provider.wait_s, provider.placeholders) == ("k8s", 12.0, True)


def _unused_client() -> Any:
    from kubernetes import client

    return client.ApiClient(client.Configuration())


# -- reading phases from pods --------------------------------------------------------


def _pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "labels": {pool_pods.POOL_STATE: status.pop("state", "running")}},
        "spec": {"containers": [{"name": "runner", "image": status.pop("image", RUNNER_IMAGE)}]},
        "status": status,
    }


def _running(image: str, *, ready: bool = True) -> dict[str, Any]:
    return {
        "phase": "Running",
        "containerStatuses": [
            {"name": "runner", "image": image, "ready": ready, "state": {"running": {}}}
        ],
    }


@pytest.mark.parametrize(
    ("pod", "phase"),
    [
        (_pod(phase="Pending"), RunnerPhase.PENDING),
        (_pod(**_running(RUNNER_IMAGE, ready=False)), RunnerPhase.PENDING),
        (_pod(**_running(RUNNER_IMAGE)), RunnerPhase.RUNNING),
        (_pod(state="stopped", image=PAUSE_IMAGE, **_running(RUNNER_IMAGE)), RunnerPhase.STOPPING),
        (_pod(state="stopped", image=PAUSE_IMAGE, phase="Pending"), RunnerPhase.STOPPING),
        (_pod(state="stopped", image=PAUSE_IMAGE, **_running(PAUSE_IMAGE)), RunnerPhase.STOPPED),
        (_pod(image=RUNNER_IMAGE, **_running(PAUSE_IMAGE)), RunnerPhase.PENDING),
        (_pod(phase="Succeeded"), RunnerPhase.TERMINATED),
        (_pod(phase="Failed"), RunnerPhase.TERMINATED),
    ],
)
def test_phases_come_from_the_state_asked_and_the_image_running(
    pod: dict[str, Any], phase: RunnerPhase
) -> None:
    assert pool_pods.phase_of(pod, pause_image=PAUSE_IMAGE) is phase


@pytest.mark.parametrize(
    ("reported", "wanted"),
    [
        ("docker.io/library/busybox:latest", "busybox"),
        ("docker.io/octo/runner:1", "octo/runner:1"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io/o/r:1@sha256:" + "a" * 64),
    ],
)
def test_images_are_compared_as_runtimes_report_them(reported: str, wanted: str) -> None:
    assert pool_pods.same_image(reported, wanted)
    assert not pool_pods.same_image(reported, "registry.k8s.io/pause:3.9")
