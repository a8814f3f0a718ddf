"""The Kubernetes provider: one Job per runner, named after the runner.

Creating a runner goes, in order:

1. For a private job, the NetworkPolicy that fences its pod in, *before* the pod can
   exist, so the job's code never runs a moment with open access to the cluster.
2. The Job (:func:`~runs_fleet_k8s.manifests.runner_job`). Its name derives from the
   runner name, so a second create (a re-delivered message, another replica) meets
   ``AlreadyExists`` and returns the Job the first one made: no job gets two runners.
3. The runner's config objects (stored by the ConfigStore just before) and the
   NetworkPolicy become dependents of the Job, so Kubernetes' garbage collector removes
   them with it and no JIT config outlives its runner.

Terminating a runner does not delete its Job: runs-fleet labels it terminated, cuts its
deadline and deletes its pod, so the Job fails at once and its TTL removes it (and its
dependents) later, as it does for every finished runner. Until then the runner is
described as terminated, as the Provider port asks, instead of vanishing into "never
existed"; housekeeping never lists it again.

Failures keep the API server's words: an RBAC denial is final (``retryable=False``,
with the permission to grant), a quota rejection or throttling is retried later, an
invalid manifest is final.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.runner import RunnerResult, RunnerState
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import NotFoundError, ProviderError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports import Clock
from runs_fleet_core.settings import Setting
from runs_fleet_k8s import manifests, names, runner_state
from runs_fleet_k8s.client import KubeApiError, KubeCaller
from runs_fleet_k8s.manifests import RUNNER_NAME_ANNOTATION, RunnerPodSettings
from runs_fleet_k8s.pod_settings import SETTINGS as POD_SETTINGS
from runs_fleet_k8s.runner_state import NAME, TERMINATED, TERMINATED_AT

_log = logging.getLogger(__name__)

SETTINGS: tuple[Setting, ...] = POD_SETTINGS
"""The provider reads the runner pod settings (it builds the Jobs) and nothing else."""

MERGE_PATCH = "application/merge-patch+json"
DEFAULT_PAGE_SIZE = 250
JOB_NAME = "job-name"
"""The label the Job controller puts on a Job's pods (every Kubernetes version)."""
_CREATE_ATTEMPTS = 3


