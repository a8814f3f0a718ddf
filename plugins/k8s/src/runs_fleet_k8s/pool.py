"""Warm pools on Kubernetes: one Deployment of idle agent pods per pool.

Pool ``P`` is the Deployment ``names.pool_deployment_name(P)`` whose selector is
``runs-fleet.io/pool=P``, ``runs-fleet.io/pool-member=true`` and
``runs-fleet.io/component=pool-runner``; a runner's id is its pod's name. A pool pod is
built from the pool's label like a job's runner but starts before any job exists, so its
agent asks the orchestrator (``RUNS_FLEET_PUBLIC_URL`` + ``/api/agent/config``) until a
config for its pod name is there.

* **Taking a job** (:func:`bind_pool_pod`, when a config is stored for the pod) labels
  it ``pool-member=false`` and with the job id: the Deployment lets it go and refills at
  once, and no change of ``replicas`` can touch it again. It stays listed in the pool
  until :func:`end_pool_pod` deletes it after its one job.
* **Stopping** patches the runner container's image to the pause image
  (``RUNS_FLEET_KUBE_PLACEHOLDER_IMAGE``) and labels the pod
  ``runs-fleet.io/pool-state=stopped``; **starting** patches both back. An image is one
  of the few pod fields that may change and the kubelet restarts the container with it,
  so a stopped runner keeps its node, its requests and its place, and starts in seconds
  (no scheduling, no pull). Hence pool pods have no ``command``: it cannot change and
  must suit both images, so each image's entrypoint decides.
* **Creating** raises ``replicas`` through the scale subresource and waits
  (``RUNS_FLEET_KUBE_POOL_WAIT_S``) for the new pods.
* **Terminating** relabels the pod out of the Deployment first, then lowers
  ``replicas``, then deletes the pod: lowering first would let the controller delete a
  pod of its own choice, maybe one a job claimed a moment ago.

Every write of ``replicas`` or of a pod is conditional on the ``resourceVersion`` just
read and decided again after a conflict, so a claim and a scale-down never undo each
other. Phases come from the pods alone (:mod:`runs_fleet_k8s.pool_pods`).

With ``RUNS_FLEET_KUBE_POOL_PLACEHOLDERS``, a pool also gets a Deployment of low-priority
pause pods (its ``desired_running`` of them) that keep spare nodes up: a pod replacing
one that took a job preempts a placeholder instead of waiting for a node. Placeholders
are never runners.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.labels import LabelDefaults
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.pool_labels import pool_spec
from runs_fleet_core.domain.runner import PoolRunner, RunnerPhase
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import NotFoundError, ProviderError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports import Clock, Metrics
from runs_fleet_core.settings import Kind, Setting
from runs_fleet_core.wiring import label_defaults
from runs_fleet_k8s import names, pool_pods
from runs_fleet_k8s.client import KubeApiError, KubeCaller
from runs_fleet_k8s.manifests import (
    RunnerPodSettings,
    placeholder_deployment,
    placeholder_priority_class,
    pool_deployment,
)
from runs_fleet_k8s.pool_pod_api import Pods, provider_error
from runs_fleet_k8s.pool_pod_api import bind_pool_pod as bind_pool_pod
from runs_fleet_k8s.pool_pod_api import end_pool_pod as end_pool_pod

_log = logging.getLogger(__name__)

NAME = "k8s"
WAIT = "RUNS_FLEET_KUBE_POOL_WAIT_S"
PLACEHOLDERS = "RUNS_FLEET_KUBE_POOL_PLACEHOLDERS"
PUBLIC_URL = "RUNS_FLEET_PUBLIC_URL"  # a core setting: read here, declared there
CONFIG_PATH = "/api/agent/config"
DEFAULT_WAIT_S = 30.0
POLL_INTERVAL_S = 0.5
SCALE_ATTEMPTS = 8

SETTINGS: tuple[Setting, ...] = (
    Setting(
        name=WAIT,
        help="seconds adding warm-pool runners waits for their pods (for stopped runners: "
        "until they ran once, so the runner image is on the node) before going on with "
        "the pods there are",
        kind=Kind.FLOAT,
        default=DEFAULT_WAIT_S,
        minimum=1,
    ),
    Setting(
        name=PLACEHOLDERS,
        help="give every warm pool low-priority placeholder pods (as many as its desired "
        "running size) that keep spare nodes up, so a pool pod replacing one that took a "
        "job starts without waiting for a new node",
        kind=Kind.BOOL,
        default=False,
    ),
)


class K8sPoolProvider:
    """The :class:`~runs_fleet_core.ports.PoolProvider` port over pool Deployments.

    ``public_url`` is where pool pods reach the orchestrator for their config;
    ``wait_s`` bounds each wait for new pods, checked every ``poll_interval_s``.
    """

    def __init__(
        self,
        caller: KubeCaller,
        settings: RunnerPodSettings,
        *,
        clock: Clock,
        metrics: Metrics,
        public_url: str | None,
        labels: LabelDefaults | None = None,
        wait_s: float = DEFAULT_WAIT_S,
        placeholders: bool = False,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self._caller = caller
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._public_url = public_url
        self._labels = labels or LabelDefaults()
        self.wait_s = wait_s
        self.placeholders = placeholders
        self._poll_interval_s = poll_interval_s
        self._pods = Pods(caller)

    @property
    def name(self) -> str:
        """``k8s``."""
        return NAME

    async def list_pool_runners(self, pool: str) -> Sequence[PoolRunner]:
        """Every live pod of ``pool``, members and pods that left with a job, oldest
        first. ``idle_since`` is when it was last started or stopped, else created."""
        try:
            found = await self._pods.matching(pool_pods.pool_selector(pool))
        except KubeApiError as exc:
            raise provider_error(f"pool {pool}", exc) from exc
        return [
            PoolRunner(
                runner_id=RunnerId(pool_pods.name_of(pod)),
                pool=pool,
                phase=pool_pods.phase_of(pod, pause_image=self._settings.placeholder_image),
                idle_since=pool_pods.idle_since(pod),
            )
            for pod in pool_pods.oldest_first(found)
            if not pool_pods.is_gone(pod)
        ]

    async def create_pool_runners(
        self, pool: PoolConfig, count: int, *, stopped: bool = False
    ) -> Sequence[RunnerId]:
        """Add ``count`` pods to ``pool``'s Deployment (made, with no replicas, on first
        use) and return their names; with ``stopped``, stop them once they ran.

        Waits up to ``RUNS_FLEET_KUBE_POOL_WAIT_S``; pods that appear later are listed
        by the next reconcile pass. ``ProviderError`` when none appeared (retryable), or
        for an invalid pool label or an unset ``RUNS_FLEET_PUBLIC_URL`` (not retryable).
        """
        if count < 0:
            raise ValueError(f"cannot create {count} runners")
        if count == 0:
            return []
        spec = pool_spec(pool, self._labels)
        deployment = names.pool_deployment_name(pool.name)
        try:
            await self._ensure_deployment(pool, spec)
            if self.placeholders:
                await self._ensure_placeholders(pool, spec)
            members = await self._pods.matching(pool_pods.member_selector(pool.name))
            await scale_by(self._caller, deployment, count)
            new = await self._await_new(
                pool.name, {pool_pods.name_of(p) for p in members}, count, stopped
            )
            if not new:
                raise ProviderError(
                    f"pool {pool.name}: Deployment {deployment} was scaled up by {count} but "
                    f"no pod appeared within {self.wait_s:g} s ({WAIT}); `kubectl describe "
                    f"deployment {deployment}` shows why (quota, admission, service account)",
                    retryable=True,
                )
            if stopped:
                new = [p for p in new if await self._stop_new(p)]
        except KubeApiError as exc:
            raise provider_error(f"pool {pool.name}", exc) from exc
        if len(new) < count:
            _log.warning(
                "pool %s: %d of %d pods appeared within %g s; the next pass lists the others",
                *(pool.name, len(new), count, self.wait_s),
            )
        labels = {"pool": pool.name, "state": pool_pods.STOPPED if stopped else pool_pods.RUNNING}
        self._metrics.increment("k8s_pool_pods_added", len(new), labels=labels)
        return [RunnerId(pool_pods.name_of(p)) for p in new]

    async def start_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Put the runner image back into each stopped runner (running ones are left
        as they are). ``NotFoundError``, before anything changes, for an id that is not
        a live pool pod."""
        await self._move(runner_ids, "start", pool_pods.RUNNING)

    async def stop_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Swap each running runner's image for the pause image (stopped ones are left
        as they are). ``NotFoundError``, before anything changes, for an id that is not
        a live pool pod."""
        await self._move(runner_ids, "stop", pool_pods.STOPPED)

    async def terminate_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Remove the pool pods among ``runner_ids`` for good: out of the Deployment,
        ``replicas`` down by as many, then deleted. Pods already gone are fine; a pod
        that is not a pool pod is left alone (logged), and so is one that took a job
        while it was being removed."""
        try:
            found = [p for p in await self._pods.read_many(runner_ids) if p is not None]
            for other in (p for p in found if not pool_pods.is_pool_pod(p)):
                _log.warning("not terminating %s: not a pool pod", pool_pods.name_of(other))
            doomed = [p for p in found if pool_pods.is_pool_pod(p) and not pool_pods.is_gone(p)]
            released: dict[str, int] = {}
            for index, pod in enumerate(doomed):
                if pool_pods.is_member(pod):
                    doomed[index] = await self._pods.release(pod)
                    pool = pool_pods.labels_of(pod)[names.POOL]
                    released[pool] = released.get(pool, 0) + 1
            for pool, count in released.items():
                await scale_by(self._caller, names.pool_deployment_name(pool), -count)
            for pod in doomed:
                await self._pods.delete_unless_taken(pod)
        except KubeApiError as exc:
            raise provider_error("terminating pool runners", exc) from exc

    async def _ensure_deployment(self, pool: PoolConfig, spec: RunnerSpec) -> None:
        """Create ``pool``'s Deployment, with no replicas, unless it exists."""
        body = pool_deployment(
            pool, spec, self._settings, replicas=0, config_url=self._config_url(pool)
        )
        template = body["spec"]["template"]
        template["metadata"]["labels"][pool_pods.POOL_STATE] = pool_pods.RUNNING
        for container in template["spec"]["containers"]:
            # A stopped runner's pause image runs with the same (immutable) command:
            # leave it to each image's entrypoint.
            container.pop("command", None)
            container.pop("args", None)
        await self._create(self._caller.apps.create_namespaced_deployment, body)

    async def _ensure_placeholders(self, pool: PoolConfig, spec: RunnerSpec) -> None:
        """The placeholder PriorityClass, and ``pool``'s placeholder Deployment sized to
        its ``desired_running``."""
        caller, size = self._caller, pool.desired_running
        await self._create(
            caller.scheduling.create_priority_class, placeholder_priority_class(self._settings)
        )
        body = placeholder_deployment(pool, spec, self._settings, replicas=size)
        if not await self._create(caller.apps.create_namespaced_deployment, body):
            name = body["metadata"]["name"]
            patch = {"spec": {"replicas": size}}
            await caller.call(
                caller.apps.patch_namespaced_deployment, name, caller.namespace, patch
            )

    async def _create(self, create: Any, body: dict[str, Any]) -> bool:
        """``create`` the object (in the namespace unless it is cluster-scoped); ``False``
        when it already existed."""
        namespaced = "namespace" in body["metadata"]
        args = (self._caller.namespace, body) if namespaced else (body,)
        try:
            await self._caller.call(create, *args)
        except KubeApiError as exc:
            if exc.already_exists:
                return False
            raise
        return True

    def _config_url(self, pool: PoolConfig) -> str:
        if not self._public_url:
            raise ProviderError(
                f"pool {pool.name}: {PUBLIC_URL} is not set, so pool pods cannot reach the "
                "orchestrator for their config: set it to the runs-fleet server's URL as "
                "pods see it, e.g. http://runs-fleet.runs-fleet.svc:8080",
                retryable=False,
            )
        return self._public_url.rstrip("/") + CONFIG_PATH

    async def _await_new(
        self, pool: str, before: set[str], count: int, stopped: bool
    ) -> list[dict[str, Any]]:
        """Up to ``count`` pods of ``pool`` not in ``before``: once ``count`` exist (and,
        when they are to be stopped, run, so the runner image is on their node), or
        whichever exist when the wait ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while True:
            members = await self._pods.matching(pool_pods.member_selector(pool))
            new = [
                p
                for p in pool_pods.oldest_first(members)
                if pool_pods.name_of(p) not in before and not pool_pods.is_gone(p)
            ][:count]
            phases = {
                pool_pods.phase_of(p, pause_image=self._settings.placeholder_image) for p in new
            }
            if len(new) == count and (not stopped or phases <= {RunnerPhase.RUNNING}):
                return new
            if loop.time() >= deadline:
                return new
            await asyncio.sleep(min(self._poll_interval_s, max(deadline - loop.time(), 0)))

    async def _stop_new(self, pod: dict[str, Any]) -> bool:
        """Stop a pod just added; ``False`` if it vanished first (the next pass sees
        the Deployment's replacement)."""
        try:
            await self._set_state(pod, pool_pods.STOPPED)
        except NotFoundError:
            return False
        return True

    async def _move(self, runner_ids: Sequence[RunnerId], verb: str, state: str) -> None:
        try:
            for pod in await self._pods.live(runner_ids, verb):
                await self._set_state(pod, state)
        except KubeApiError as exc:
            raise provider_error(f"cannot {verb} pool runners", exc) from exc

    async def _set_state(self, pod: dict[str, Any], state: str) -> None:
        stopping = state == pool_pods.STOPPED
        image = self._settings.placeholder_image if stopping else self._settings.image
        await self._pods.set_state(pod, state, image, now=self._clock.now())


async def scale_by(caller: KubeCaller, deployment: str, delta: int) -> None:
    """Add ``delta`` (negative: remove) to ``deployment``'s ``replicas`` (never below
    0) through its scale subresource, conditional on the ``resourceVersion`` read, and
    again after a conflict. A Deployment that does not exist is left so.

    The write itself is not retried by the caller: a lost answer to a write that did
    happen would then meet a conflict, and the re-read would add ``delta`` twice.
    """
    for _ in range(SCALE_ATTEMPTS):
        try:
            scale = caller.api_client.sanitize_for_serialization(
                await caller.call(
                    caller.apps.read_namespaced_deployment_scale, deployment, caller.namespace
                )
            )
        except KubeApiError as exc:
            if exc.not_found:
                return
            raise
        replicas = int((scale.get("spec") or {}).get("replicas") or 0)
        body = {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {k: scale["metadata"][k] for k in ("name", "namespace", "resourceVersion")},
            "spec": {"replicas": max(replicas + delta, 0)},
        }
        try:
            await caller.call(
                caller.apps.replace_namespaced_deployment_scale,
                deployment,
                caller.namespace,
                body,
                retry=False,
            )
            return
        except KubeApiError as exc:
            if not exc.conflict:
                raise
    raise ProviderError(
        f"Deployment {deployment} kept changing while its replicas were being set; the next "
        "reconcile pass tries again",
        retryable=True,
    )


def from_context(context: AdapterContext, caller: KubeCaller) -> K8sPoolProvider:
    """The pool provider of the deployment's settings; ``ConfigError`` listing every
    invalid runner pod setting."""
    settings = context.settings
    return K8sPoolProvider(
        caller,
        RunnerPodSettings.from_settings(settings),
        clock=context.clock,
        metrics=context.metrics,
        public_url=settings.get(PUBLIC_URL),
        labels=label_defaults(settings),
        wait_s=float(settings.get(WAIT, DEFAULT_WAIT_S)),
        placeholders=bool(settings.get(PLACEHOLDERS, False)),
    )
