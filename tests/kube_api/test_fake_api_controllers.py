"""The simulated controllers: Job lifecycle and TTL, Deployment replicas, scaling,
release of relabelled pods, and the kubelet stand-in."""

from __future__ import annotations

import re
from typing import Any

import pytest
from kubernetes import client

from tests.kube_api.fixtures import KubeApi
from tests.kube_api.samples import IMAGE, NS, deployment_body, job_body

POOL = "runs-fleet.io/pool"
MEMBER = "runs-fleet.io/pool-member"


def pods(core: Any, selector: str = "") -> list[Any]:
    return list(core.list_namespaced_pod(NS, label_selector=selector).items)


def conditions(job: Any) -> list[str]:
    return [c.type for c in job.status.conditions or [] if c.status == "True"]


class TestJobController:
    def test_a_job_gets_one_pod_from_its_template(self, core: Any, batch: Any) -> None:
        job = batch.create_namespaced_job(NS, job_body("runner-1"))
        [pod] = pods(core)
        uid = job.metadata.uid
        assert re.fullmatch(r"runner-1-[a-z0-9]{5}", pod.metadata.name)
        assert pod.metadata.labels == {
            "runs-fleet.io/component": "runner",
            "job-name": "runner-1",
            "batch.kubernetes.io/job-name": "runner-1",
            "controller-uid": uid,
            "batch.kubernetes.io/controller-uid": uid,
        }
        [ref] = pod.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid) == ("Job", "runner-1", uid)
        assert ref.controller and ref.block_owner_deletion
        assert (pod.status.phase, pod.spec.node_name) == ("Pending", None)
        status = batch.read_namespaced_job_status("runner-1", NS).status
        assert (status.active, status.ready) == (1, 0)
        assert status.start_time is not None

    def test_a_succeeded_pod_completes_the_job(
        self, kube_api: KubeApi, core: Any, batch: Any
    ) -> None:
        batch.create_namespaced_job(NS, job_body("runner-1"))
        [pod] = pods(core)
        kube_api.server.set_pod_phase(NS, pod.metadata.name, "Running")
        assert batch.read_namespaced_job("runner-1", NS).status.ready == 1
        kube_api.server.set_pod_phase(NS, pod.metadata.name, "Succeeded")
        job = batch.read_namespaced_job("runner-1", NS)
        assert conditions(job) == ["SuccessCriteriaMet", "Complete"]
        assert (job.status.succeeded, job.status.active) == (1, None)
        assert job.status.completion_time is not None
        assert len(pods(core)) == 1

    def test_a_failed_pod_fails_the_job_at_its_backoff_limit(
        self, kube_api: KubeApi, core: Any, batch: Any
    ) -> None:
        batch.create_namespaced_job(NS, job_body("runner-1"))
        [pod] = pods(core)
        kube_api.server.set_pod_phase(NS, pod.metadata.name, "Failed", exit_code=3)
        job = batch.read_namespaced_job("runner-1", NS)
        assert conditions(job) == ["FailureTarget", "Failed"]
        assert job.status.conditions[-1].reason == "BackoffLimitExceeded"
        assert job.status.failed == 1
        exit_code = core.read_namespaced_pod(pod.metadata.name, NS).status.container_statuses[0]
        assert exit_code.state.terminated.exit_code == 3

    def test_a_failed_pod_is_replaced_within_the_backoff_limit(
        self, kube_api: KubeApi, core: Any, batch: Any
    ) -> None:
        batch.create_namespaced_job(NS, job_body("runner-1", backoffLimit=1))
        [first] = pods(core)
        kube_api.server.set_pod_phase(NS, first.metadata.name, "Failed")
        live = [p for p in pods(core) if p.status.phase == "Pending"]
        assert len(live) == 1 and live[0].metadata.name != first.metadata.name
        assert batch.read_namespaced_job("runner-1", NS).status.failed == 1

    def test_a_finished_job_is_deleted_with_its_pods_after_its_ttl(
        self, kube_api: KubeApi, core: Any, batch: Any
    ) -> None:
        batch.create_namespaced_job(NS, job_body("runner-1", ttlSecondsAfterFinished=60))
        kube_api.server.set_pod_phase(NS, pods(core)[0].metadata.name, "Succeeded")
        kube_api.server.advance(30)
        assert batch.list_namespaced_job(NS).items
        kube_api.server.advance(31)
        assert batch.list_namespaced_job(NS).items == []
        assert pods(core) == []

    def test_a_zero_ttl_deletes_the_job_as_it_finishes(
        self, kube_api: KubeApi, core: Any, batch: Any
    ) -> None:
        batch.create_namespaced_job(NS, job_body("runner-1", ttlSecondsAfterFinished=0))
        kube_api.server.set_pod_phase(NS, pods(core)[0].metadata.name, "Failed")
        assert kube_api.server.objects("jobs") == []
        assert kube_api.server.objects("pods") == []

    def test_a_suspended_job_has_no_pod_until_resumed(self, core: Any, batch: Any) -> None:
        batch.create_namespaced_job(NS, job_body("runner-1", suspend=True))
        assert pods(core) == []
        batch.patch_namespaced_job("runner-1", NS, {"spec": {"suspend": False}})
        assert len(pods(core)) == 1

    def test_deleting_a_job_without_a_policy_orphans_its_pods(self, core: Any, batch: Any) -> None:
        batch.create_namespaced_job(NS, job_body("orphaning"))
        batch.create_namespaced_job(NS, job_body("cascading"))
        batch.delete_namespaced_job("orphaning", NS)
        batch.delete_namespaced_job("cascading", NS, propagation_policy="Background")
        [left] = pods(core)
        assert left.metadata.name.startswith("orphaning-")
        assert left.metadata.owner_references is None

    def test_a_pod_refused_by_admission_is_reported(
        self, kube_api: KubeApi, core: Any, batch: Any, scheduling: Any
    ) -> None:
        body = job_body("runner-1")
        body["spec"]["template"]["spec"]["priorityClassName"] = "runners"
        batch.create_namespaced_job(NS, body)
        assert pods(core) == []
        assert kube_api.server.controller_errors == [
            'Job runs-fleet/runner-1: Error creating: pods "runner-1-" is forbidden: '
            "no PriorityClass with name runners was found"
        ]
        scheduling.create_priority_class({"metadata": {"name": "runners"}, "value": 100})
        batch.create_namespaced_job(NS, {**body, "metadata": {"name": "runner-2"}})
        assert [p.spec.priority for p in pods(core)] == [100]


