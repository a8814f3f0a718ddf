"""Kubernetes mode end to end against the fake API server, a Valkey server and the GitHub
simulator: a signed ``queued`` webhook becomes one runner Job with its ConfigMap and
Secret; the pod's agent (started by the test's kubelet) runs the simulated runner with
the mounted JIT config and reports; GitHub's ``completed`` webhook ends the job, and the
Job goes with its children. Private jobs get their NetworkPolicy; a pool job is served by
an idle pool pod that fetches its config with its pod-bound token while the pool's
Deployment refills; of three scheduler replicas one leads, and another takes over
within the lease time when it dies."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.k8s_stack import K8sStack, k8s_stack, runner_config
from tests.e2e.local_stack import LABEL, REPOSITORY, RUN_ID, runner_name
from tests.kube_api.fixtures import KubeApi


@pytest.fixture
def stack(tmp_path: Path, kube_api: KubeApi) -> Iterator[K8sStack]:
    with k8s_stack(tmp_path, kube_api) as started:
        started.start()
        yield started


def _owners(obj: dict[str, object]) -> list[str]:
    refs = obj["metadata"].get("ownerReferences", [])  # type: ignore[attr-defined]
    return [f"{r['kind']}/{r['name']}" for r in refs]


def test_a_queued_job_runs_in_one_job_pod_and_everything_is_gone_after(stack: K8sStack) -> None:
    job_id, delivery = stack.queue_job()
    name = runner_name(job_id)
    by_job = {"runs-fleet.io/job-id": str(job_id)}
    [job] = stack.wait_for("the runner Job", lambda: stack.objects("jobs", **by_job) or None)
    assert job["metadata"]["name"] == name
    labels = job["metadata"]["labels"]
    assert labels["runs-fleet.io/run-id"] == str(RUN_ID)
    assert job["spec"]["backoffLimit"] == 0
    stack.wait_for(
        "the runner id on the job", lambda: (r := stack.job(job_id)) and r["runner_id"] and r
    )
    secret = stack.kube.server.get("secrets", stack.kube.namespace, f"{name}-config")
    configmap = stack.kube.server.get("configmaps", stack.kube.namespace, f"{name}-settings")
    assert secret is not None and configmap is not None
    assert _owners(secret) == [f"Job/{name}"] and _owners(configmap) == [f"Job/{name}"]
    config = runner_config(stack, name)
    assert config["job_id"] == job_id and config["repository"] == REPOSITORY
    assert "jit" not in str(configmap["data"]).lower()  # the JIT config is in the Secret only
    for how in ("redeliver", "duplicate"):
        assert stack.resend(delivery, how) == 202
    assert len(stack.objects("jobs", **{"runs-fleet.io/job-id": str(job_id)})) == 1
    assert stack.jit_configs() == [name]

    record = stack.wait_for_status(job_id, "completed", timeout_s=60)
    assert record["runner_id"] == name
    assert stack.github_job(job_id)["runner_name"] == name
    stack.wait_for(
        "the Job and its children to be deleted",
        lambda: (
            not stack.objects("jobs")
            and not stack.objects("secrets", **{"runs-fleet.io/job-id": str(job_id)})
            and not stack.objects("configmaps", **{"runs-fleet.io/component": "runner-config"})
            and not stack.objects("pods", **{"runs-fleet.io/job-id": str(job_id)})
        ),
    )
    assert list(stack.kubelet.exit_codes.values()) == [0]
    assert stack.kube.server.invalid_bodies == []


def test_a_private_job_gets_its_network_policy(stack: K8sStack) -> None:
    job_id, _ = stack.queue_job([f"{LABEL}/private=true"])
    name = runner_name(job_id)
    stack.wait_for("the runner id on the job", lambda: (r := stack.job(job_id)) and r["runner_id"])
    [policy] = stack.objects("networkpolicies")
    assert _owners(policy) == [f"Job/{name}"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector["runs-fleet.io/job-id"] == str(job_id)
    blocked = {
        cidr for rule in policy["spec"]["egress"] for peer in rule.get("to", [])
        for cidr in peer.get("ipBlock", {}).get("except", [])
    }  # fmt: skip
    assert {"169.254.0.0/16", "10.0.0.0/8"} <= blocked
    stack.wait_for_status(job_id, "completed", timeout_s=60)
    stack.wait_for("the policy to go with the Job", lambda: not stack.objects("networkpolicies"))


def test_a_pool_job_is_served_by_an_idle_pool_pod_and_the_deployment_refills(
    stack: K8sStack,
) -> None:
    done = stack.pools(
        "set", "warm", "--label", "runs-fleet=0/cpu=2", "--running", "1", "--stopped", "0"
    )
    assert done.returncode == 0, done.stderr
    [idle] = stack.wait_for(
        "an idle pool pod",
        lambda: [
            p for p in stack.objects("pods", **{"runs-fleet.io/pool": "warm"})
            if p.get("status", {}).get("phase") == "Running"
        ] or None,
        timeout_s=60,
    )  # fmt: skip
    pod = idle["metadata"]["name"]
    job_id, _ = stack.queue_job([f"runs-fleet={RUN_ID}/cpu=2/pool=warm"])
    record = stack.wait_for_status(job_id, "completed", timeout_s=60)
    assert record["runner_id"] == pod
    assert "got the config of job" in stack.kubelet.agent_log(pod)
    stack.wait_for(
        "the Deployment to refill with a new idle pod",
        lambda: [
            p for p in stack.objects("pods", **{"runs-fleet.io/pool": "warm"})
            if p["metadata"]["name"] != pod
            and p["metadata"]["labels"].get("runs-fleet.io/pool-member") == "true"
        ] or None,
        timeout_s=30,
    )  # fmt: skip
    stack.wait_for(
        "the pod that ran the job to be removed",
        lambda: stack.kube.server.get("pods", stack.kube.namespace, pod) is None,
        timeout_s=30,
    )
    assert stack.jit_configs() == [runner_name(job_id)]


def test_one_of_three_scheduler_replicas_leads_and_another_takes_over_when_it_dies(
    tmp_path: Path, kube_api: KubeApi
) -> None:
    with k8s_stack(tmp_path, kube_api, settings={"RUNS_FLEET_SCHEDULER_LEASE_S": "10"}) as stack:
        stack.start(scheduler=False)
        _one_leader_then_another(stack)


def _one_leader_then_another(stack: K8sStack) -> None:
    replicas = {p.pid: p for p in (stack.start_scheduler() for _ in range(3))}

    def holder() -> int | None:
        for lease in stack.kube.server.objects("leases", stack.kube.namespace):
            if lease["metadata"]["name"].endswith("runs-fleet-scheduler"):
                identity = lease["spec"].get("holderIdentity") or ""
                pid = int(identity.split("-")[-2]) if identity.count("-") >= 2 else 0
                return pid if pid in replicas else None
        return None

    leader = stack.wait_for("a scheduler replica to lead", holder, timeout_s=30)
    time.sleep(2)  # several ticks: the leader keeps its lease, nobody else takes it
    assert holder() == leader
    replicas[leader].send_signal(signal.SIGKILL)
    replicas[leader].wait()
    started = time.monotonic()
    successor = stack.wait_for(
        "another replica to take the lease",
        lambda: (h := holder()) is not None and h != leader and h,
        timeout_s=120,
    )
    assert successor in replicas and successor != leader
    assert time.monotonic() - started < 20  # the lease time (10 s) and a few ticks
