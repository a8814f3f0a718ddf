"""What a runner Job and its pod say about the runner, in the core's words.

Pure functions of the objects as the API server returns them (plain dicts, camelCase):
the provider reads a Job and its pods and asks here for the phase and for the reason a
runner is stuck or failed, so that ``runs-fleet jobs why`` and the logs can say "no node
fits: 0/3 nodes are available: 3 Insufficient cpu" rather than "pending".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.runner import RunnerPhase, RunnerState
from runs_fleet_k8s import names
from runs_fleet_k8s.manifests import RUNNER_NAME_ANNOTATION

NAME = "k8s"
TERMINATED = names.PREFIX + "terminated"
"""Label (``"true"``) of a runner Job that runs-fleet terminated; Kubernetes ends it and
deletes it after its TTL, and until then it is described as terminated, never listed."""
TERMINATED_AT = names.PREFIX + "terminated-at"
"""Annotation: when runs-fleet terminated the runner (ISO 8601, UTC)."""

_POD_PHASES = {
    "Pending": RunnerPhase.PENDING,
    "Running": RunnerPhase.RUNNING,
    "Succeeded": RunnerPhase.TERMINATED,
    "Failed": RunnerPhase.TERMINATED,
}
_WAITING_TROUBLE = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)


def finished(job: Mapping[str, Any]) -> bool:
    """Whether the Job is over: complete, failed, being deleted, or terminated by us."""
    metadata = job.get("metadata") or {}
    if metadata.get("deletionTimestamp") or (metadata.get("labels") or {}).get(TERMINATED):
        return True
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or ()
    )


def newest(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most recently created of ``pods`` (a Job may have replaced an evicted one)."""
    ordered = sorted(pods, key=lambda p: str(p["metadata"].get("creationTimestamp") or ""))
    return ordered[-1] if ordered else None


def runner_state(job: Mapping[str, Any], pod: Mapping[str, Any] | None) -> RunnerState:
    """The runner of ``job`` (whose newest pod is ``pod``, if it has one)."""
    metadata = job["metadata"]
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    details = {"namespace": str(metadata.get("namespace", "")), "job_uid": str(metadata["uid"])}
    phase = RunnerPhase.PENDING
    if pod is not None:
        status = pod.get("status") or {}
        pod_phase = str(status.get("phase") or "Pending")
        phase = _POD_PHASES.get(pod_phase, RunnerPhase.UNKNOWN)
        details["pod_name"] = str(pod["metadata"]["name"])
        details["pod_phase"] = pod_phase
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            details["node_name"] = str(node)
    if finished(job):
        phase = RunnerPhase.TERMINATED
    if annotations.get(TERMINATED_AT):
        details["terminated_at"] = str(annotations[TERMINATED_AT])
    reason = failure_reason(job, pod)
    if reason:
        details["reason"] = reason
    job_id = str(labels.get(names.JOB_ID, ""))
    return RunnerState(
        runner_id=RunnerId(str(metadata["name"])),
        phase=phase,
        provider=NAME,
        launched_at=_timestamp(metadata.get("creationTimestamp")),
        job_id=JobId(int(job_id)) if job_id.isdigit() else None,
        pool=labels.get(names.POOL) or None,
        runner_name=annotations.get(RUNNER_NAME_ANNOTATION) or None,
        details=details,
    )


def failure_reason(job: Mapping[str, Any], pod: Mapping[str, Any] | None) -> str:
    """Why the runner is not running as it should, in Kubernetes' own words ("" when
    nothing is wrong): the Job's failure, a container that cannot start or that died,
    or the scheduler's reason for leaving the pod without a node."""
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return _words(condition)
    if pod is None:
        return ""
    status = pod.get("status") or {}
    containers = [
        *(status.get("initContainerStatuses") or ()),
        *(status.get("containerStatuses") or ()),
    ]
    for container in containers:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in _WAITING_TROUBLE:
            return f"container {container.get('name')}: {_words(waiting)}"
        ended = state.get("terminated") or {}
        if ended and ended.get("exitCode") not in (None, 0):
            return (
                f"container {container.get('name')} exited with code {ended.get('exitCode')}: "
                + _words(ended)
            )
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return _words(condition)
    if status.get("phase") == "Failed":
        return _words(status) or "the pod failed"
    return ""


def _words(source: Mapping[str, Any]) -> str:
    """``reason: message`` of a condition or container state (either may be missing)."""
    parts = [str(source.get(k)).strip() for k in ("reason", "message") if source.get(k)]
    return ": ".join(parts)


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return None