class TestDeploymentController:
    def test_a_deployment_keeps_its_replicas(self, core: Any, apps: Any) -> None:
        deployment = apps.create_namespaced_deployment(NS, deployment_body("pool", 3))
        found = pods(core)
        assert len(found) == 3
        pod = found[0]
        assert re.fullmatch(r"pool-[0-9a-f]{10}-[a-z0-9]{5}", pod.metadata.name)
        assert pod.metadata.labels[POOL] == "pool"
        assert pod.metadata.labels["pod-template-hash"] == pod.metadata.name.split("-")[1]
        [ref] = pod.metadata.owner_references
        assert (ref.kind, ref.uid, ref.controller) == ("Deployment", deployment.metadata.uid, True)
        status = apps.read_namespaced_deployment_status("pool", NS).status
        assert (status.replicas, status.updated_replicas, status.ready_replicas) == (3, 3, None)
        assert status.observed_generation == 1

    def test_ready_pods_are_counted(self, kube_api: KubeApi, core: Any, apps: Any) -> None:
        apps.create_namespaced_deployment(NS, deployment_body("pool", 2))
        for pod in pods(core):
            kube_api.server.set_pod_phase(NS, pod.metadata.name, "Running")
        status = apps.read_namespaced_deployment("pool", NS).status
        assert (status.ready_replicas, status.available_replicas) == (2, 2)
        assert [c.status for c in status.conditions if c.type == "Available"] == ["True"]

    def test_scaling_through_the_scale_subresource(self, core: Any, apps: Any) -> None:
        apps.create_namespaced_deployment(NS, deployment_body("pool", 1))
        scale = apps.read_namespaced_deployment_scale("pool", NS)
        assert (scale.spec.replicas, scale.status.selector) == (
            1,
            f"{POOL}=pool,{MEMBER}=true",
        )
        scale.spec.replicas = 4
        apps.replace_namespaced_deployment_scale("pool", NS, scale)
        assert len(pods(core)) == 4
        apps.patch_namespaced_deployment_scale("pool", NS, {"spec": {"replicas": 2}})
        assert len(pods(core)) == 2
        assert apps.read_namespaced_deployment("pool", NS).spec.replicas == 2

    def test_a_stale_scale_is_a_conflict(self, apps: Any) -> None:
        apps.create_namespaced_deployment(NS, deployment_body("pool", 1))
        scale = apps.read_namespaced_deployment_scale("pool", NS)
        apps.patch_namespaced_deployment("pool", NS, {"metadata": {"labels": {"a": "b"}}})
        scale.spec.replicas = 3
        with pytest.raises(client.exceptions.ApiException) as exc:
            apps.replace_namespaced_deployment_scale("pool", NS, scale)
        assert exc.value.status == 409

    def test_scale_down_removes_pending_then_cheap_then_new_pods(
        self, kube_api: KubeApi, core: Any, apps: Any
    ) -> None:
        apps.create_namespaced_deployment(NS, deployment_body("pool", 4))
        ordered = sorted(pods(core), key=lambda p: int(p.metadata.resource_version or 0))
        oldest, cheap, busy, newest = (p.metadata.name for p in ordered)
        for name in (oldest, cheap, busy, newest):
            kube_api.server.set_pod_phase(NS, name, "Running")
        cost = "controller.kubernetes.io/pod-deletion-cost"
        core.patch_namespaced_pod(cheap, NS, {"metadata": {"annotations": {cost: "-10"}}})
        core.patch_namespaced_pod(busy, NS, {"metadata": {"annotations": {cost: "100"}}})
        apps.patch_namespaced_deployment_scale("pool", NS, {"spec": {"replicas": 5}})
        pending = next(p.metadata.name for p in pods(core) if p.status.phase == "Pending")
        expected_order = [pending, cheap, newest, oldest]
        for replicas, gone in zip(range(4, 0, -1), expected_order, strict=True):
            apps.patch_namespaced_deployment_scale("pool", NS, {"spec": {"replicas": replicas}})
            assert gone not in {p.metadata.name for p in pods(core)}
        assert [p.metadata.name for p in pods(core)] == [busy]

    def test_a_relabelled_pod_is_released_and_replaced(self, core: Any, apps: Any) -> None:
        apps.create_namespaced_deployment(NS, deployment_body("pool", 2))
        taken = pods(core)[0].metadata.name
        core.patch_namespaced_pod(taken, NS, {"metadata": {"labels": {MEMBER: "false"}}})
        released = core.read_namespaced_pod(taken, NS)
        assert released.metadata.owner_references is None
        members = pods(core, f"{MEMBER}=true")
        assert len(members) == 2 and taken not in {p.metadata.name for p in members}
        apps.delete_namespaced_deployment("pool", NS)
        assert [p.metadata.name for p in pods(core)] == [taken]

    def test_a_template_change_replaces_the_pods(self, core: Any, apps: Any) -> None:
        apps.create_namespaced_deployment(NS, deployment_body("pool", 2))
        before = {p.metadata.name for p in pods(core)}
        patch = {
            "spec": {"template": {"spec": {"containers": [{"name": "runner", "image": "x:2"}]}}}
        }
        apps.patch_namespaced_deployment("pool", NS, patch)
        after = pods(core)
        assert len(after) == 2 and not before & {p.metadata.name for p in after}
        assert {p.spec.containers[0].image for p in after} == {"x:2"}
        assert apps.read_namespaced_deployment("pool", NS).status.observed_generation == 2


