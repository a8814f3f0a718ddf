"""The Kubernetes objects runs-fleet creates, as pure functions of a spec and settings.

The provider and the pool provider send these dicts to the API server as they are, and
``runs-fleet k8s render`` prints them, so what an operator previews is exactly what a
job would create. Dicts use the API's own camelCase field names: every manifest here
passes ``kubernetes-validate --strict`` (the unit tests check each one).

Objects and their labels:

* a runner **Job** per cold-started runner (``runs-fleet.io/component=runner``), whose
  pod mounts the runner's config and whose TTL removes it once finished;
* a **NetworkPolicy** per private runner: egress to the internet on 80/443 and to the
  cluster DNS only, nothing inside private address ranges (other pods, the node, cloud
  metadata endpoints);
* per warm pool, a **Deployment** of idle runner pods (``component=pool-runner``) and
  one of **placeholder** pods (``component=placeholder``) of a negative-priority
  **PriorityClass**, which keep node capacity warm and give way to any real pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_k8s import names
from runs_fleet_k8s.pod_settings import SETTINGS as SETTINGS
from runs_fleet_k8s.pod_settings import RunnerPodSettings as RunnerPodSettings
from runs_fleet_k8s.pod_spec import ConfigSource as ConfigSource
from runs_fleet_k8s.pod_spec import MountedConfig as MountedConfig
from runs_fleet_k8s.pod_spec import ServerConfig as ServerConfig
from runs_fleet_k8s.pod_spec import runner_pod_spec as runner_pod_spec
from runs_fleet_k8s.pod_spec import runner_resources, scheduling

RUNNER_NAME_ANNOTATION = names.PREFIX + "runner-name"
RUNNER_COMPONENT = "runner"
POOL_COMPONENT = "pool-runner"
PLACEHOLDER_COMPONENT = "placeholder"
DEADLINE_MARGIN_S = 600
"""How long past the agent's own maximum runtime Kubernetes stops a runner Job: the
agent stops the job first and reports why; the deadline catches an agent that hangs."""
PLACEHOLDER_PRIORITY = -10
PRIVATE_RANGES = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
)
"""Address ranges a private runner may not reach: RFC 1918 networks (pods, nodes,
services, VPC), link-local (cloud metadata endpoints) and carrier-grade NAT."""


def runner_labels(spec: RunnerSpec) -> dict[str, str]:
    """The labels a runner's objects carry for ``spec``: who manages it, its run, job
    (when bound to one), pool and architecture (when set) and market."""
    labels = {
        names.MANAGED_BY: names.MANAGER,
        names.RUN_ID: names.label_value(str(spec.run_id)),
        names.SPOT: "true" if spec.spot else "false",
    }
    if spec.job_id is not None:
        labels[names.JOB_ID] = str(spec.job_id)
    if spec.pool:
        labels[names.POOL] = names.label_value(spec.pool)
    if spec.arch is not None:
        labels[names.ARCH] = str(spec.arch)
    return labels


def runner_job(spec: RunnerSpec, runner_name: str, settings: RunnerPodSettings) -> dict[str, Any]:
    """The batch/v1 Job of a cold-started runner registered as ``runner_name``.

    One try (``backoffLimit: 0``): a runner whose pod failed is not restarted, because
    its JIT registration is spent; dispatch decides what happens to the job. The pod
    mounts the config stored under ``runner_name``.
    """
    if spec.job_id is None:
        raise ValueError(f"spec for runner {runner_name!r} has no job_id")
    labels = {**runner_labels(spec), names.COMPONENT: RUNNER_COMPONENT}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": names.runner_object_name(runner_name),
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": {RUNNER_NAME_ANNOTATION: runner_name},
        },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": settings.job_ttl_s,
            "activeDeadlineSeconds": int(settings.max_runtime_s) + DEADLINE_MARGIN_S,
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {RUNNER_NAME_ANNOTATION: runner_name},
                },
                "spec": runner_pod_spec(
                    spec, settings, config=MountedConfig(runner_id=runner_name)
                ),
            },
        },
    }


def network_policy(name: str, pod_labels: Mapping[str, str]) -> dict[str, Any]:
    """The networking.k8s.io/v1 NetworkPolicy of a private runner: the pods matching
    ``pod_labels`` may reach public addresses on HTTP(S) and the cluster DNS, nothing
    else (it restricts egress only; runner pods serve nothing)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": {names.MANAGED_BY: names.MANAGER}},
        "spec": {
            "podSelector": {"matchLabels": dict(pod_labels)},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_RANGES)}}],
                    "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}],
                },
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            },
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
            ],
        },
    }


