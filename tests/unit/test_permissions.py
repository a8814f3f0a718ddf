"""Secrets get the narrowest permissions that still work, wherever runs-fleet puts them.

Local mode: the state dir and every directory runs-fleet makes in it are 0700, and every
file holding a secret (runner configs, the embedded Valkey's password, config and data,
agent logs) is 0600, checked on the tree real components leave: the embedded Valkey
server, the file config store, a runner agent. The GitHub simulator writes the App key
and webhook secret the demo uses 0600 in a 0700 directory. Kubernetes: every volume
that carries a secret (a runner's config Secret, a pool pod's service account token, the
chart's Secrets) is mounted readable by the pod's group only, and the chart's Role grants
on Secrets exactly the verbs the k8s plugin calls. EC2: a runner config is an SSM
SecureString whether it is created or overwritten.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_cli.demo.processes import free_port, start, stop, wait_until_ready
from runs_fleet_core.domain.ids import JobId, RunnerId, runner_name_for
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_ec2.ssm import SsmConfigStore
from runs_fleet_k8s import manifests
from runs_fleet_k8s.manifests import MountedConfig, ServerConfig
from runs_fleet_local.compute import LocalProvider
from runs_fleet_local.embedded_valkey import embedded_valkey
from runs_fleet_local.runners import LocalRunners
from tests.contract.test_local_compute import kill_recorded, make_runners, write_runner_dir
from tests.deploy.helm_tool import CHART, render
from tests.deploy.test_helm_chart import _plugin_api_calls
from tests.integration.test_local_provider import SPEC, wait_until
from tests.unit.test_k8s_manifests import pod_settings, spec_for

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
GROUP_READ_ONLY = 0o440


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _tree(root: Path) -> Iterator[Path]:
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            yield Path(directory) / name


# -- local mode ---------------------------------------------------------------------------


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A state dir that does not exist yet (runs-fleet makes it), inside a directory
    that lets every user in, as a home directory or /var/lib does."""
    tmp_path.chmod(0o755)
    return tmp_path / "runs-fleet" / "state"


@pytest.fixture
def runners(state_dir: Path, tmp_path: Path) -> Iterator[LocalRunners]:
    made = make_runners(state_dir, write_runner_dir(tmp_path / "actions-runner"))
    yield made
    kill_recorded(state_dir)
    made.reap(wait_s=5.0)


async def test_the_local_state_tree_is_private_to_its_owner(
    state_dir: Path, runners: LocalRunners
) -> None:
    name = runner_name_for(JobId(7), 1)
    config = RunnerConfig(runner_name=name, job_id=JobId(7), repository="o/r", jit_config="jit-7")
    async with embedded_valkey(state_dir):
        await runners.configs.put(RunnerId("runs-fleet-8-1"), config)  # stays stored
        await runners.configs.put(RunnerId(name), config)
        await LocalProvider(runners).create_runner(SPEC.for_job(JobId(7), "o/r"), runner_name=name)
        await wait_until(lambda: (state_dir / "runners" / name / "agent.log").exists())
        tree = {
            path.relative_to(state_dir).as_posix(): (path.is_dir(), _mode(path))
            for path in _tree(state_dir)
        }

    assert _mode(state_dir) == PRIVATE_DIR
    assert _mode(state_dir.parent) == PRIVATE_DIR  # made on the way: private too
    secret_files = [
        "valkey.password",
        "valkey/valkey.conf",
        "runner-configs/runs-fleet-8-1.json",
        f"runners/{name}/agent.log",
    ]
    assert set(secret_files) <= set(tree)
    assert any(key.startswith("valkey/appendonlydir/") for key in tree), "no Valkey data"
    for key, (is_dir, mode) in tree.items():
        if is_dir:
            assert mode == PRIVATE_DIR, key
        elif key in secret_files or key.startswith("valkey/"):
            assert mode == PRIVATE_FILE, key


