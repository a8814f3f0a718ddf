"""How the ConfigMap state store spells its records as Kubernetes objects.

One ConfigMap per record, named after what it records (``runs-fleet-job-<id>``,
``runs-fleet-assign-<runner>``, ``runs-fleet-pool-<name>``), so that creating one is the
atomic "only if absent" that races need. The record itself is JSON in one data key,
written through the core's record converter; what listings filter on (status, pool)
is repeated in labels, so a listing is a ``labelSelector`` the API server evaluates.
Each write carries a random ``runs-fleet.io/write-id`` annotation: when a request is
resent after its answer was lost, the resend fails against our own first write, and the
annotation tells that apart from a write of someone else.

A final job gets a ``runs-fleet.io/expires-on`` label, the UTC day after which it may be
deleted (see :meth:`~runs_fleet_k8s.state.ConfigMapStateStore.purge_expired_jobs`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from runs_fleet_core.domain.job import Job
from runs_fleet_core.errors import AdapterError
from runs_fleet_k8s import names
from runs_fleet_k8s.client import KubeApiError, KubeCaller

STATUS = names.PREFIX + "status"
"""On a job record: the job's status."""
EXPIRES_ON = names.PREFIX + "expires-on"
"""On a final job record: the UTC day (``YYYY-MM-DD``) after which it may be deleted."""
WRITE_ID = names.PREFIX + "write-id"
"""Annotation: a random id of the write that stored the object."""

JOB_RECORD = "job-record"
ASSIGNMENT = "assignment"
POOL_CONFIG = "pool-config"

JOB_KEY = "job.json"
ASSIGNMENT_KEY = "assignment.json"
POOL_KEY = "pool.json"

_MAX_NAME = 253  # ConfigMap names are DNS subdomains


def job_record_name(job_id: int) -> str:
    return names.dns_label(f"runs-fleet-job-{job_id}", max_length=_MAX_NAME)


def assignment_name(runner_id: str) -> str:
    return names.dns_label(f"runs-fleet-assign-{runner_id}", max_length=_MAX_NAME)


def pool_config_name(pool: str) -> str:
    return names.dns_label(f"runs-fleet-pool-{pool}", max_length=_MAX_NAME)


def component_labels(component: str, **more: str) -> dict[str, str]:
    """The labels every record of ``component`` has, plus ``more`` (already valid)."""
    return {names.MANAGED_BY: names.MANAGER, names.COMPONENT: component, **more}


def expires_on(job: Job, retention: timedelta) -> date:
    """The UTC day after which the final ``job`` may be deleted: the retention period
    after it reached its final status."""
    finished = job.timeline[-1].at if job.timeline else job.created_at
    return utc_day(finished + retention)


def utc_day(moment: datetime) -> date:
    """The UTC calendar day of ``moment`` (naive values count as UTC)."""
    return moment.date() if moment.tzinfo is None else moment.astimezone(UTC).date()


def job_labels(job: Job, retention: timedelta) -> dict[str, str]:
    """The labels of ``job``'s record: what ``list_jobs`` and the purge select on."""
    labels = component_labels(JOB_RECORD)
    labels[names.JOB_ID] = str(job.job_id)
    labels[STATUS] = job.status.value
    if job.pool:
        labels[names.POOL] = names.label_value(job.pool)
    if job.final:
        labels[EXPIRES_ON] = expires_on(job, retention).isoformat()
    return labels


