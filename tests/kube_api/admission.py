"""The admission plugins a default cluster runs on new pods, for the references a pod
makes to other objects: its PriorityClass (resolved to ``spec.priority``) and its
ServiceAccount. A Job whose template names a class nobody created gets no pod on a real
cluster; here too, so the chart and the provider must agree on names."""

from __future__ import annotations

from tests.kube_api.errors import ApiError
from tests.kube_api.resources import PRIORITYCLASSES, SERVICEACCOUNTS
from tests.kube_api.store import Obj, Store

SYSTEM_PRIORITY_CLASSES = {
    "system-cluster-critical": 2000000000,
    "system-node-critical": 2000001000,
}


def _forbidden(name: str, why: str) -> ApiError:
    return ApiError(
        403,
        "Forbidden",
        f'pods "{name}" is forbidden: {why}',
        details={"name": name, "kind": "pods"},
    )


def admit_pod(store: Store, pod: Obj, requested_name: str) -> None:
    """Resolve ``pod``'s references (in place) or refuse it as Kubernetes would (403,
    naming the pod as requested: a ``generateName`` prefix has no suffix yet)."""
    spec = pod["spec"]
    name, namespace = requested_name, str(pod["metadata"].get("namespace", ""))
    class_name = spec.get("priorityClassName")
    if class_name:
        if class_name in SYSTEM_PRIORITY_CLASSES:
            value = SYSTEM_PRIORITY_CLASSES[class_name]
        else:
            found = store.peek(PRIORITYCLASSES, None, class_name)
            if found is None:
                raise _forbidden(name, f"no PriorityClass with name {class_name} was found")
            value = int(found.get("value", 0))
            spec["preemptionPolicy"] = found.get("preemptionPolicy", "PreemptLowerPriority")
        spec["priority"] = value
    account = spec.get("serviceAccountName") or "default"
    if account != "default" and store.peek(SERVICEACCOUNTS, namespace, account) is None:
        raise _forbidden(
            name,
            f'error looking up service account {namespace}/{account}: serviceaccount "{account}" '
            "not found",
        )
    spec.setdefault("serviceAccount", account)
