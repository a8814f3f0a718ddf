"""The Kubernetes-mode stack of the end-to-end tests: the fake API server standing in for
the cluster, a Valkey server, the GitHub simulator, and ``runs-fleet serve`` in
``RUNS_FLEET_MODE=k8s`` as a subprocess.

No pod runs by itself on the fake API server, so :class:`Kubelet` plays the nodes: for
every pod the controllers create it starts the pod's one container the way the runner
image does, ``runs-fleet k8s agent``, as a real process. A Job's pod gets its mounted
config (the files of the ConfigMap and the Secret its volume names) in a directory of
its own; a pool pod gets a service account token bound to it, as the kubelet would
project it, and asks the orchestrator for its config. When the process exits the pod's
phase becomes Succeeded or Failed; when a pod is deleted its process gets SIGTERM.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from runs_fleet_cli.demo.processes import free_port, wait_until_ready
from runs_fleet_k8s import config_files
from tests import secret_scan
from tests.e2e.local_stack import START_TIMEOUT_S, LocalStack, _clean_env, closed_at_exit
from tests.kube_api.fixtures import KubeApi

RUNNER_SERVICE_ACCOUNT = "runs-fleet-runner"


def mount_config(kube: KubeApi, pod: dict[str, Any], target: Path) -> None:
    """Write the files of the ConfigMaps and Secrets ``pod``'s projected volumes name
    into ``target``, as the kubelet mounts them (Secret values decoded)."""
    target.mkdir(parents=True, exist_ok=True)
    namespace = pod["metadata"]["namespace"]
    for volume in pod["spec"].get("volumes", []):
        for source in volume.get("projected", {}).get("sources", []):
            if "configMap" in source:
                found = kube.server.get("configmaps", namespace, source["configMap"]["name"])
                for key, value in (found or {}).get("data", {}).items():
                    (target / key).write_text(value)
            if "secret" in source:
                found = kube.server.get("secrets", namespace, source["secret"]["name"])
                for key, value in (found or {}).get("data", {}).items():
                    (target / key).write_bytes(base64.b64decode(value))


class Kubelet:
    """Runs the agent of each pod of ``kube`` in ``workdir`` (see the module docstring)."""

    def __init__(self, kube: KubeApi, workdir: Path, runner_dir: Path) -> None:
        self.kube = kube
        self.workdir = workdir
        self.runner_dir = runner_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.exit_codes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopped = False

    def attach(self) -> None:
        self.kube.server.on_pod_created = self._created
        self.kube.server.on_pod_deleted = self._deleted

    def _created(self, pod: dict[str, Any]) -> None:
        thread = threading.Thread(target=self._run, args=(pod,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _deleted(self, pod: dict[str, Any]) -> None:
        with self._lock:
            process = self.processes.get(pod["metadata"]["name"])
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)

    def _run(self, pod: dict[str, Any]) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value", "") for e in container.get("env", []) if "value" in e}
        if container.get("image", "").startswith("registry.k8s.io/pause"):
            self.kube.server.set_pod_phase(namespace, name, "Running")
            return  # a placeholder: holds its node, runs nothing
        pod_dir = self.workdir / "pods" / name
        pod_dir.mkdir(parents=True)
        agent_env = _clean_env() | {
            "RUNS_FLEET_RUNNER_DIR": str(self.runner_dir),
            "RUNS_FLEET_RUNNER_ID": name,
            "RUNS_FLEET_CONFIG_DIR": str(pod_dir / "config"),
        }
        if env.get("RUNS_FLEET_CONFIG_URL"):
            agent_env["RUNS_FLEET_CONFIG_URL"] = env["RUNS_FLEET_CONFIG_URL"]
            agent_env["RUNS_FLEET_TOKEN_FILE"] = str(self._project_token(pod, pod_dir))
        else:
            self._mount_config(pod, pod_dir / "config")
        with self._lock:
            if self._stopped:
                return
            log = (pod_dir / "agent.log").open("wb")
            process = subprocess.Popen(
                [sys.executable, "-m", "runs_fleet_cli", "k8s", "agent", "--poll-interval", "0.2"],
                env=agent_env,
                cwd=pod_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.processes[name] = process
        self.kube.server.set_pod_phase(namespace, name, "Running")
        code = process.wait()
        log.close()
        self.exit_codes[name] = code
        if self.kube.server.get("pods", namespace, name) is not None:
            phase = "Succeeded" if code == 0 else "Failed"
            self.kube.server.set_pod_phase(namespace, name, phase, exit_code=code)

    def _mount_config(self, pod: dict[str, Any], target: Path) -> None:
        """The files of the ConfigMap and Secret the pod's volumes name, as mounted."""
        mount_config(self.kube, pod, target)

    def _project_token(self, pod: dict[str, Any], pod_dir: Path) -> Path:
        """A token for the pod's service account, bound to the pod, for the runs-fleet
        audience: what the pod's projected token volume holds."""
        from kubernetes import client

        core = client.CoreV1Api(self.kube.api_client())
        metadata = pod["metadata"]
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": ["runs-fleet"],
                "expirationSeconds": 3600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                },
            },
        }
        answer = core.create_namespaced_service_account_token(
            pod["spec"].get("serviceAccountName", "default"), metadata["namespace"], request
        )
        secret_scan.register_secret(answer.status.token, "service account token")
        path = pod_dir / "token"
        path.write_text(answer.status.token)
        return path

    def stop(self) -> None:
        """No new pod gets a process from now on; the running ones get SIGTERM."""
        self.kube.server.on_pod_created = None
        self.kube.server.on_pod_deleted = None
        with self._lock:
            self._stopped = True
            processes = list(self.processes.values())
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def agent_log(self, pod: str) -> str:
        return (self.workdir / "pods" / pod / "agent.log").read_text(errors="replace")