def config_map(
    name: str,
    namespace: str,
    *,
    labels: Mapping[str, str],
    data: Mapping[str, str],
    write_id: str | None = None,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """A ConfigMap body; with ``resource_version``, a replace that the API server
    refuses (409 Conflict) when the object changed since that version was read."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if write_id is not None:
        metadata["annotations"] = {WRITE_ID: write_id}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": dict(data)}


class SeenVersions:
    """Record id -> (record version, ConfigMap resourceVersion) last read or written,
    for the ``limit`` most recent records."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: collections.OrderedDict[int, tuple[int, str]] = collections.OrderedDict()

    def note(self, key: int, version: int, obj: Any) -> None:
        resource_version = getattr(getattr(obj, "metadata", None), "resource_version", None)
        if resource_version:
            self._seen[key] = (version, str(resource_version))
            self._seen.move_to_end(key)
            while len(self._seen) > self.limit:
                self._seen.popitem(last=False)

    def take(self, key: int, version: int) -> str | None:
        """The resourceVersion the record was seen at with ``version``, forgotten once
        taken (whatever the write then does, a new read or write notes it again)."""
        seen = self._seen.pop(key, None)
        return seen[1] if seen is not None and seen[0] == version else None


def data_of(obj: Any, key: str) -> str | None:
    """Data key ``key`` of a ConfigMap read through the client, or ``None``."""
    data = obj.data or {}
    value = data.get(key)
    return value if isinstance(value, str) else None


def write_id_of(obj: Any) -> str | None:
    return (obj.metadata.annotations or {}).get(WRITE_ID)


def labels_of(obj: Any) -> dict[str, str]:
    return dict(obj.metadata.labels or {})


async def read_config_map(caller: KubeCaller, name: str) -> Any:
    """The ConfigMap ``name`` of the caller's namespace, or ``None`` when missing."""
    try:
        return await caller.call(caller.core.read_namespaced_config_map, name, caller.namespace)
    except KubeApiError as exc:
        if exc.not_found:
            return None
        raise


async def write_config_map(
    caller: KubeCaller, body: dict[str, Any], *, what: str, attempts: int
) -> None:
    """Create the ConfigMap ``body`` or overwrite the one of that name: the last write
    wins. One deleted between the two calls is created again; ``AdapterError`` if that
    keeps happening (``what`` names the record in the message)."""
    name, core = body["metadata"]["name"], caller.core
    for _ in range(attempts):
        try:
            await caller.call(core.create_namespaced_config_map, caller.namespace, body)
            return
        except KubeApiError as exc:
            if not exc.already_exists:
                raise
        try:
            await caller.call(core.replace_namespaced_config_map, name, caller.namespace, body)
            return
        except KubeApiError as exc:
            if not exc.not_found:  # deleted since: create it again
                raise
    raise AdapterError(
        f"ConfigMap {name} ({what}) in namespace {caller.namespace} kept appearing and "
        "disappearing while it was written; write it again",
        retryable=True,
    )


async def delete_config_map(
    caller: KubeCaller, name: str, *, resource_version: str | None = None
) -> bool:
    """Delete ConfigMap ``name``; with ``resource_version``, only if it is still at
    that version. ``False`` when it was missing or had changed (nothing deleted)."""
    body = None
    if resource_version is not None:
        body = {"preconditions": {"resourceVersion": resource_version}}
    try:
        await caller.call(
            caller.core.delete_namespaced_config_map, name, caller.namespace, body=body
        )
    except KubeApiError as exc:
        if exc.not_found or exc.conflict:
            return False
        raise
    return True


async def list_config_maps(
    caller: KubeCaller,
    selector: str,
    *,
    page_size: int,
    limit: int | None = None,
    keep: Callable[[Any], bool] = lambda _: True,
) -> list[Any]:
    """Every ConfigMap of the namespace that ``selector`` matches (and ``keep``
    accepts), following ``continue`` tokens page after page; at most ``limit``."""
    found: list[Any] = []
    token: str | None = None
    while True:
        page = await caller.call(
            caller.core.list_namespaced_config_map,
            caller.namespace,
            label_selector=selector,
            limit=page_size,
            _continue=token,
        )
        found += [item for item in page.items or [] if keep(item)]
        if limit is not None and len(found) >= limit:
            return found[:limit]
        token = page.metadata.var_continue if page.metadata else None
        if not token:
            return found


def _expired(obj: Any, today: date) -> bool:
    """Whether the record ``obj``'s ``expires-on`` day is before ``today``."""
    try:
        return date.fromisoformat(labels_of(obj).get(EXPIRES_ON, "")) < today
    except ValueError:
        return False


async def delete_expired_jobs(
    caller: KubeCaller, *, today: date, retention_days: int, page_size: int, limit: int
) -> int:
    """Delete up to ``limit`` job records whose ``expires-on`` day is before ``today``;
    returns how many were deleted.

    The selector asks for days outside the window from ``today`` to ``retention_days``
    ahead, which only expired records have (or records written under a longer
    retention: their day is checked here before anything goes), so the API server
    returns little more than what is to go. Each delete is conditional on the version
    listed: a record rewritten since is left alone."""
    window = ",".join((today + timedelta(days=d)).isoformat() for d in range(retention_days + 1))
    selector = names.selector(component_labels(JOB_RECORD))
    selector += f",{EXPIRES_ON},{EXPIRES_ON} notin ({window})"
    expired = await list_config_maps(
        caller, selector, page_size=page_size, limit=limit, keep=lambda o: _expired(o, today)
    )
    deleted = 0
    for obj in expired:
        version = obj.metadata.resource_version
        if await delete_config_map(caller, obj.metadata.name, resource_version=version):
            deleted += 1
    return deleted
