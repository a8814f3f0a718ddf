"""What a warm-pool pod is, read from the pod alone, and the patches that change it.

A pool pod's whole state lives on the pod, so that any replica of the orchestrator
(and ``kubectl get pods -L runs-fleet.io/pool-state``) reads the same truth:

* ``runs-fleet.io/component=pool-runner`` and ``runs-fleet.io/pool=<pool>``: a runner of
  that pool, whether it still belongs to the pool's Deployment or has left it.
* ``runs-fleet.io/pool-member``: ``"true"`` while the Deployment's selector holds it;
  anything else once it has taken a job (or is on its way out), so that neither the
  Deployment's scale-down nor its refill ever touches it again.
* ``runs-fleet.io/pool-state``: ``running`` or ``stopped``, the state asked for. The
  state reached is read from the runner container: a stopped runner runs the pause image
  in place of the runner image (the kubelet restarts a container whose image changed),
  so it keeps its node, its image cache and its place in the Deployment while using
  nothing.
* ``runs-fleet.io/idle-since`` (annotation): when it was last started or stopped, which
  scale-down compares with the pool's idle timeout.

Pods are plain dicts in the API's camelCase form; :mod:`runs_fleet_k8s.pool_pod_api`
reads and writes them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from runs_fleet_core.domain.runner import RunnerPhase
from runs_fleet_k8s import manifests, names

_log = logging.getLogger(__name__)

POOL_RUNNER = manifests.POOL_COMPONENT
"""``runs-fleet.io/component`` of a pool pod."""
POOL_STATE = names.PREFIX + "pool-state"
IDLE_SINCE = names.PREFIX + "idle-since"
RUNNING = "running"
STOPPED = "stopped"
RUNNER_CONTAINER = "runner"

Pod = Mapping[str, Any]
POD_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_POD_NAME = 253


def labels_of(pod: Pod) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


def name_of(pod: Pod) -> str:
    return str((pod.get("metadata") or {}).get("name") or "")


def pool_selector(pool: str) -> str:
    """The pods of ``pool``: members and those that left with a job."""
    return names.selector({names.POOL: names.label_value(pool), names.COMPONENT: POOL_RUNNER})


def member_selector(pool: str) -> str:
    """The pods ``pool``'s Deployment counts."""
    return names.selector(manifests.pool_selector(pool))


def oldest_first(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        pods, key=lambda p: (str(p["metadata"].get("creationTimestamp") or ""), name_of(p))
    )


def is_pool_pod(pod: Pod) -> bool:
    """Whether ``pod`` is a warm-pool runner (member or not): never a cold runner's pod,
    a placeholder, or a pod runs-fleet does not own."""
    labels = labels_of(pod)
    return labels.get(names.COMPONENT) == POOL_RUNNER and bool(labels.get(names.POOL))


def is_member(pod: Pod) -> bool:
    """Whether the pool's Deployment still counts ``pod`` (it has taken no job)."""
    return labels_of(pod).get(names.POOL_MEMBER) == "true"


def is_gone(pod: Pod) -> bool:
    """Terminated: being deleted, or its containers ended for good."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return True
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def bound_job(pod: Pod) -> str | None:
    """The job id label of a pod that has taken a job, else ``None``."""
    return labels_of(pod).get(names.JOB_ID) or None


def runner_container(pod: Pod) -> Mapping[str, Any]:
    """The runner container of the pod spec (the first container if none is named so)."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return next((c for c in containers if c.get("name") == RUNNER_CONTAINER), containers[0])


def _runner_status(pod: Pod) -> Mapping[str, Any] | None:
    name = runner_container(pod).get("name")
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == name), None)


