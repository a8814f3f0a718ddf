"""The pod a runner runs in, from its :class:`RunnerSpec`, as the API server takes it.

One function, :func:`runner_pod_spec`, turns what a job asked for into a pod spec, for a
cold-started Job and for a warm pool's Deployment alike, so that both kinds of runner are
scheduled, limited and locked down the same way:

* ``cpu=``, ``ram=`` and ``disk=`` become requests (what the scheduler reserves) and
  limits (what the kubelet enforces); ``arch=`` and the OS become node selectors;
  ``family=`` and ``gen=`` become required node affinity on node labels the operator
  names (Karpenter's by default).
* ``spot=true`` prefers spot nodes but still allows on-demand ones (a runner that waits
  for spot capacity is worse than one that costs more); ``spot=false`` excludes spot
  nodes. What "a spot node" is depends on the cluster: :data:`CONVENTIONS`.
* The pod runs as a non-root user, with no Linux capabilities, no privilege escalation,
  the runtime's default seccomp profile and no Kubernetes API token: the job's code is
  untrusted. The one exception is the optional Docker-in-Docker sidecar, which must be
  privileged to run a Docker daemon; it listens on the pod's loopback only.
* The agent finds its config either in files mounted from the runner's ConfigMap and
  Secret (:class:`MountedConfig`, cold Jobs) or by asking the orchestrator with a
  short-lived, audience-bound service account token (:class:`ServerConfig`, pool pods,
  which exist before the job they will serve is known).
"""

from __future__ import annotations

from typing import Any

import attrs

from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import ProviderError
from runs_fleet_k8s import names
from runs_fleet_k8s.pod_settings import FAMILY_LABEL, GENERATION_LABEL, RunnerPodSettings

CONFIG_DIR = "/etc/runs-fleet"
TOKEN_DIR = "/var/run/secrets/runs-fleet"  # noqa: S105 (a path, not a secret)
TOKEN_AUDIENCE = "runs-fleet"  # noqa: S105 (an audience name)
TOKEN_EXPIRATION_S = 3600
AGENT_COMMAND = ("runs-fleet", "k8s", "agent")
RUNNER_CONTAINER = "runner"
DIND_CONTAINER = "dind"
DOCKER_HOST = "tcp://127.0.0.1:2375"
"""Where the runner reaches the Docker sidecar: an address, not ``localhost``, which
some clients resolve to ``::1`` first, where the daemon does not listen."""
PREEMPTIBLE_TAINT = names.PREFIX + "preemptible"
TERMINATION_GRACE_S = 60
CONFIG_FILE_MODE = 0o440
"""Mode of the files of every secret volume (config, service account token): readable
by the runner's group only (the pod's ``fsGroup``), never by others; without it a
projected token is 0644 whenever the pod's containers run as different users."""
DEFAULT_RAM_PER_CPU_GIB = 2


@attrs.frozen
class MountedConfig:
    """The runner's ConfigMap and Secret (named after ``runner_id``), mounted read-only
    at :data:`CONFIG_DIR`."""

    runner_id: str


@attrs.frozen
class ServerConfig:
    """No config files: the agent fetches its config from ``url``, proving who it is
    with a projected service account token."""

    url: str


ConfigSource = MountedConfig | ServerConfig


@attrs.frozen(kw_only=True)
class SpotConvention:
    """How one kind of cluster marks spot nodes.

    ``label`` and ``spot_value`` name the node label of spot capacity ("" when nodes are
    told apart by a taint only); ``tolerations`` are what a pod needs to land on spot
    nodes at all.
    """

    label: str = ""
    spot_value: str = ""
    tolerations: tuple[dict[str, str], ...] = ()