class TestKubelet:
    def test_running_pods_get_a_node_an_ip_and_readiness(
        self, kube_api: KubeApi, core: Any
    ) -> None:
        body = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": IMAGE}]}}
        core.create_namespaced_pod(NS, body)
        kube_api.server.set_pod_phase(NS, "p", "Running")
        pod = core.read_namespaced_pod("p", NS)
        assert pod.status.phase == "Running" and pod.spec.node_name
        assert re.fullmatch(r"10\.244\.\d+\.\d+", pod.status.pod_ip)
        assert [c.status for c in pod.status.conditions if c.type == "Ready"] == ["True"]
        assert pod.status.container_statuses[0].state.running.started_at is not None

    def test_callbacks_see_pods_come_and_go_and_may_call_the_api(
        self, kube_api: KubeApi, core: Any, batch: Any
    ) -> None:
        created: list[str] = []
        deleted: list[str] = []

        def started(pod: dict[str, Any]) -> None:
            name = pod["metadata"]["name"]
            created.append(core.read_namespaced_pod(name, NS).metadata.name)
            kube_api.server.set_pod_phase(NS, name, "Running")

        kube_api.server.on_pod_created = started
        kube_api.server.on_pod_deleted = lambda pod: deleted.append(pod["metadata"]["name"])
        batch.create_namespaced_job(NS, job_body("runner-1"))
        [pod] = pods(core)
        assert created == [pod.metadata.name] and pod.status.phase == "Running"
        core.delete_namespaced_pod(pod.metadata.name, NS)
        assert deleted[0] == pod.metadata.name

    def test_without_controllers_the_server_is_a_plain_store(
        self, kube_api: KubeApi, core: Any, batch: Any, apps: Any
    ) -> None:
        kube_api.server.controllers_enabled = False
        batch.create_namespaced_job(NS, job_body("runner-1"))
        apps.create_namespaced_deployment(NS, deployment_body("pool", 2))
        assert pods(core) == []
        assert batch.read_namespaced_job("runner-1", NS).status.active is None