def test_the_simulator_writes_the_app_key_and_webhook_secret_it_makes_privately(
    tmp_path: Path,
) -> None:
    """What ``runs-fleet demo`` has the simulated GitHub write for runs-fleet to read."""
    tmp_path.chmod(0o755)
    key, secret = tmp_path / "demo" / "app.pem", tmp_path / "demo" / "webhook.secret"
    port = free_port()
    argv = ["-m", "runs_fleet_github_simulator", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--app-key-out", str(key), "--webhook-secret-file", str(secret)]
    log = tmp_path / "simulator.log"
    process = start(argv, env=os.environ, cwd=tmp_path, log=log)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/_simulator/jobs", process, log, 30)
    finally:
        stop(process)
    assert key.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert _mode(key) == _mode(secret) == PRIVATE_FILE
    assert _mode(key.parent) == PRIVATE_DIR


# -- Kubernetes -----------------------------------------------------------------------------


def _secret_volumes(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The volumes of ``pod`` that carry a Secret or a service account token."""
    secret_sources = {"secret", "serviceAccountToken"}
    return [
        volume
        for volume in pod.get("volumes", [])
        if "secret" in volume
        or any(
            secret_sources & source.keys()
            for source in volume.get("projected", {}).get("sources", [])
        )
    ]


def _assert_group_read_only(pod: dict[str, Any], where: str) -> None:
    """Each secret volume of ``pod`` is readable by the pod's group only, and the pod
    has a group (``fsGroup``) that its own user is in, so the owner can read it."""
    volumes = _secret_volumes(pod)
    for volume in volumes:
        mode = (volume.get("secret") or volume["projected"]).get("defaultMode")
        assert mode == GROUP_READ_ONLY, (where, volume["name"], oct(mode or 0o644))
    if volumes:
        security = pod["securityContext"]
        assert security["fsGroup"] is not None, where


@pytest.mark.parametrize(
    "config",
    [MountedConfig("runs-fleet-9-1"), ServerConfig("http://runs-fleet.runs-fleet.svc:8080")],
    ids=["cold-runner", "pool-runner"],
)
def test_runner_pods_mount_their_secrets_readable_by_their_group_only(config: Any) -> None:
    pod = manifests.runner_pod_spec(spec_for("runs-fleet=9/cpu=2"), pod_settings(), config=config)
    assert _secret_volumes(pod), "the runner pod mounts no secret"
    _assert_group_read_only(pod, type(config).__name__)
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]


@pytest.mark.parametrize("example", ["k8s-karpenter", "k8s-existing-nodes", "hybrid-full"])
def test_the_charts_pods_mount_secrets_readable_by_their_group_only(example: str) -> None:
    docs = render([CHART / "examples" / f"{example}.yaml"], namespace="runs-fleet")
    assert isinstance(docs, list)
    pods = [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for doc in docs
        if doc["kind"] in {"Deployment", "StatefulSet"}
    ]
    assert any(_secret_volumes(pod) for _, pod in pods), "no pod mounts a Secret"
    for name, pod in pods:
        _assert_group_read_only(pod, name)


def test_the_charts_role_grants_on_secrets_exactly_what_the_plugin_calls() -> None:
    docs = render([CHART / "examples" / "k8s-karpenter.yaml"], namespace="runs-fleet")
    assert isinstance(docs, list)
    (role,) = [doc for doc in docs if doc["kind"] == "Role"]
    granted = {
        verb for rule in role["rules"] if "secrets" in rule["resources"] for verb in rule["verbs"]
    }
    needed = {verb for resource, verb in _plugin_api_calls() if resource == "secrets"}
    assert needed == {"create", "get", "list", "patch", "delete"}  # the calls are found
    assert granted == needed
    cluster_roles = [doc for doc in docs if doc["kind"] == "ClusterRole"]
    assert not any("secrets" in rule["resources"] for doc in cluster_roles for rule in doc["rules"])


# -- EC2 ------------------------------------------------------------------------------------


async def test_a_runner_config_in_ssm_is_a_secure_string_created_or_overwritten(
    aws_caller: AwsCaller,
) -> None:
    store = SsmConfigStore(aws_caller)
    config = RunnerConfig(
        runner_name="runs-fleet-7-1", job_id=JobId(7), repository="o/r", jit_config="jit-7"
    )
    await store.put(RunnerId("i-0123456789abcdef0"), config)
    await store.put(RunnerId("i-0123456789abcdef0"), config)  # overwritten: a warm runner
    await store.put(RunnerId("runs-fleet-8-1"), config)
    ssm = aws_caller.client("ssm")
    described = ssm.describe_parameters()["Parameters"]
    assert len(described) == 2
    assert {parameter["Type"] for parameter in described} == {"SecureString"}