CONVENTIONS: dict[str, SpotConvention] = {
    "karpenter": SpotConvention(label="karpenter.sh/capacity-type", spot_value="spot"),
    "eks": SpotConvention(label="eks.amazonaws.com/capacityType", spot_value="SPOT"),
    "gke": SpotConvention(
        label="cloud.google.com/gke-spot",
        spot_value="true",
        tolerations=(
            {
                "key": "cloud.google.com/gke-spot",
                "operator": "Equal",
                "value": "true",
                "effect": "NoSchedule",
            },
        ),
    ),
    "aks": SpotConvention(
        label="kubernetes.azure.com/scalesetpriority",
        spot_value="spot",
        tolerations=(
            {
                "key": "kubernetes.azure.com/scalesetpriority",
                "operator": "Equal",
                "value": "spot",
                "effect": "NoSchedule",
            },
        ),
    ),
    "taint": SpotConvention(tolerations=({"key": PREEMPTIBLE_TAINT, "operator": "Exists"},)),
    "none": SpotConvention(),
}
"""Spot conventions by ``RUNS_FLEET_KUBE_SPOT_SCHEDULING`` value. Exclusion uses
``NotIn`` so that nodes without the label (a node group outside the convention) stay
allowed for on-demand runners."""


def runner_pod_spec(
    spec: RunnerSpec, settings: RunnerPodSettings, *, config: ConfigSource
) -> dict[str, Any]:
    """The pod spec of a runner for ``spec``; ``ProviderError(retryable=False)`` when
    the label asks for something the deployment cannot express (``family=`` or ``gen=``
    without a node label to select on)."""
    volumes, mounts, env = _config_wiring(config)
    runner: dict[str, Any] = {
        "name": RUNNER_CONTAINER,
        "image": settings.image,
        "command": list(AGENT_COMMAND),
        "env": env,
        "resources": runner_resources(spec),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            # the runner installs tools and writes caches all over its home directory
            "readOnlyRootFilesystem": False,
        },
        "volumeMounts": mounts,
    }
    pod: dict[str, Any] = {
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": False,
        # Service links would put RUNS_FLEET_* variables of the orchestrator's Service
        # into the runner's environment, where the agent would read them as settings.
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.runner_uid,
            "runAsGroup": settings.runner_uid,
            "fsGroup": settings.runner_uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [runner],
        **scheduling(spec, settings),
    }
    if settings.dind:
        pod["initContainers"] = [_dind_sidecar(settings)]
        runner["env"].append({"name": "DOCKER_HOST", "value": DOCKER_HOST})
        volumes.append({"name": "docker-data", "emptyDir": {"sizeLimit": f"{spec.disk_gib}Gi"}})
    if volumes:
        pod["volumes"] = volumes
    if not mounts:
        del runner["volumeMounts"]
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    return pod


def runner_resources(spec: RunnerSpec) -> dict[str, dict[str, str]]:
    """Requests and limits from ``cpu=``, ``ram=`` and ``disk=``.

    Without ``ram=``, 2 GiB per requested CPU are requested (capped by an upper RAM
    bound if the label gives one). Memory is always limited (to the upper bound, else
    to the request): a runner that outgrows its request would otherwise be the first
    thing the node kills under pressure, and take other pods' memory before that.
    """
    memory = spec.ram_min or DEFAULT_RAM_PER_CPU_GIB * spec.cpu_min
    if spec.ram_max is not None:
        memory = min(memory, spec.ram_max)
    disk = f"{spec.disk_gib}Gi"
    requests = {"cpu": str(spec.cpu_min), "memory": f"{memory}Gi", "ephemeral-storage": disk}
    limits = {"memory": f"{spec.ram_max or memory}Gi", "ephemeral-storage": disk}
    if spec.cpu_max is not None:
        limits["cpu"] = str(spec.cpu_max)
    return {"requests": requests, "limits": limits}


def scheduling(spec: RunnerSpec, settings: RunnerPodSettings) -> dict[str, Any]:
    """``nodeSelector``, ``affinity`` and ``tolerations`` of a runner for ``spec``
    (the keys that apply; shared by runner and placeholder pods)."""
    selector = dict(settings.node_selector)
    if spec.arch is not None:
        selector["kubernetes.io/arch"] = str(spec.arch)
    selector["kubernetes.io/os"] = spec.os
    required = [*_capacity_expressions(spec, settings)]
    convention = CONVENTIONS[settings.spot_scheduling]
    tolerations = [dict(t) for t in settings.tolerations]
    node_affinity: dict[str, Any] = {}
    if spec.spot:
        tolerations += [dict(t) for t in convention.tolerations if t not in tolerations]
        if convention.label:
            node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
                {
                    "weight": 100,
                    "preference": {"matchExpressions": [_spot_expression(convention, "In")]},
                }
            ]
    elif convention.label:
        required.append(_spot_expression(convention, "NotIn"))
    if required:
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": required}]
        }
    result: dict[str, Any] = {"nodeSelector": selector}
    if node_affinity:
        result["affinity"] = {"nodeAffinity": node_affinity}
    if tolerations:
        result["tolerations"] = tolerations
    return result


