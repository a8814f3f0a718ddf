"""Runner configs as a Secret and a ConfigMap: the ConfigStore of Kubernetes mode.

A runner pod mounts its one job's config at ``/etc/runs-fleet``. The JIT config (or the
registration token) and the secret settings go to a Secret (``<runner id>-config``),
everything else to a ConfigMap (``<runner id>-settings``);
:mod:`runs_fleet_k8s.config_files` defines the split. Both are labelled
``runs-fleet.io/component=runner-config`` with the job id and annotated with the runner
id, which names may not carry unchanged (a pod name with upper-case letters is hashed
into a valid object name).

The Secret is written first and deleted last: a config is listed (by its Secret) from
the moment any of it exists until all of it is gone, so housekeeping can always find
and finish a half-written or half-deleted config. The secret part never reaches a log
or an error: API errors raised while writing are stripped of it.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable, Sequence
from typing import Any

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.errors import AdapterError, ConflictError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.settings import Setting
from runs_fleet_k8s import config_files, names
from runs_fleet_k8s.client import KubeApiError, KubeCaller
from runs_fleet_k8s.pool_pod_api import bind_pool_pod, end_pool_pod

COMPONENT = "runner-config"
RUNNER_ID_ANNOTATION = names.PREFIX + "runner-id"
DEFAULT_PAGE_SIZE = 250
_RUNNER_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
_COLD_RUNNER_NAME = re.compile(r"runs-fleet-\d+-\d+")
"""Ids of cold-started runners (``runner_name_for``): never a pool pod, no lookup needed."""
_WRITE_ATTEMPTS = 3
MERGE_PATCH = "application/merge-patch+json"

SETTINGS: tuple[Setting, ...] = ()
"""The store reads no setting of its own: the namespace and the client are the caller's."""


def check_runner_id(runner_id: str) -> RunnerId:
    """``runner_id`` if the port allows it; ``ValueError`` saying what is allowed."""
    if not _RUNNER_ID_RE.fullmatch(runner_id):
        raise ValueError(
            f"runner id {runner_id!r} cannot name a runner config: use 1-200 of letters, "
            "digits, '.', '_' and '-', not starting with '.'"
        )
    return RunnerId(runner_id)


