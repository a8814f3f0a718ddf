"""The three deployment modes of the fault matrix: their backends, their dispatch steps,
who plays their runners, and how to count what they left behind.

Local mode's runners are real: its provider starts an agent per runner, which runs the
simulated runner. In EC2 and Kubernetes modes no machine boots here, so a
:class:`RunnerPlayer` plays each instance or pod runs-fleet launched: it reads the
runner's config where the real agent would (the SSM parameter, the mounted Secret),
and runs the simulated runner's protocol with the JIT config in it: it takes a job,
"runs" it, and completes it, unless its machine was stopped or deleted under it first,
which is what the matrix counts as a busy runner stopped.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3

from runs_fleet_core.converters import loads, make_config_converter
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_ec2 import fleet, ssm
from runs_fleet_k8s import config_files, names
from tests.e2e.ec2_stack import Ec2Stack
from tests.e2e.k8s_stack import RUNNER_SERVICE_ACCOUNT, K8sStack, mount_config
from tests.e2e.local_stack import LocalStack, processes_in
from tests.faults.harness import Step
from tests.faults.players import RunnerPlayer
from tests.kube_api.fixtures import KubeApi, write_kubeconfig
from tests.moto_server import MotoServer

GITHUB_STEP = Step("github", b"generate-jitconfig", "JIT config made")
SPEEDS = {
    "RUNS_FLEET_SCHEDULER_INTERVAL_S": "1",
    "RUNS_FLEET_SCHEDULER_LEASE_S": "5",
    "RUNS_FLEET_CLAIM_TTL_S": "30",
    "RUNS_FLEET_HEAL_AFTER_S": "10",
    "RUNS_FLEET_RELAUNCH_AFTER_S": "20",
    "RUNS_FLEET_DISCOVER_AFTER_S": "3",
    "RUNS_FLEET_MAX_ATTEMPTS": "8",
    "RUNS_FLEET_GITHUB_TIMEOUT_S": "3",
    "RUNS_FLEET_VALKEY_VISIBILITY_TIMEOUT_S": "6",
    "RUNS_FLEET_LOG_LEVEL": "info",
}
"""Timeouts of a deployment that heals in seconds instead of minutes: the matrix waits
for healing, so it must come soon (a real deployment keeps the defaults)."""


class Deployment:
    """One mode's stack: backends and simulator, replica settings, players, inventory."""

    mode = ""
    steps: tuple[Step, ...] = (GITHUB_STEP,)
    stack: LocalStack
    pool_sizes: tuple[int, ...] = ()
    """Idle runners of a warm pool, set in turn during the burst (none: no pool)."""

    def setup(self) -> None:
        """Create what the deployment needs before its replicas start."""

    def backends(self) -> dict[str, int]:
        """The backend ports the replicas reach (each through a fault proxy)."""
        raise NotImplementedError

    def replica_env(self, index: int, ports: Mapping[str, int], url: str) -> dict[str, str]:
        """Settings of replica ``index`` whose backends are at ``ports`` (its proxies)."""
        env = self.stack.env() | SPEEDS
        env["RUNS_FLEET_GITHUB_API_URL"] = f"http://127.0.0.1:{ports['github']}"
        if "valkey" in ports:
            env["RUNS_FLEET_VALKEY_URL"] = f"redis://127.0.0.1:{ports['valkey']}/0"
        return env

    def start_runners(self) -> None:
        """From now on, launched runners run (local mode: its agents do by themselves)."""

    def stop_runners(self) -> None:
        """No runner starts any more."""

    def machines_per_runner(self) -> Counter[str]:
        """Runner machines started, by runner name (one per job attempt)."""
        raise NotImplementedError

    def busy_stopped(self) -> int:
        """Runners whose machine was taken away while they ran a job."""
        raise NotImplementedError

    def orphans(self) -> dict[str, int]:
        """What is left (machines, configs) besides the state store's records."""
        raise NotImplementedError

    def restart_valkey(self) -> None:
        valkey = self.stack.valkey
        assert valkey is not None
        valkey.kill()
        valkey.start()