class K8sProvider:
    """The :class:`~runs_fleet_core.ports.Provider` port over batch/v1 Jobs.

    Runner id = Job name (the runner name, unless it had to be shortened). Every Job
    carries ``runs-fleet.io/component=runner`` and the job's labels, which is how
    runners are listed and matched to their jobs.
    """

    def __init__(
        self,
        caller: KubeCaller,
        settings: RunnerPodSettings,
        *,
        clock: Clock,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"the page size must be at least 1, not {page_size}")
        self._caller = caller
        self._settings = attrs.evolve(settings, namespace=caller.namespace)
        self._clock = clock
        self._page_size = page_size
        self.namespace = caller.namespace

    def __repr__(self) -> str:
        return f"K8sProvider(namespace={self.namespace!r})"

    @property
    def name(self) -> str:
        """``k8s``."""
        return NAME

    # -- creating -------------------------------------------------------------------

    async def create_runner(self, spec: RunnerSpec, *, runner_name: str) -> RunnerResult:
        """Create the runner's Job, or return the one already made for ``runner_name``;
        tie its config (and network policy) to it."""
        body = manifests.runner_job(spec, runner_name, self._settings)
        name = str(body["metadata"]["name"])
        policy = None
        if spec.private:
            policy = manifests.network_policy(name, {names.JOB_ID: str(spec.job_id)})
            await self._ensure(self._caller.networking.create_namespaced_network_policy, policy)
        try:
            job = await self._create_job(body, runner_name)
        except ProviderError as exc:
            if policy is not None and not exc.retryable:
                await self._forget_policy(name)
            raise
        owner = [manifests.owner_reference(job)]
        core = self._caller.core
        await asyncio.gather(
            self._adopt(
                core.patch_namespaced_config_map, names.config_map_name(runner_name), owner
            ),
            self._adopt(core.patch_namespaced_secret, names.config_secret_name(runner_name), owner),
        )
        if policy is not None:
            patch = self._caller.networking.patch_namespaced_network_policy
            await self._adopt(patch, name, owner, what="NetworkPolicy")
        return RunnerResult(
            runner_id=RunnerId(name),
            provider=NAME,
            details={
                "namespace": self.namespace,
                "job_uid": str(job["metadata"]["uid"]),
                "runner_name": runner_name,
            },
        )

    async def _create_job(self, body: dict[str, Any], runner_name: str) -> dict[str, Any]:
        """The Job as the API server stored it: created now, or found (AlreadyExists)."""
        name = body["metadata"]["name"]
        batch = self._caller.batch
        for _ in range(_CREATE_ATTEMPTS):
            try:
                return self._plain(
                    await self._caller.call(batch.create_namespaced_job, self.namespace, body)
                )
            except KubeApiError as exc:
                if not exc.already_exists:
                    what = f"cannot create the Job of runner {runner_name}"
                    raise _provider_error(what, exc) from exc
            existing = await self._read_job(name)
            if existing is None:
                continue  # deleted since: create it again
            found = (existing["metadata"].get("annotations") or {}).get(RUNNER_NAME_ANNOTATION)
            if found != runner_name:
                raise ProviderError(
                    f"Job {name} in namespace {self.namespace} exists but is not the Job of "
                    f"runner {runner_name} (its {RUNNER_NAME_ANNOTATION} annotation is "
                    f"{found!r}); delete or rename that Job",
                    retryable=False,
                )
            return existing
        raise ProviderError(
            f"the Job of runner {runner_name} kept disappearing while it was created; "
            f"something in namespace {self.namespace} deletes runs-fleet's Jobs",
            retryable=True,
        )

    async def _ensure(self, create: Callable[..., Any], body: dict[str, Any]) -> None:
        """Create ``body``; one that exists already is fine."""
        try:
            await self._caller.call(create, self.namespace, body)
        except KubeApiError as exc:
            if not exc.already_exists:
                what = f"cannot create {body['kind']} {body['metadata']['name']}"
                raise _provider_error(what, exc) from exc

    async def _forget_policy(self, name: str) -> None:
        """Delete the NetworkPolicy of a runner whose Job will never exist (a failure
        that no retry cures); failing to is only worth a log line."""
        networking = self._caller.networking
        try:
            await self._caller.call(
                networking.delete_namespaced_network_policy, name, self.namespace
            )
        except KubeApiError as exc:
            if not exc.not_found:
                _log.warning("NetworkPolicy %s of a runner never created stays: %s", name, exc)

    async def _adopt(
        self,
        patch: Callable[..., Any],
        name: str,
        owner: list[Any],
        *,
        what: str = "runner config",
    ) -> None:
        """Make object ``name`` (a part of the runner's config unless ``what`` says
        otherwise) a dependent of the runner's Job."""
        body = {"metadata": {"ownerReferences": owner}}
        job = owner[0]["name"]
        try:
            await self._caller.call(patch, name, self.namespace, body, _content_type=MERGE_PATCH)
        except KubeApiError as exc:
            if exc.not_found:
                raise ProviderError(
                    f"the {what} {name} is missing in namespace {self.namespace}: runner Job "
                    f"{job} cannot start without it; it is written again when the job is "
                    "retried",
                    retryable=True,
                ) from exc
            raise _provider_error(f"cannot tie {what} {name} to runner Job {job}", exc) from exc

    # -- terminating ----------------------------------------------------------------

    async def terminate_runner(self, runner_id: RunnerId) -> None:
        """End the runner now and leave its Job to Kubernetes' clean-up; a Job already
        gone is fine.

        The Job is labelled terminated (described so, never listed again) and its
        deadline cut to one second; then its pod is deleted, which with
        ``backoffLimit: 0`` fails the Job at once (the deadline catches a pod the Job
        controller creates meanwhile). The failed Job's TTL deletes it and its config.
        """
        body = {
            "metadata": {
                "labels": {TERMINATED: "true"},
                "annotations": {TERMINATED_AT: self._clock.now().isoformat()},
            },
            "spec": {"activeDeadlineSeconds": 1},
        }
        batch, core = self._caller.batch, self._caller.core
        try:
            await self._caller.call(
                batch.patch_namespaced_job,
                runner_id,
                self.namespace,
                body,
                _content_type=MERGE_PATCH,
            )
            await self._caller.call(
                core.delete_collection_namespaced_pod,
                self.namespace,
                label_selector=names.selector({JOB_NAME: runner_id}),
                propagation_policy="Background",
            )
        except KubeApiError as exc:
            if exc.not_found:
                return
            raise _provider_error(f"cannot terminate runner {runner_id}", exc) from exc

    # -- reading --------------------------------------------------------------------

    async def describe_runner(self, runner_id: RunnerId) -> RunnerState:
        """The runner from its Job and newest pod; ``NotFoundError`` when no such Job
        exists (never created, or finished longer ago than the Job TTL)."""
        job = await self._read_job(runner_id)
        if job is None:
            raise NotFoundError(
                f"runner {runner_id} does not exist in provider {NAME} "
                f"(no Job {runner_id} in namespace {self.namespace})"
            )
        pods = await self._list(
            self._caller.core.list_namespaced_pod, names.selector({JOB_NAME: runner_id})
        )
        uid = job["metadata"]["uid"]
        mine = [pod for pod in pods if _owner_uid(pod) == uid]
        return runner_state.runner_state(job, runner_state.newest(mine))

    async def list_runners(self) -> Sequence[RunnerState]:
        """Every runner Job of this deployment that is not finished nor terminated, with
        its pod's phase, oldest first (two paginated listings: Jobs, then their pods)."""
        base = {names.MANAGED_BY: names.MANAGER, names.COMPONENT: manifests.RUNNER_COMPONENT}
        jobs = await self._list(
            self._caller.batch.list_namespaced_job, f"{names.selector(base)},!{TERMINATED}"
        )
        live = [job for job in jobs if not runner_state.finished(job)]
        if not live:
            return []
        pods = await self._list(self._caller.core.list_namespaced_pod, names.selector(base))
        by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            by_job.setdefault(_owner_uid(pod), []).append(pod)
        states = [
            runner_state.runner_state(
                job, runner_state.newest(by_job.get(job["metadata"]["uid"], []))
            )
            for job in live
        ]
        return sorted(states, key=lambda s: (s.launched_at is None, s.launched_at, s.runner_id))

    async def _read_job(self, name: str) -> dict[str, Any] | None:
        try:
            job = await self._caller.call(
                self._caller.batch.read_namespaced_job, name, self.namespace
            )
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise _provider_error(f"cannot read runner Job {name}", exc) from exc
        return self._plain(job)

    async def _list(self, list_fn: Callable[..., Any], selector: str) -> list[dict[str, Any]]:
        """Every object ``list_fn`` finds with ``selector``, all pages, as plain dicts."""
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            try:
                page = self._plain(
                    await self._caller.call(
                        list_fn,
                        self.namespace,
                        label_selector=selector,
                        limit=self._page_size,
                        _continue=token,
                    )
                )
            except KubeApiError as exc:
                raise _provider_error("cannot list runners", exc) from exc
            found += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return found

    def _plain(self, obj: Any) -> dict[str, Any]:
        """A client model object as the API's own JSON (camelCase keys)."""
        plain = self._caller.api_client.sanitize_for_serialization(obj)
        assert isinstance(plain, dict)
        return plain


def _owner_uid(pod: dict[str, Any]) -> str:
    """The uid of the Job controlling ``pod`` ("" when none does)."""
    for ref in pod["metadata"].get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") == "Job":
            return str(ref["uid"])
    return ""


def _provider_error(what: str, exc: KubeApiError) -> ProviderError:
    """``exc`` as a ProviderError that keeps its message and whether a retry may help."""
    return ProviderError(f"{what}: {exc}", retryable=exc.retryable)


def from_context(context: AdapterContext, caller: KubeCaller) -> K8sProvider:
    """The Job provider of the deployment's settings; ``ConfigError`` listing every
    invalid runner pod setting."""
    return K8sProvider(
        caller, RunnerPodSettings.from_settings(context.settings), clock=context.clock
    )