class SecretConfigStore:
    """The :class:`~runs_fleet_core.ports.ConfigStore` port on Secrets and ConfigMaps in
    the caller's namespace. ``page_size`` caps one page of the Secret listing."""

    def __init__(self, caller: KubeCaller, *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        if page_size < 1:
            raise ValueError(f"the page size must be at least 1, not {page_size}")
        self._caller = caller
        self.namespace = caller.namespace
        self.page_size = page_size

    def __repr__(self) -> str:
        return f"SecretConfigStore(namespace={self.namespace!r})"

    def _metadata(self, name: str, runner_id: RunnerId, config: RunnerConfig) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {
                names.MANAGED_BY: names.MANAGER,
                names.COMPONENT: COMPONENT,
                names.JOB_ID: str(config.job_id),
            },
            "annotations": {RUNNER_ID_ANNOTATION: runner_id},
        }

    async def put(self, runner_id: RunnerId, config: RunnerConfig) -> None:
        """Write the Secret, then the ConfigMap, each created or, when it exists,
        overwritten. ``ValueError`` for a runner id the port does not allow."""
        runner_id = check_runner_id(runner_id)
        public, hidden = config_files.split(config)
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in hidden.items()}
        secrets = [config.jit_config, config.registration_token or "", *hidden.values()]
        secrets += encoded.values()
        secrets += [v for k, v in config.settings.items() if config_files.is_secret_setting(k)]
        secret_name = names.config_secret_name(runner_id)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": self._metadata(secret_name, runner_id, config),
            "data": encoded,
        }
        core = self._caller.core
        await self._write(
            core.create_namespaced_secret, core.patch_namespaced_secret, secret, secrets
        )
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": self._metadata(names.config_map_name(runner_id), runner_id, config),
            "data": public,
        }
        await self._write(
            core.create_namespaced_config_map,
            core.patch_namespaced_config_map,
            config_map,
            secrets,
        )
        if runner_id != config.runner_name:
            await self._bind(runner_id, config)

    async def _bind(self, runner_id: RunnerId, config: RunnerConfig) -> None:
        """A config stored under another id than its runner name is a warm-pool pod's:
        storing it is the moment that pod takes the job, so it leaves its Deployment
        (which refills) and no scale-down can touch it any more."""
        try:
            await bind_pool_pod(self._caller, runner_id, str(config.job_id))
        except ConflictError as exc:
            raise AdapterError(
                f"pool pod {runner_id} cannot take job {config.job_id}: {exc}"
            ) from exc

    async def _write(
        self,
        create: Callable[..., Any],
        patch: Callable[..., Any],
        body: dict[str, Any],
        secrets: Sequence[str],
    ) -> None:
        """Create ``body`` or, when it exists, merge its labels, annotations and data
        into it: the last ``put`` wins, as the port says, and the owner reference the
        provider added (the runner's Job, so that Kubernetes deletes the config with it)
        stays. A patch that finds the object gone creates it again."""
        name = body["metadata"]["name"]
        changes = {
            "metadata": {k: body["metadata"][k] for k in ("labels", "annotations")},
            "data": body["data"],
        }
        for _ in range(_WRITE_ATTEMPTS):
            try:
                await _scrubbed(self._caller.call(create, self.namespace, body), secrets)
                return
            except KubeApiError as exc:
                if not exc.already_exists:
                    raise
            try:
                call = self._caller.call(
                    patch, name, self.namespace, changes, _content_type=MERGE_PATCH
                )
                await _scrubbed(call, secrets)
                return
            except KubeApiError as exc:
                if not exc.not_found:
                    raise
        raise AdapterError(
            f"{body['kind']} {name} in namespace {self.namespace} kept appearing and "
            "disappearing while its runner config was written; write it again",
            retryable=True,
        )

    async def get(self, runner_id: RunnerId) -> RunnerConfig | None:
        """The config, or ``None`` when its Secret or its ConfigMap is missing (a config
        half written or half deleted is no config)."""
        runner_id = check_runner_id(runner_id)
        core = self._caller.core
        secret, config_map = await asyncio.gather(
            self._read(core.read_namespaced_secret, names.config_secret_name(runner_id)),
            self._read(core.read_namespaced_config_map, names.config_map_name(runner_id)),
        )
        if secret is None or config_map is None:
            return None
        source = f"the runner config of {runner_id} in namespace {self.namespace}"
        try:
            hidden = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        except ValueError:
            raise AdapterError(
                f"Secret {names.config_secret_name(runner_id)} of {source} holds data that "
                "is not base64 text; delete the config or put it again",
                retryable=False,
            ) from None
        try:
            return config_files.join(config_map.data or {}, hidden, source=source)
        except config_files.ConfigFilesError as exc:
            raise AdapterError(f"{exc}; delete it or put it again", retryable=False) from None

    async def _read(self, read: Callable[..., Any], name: str) -> Any:
        try:
            return await self._caller.call(read, name, self.namespace)
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise

    async def delete(self, runner_id: RunnerId) -> None:
        """Delete the ConfigMap, then the Secret (so the config stays listed until both
        are gone); missing ones are fine."""
        runner_id = check_runner_id(runner_id)
        core = self._caller.core
        for delete, name in (
            (core.delete_namespaced_config_map, names.config_map_name(runner_id)),
            (core.delete_namespaced_secret, names.config_secret_name(runner_id)),
        ):
            try:
                await self._caller.call(delete, name, self.namespace)
            except KubeApiError as exc:
                if not exc.not_found:
                    raise
        if not _COLD_RUNNER_NAME.fullmatch(runner_id):
            await end_pool_pod(self._caller, runner_id)  # one job per pool pod: it goes

    async def list_ids(self) -> Sequence[RunnerId]:
        """Runner ids of every config Secret (read from their annotation), sorted, page
        by page with a label selector."""
        selector = names.selector({names.MANAGED_BY: names.MANAGER, names.COMPONENT: COMPONENT})
        ids: list[RunnerId] = []
        token: str | None = None
        while True:
            page = await self._caller.call(
                self._caller.core.list_namespaced_secret,
                self.namespace,
                label_selector=selector,
                limit=self.page_size,
                _continue=token,
            )
            for item in page.items or []:
                metadata = item.metadata
                annotations = (metadata.annotations if metadata else None) or {}
                runner_id = annotations.get(RUNNER_ID_ANNOTATION)
                if runner_id and _RUNNER_ID_RE.fullmatch(runner_id):
                    ids.append(RunnerId(runner_id))
            token = page.metadata.var_continue if page.metadata else None
            if not token:
                return sorted(ids)


async def _scrubbed(call: Any, secrets: Sequence[str]) -> None:
    """Await ``call``; a failure whose message quotes a secret is raised again without
    it and without the chained API exception (whose body could quote it too)."""
    try:
        await call
    except KubeApiError as exc:
        text = str(exc)
        quoted = f"{text}\n{exc.__cause__}\n{getattr(exc.__cause__, 'body', '')}"
        if not any(secret and secret in quoted for secret in secrets):
            raise
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        raise KubeApiError(
            text, status=exc.status, reason=exc.reason, retryable=exc.retryable
        ) from None


def from_context(context: AdapterContext, caller: KubeCaller) -> SecretConfigStore:
    """The store in the caller's namespace (``RUNS_FLEET_KUBE_NAMESPACE``)."""
    del context  # nothing to read: the namespace and client come with the caller
    return SecretConfigStore(caller)
