"""Kubernetes mode on a real cluster: a kind cluster, the runner image built from this
repository, and runs-fleet (k8s mode) with Valkey and the GitHub simulator on this host.

A queued job must become a Job whose pod really runs (scheduled by kube-scheduler,
started by the kubelet from the image), fetches nothing it should not, runs the
simulated runner with its mounted JIT config, reports to runs-fleet, and completes; the
Job and its children are then deleted by Kubernetes itself (TTL and garbage collector).

It needs ``kind`` and a running Docker engine and is skipped, saying so, where either is
missing (this repository's CI machines have no Docker engine; the fake API server tests
in ``test_k8s_mode.py`` cover the same flow there).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runs_fleet_cli.demo.processes import free_port
from tests.e2e.local_stack import LocalStack, runner_name

ROOT = Path(__file__).parents[2]
IMAGE = "runs-fleet-runner:e2e"
NAMESPACE = "runs-fleet"


def _docker_running() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


def _why_skipped() -> str | None:
    if shutil.which("kind") is None:
        return "needs the `kind` binary on PATH (https://kind.sigs.k8s.io) and a Docker engine"
    if not _docker_running():
        return "needs a running Docker engine for kind (`docker info` failed or docker is missing)"
    return None


pytestmark = pytest.mark.skipif(_why_skipped() is not None, reason=_why_skipped() or "")


def _run(*argv: str, timeout: float = 600) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A kind cluster with the runner image loaded; its name and kubeconfig."""
    name = f"runs-fleet-e2e-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    _run("docker", "build", "-t", IMAGE, "-f", str(ROOT / "tests/e2e/kind/Dockerfile"), str(ROOT))
    _run(
        "kind",
        "create",
        "cluster",
        "--name",
        name,
        "--kubeconfig",
        str(kubeconfig),
        "--wait",
        "180s",
    )
    try:
        _run("kind", "load", "docker-image", IMAGE, "--name", name)
        yield name, kubeconfig
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", name], timeout=300, check=False)


def _gateway() -> str:
    """The host's address on kind's Docker network: pods reach runs-fleet there."""
    networks = json.loads(_run("docker", "network", "inspect", "kind"))
    for config in networks[0]["IPAM"]["Config"]:
        if "." in config.get("Gateway", ""):
            return str(config["Gateway"])
    raise AssertionError("kind's Docker network has no IPv4 gateway")


class KindStack(LocalStack):
    """Valkey, the simulator and ``runs-fleet serve`` (k8s mode) on the host's address in
    kind's network, driving the kind cluster."""

    def __init__(self, workdir: Path, kubeconfig: Path, host: str) -> None:
        super().__init__(workdir, external_valkey=True)
        self.kubeconfig = kubeconfig
        self.host = host  # the simulator listens there too: the runner pods call it
        self.api_port = free_port()
        self.api = f"http://{host}:{self.api_port}"

    def env(self) -> dict[str, str]:
        return super().env() | {
            "RUNS_FLEET_MODE": "k8s",
            "RUNS_FLEET_KUBECONFIG": str(self.kubeconfig),
            "RUNS_FLEET_KUBE_NAMESPACE": NAMESPACE,
            "RUNS_FLEET_KUBE_RUNNER_IMAGE": IMAGE,
            "RUNS_FLEET_KUBE_SPOT_SCHEDULING": "none",
            "RUNS_FLEET_KUBE_JOB_TTL_S": "0",
            "RUNS_FLEET_LISTEN": f"{self.host}:{self.api_port}",
            "RUNS_FLEET_PUBLIC_URL": self.api,
        }


def _namespace(kubeconfig: Path) -> Any:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": "runs-fleet-runner"}})
    return api


def test_a_queued_job_runs_in_a_real_pod_and_kubernetes_cleans_up(
    cluster: tuple[str, Path], tmp_path: Path
) -> None:
    from kubernetes import client

    _, kubeconfig = cluster
    api = _namespace(kubeconfig)
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    stack = KindStack(tmp_path, kubeconfig, _gateway())
    try:
        stack.start(job_seconds=1)
        job_id, _ = stack.queue_job()
        record = stack.wait_for_status(job_id, "completed", timeout_s=300)
        assert record["runner_id"] == runner_name(job_id)
        stack.wait_for(
            "Kubernetes to delete the finished Job and its config",
            lambda: (
                not batch.list_namespaced_job(NAMESPACE).items
                and not core.list_namespaced_secret(
                    NAMESPACE, label_selector=f"runs-fleet.io/job-id={job_id}"
                ).items
            ),
            timeout_s=120,
        )
    finally:
        stack.close()
        api.close()
