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

Pods are plain dicts in the API's camelCase form. :class:`Pods` reads them and makes
the conditional writes; :func:`bind_pool_pod` and :func:`end_pool_pod` are the two
moments of a pool pod's life that the config store, not the pool loop, decides.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from runs_fleet_core.domain.runner import RunnerPhase
from runs_fleet_core.errors import ConflictError, NotFoundError, ProviderError
from runs_fleet_k8s import manifests, names
from runs_fleet_k8s.client import KubeApiError, KubeCaller

_log = logging.getLogger(__name__)

POOL_RUNNER = manifests.POOL_COMPONENT
"""``runs-fleet.io/component`` of a pool pod."""
POOL_STATE = names.PREFIX + "pool-state"
IDLE_SINCE = names.PREFIX + "idle-since"
RUNNING = "running"
STOPPED = "stopped"
RUNNER_CONTAINER = "runner"

Pod = Mapping[str, Any]
_POD_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAX_NAME = 253


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


# -- reading and writing pool pods ------------------------------------------------------


def provider_error(doing: str, exc: KubeApiError) -> ProviderError:
    """``exc`` as the pool provider's error: the Kubernetes reason and message kept,
    retryable as the API server's answer says (an RBAC denial never is)."""
    return ProviderError(f"{doing}: {exc}", retryable=exc.retryable)


