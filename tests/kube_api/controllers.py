"""What the controllers share: finding an owner's pods, writing a status, creating pods
through the API verbs, and the kubelet stand-in that moves pods through their phases.

There is no scheduler and no kubelet: a new pod stays ``Pending`` on no node until the
test says what happens to it (``set_pod_phase``), or until a callback it registered
(``on_pod_created``) starts a real process for it.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

from tests.kube_api import validation
from tests.kube_api.errors import ApiError
from tests.kube_api.resources import BY_PLURAL, PODS, ResourceType
from tests.kube_api.store import Event, Obj, Store, namespace_of
from tests.kube_api.verbs import Verbs

TERMINAL = ("Succeeded", "Failed")
NODE_NAME = "fake-node-1"
HOST_IP = "10.0.0.10"


def controller_ref(obj: Obj) -> Obj | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_ref(owner: Obj) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_ready(pod: Obj) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def condition(kind: str, status: str, now: str, reason: str = "", message: str = "") -> Obj:
    found: Obj = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": now}
    if reason:
        found["reason"] = reason
    if message:
        found["message"] = message
    return found


class ControllerBase:
    """Dirty-key bookkeeping and the writes every controller makes."""

    def __init__(self, store: Store, verbs: Verbs, errors: list[str]) -> None:
        self.store = store
        self.verbs = verbs
        self.errors = errors
        self.dirty: set[tuple[str, str]] = set()
        self.reset()

    def reset(self) -> None:
        self.dirty = set()

    def owned_pods(self, owner: Obj) -> list[Obj]:
        """The pods ``owner`` controls (read only), in name order."""
        uid = owner["metadata"]["uid"]
        return [
            pod
            for rt, pod in self.store.dependents(str(uid))
            if rt is PODS and (ref := controller_ref(pod)) is not None and ref.get("uid") == uid
        ]

    def settle(self) -> bool:
        work, self.dirty = sorted(self.dirty), set()
        did = False
        for namespace, name in work:
            did = self.sync(namespace, name) or did
        return did

    def sync(self, namespace: str, name: str) -> bool:
        raise NotImplementedError

    def create_pod(
        self, owner: Obj, prefix: str, template: Obj, extra_labels: dict[str, str]
    ) -> bool:
        """Create a pod named ``prefix`` + 5 random characters from ``template`` for
        ``owner``; a refusal (admission, quota…) is kept in the server's
        ``controller_errors`` (once), as a real controller's event."""
        meta = copy.deepcopy(template.get("metadata") or {})
        meta["generateName"] = prefix
        meta["labels"] = {**(meta.get("labels") or {}), **extra_labels}
        meta["ownerReferences"] = [owner_ref(owner)]
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": copy.deepcopy(template["spec"]),
        }
        try:
            self.verbs.create(PODS, namespace_of(owner), body)
        except ApiError as exc:
            message = (
                f"{owner['kind']} {namespace_of(owner)}/{owner['metadata']['name']}: "
                f"Error creating: {exc.message}"
            )
            if message not in self.errors:
                self.errors.append(message)
            return False
        return True

    def delete_pod(self, pod: Obj) -> None:
        self.store.delete(
            PODS, namespace_of(pod), pod["metadata"]["name"], propagation="Background"
        )

    def write(self, rt: ResourceType, obj: Obj) -> bool:
        """Store a controller's change to ``obj`` (validated: a controller that writes
        what Kubernetes would refuse is a bug in this fake). ``True`` if it changed."""
        problems = validation.object_problems(rt, obj)
        if problems:
            raise RuntimeError(f"the fake {rt.kind} controller wrote an invalid object: {problems}")
        before = self.store.peek(rt, namespace_of(obj), obj["metadata"]["name"])
        after = self.store.put(rt, obj)
        return (
            before is None
            or after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
        )


