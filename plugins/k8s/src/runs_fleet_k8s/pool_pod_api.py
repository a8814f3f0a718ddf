"""Reading and writing warm-pool pods through the API (what a pool pod *is* lives in
:mod:`runs_fleet_k8s.pool_pods`).

:class:`Pods` reads them and makes the conditional writes; :func:`bind_pool_pod` and
:func:`end_pool_pod` are the two moments of a pool pod's life that the config store, not
the pool loop, decides: storing a job's config takes the pod out of its Deployment, and
removing it ends the pod.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from runs_fleet_core.errors import ConflictError, NotFoundError, ProviderError
from runs_fleet_k8s import names
from runs_fleet_k8s.client import KubeApiError, KubeCaller
from runs_fleet_k8s.pool_pods import (
    MAX_POD_NAME,
    POD_NAME_RE,
    Pod,
    bound_job,
    in_state,
    is_gone,
    is_member,
    is_pool_pod,
    name_of,
    release_patch,
    state_patch,
)

_log = logging.getLogger(__name__)


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
        if not POD_NAME_RE.fullmatch(name) or len(name) > MAX_POD_NAME:
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