class Pods:
    """Pool pods of the caller's namespace as plain dicts, and the conditional writes
    that change them. Writes re-read the pod after a conflict and decide again."""

    PAGE_SIZE = 250
    WRITE_ATTEMPTS = 5

    def __init__(self, caller: KubeCaller, *, page_size: int = PAGE_SIZE) -> None:
        self._caller = caller
        self._page_size = page_size

    def _plain(self, obj: Any) -> dict[str, Any]:
        plain: dict[str, Any] = self._caller.api_client.sanitize_for_serialization(obj)
        return plain

    async def matching(self, selector: str) -> list[dict[str, Any]]:
        """Every pod matching ``selector``, all pages."""
        caller, token = self._caller, None
        pods: list[dict[str, Any]] = []
        while True:
            page = self._plain(
                await caller.call(
                    caller.core.list_namespaced_pod,
                    caller.namespace,
                    label_selector=selector,
                    limit=self._page_size,
                    _continue=token,
                )
            )
            pods += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return pods

    async def read(self, name: str) -> dict[str, Any] | None:
        """The pod called ``name``; ``None`` when there is none (or the name cannot be
        a pod's)."""
        if not _POD_NAME_RE.fullmatch(name) or len(name) > _MAX_NAME:
            return None
        caller = self._caller
        try:
            return self._plain(
                await caller.call(caller.core.read_namespaced_pod, name, caller.namespace)
            )
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise

    async def read_many(self, runner_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """:meth:`read` of each distinct id, in order."""
        return [await self.read(runner_id) for runner_id in dict.fromkeys(runner_ids)]

    async def live(self, runner_ids: Sequence[str], verb: str) -> list[dict[str, Any]]:
        """The live pool pods named ``runner_ids``; ``NotFoundError`` naming the others,
        before anything is asked of any of them."""
        found = dict(zip(dict.fromkeys(runner_ids), await self.read_many(runner_ids), strict=True))
        missing = [
            i for i, pod in found.items() if pod is None or not is_pool_pod(pod) or is_gone(pod)
        ]
        if missing:
            raise NotFoundError(
                f"cannot {verb} runner(s) {', '.join(missing)}: no live warm-pool pod of "
                f"that name in namespace {self._caller.namespace}"
            )
        return [pod for pod in found.values() if pod is not None]

    async def patch(self, pod: Pod, body: dict[str, Any]) -> dict[str, Any] | None:
        """The patched pod; ``None`` after a conflict (re-read and decide again).
        ``NotFoundError`` when the pod is gone."""
        caller = self._caller
        try:
            return self._plain(
                await caller.call(
                    caller.core.patch_namespaced_pod, name_of(pod), caller.namespace, body
                )
            )
        except KubeApiError as exc:
            if exc.not_found:
                raise NotFoundError(f"pool pod {name_of(pod)} is gone") from exc
            if exc.conflict:
                return None
            raise

    async def _reread(self, pod: Pod) -> dict[str, Any]:
        fresh = await self.read(name_of(pod))
        if fresh is None or is_gone(fresh):
            raise NotFoundError(f"pool pod {name_of(pod)} is gone")
        return fresh

    async def set_state(self, pod: Pod, state: str, image: str, *, now: datetime) -> None:
        """Ask ``pod`` for ``state`` with ``image`` unless it already does."""
        current = dict(pod)
        for _ in range(self.WRITE_ATTEMPTS):
            if in_state(current, state, image):
                return
            if await self.patch(current, state_patch(current, state=state, image=image, now=now)):
                return
            current = await self._reread(current)
        raise _busy(current)

    async def release(self, pod: Pod) -> dict[str, Any]:
        """``pod`` taken out of its Deployment (``pool-member=false``), as it is now;
        unchanged when it already left (a job took it meanwhile)."""
        current = dict(pod)
        for _ in range(self.WRITE_ATTEMPTS):
            if not is_member(current):
                return current
            patched = await self.patch(current, release_patch(current))
            if patched is not None:
                return patched
            current = await self._reread(current)
        raise _busy(current)

    async def delete_unless_taken(self, pod: Pod) -> None:
        """Delete ``pod`` unless it changed since it was read and now holds a job that
        it did not hold then (a claim that raced the removal). Gone already is fine."""
        caller, current = self._caller, dict(pod)
        for _ in range(self.WRITE_ATTEMPTS):
            version = (current.get("metadata") or {}).get("resourceVersion")
            try:
                await caller.call(
                    caller.core.delete_namespaced_pod,
                    name_of(current),
                    caller.namespace,
                    body={"preconditions": {"resourceVersion": version}},
                )
                return
            except KubeApiError as exc:
                if exc.not_found:
                    return
                if not exc.conflict:
                    raise
            fresh = await self.read(name_of(current))
            if fresh is None:
                return
            if bound_job(fresh) != bound_job(current):
                _log.warning(
                    "not terminating pool pod %s: it took job %s meanwhile",
                    name_of(fresh),
                    bound_job(fresh),
                )
                return
            current = fresh
        raise _busy(current)


def _busy(pod: Pod) -> ProviderError:
    return ProviderError(
        f"pool pod {name_of(pod)} kept changing while it was being updated; try again",
        retryable=True,
    )


async def bind_pool_pod(caller: KubeCaller, runner_id: str, job_id: str) -> bool:
    """Let the pool pod ``runner_id`` take job ``job_id``: label it with the job and out
    of its Deployment, which refills the pool at once. ``True`` once it is bound (also
    when it already was, to this job); ``False`` when no live pool pod has that name
    (the id of a cold-started runner). ``ConflictError`` when it already took another
    job: a pool pod serves one job."""
    pods = Pods(caller)
    wanted = names.label_value(job_id)
    for _ in range(Pods.WRITE_ATTEMPTS):
        pod = await pods.read(runner_id)
        if pod is None or not is_pool_pod(pod) or is_gone(pod):
            return False
        bound = bound_job(pod)
        if bound == wanted:
            return True
        if bound is not None:
            raise ConflictError(
                f"pool pod {runner_id} already took job {bound}; it cannot also take job "
                f"{job_id} (a pool runner serves one job)"
            )
        try:
            if await pods.patch(pod, release_patch(pod, job_id=job_id)) is not None:
                return True
        except NotFoundError:
            return False
    raise _busy({"metadata": {"name": runner_id}})


async def end_pool_pod(caller: KubeCaller, runner_id: str) -> None:
    """Delete ``runner_id`` if it is a pool pod that left its Deployment (its one job
    is over); a member of a pool, a cold runner's id or a pod already gone is left
    alone."""
    pod = await Pods(caller).read(runner_id)
    if pod is None or not is_pool_pod(pod) or is_member(pod):
        return
    try:
        await caller.call(caller.core.delete_namespaced_pod, runner_id, caller.namespace)
    except KubeApiError as exc:
        if not exc.not_found:
            raise