class Kubelet:
    """Moves pods through their lifecycle on the test's say-so and tells the test about
    pods appearing and disappearing."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.on_pod_created: Callable[[Obj], Any] | None = None
        self.on_pod_deleted: Callable[[Obj], Any] | None = None
        self.callback_errors: list[BaseException] = []
        self._ips = itertools.count(2)
        store.listeners.append(self._on_event)

    def reset(self) -> None:
        self.on_pod_created = None
        self.on_pod_deleted = None
        self.callback_errors.clear()

    def _on_event(self, event: Event) -> None:
        if event.plural != PODS.plural or event.type == "MODIFIED":
            return
        callback = self.on_pod_created if event.type == "ADDED" else self.on_pod_deleted
        if callback is None:
            return
        pod = copy.deepcopy(event.obj)

        def call() -> None:
            # Runs before the request that made the pod is answered: a callback should
            # start a process, not wait for it. Its failure belongs to the test.
            try:
                callback(pod)
            except Exception as exc:
                self.callback_errors.append(exc)

        self.store.defer(call)

    def set_pod_phase(
        self, namespace: str, name: str, phase: str, *, exit_code: int | None = None
    ) -> Obj:
        """Put pod ``namespace/name`` in ``phase`` (``Pending``, ``Running``,
        ``Succeeded``, ``Failed``) with the node, IPs, container states and conditions a
        kubelet would report; returns the pod."""
        if phase not in ("Pending", "Running", *TERMINAL):
            raise ValueError(
                f"unknown pod phase {phase!r}: use Pending, Running, Succeeded or Failed"
            )
        with self.store.transaction():
            pod = self.store.get(PODS, namespace, name)
            if pod is None:
                raise KeyError(f"no pod {namespace}/{name}")
            now = self.store.clock.timestamp()
            status = pod.setdefault("status", {})
            status["phase"] = phase
            if phase == "Pending":
                return self.store.put(PODS, pod)
            pod["spec"].setdefault("nodeName", NODE_NAME)
            if "podIP" not in status:
                ip = next(self._ips)
                status["podIP"] = f"10.244.{ip // 250}.{ip % 250 + 2}"
                status["podIPs"] = [{"ip": status["podIP"]}]
                status["hostIP"] = HOST_IP
                status["hostIPs"] = [{"ip": HOST_IP}]
            status.setdefault("startTime", now)
            running = phase == "Running"
            code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
            status["containerStatuses"] = [
                _container_status(container, status["startTime"], now, running, code)
                for container in pod["spec"].get("containers") or []
            ]
            why = "" if running else ("PodCompleted" if phase == "Succeeded" else "PodFailed")
            ready = "True" if running else "False"
            status["conditions"] = [
                condition("PodReadyToStartContainers", ready, now),
                condition("Initialized", "True", now, why),
                condition("Ready", ready, now, why),
                condition("ContainersReady", ready, now, why),
                condition("PodScheduled", "True", now),
            ]
            return self.store.put(PODS, pod)


def _container_status(container: Obj, started: str, now: str, running: bool, code: int) -> Obj:
    name = container["name"]
    state: Obj
    if running:
        state = {"running": {"startedAt": started}}
    else:
        state = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": started,
                "finishedAt": now,
                "containerID": f"containerd://{name}",
            }
        }
    return {
        "name": name,
        "image": container.get("image", ""),
        "imageID": f"{container.get('image', '')}@sha256:{'0' * 64}",
        "containerID": f"containerd://{name}",
        "ready": running,
        "started": running,
        "restartCount": 0,
        "state": state,
    }


class GarbageCollector:
    """Deletes objects all of whose owners are gone (a dependent created with a
    reference to an owner that no longer, or never, existed), as the garbage collector
    does; cascading deletion itself happens in the store when the owner is deleted."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dirty: set[tuple[str, str, str]] = set()

    def reset(self) -> None:
        self.dirty = set()

    def observe(self, event: Event) -> None:
        if event.type != "DELETED" and event.obj["metadata"].get("ownerReferences"):
            meta = event.obj["metadata"]
            self.dirty.add((event.plural, namespace_of(event.obj), str(meta["name"])))

    def _owner_exists(self, ref: Obj) -> bool:
        found = self.store.by_uid(str(ref.get("uid")))
        return found is not None and found[1]["metadata"]["name"] == ref.get("name")

    def settle(self) -> bool:
        work, self.dirty = sorted(self.dirty), set()
        did = False
        for plural, namespace, name in work:
            rt = BY_PLURAL[plural]
            obj = self.store.peek(rt, namespace or None, name)
            refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
            if obj is None or not refs or any(self._owner_exists(ref) for ref in refs):
                continue
            self.store.delete(rt, namespace or None, name, propagation="Background")
            did = True
        return did