class K8sStack(LocalStack):
    """One test's fake cluster, Valkey, GitHub simulator and ``runs-fleet serve`` (k8s)."""

    def __init__(self, workdir: Path, kube: KubeApi, **options: Any) -> None:
        super().__init__(workdir, external_valkey=True, **options)
        self.kube = kube
        self.kubelet = Kubelet(kube, workdir, workdir / "runner")

    def start(
        self, *, worker: bool = True, job_seconds: float = 0.5, scheduler: bool = True
    ) -> None:
        self.kube.server.create(
            "serviceaccounts",
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": RUNNER_SERVICE_ACCOUNT},
            },
            namespace=self.kube.namespace,
        )
        self.kubelet.attach()
        assert self.valkey is not None
        self.valkey.start()
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.start_simulator(job_seconds=job_seconds)
        self.start_serve(worker=worker, scheduler=scheduler)

    def env(self) -> dict[str, str]:
        return (
            super().env()
            | {
                "RUNS_FLEET_MODE": "k8s",
                "RUNS_FLEET_KUBECONFIG": str(self.kube.kubeconfig),
                "RUNS_FLEET_KUBE_NAMESPACE": self.kube.namespace,
                "RUNS_FLEET_KUBE_RUNNER_IMAGE": "ghcr.io/example/runs-fleet-runner:1",
                "RUNS_FLEET_KUBE_JOB_TTL_S": "0",
                "RUNS_FLEET_PUBLIC_URL": self.api,
                "RUNS_FLEET_SCHEDULER_INTERVAL_S": "1",
            }
            | self.settings
        )

    def start_serve(
        self, *, worker: bool = True, scheduler: bool = True
    ) -> subprocess.Popen[bytes]:
        argv = ["-m", "runs_fleet_cli", "serve"]
        argv += ["--scheduler"] if scheduler else ["--no-scheduler"]
        argv += [] if worker else ["--no-worker"]
        process = self._start("runs-fleet-serve", argv, self.env())
        wait_until_ready(f"{self.api}/ready", process, self.logs[process.pid], START_TIMEOUT_S)
        return process

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        """A ``runs-fleet scheduler`` replica of this deployment (its lease owner name
        carries its pid)."""
        return self._start("scheduler", ["-m", "runs_fleet_cli", "scheduler"], self.env())

    def objects(self, resource: str, **labels: str) -> list[dict[str, Any]]:
        """The stored objects of ``resource`` in the namespace carrying ``labels``."""
        return [
            obj
            for obj in self.kube.server.objects(resource, self.kube.namespace)
            if all(obj["metadata"].get("labels", {}).get(k) == v for k, v in labels.items())
        ]

    def close(self) -> int:
        self.kubelet.stop()
        return super().close()

    def describe(self) -> str:
        parts = [super().describe(), "--- cluster"]
        for resource in ("jobs", "pods", "deployments", "configmaps", "secrets"):
            for obj in self.kube.server.objects(resource, self.kube.namespace):
                status = json.dumps(obj.get("status", {}))[:300]
                parts.append(f"{resource}/{obj['metadata']['name']}: {status}")
        pods = self.workdir / "pods"
        if pods.is_dir():
            for pod in sorted(pods.iterdir()):
                parts.append(f"--- pod {pod.name}\n{self.kubelet.agent_log(pod.name)[-3000:]}")
        return "\n".join(parts)


def runner_config(stack: K8sStack, name: str) -> dict[str, Any]:
    """The non-secret part of a runner's config, as its ConfigMap holds it."""
    found = stack.kube.server.get("configmaps", stack.kube.namespace, f"{name}-settings")
    assert found is not None, f"no ConfigMap for {name}"
    loaded: dict[str, Any] = json.loads(found["data"][config_files.RUNNER_FILE])
    return loaded


def k8s_stack(workdir: Path, kube: KubeApi, **options: Any) -> AbstractContextManager[K8sStack]:
    """A :class:`K8sStack` that is closed (and checked to leave no process) on exit."""
    return closed_at_exit(K8sStack(workdir, kube, **options))