def pool_selector(pool: str) -> dict[str, str]:
    """The labels that make a pod an idle member of ``pool``'s Deployment."""
    return {
        names.POOL: names.label_value(pool),
        names.POOL_MEMBER: "true",
        names.COMPONENT: POOL_COMPONENT,
    }


def pool_deployment(
    pool: PoolConfig,
    spec: RunnerSpec,
    settings: RunnerPodSettings,
    *,
    replicas: int,
    config_url: str,
) -> dict[str, Any]:
    """The apps/v1 Deployment of ``pool``'s idle runner pods, built from the pool's spec.

    Its selector includes ``runs-fleet.io/pool-member=true``: a pod that takes a job has
    that label switched off, leaves the Deployment (which starts a replacement) and runs
    its job to the end untouched by scaling. ``Recreate``: a changed template never
    keeps two generations of idle pods side by side.
    """
    selector = pool_selector(pool.name)
    labels = {**runner_labels(spec), **selector}
    pod = runner_pod_spec(spec, settings, config=ServerConfig(url=config_url))
    pod["restartPolicy"] = "Always"  # the only value a Deployment accepts
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": names.pool_deployment_name(pool.name),
            "namespace": settings.namespace,
            "labels": {names.MANAGED_BY: names.MANAGER, names.POOL: selector[names.POOL]},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def placeholder_deployment_name(pool: str) -> str:
    """The Deployment of ``pool``'s placeholder pods."""
    return names.dns_label(f"runs-fleet-placeholder-{pool}", max_length=47)


def placeholder_deployment(
    pool: PoolConfig, spec: RunnerSpec, settings: RunnerPodSettings, *, replicas: int
) -> dict[str, Any]:
    """The apps/v1 Deployment of ``pool``'s placeholder pods: a pause container that
    requests what one runner of the pool requests and is scheduled like one, at a
    priority below every other pod. They keep nodes for the pool's runners up (a node
    autoscaler sees pending pods, not warm intentions); when a runner needs the room,
    the scheduler evicts a placeholder, and the placeholder goes pending in turn, which
    brings up a node for the next one."""
    selector = {names.POOL: names.label_value(pool.name), names.COMPONENT: PLACEHOLDER_COMPONENT}
    labels = {names.MANAGED_BY: names.MANAGER, **selector}
    resources = runner_resources(spec)
    pod: dict[str, Any] = {
        "priorityClassName": settings.placeholder_priority_class,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 1,  # pause exits on SIGTERM at once
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.runner_uid,
            "runAsGroup": settings.runner_uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "placeholder",
                "image": settings.placeholder_image,
                "resources": {"requests": resources["requests"]},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": True,
                },
            }
        ],
        **scheduling(spec, settings),
    }
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": placeholder_deployment_name(pool.name),
            "namespace": settings.namespace,
            "labels": labels,
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(selector)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    }


def placeholder_priority_class(settings: RunnerPodSettings) -> dict[str, Any]:
    """The scheduling.k8s.io/v1 PriorityClass of placeholder pods: below the default
    (0), never preempting anything itself, and never the cluster's default class."""
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {
            "name": settings.placeholder_priority_class,
            "labels": {names.MANAGED_BY: names.MANAGER},
        },
        "value": PLACEHOLDER_PRIORITY,
        "preemptionPolicy": "Never",
        "globalDefault": False,
        "description": "runs-fleet warm pool placeholders: hold node capacity for runners "
        "and give way to any other pod",
    }


def owner_reference(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to ``obj`` (a manifest as the API server returned it, with
    ``metadata.uid``): deleting ``obj`` deletes the dependent, and the dependent outlives
    no owner. Not a controller reference: the Job controller owns its pods, runs-fleet
    only ties the runner's other objects to their Job."""
    metadata = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": metadata["name"],
        "uid": metadata["uid"],
        "blockOwnerDeletion": True,
        "controller": False,
    }