class LocalDeployment(Deployment):
    mode = "local"
    pool_sizes = (4, 1, 5, 0, 3)
    steps = (
        Step("valkey", b"EVALSHA", "state or queue write"),
        GITHUB_STEP,
        Step("valkey", b"EVALSHA", "state or queue write (again)"),
    )

    def __init__(self, workdir: Path) -> None:
        self.stack = LocalStack(workdir, external_valkey=True)
        self.stack.settings["RUNS_FLEET_LOCAL_MAX_RUNNERS"] = "64"
        self._agents: dict[str, set[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def backends(self) -> dict[str, int]:
        assert self.stack.valkey is not None
        return {"valkey": self.stack.valkey.port, "github": _port(self.stack.simulator)}

    def start_runners(self) -> None:
        self._thread.start()

    def stop_runners(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        """Sample the agent processes by runner work dir: two processes for one name
        are two machines for one runner."""
        root = self.stack.state_dir / "runners"
        while not self._stop.wait(0.25):
            if not root.is_dir():
                continue
            for pid in processes_in(root):
                with contextlib.suppress(OSError):
                    cwd = Path(os.readlink(f"/proc/{pid}/cwd")).relative_to(root)
                    if cwd.parts and cwd.parts[0].startswith("runs-fleet-"):
                        self._agents.setdefault(cwd.parts[0], set()).add(_parent_agent(pid))

    def machines_per_runner(self) -> Counter[str]:
        return Counter({name: len(pids) for name, pids in self._agents.items()})

    def busy_stopped(self) -> int:
        return sum(1 for job in _github_jobs(self.stack) if job.get("conclusion") == "cancelled")

    def orphans(self) -> dict[str, int]:
        state = self.stack.state_dir
        configs = state / "runners" / "runner-configs"
        return {
            "runner processes": len(processes_in(state / "runners")),
            "runner configs": len(list(configs.iterdir())) if configs.is_dir() else 0,
        }


class Ec2Deployment(Deployment):
    mode = "ec2"
    steps = (
        Step("aws", b"DynamoDB_20120810.", "job record written"),
        Step("aws", b"AmazonSSM.PutParameter", "config stored"),
        GITHUB_STEP,
        Step("aws", b"CreateFleet", "instance launched"),
        Step("aws", b"AmazonSQS.DeleteMessage", "message acked"),
    )

    def __init__(self, workdir: Path, aws: MotoServer, job_seconds: float) -> None:
        self.aws = aws
        self.stack = Ec2Stack(workdir, aws)
        self.player = RunnerPlayer(job_seconds)
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._ec2 = boto3.client("ec2")
        self._ssm = boto3.client("ssm")
        self._converter = make_config_converter()

    def setup(self) -> None:
        # the job queue's redrive policy follows the deployment's attempts
        self.stack.settings["RUNS_FLEET_MAX_ATTEMPTS"] = SPEEDS["RUNS_FLEET_MAX_ATTEMPTS"]
        self.stack.create_aws_resources()

    def backends(self) -> dict[str, int]:
        return {"aws": _port(self.aws.url), "github": _port(self.stack.simulator)}

    def replica_env(self, index: int, ports: Mapping[str, int], url: str) -> dict[str, str]:
        env = super().replica_env(index, ports, url)
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{ports['aws']}"
        env["RUNS_FLEET_AWS_TIMEOUT_S"] = "3"
        env["RUNS_FLEET_PUBLIC_URL"] = url
        return env

    def start_runners(self) -> None:
        self._thread.start()

    def stop_runners(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _instances(self, *states: str) -> list[dict[str, Any]]:
        filters = [{"Name": "tag-key", "Values": [fleet.MANAGED_TAG]}]
        if states:
            filters.append({"Name": "instance-state-name", "Values": list(states)})
        pages = self._ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def _watch(self) -> None:
        while not self._stop.wait(0.3):
            with contextlib.suppress(Exception):
                for instance in self._instances("running"):
                    if instance["InstanceId"] not in self._seen:
                        self._boot(instance)

    def _boot(self, instance: dict[str, Any]) -> None:
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        name = tags.get(fleet.RUNNER_NAME_TAG)
        if not name:
            return
        parameter = f"{ssm.DEFAULT_PREFIX}/{name}"
        try:
            value = self._ssm.get_parameter(Name=parameter, WithDecryption=True)
        except self._ssm.exceptions.ParameterNotFound:
            return  # not stored yet (or already removed): look again next round
        self._seen.add(instance["InstanceId"])
        config = loads(self._converter, value["Parameter"]["Value"], RunnerConfig)
        instance_id = instance["InstanceId"]

        def terminate() -> None:
            """The agent terminates its own instance when its runner is done."""
            with contextlib.suppress(Exception):
                self._ec2.terminate_instances(InstanceIds=[instance_id])

        self.player.play(name, config.jit_config, lambda: not self._running(instance_id), terminate)

    def _running(self, instance_id: str) -> bool:
        reply = self._ec2.describe_instances(InstanceIds=[instance_id])
        states = [i["State"]["Name"] for r in reply["Reservations"] for i in r["Instances"]]
        return states == ["running"]

    def machines_per_runner(self) -> Counter[str]:
        names: Counter[str] = Counter()
        for instance in self._instances():
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            if fleet.RUNNER_NAME_TAG in tags:
                names[tags[fleet.RUNNER_NAME_TAG]] += 1
        return names

    def busy_stopped(self) -> int:
        return len(self.player.interrupted)

    def orphans(self) -> dict[str, int]:
        alive = self._instances("pending", "running", "stopping", "stopped")
        pages = self._ssm.get_paginator("get_parameters_by_path").paginate(
            Path=ssm.DEFAULT_PREFIX, Recursive=True
        )
        return {
            "instances": len(alive),
            "runner configs": sum(len(page["Parameters"]) for page in pages),
        }


class K8sDeployment(Deployment):
    mode = "k8s"
    steps = (
        Step("kube", b"PUT /api/v1/namespaces/", "job record written"),
        Step("kube", b"/secrets HTTP/1.1", "config stored"),
        GITHUB_STEP,
        Step("kube", b"POST /apis/batch/v1/", "Job created"),
        Step("valkey", b"EVALSHA", "queue write"),
    )

    def __init__(self, workdir: Path, kube: KubeApi, job_seconds: float) -> None:
        self.kube = kube
        self.workdir = workdir
        self.stack = K8sStack(workdir, kube)
        self.player = RunnerPlayer(job_seconds)
        self.pods: Counter[str] = Counter()
        self._deleted: set[str] = set()
        self._lock = threading.Lock()

    def setup(self) -> None:
        self.kube.server.create(
            "serviceaccounts",
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": RUNNER_SERVICE_ACCOUNT},
            },
            namespace=self.kube.namespace,
        )

    def backends(self) -> dict[str, int]:
        assert self.stack.valkey is not None
        return {
            "kube": _port(self.kube.url),
            "valkey": self.stack.valkey.port,
            "github": _port(self.stack.simulator),
        }

    def replica_env(self, index: int, ports: Mapping[str, int], url: str) -> dict[str, str]:
        env = super().replica_env(index, ports, url)
        kubeconfig = write_kubeconfig(
            self.workdir / f"kubeconfig-{index}",
            f"http://127.0.0.1:{ports['kube']}",
            self.kube.token,
            self.kube.namespace,
        )
        env["RUNS_FLEET_KUBECONFIG"] = str(kubeconfig)
        env["RUNS_FLEET_KUBE_TIMEOUT_S"] = "3"
        # finished Jobs stay a while, as by default (300 s), so a dispatch that comes
        # back to a finished runner finds its Job instead of making it again
        env["RUNS_FLEET_KUBE_JOB_TTL_S"] = "15"
        env["RUNS_FLEET_PUBLIC_URL"] = url
        return env

    def start_runners(self) -> None:
        self.kube.server.on_pod_created = self._created
        self.kube.server.on_pod_deleted = self._gone

    def stop_runners(self) -> None:
        self.kube.server.on_pod_created = None
        self.kube.server.on_pod_deleted = None

    def _created(self, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        if names.JOB_ID not in metadata.get("labels", {}):
            return
        self.kube.server.set_pod_phase(namespace, name, "Running")
        config = self._mounted(pod)
        if config is None:
            self.kube.server.set_pod_phase(namespace, name, "Failed", exit_code=78)
            return
        with self._lock:
            self.pods[config.runner_name] += 1

        def gone() -> bool:
            return name in self._deleted

        def exited() -> None:
            if name not in self._deleted:
                with contextlib.suppress(Exception):
                    self.kube.server.set_pod_phase(namespace, name, "Succeeded", exit_code=0)

        self.player.play(config.runner_name, config.jit_config, gone, exited)

    def _gone(self, pod: dict[str, Any]) -> None:
        self._deleted.add(pod["metadata"]["name"])

    def _mounted(self, pod: dict[str, Any]) -> RunnerConfig | None:
        """The runner config the pod mounts, read as its agent reads it; ``None`` when
        its ConfigMap or Secret is not there (yet, or any more)."""
        target = self.workdir / "pods" / pod["metadata"]["name"]
        mount_config(self.kube, pod, target)
        try:
            return config_files.read_dir(target)
        except config_files.ConfigFilesError:
            return None

    def machines_per_runner(self) -> Counter[str]:
        return Counter(self.pods)

    def busy_stopped(self) -> int:
        return len(self.player.interrupted)

    def orphans(self) -> dict[str, int]:
        server = self.kube.server
        namespace = self.kube.namespace

        def labelled(resource: str) -> int:
            return sum(
                1
                for obj in server.objects(resource, namespace)
                if names.JOB_ID in obj["metadata"].get("labels", {})
            )

        return {
            "Jobs": labelled("jobs"),
            "pods": labelled("pods"),
            "runner configs": labelled("secrets"),
        }


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def _parent_agent(pid: int) -> int:
    """The agent process of ``pid``: itself, or the ancestor whose parent is outside
    the runner's work dir (the simulated runner is the agent's child)."""
    cwd = os.readlink(f"/proc/{pid}/cwd")
    while True:
        with open(f"/proc/{pid}/stat") as stat:
            parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        try:
            if os.readlink(f"/proc/{parent}/cwd") != cwd:
                return pid
        except OSError:
            return pid
        pid = parent


def _github_jobs(stack: LocalStack) -> list[dict[str, Any]]:
    from tests.faults.harness import http_get_json

    jobs: list[dict[str, Any]] = http_get_json(f"{stack.simulator}/_simulator/jobs")
    return jobs