def canonical_image(image: str) -> str:
    """``image`` spelled as container runtimes report it: registry and ``library/``
    made explicit for Docker Hub names, ``:latest`` added when no tag nor digest is
    given (so ``busybox`` and ``docker.io/library/busybox:latest`` compare equal)."""
    name, at, digest = image.partition("@")
    first, slash, _ = name.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        name = "docker.io/" + name
    if name.startswith("docker.io/") and name.count("/") == 1:
        name = "docker.io/library/" + name.removeprefix("docker.io/")
    if not at and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name + at + digest


def same_image(reported: str | None, wanted: str) -> bool:
    """Whether the runtime's ``reported`` image is ``wanted`` (a digest-pinned reference
    may be reported by its tag or by its digest alone)."""
    if not reported:
        return False
    if canonical_image(reported) == canonical_image(wanted):
        return True
    _, at, digest = wanted.partition("@")
    return bool(at) and reported.endswith("@" + digest)


def phase_of(pod: Pod, *, pause_image: str) -> RunnerPhase:
    """The pool runner's phase, from the state asked for and what the kubelet reports.

    ``running`` once the runner image runs and is ready; ``stopped`` once the pause
    image runs; ``stopping`` between a stop and the kubelet's restart with the pause
    image; ``pending`` for everything before running (unscheduled, pulling, starting,
    restarting after a start); ``terminated`` for a pod being deleted or ended.
    """
    if is_gone(pod):
        return RunnerPhase.TERMINATED
    image = str(runner_container(pod).get("image") or "")
    status = _runner_status(pod)
    pod_running = (pod.get("status") or {}).get("phase") == "Running"
    restarted = (
        pod_running
        and status is not None
        and "running" in (status.get("state") or {})
        and same_image(status.get("image"), image)
    )
    paused = same_image(image, pause_image)
    if labels_of(pod).get(POOL_STATE) == STOPPED:
        return RunnerPhase.STOPPED if paused and restarted else RunnerPhase.STOPPING
    if not paused and restarted and status is not None and status.get("ready"):
        return RunnerPhase.RUNNING
    return RunnerPhase.PENDING


def idle_since(pod: Pod) -> datetime | None:
    """When the runner was last started or stopped (the annotation set then), else when
    the pod was created."""
    metadata = pod.get("metadata") or {}
    stamp = (metadata.get("annotations") or {}).get(IDLE_SINCE) or metadata.get("creationTimestamp")
    try:
        when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None
    except ValueError:
        return None
    return when.replace(tzinfo=when.tzinfo or UTC) if when else None


def in_state(pod: Pod, state: str, image: str) -> bool:
    """Whether ``pod`` already asks for ``state`` with ``image`` (nothing to patch)."""
    wanted = labels_of(pod).get(POOL_STATE, RUNNING) == state
    return wanted and str(runner_container(pod).get("image") or "") == image


def state_patch(pod: Pod, *, state: str, image: str, now: datetime) -> dict[str, Any]:
    """The strategic merge patch that asks ``pod`` for ``state``: the runner container's
    image (containers merge by name, so the others are left as they are), the state
    label, and ``idle-since``. Conditional on the pod's ``resourceVersion``, so a pod
    that changed meanwhile (taken by a job) is re-read rather than overwritten."""
    metadata = pod.get("metadata") or {}
    return {
        "metadata": {
            "resourceVersion": metadata.get("resourceVersion"),
            "labels": {POOL_STATE: state},
            "annotations": {IDLE_SINCE: now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        },
        "spec": {"containers": [{"name": runner_container(pod).get("name"), "image": image}]},
    }


def release_patch(pod: Pod, *, job_id: str | None = None) -> dict[str, Any]:
    """The patch that takes ``pod`` out of its Deployment (``pool-member=false``), and
    records the job it takes when ``job_id`` is given. Conditional on its
    ``resourceVersion``."""
    labels = {names.POOL_MEMBER: "false"}
    if job_id is not None:
        labels[names.JOB_ID] = names.label_value(job_id)
    version = (pod.get("metadata") or {}).get("resourceVersion")
    return {"metadata": {"resourceVersion": version, "labels": labels}}
