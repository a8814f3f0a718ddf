"""The defaults and server-set fields a real API server adds to what it stores.

An adapter that reads an object back sees these (a Job's generated selector and
``job-name`` labels, a pod's ``restartPolicy``, a Secret's ``stringData`` folded into
``data``), so code that compares "what I sent" with "what is there" meets the same
differences it would meet on a cluster.
"""

from __future__ import annotations

import base64
from collections.abc import MutableMapping
from typing import Any

Obj = dict[str, Any]


def _container_defaults(container: MutableMapping[str, Any]) -> None:
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})


def pod_spec_defaults(spec: MutableMapping[str, Any], *, restart_policy: str | None) -> None:
    """Defaults of a pod spec; ``restart_policy`` is set when the owner has a default
    (``Always`` for pods and Deployments; Jobs must say)."""
    if restart_policy is not None:
        spec.setdefault("restartPolicy", restart_policy)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            if isinstance(container, MutableMapping):
                _container_defaults(container)


def pod_defaults(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    pod_spec_defaults(spec, restart_policy="Always")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)


def job_defaults(obj: Obj, uid: str, *, creating: bool) -> None:
    """Job defaults; on create, the generated selector and the labels that tie the
    template's pods to this Job (by uid, so a Job re-created under the same name never
    adopts its predecessor's pods)."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template = spec.setdefault("template", {})
    meta = template.setdefault("metadata", {})
    labels = meta.setdefault("labels", {})
    obj_meta = obj["metadata"]
    if creating and not obj_meta.get("labels") and labels:
        obj_meta["labels"] = dict(labels)
    if creating and not spec.get("manualSelector"):
        name = obj_meta["name"]
        labels.update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
        )
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    pod_spec_defaults(template.setdefault("spec", {}), restart_policy=None)


def deployment_defaults(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault(
        "strategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
    )
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    pod_spec_defaults(template.setdefault("spec", {}), restart_policy="Always")


def secret_defaults(obj: Obj) -> None:
    """``type: Opaque``, and ``stringData`` folded into ``data`` (where it wins), as the
    API server does: ``stringData`` is write-only and never read back."""
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def namespace_defaults(obj: Obj) -> None:
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    labels = obj["metadata"].setdefault("labels", {})
    labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]


def network_policy_defaults(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if "policyTypes" not in spec:
        spec["policyTypes"] = ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]


def priority_class_defaults(obj: Obj) -> None:
    obj.setdefault("preemptionPolicy", "PreemptLowerPriority")


def apply(kind: str, obj: Obj, uid: str, *, creating: bool) -> None:
    """Fill in ``obj``'s defaults (in place)."""
    if kind == "Pod":
        pod_defaults(obj)
    elif kind == "Job":
        job_defaults(obj, uid, creating=creating)
    elif kind == "Deployment":
        deployment_defaults(obj)
    elif kind == "Secret":
        secret_defaults(obj)
    elif kind == "Namespace":
        namespace_defaults(obj)
    elif kind == "NetworkPolicy":
        network_policy_defaults(obj)
    elif kind == "PriorityClass":
        priority_class_defaults(obj)


def initial_status(kind: str) -> Obj | None:
    """The status a new object starts with (kinds with a status subresource ignore the
    one in the body)."""
    if kind == "Pod":
        return {"phase": "Pending", "qosClass": "BestEffort"}
    if kind == "Namespace":
        return {"phase": "Active"}
    if kind in ("Job", "Deployment"):
        return {}
    return None