def _spot_expression(convention: SpotConvention, operator: str) -> dict[str, Any]:
    return {"key": convention.label, "operator": operator, "values": [convention.spot_value]}


def _capacity_expressions(spec: RunnerSpec, settings: RunnerPodSettings) -> list[dict[str, Any]]:
    """Required node expressions of ``family=`` and ``gen=``."""
    expressions: list[dict[str, Any]] = []
    if spec.families:
        if not settings.family_label:
            families = "+".join(spec.families)
            raise ProviderError(
                f"the label '{spec.label}' asks for instance families {families}, but "
                f"{FAMILY_LABEL} is empty, so no node label tells instance families apart: "
                "set it to the node label holding the instance family, or drop family=",
                retryable=False,
            )
        expressions.append(
            {"key": settings.family_label, "operator": "In", "values": list(spec.families)}
        )
    if spec.gen is not None:
        if not settings.generation_label:
            raise ProviderError(
                f"the label '{spec.label}' asks for instance generation {spec.gen} or newer, "
                f"but {GENERATION_LABEL} is empty, so no node label tells generations apart: "
                "set it to the node label holding the generation, or drop gen=",
                retryable=False,
            )
        expressions.append(
            {"key": settings.generation_label, "operator": "Gt", "values": [str(spec.gen - 1)]}
        )
    return expressions


def _config_wiring(
    config: ConfigSource,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes, runner mounts and runner environment that tell the agent where its
    config comes from."""
    env: list[dict[str, Any]] = [
        {"name": "RUNS_FLEET_RUNNER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "RUNS_FLEET_CONFIG_DIR", "value": CONFIG_DIR},
    ]
    if isinstance(config, MountedConfig):
        volume = {
            "name": "runner-config",
            "projected": {
                "defaultMode": CONFIG_FILE_MODE,
                "sources": [
                    {"configMap": {"name": names.config_map_name(config.runner_id)}},
                    {"secret": {"name": names.config_secret_name(config.runner_id)}},
                ],
            },
        }
        mount = {"name": "runner-config", "mountPath": CONFIG_DIR, "readOnly": True}
        return [volume], [mount], env
    volume = {
        "name": "runs-fleet-token",
        "projected": {
            "defaultMode": CONFIG_FILE_MODE,
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": TOKEN_AUDIENCE,
                        "expirationSeconds": TOKEN_EXPIRATION_S,
                        "path": "token",
                    }
                }
            ],
        },
    }
    mount = {"name": "runs-fleet-token", "mountPath": TOKEN_DIR, "readOnly": True}
    env.append({"name": "RUNS_FLEET_CONFIG_URL", "value": config.url})
    return [volume], [mount], env


def _dind_sidecar(settings: RunnerPodSettings) -> dict[str, Any]:
    """The Docker daemon beside the runner: a native sidecar (an init container that
    keeps running), so it starts before the runner and stops once the runner has exited,
    letting the Job complete.

    It is the pod's only privileged container (a Docker daemon needs it) and runs as
    root; the namespace's Pod Security level must allow that. It listens on the pod's
    loopback without TLS, reachable by the runner alone, never from other pods.
    Containers the job starts run inside this container, so it carries no limits of
    its own: the runner's requests reserve the node capacity for both.
    """
    return {
        "name": DIND_CONTAINER,
        "image": settings.dind_image,
        "restartPolicy": "Always",
        "args": [
            "dockerd",
            f"--host={DOCKER_HOST}",
            "--host=unix:///var/run/docker.sock",
        ],
        "env": [{"name": "DOCKER_TLS_CERTDIR", "value": ""}],
        "securityContext": {
            "privileged": True,
            "runAsNonRoot": False,
            "runAsUser": 0,
            "runAsGroup": 0,
        },
        "startupProbe": {
            "exec": {"command": ["docker", "info"]},
            "periodSeconds": 1,
            "failureThreshold": 120,
        },
        "volumeMounts": [{"name": "docker-data", "mountPath": "/var/lib/docker"}],
    }
