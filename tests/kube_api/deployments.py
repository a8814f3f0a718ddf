"""The Deployment controller: keeps ``spec.replicas`` pods that match the selector.

Simplification, on purpose: there are no ReplicaSets; the Deployment owns its pods
directly, and a changed template replaces the old pods at once (like the ``Recreate``
strategy) instead of rolling. What runs-fleet's pools rely on is kept: pod names
``<deployment>-<template hash>-<random>`` with a ``pod-template-hash`` label, a pod whose
labels stop matching the selector is released (its controller reference removed) and
replaced, finished pods no longer count, and scaling down deletes pods in Kubernetes'
order: unscheduled, then pending, then not ready, then the lower
``controller.kubernetes.io/pod-deletion-cost``, then the newest. Pods that match but have
no controller are not adopted.
"""

from __future__ import annotations

import copy
import hashlib
import json

from tests.kube_api.controllers import TERMINAL, ControllerBase, controller_ref, is_ready
from tests.kube_api.resources import DEPLOYMENTS, PODS
from tests.kube_api.selectors import match_label_selector
from tests.kube_api.store import Event, Obj, namespace_of

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def template_hash(template: Obj) -> str:
    raw = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:10]


class DeploymentController(ControllerBase):
    def observe(self, event: Event) -> None:
        if event.plural == DEPLOYMENTS.plural and event.type != "DELETED":
            self.dirty.add((namespace_of(event.obj), event.obj["metadata"]["name"]))
        elif event.plural == PODS.plural:
            for obj in (event.old, event.obj):
                ref = controller_ref(obj) if obj is not None else None
                if ref is not None and ref.get("kind") == "Deployment":
                    self.dirty.add((namespace_of(event.obj), str(ref["name"])))

    def _deletion_rank(self, pod: Obj) -> tuple[int, int, int, int, int]:
        phase = (pod.get("status") or {}).get("phase", "Pending")
        try:
            cost = int((pod["metadata"].get("annotations") or {}).get(DELETION_COST, 0))
        except ValueError:
            cost = 0
        return (
            1 if pod["spec"].get("nodeName") else 0,
            _PHASE_RANK.get(phase, 2),
            1 if is_ready(pod) else 0,
            cost,
            -self.store.creation_order(pod),
        )

    def _release(self, pod: Obj) -> None:
        released = copy.deepcopy(pod)
        refs = [r for r in released["metadata"]["ownerReferences"] if not r.get("controller")]
        if refs:
            released["metadata"]["ownerReferences"] = refs
        else:
            del released["metadata"]["ownerReferences"]
        self.store.put(PODS, released)

    def sync(self, namespace: str, name: str) -> bool:
        deployment = self.store.get(DEPLOYMENTS, namespace, name)
        if deployment is None:
            return False
        spec = deployment["spec"]
        selector = spec.get("selector")
        current_hash = template_hash(spec["template"])
        did = False
        pods = []
        for pod in self.owned_pods(deployment):
            if match_label_selector(selector, pod["metadata"].get("labels") or {}):
                pods.append(pod)
            else:
                self._release(pod)
                did = True
        live = [
            pod
            for pod in pods
            if (pod.get("status") or {}).get("phase") not in TERMINAL
            and not pod["metadata"].get("deletionTimestamp")
        ]
        for pod in live:
            if (pod["metadata"].get("labels") or {}).get("pod-template-hash") != current_hash:
                self.delete_pod(pod)
                did = True
        live = [p for p in live if p["metadata"]["labels"].get("pod-template-hash") == current_hash]
        replicas = int(spec.get("replicas", 1))
        for _ in range(replicas - len(live)):
            prefix = f"{name}-{current_hash}-"
            if self.create_pod(
                deployment, prefix, spec["template"], {"pod-template-hash": current_hash}
            ):
                did = True
        if len(live) > replicas:
            for pod in sorted(live, key=self._deletion_rank)[: len(live) - replicas]:
                self.delete_pod(pod)
                did = True
        return self._write_status(deployment) or did

    def _write_status(self, deployment: Obj) -> bool:
        live = [
            pod
            for pod in self.owned_pods(deployment)
            if (pod.get("status") or {}).get("phase") not in TERMINAL
        ]
        current_hash = template_hash(deployment["spec"]["template"])
        replicas = int(deployment["spec"].get("replicas", 1))
        ready = sum(1 for pod in live if is_ready(pod))
        updated = sum(
            1 for pod in live if pod["metadata"]["labels"].get("pod-template-hash") == current_hash
        )
        old = deployment.get("status") or {}
        now = self.store.clock.timestamp()
        available = ready >= replicas
        conditions = [
            _keep_time(
                old,
                condition(
                    "Available",
                    "True" if available else "False",
                    now,
                    "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if available
                    else "Deployment does not have minimum availability.",
                ),
            ),
            _keep_time(
                old,
                condition(
                    "Progressing",
                    "True",
                    now,
                    "NewReplicaSetAvailable",
                    f'Deployment "{deployment["metadata"]["name"]}" has successfully progressed.',
                ),
            ),
        ]
        status: Obj = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": len(live),
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(replicas - ready, 0),
            "conditions": conditions,
        }
        status = {key: value for key, value in status.items() if value}
        if status == old:
            return False
        changed = copy.deepcopy(deployment)
        changed["status"] = status
        return self.write(DEPLOYMENTS, changed)


def condition(kind: str, status: str, now: str, reason: str, message: str) -> Obj:
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def _keep_time(old_status: Obj, new: Obj) -> Obj:
    """A condition keeps its timestamps while its status and reason do not change."""
    for previous in old_status.get("conditions") or []:
        if (
            previous.get("type") == new["type"]
            and previous.get("status") == new["status"]
            and previous.get("reason") == new.get("reason")
        ):
            return {
                **new,
                "lastUpdateTime": previous.get("lastUpdateTime"),
                "lastTransitionTime": previous.get("lastTransitionTime"),
            }
    return new