def test_everything_the_controllers_store_is_valid_kubernetes(
    kube_api: KubeApi, core: Any, batch: Any, apps: Any
) -> None:
    from tests.kube_api.resources import ALL
    from tests.kube_api.validation import object_problems

    batch.create_namespaced_job(NS, job_body("done"))
    batch.create_namespaced_job(NS, job_body("failed"))
    batch.create_namespaced_job(NS, job_body("running"))
    apps.create_namespaced_deployment(NS, deployment_body("pool", 2))
    for pod in pods(core):
        name = pod.metadata.name
        phase = {"done": "Succeeded", "failed": "Failed"}.get(name.split("-")[0], "Running")
        kube_api.server.set_pod_phase(NS, name, phase)
    problems = {
        f"{rt.plural}/{obj['metadata']['name']}": object_problems(rt, obj)
        for rt in ALL
        if rt.stored
        for obj in kube_api.server.objects(rt.plural)
    }
    assert len(problems) > 8
    assert {key: found for key, found in problems.items() if found} == {}


def test_a_failing_callback_is_kept_for_the_test(kube_api: KubeApi, core: Any, batch: Any) -> None:
    def broken(pod: dict[str, Any]) -> None:
        raise RuntimeError("runner would not start")

    kube_api.server.on_pod_created = broken
    batch.create_namespaced_job(NS, job_body("runner-1"))
    assert len(pods(core)) == 1
    assert [str(exc) for exc in kube_api.server.callback_errors] == ["runner would not start"]
    kube_api.server.callback_errors.clear()
