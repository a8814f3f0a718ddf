"""Leases as ``coordination.k8s.io/v1`` Lease objects: who leads, decided by the API server.

A lease ``name`` is the Lease ``runs-fleet-<name>``. Its spec says who holds it
(``holderIdentity``), since when (``acquireTime``), when it was last renewed
(``renewTime``) and for how long (``leaseDurationSeconds``), as Kubernetes' own leader
election writes them, so ``kubectl get lease`` shows runs-fleet's leaders like any
other. The fencing token is ``leaseTransitions``: it grows by one with every new
holding and stays on release, so a replica that lost its lease unawares is fenced off
by its smaller token.

Every write is a replace at the ``resourceVersion`` just read; the API server refuses it
(409 Conflict) when someone wrote in between, and the decision is then made again from
a fresh read. Times are the caller's ``now`` (the injected clock), never this host's.
``leaseDurationSeconds`` is whole seconds, so a fractional TTL is rounded *up* in the
object while the returned :class:`Lease` expires at exactly ``now + ttl``: the holder
gives up no later than the others consider the lease free.

The Lease outlives releases: deleting it by hand would start its tokens again at 1, so
leave runs-fleet's Leases to runs-fleet.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from runs_fleet_core.domain.lease import Lease
from runs_fleet_k8s import names
from runs_fleet_k8s.client import KubeApiError, KubeCaller

COMPONENT = "lease"
_ATTEMPTS = 5


class MicroTime(datetime):
    """A datetime that the client serialises as Kubernetes' ``MicroTime``
    (``2026-01-05T09:00:00.000000Z``). A plain datetime goes out through ``isoformat()``,
    which drops the fraction when it is zero and writes ``+00:00``: the API server
    parses MicroTime with exactly six fraction digits and would refuse that."""

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return self.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def micro_time(moment: datetime) -> MicroTime:
    """``moment`` (naive values count as UTC) as a :class:`MicroTime`."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    aware = aware.astimezone(UTC)
    return MicroTime(
        aware.year,
        aware.month,
        aware.day,
        aware.hour,
        aware.minute,
        aware.second,
        aware.microsecond,
        tzinfo=UTC,
    )


def lease_object_name(name: str) -> str:
    """The Lease that holds lease ``name``."""
    return names.dns_label(f"runs-fleet-{name}", max_length=253)


def duration_s(ttl_s: float) -> int:
    """``leaseDurationSeconds`` for ``ttl_s``: rounded up to whole seconds."""
    if not ttl_s > 0:
        raise ValueError(f"a lease's TTL must be positive, not {ttl_s}")
    return max(1, math.ceil(ttl_s))


@attrs.frozen(kw_only=True)
class _Stored:
    """A Lease as read: its holding and the version to write against."""

    holder: str | None
    token: int
    acquired: datetime | None
    renewed: datetime | None
    duration_s: int | None
    resource_version: str

    def held_at(self, now: datetime) -> bool:
        if not self.holder or self.renewed is None or self.duration_s is None:
            return False
        return now < self.renewed + timedelta(seconds=self.duration_s)


def _stored(obj: Any) -> _Stored:
    spec = obj.spec
    return _Stored(
        holder=getattr(spec, "holder_identity", None) if spec else None,
        token=int(getattr(spec, "lease_transitions", None) or 0) if spec else 0,
        acquired=_aware(getattr(spec, "acquire_time", None) if spec else None),
        renewed=_aware(getattr(spec, "renew_time", None) if spec else None),
        duration_s=getattr(spec, "lease_duration_seconds", None) if spec else None,
        resource_version=str(obj.metadata.resource_version),
    )


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _body(
    caller: KubeCaller,
    name: str,
    spec: dict[str, Any],
    resource_version: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": lease_object_name(name),
        "namespace": caller.namespace,
        "labels": {names.MANAGED_BY: names.MANAGER, names.COMPONENT: COMPONENT},
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    }


def _holding(owner: str, token: int, acquired: datetime, now: datetime, seconds: int) -> Any:
    return {
        "holderIdentity": owner,
        "leaseTransitions": token,
        "acquireTime": micro_time(acquired),
        "renewTime": micro_time(now),
        "leaseDurationSeconds": seconds,
    }


async def _read(caller: KubeCaller, name: str) -> _Stored | None:
    try:
        obj = await caller.call(
            caller.coordination.read_namespaced_lease, lease_object_name(name), caller.namespace
        )
    except KubeApiError as exc:
        if exc.not_found:
            return None
        raise
    return _stored(obj)


async def _replace(caller: KubeCaller, name: str, body: dict[str, Any]) -> bool:
    """Replace the Lease at the version in ``body``: ``False`` when it changed or went
    away since (decide again), ``True`` when written."""
    try:
        await caller.call(
            caller.coordination.replace_namespaced_lease,
            lease_object_name(name),
            caller.namespace,
            body,
        )
    except KubeApiError as exc:
        if exc.conflict or exc.not_found:
            return False
        raise
    return True


async def acquire_lease(
    caller: KubeCaller, name: str, owner: str, ttl_s: float, now: datetime
) -> Lease | None:
    """Take lease ``name`` for ``owner`` if it is free, expired (by ``now``) or already
    ``owner``'s (which extends it, same token); ``None`` while another owner holds it.

    A missing Lease is created with token 1 (``AlreadyExists``: someone was faster,
    decide again); an existing one is replaced at the version read, a new holding
    storing token + 1. After a few lost races in a row, it is someone else's: ``None``.
    """
    seconds = duration_s(ttl_s)  # a bad TTL is refused before any request
    expires_at = now + timedelta(seconds=ttl_s)
    for _ in range(_ATTEMPTS):
        current = await _read(caller, name)
        if current is None:
            body = _body(caller, name, _holding(owner, 1, now, now, seconds))
            try:
                await caller.call(
                    caller.coordination.create_namespaced_lease, caller.namespace, body
                )
            except KubeApiError as exc:
                if exc.already_exists:
                    continue
                raise
            return Lease(name=name, owner=owner, token=1, expires_at=expires_at)
        if current.held_at(now):
            if current.holder != owner:
                return None
            token, acquired = current.token, current.acquired or now  # the holder extends
        else:
            token, acquired = current.token + 1, now  # free or expired: a new holding
        spec = _holding(owner, token, acquired, now, seconds)
        if await _replace(caller, name, _body(caller, name, spec, current.resource_version)):
            return Lease(name=name, owner=owner, token=token, expires_at=expires_at)
    return None


async def renew_lease(
    caller: KubeCaller, lease: Lease, ttl_s: float, now: datetime
) -> Lease | None:
    """Move the expiry of ``lease`` to ``now + ttl_s`` while its owner and token are
    still the stored ones (even past the expiry, as long as nobody took it); ``None`` if
    it was lost or released."""
    seconds = duration_s(ttl_s)
    for _ in range(_ATTEMPTS):
        current = await _read(caller, lease.name)
        if current is None or (current.holder, current.token) != (lease.owner, lease.token):
            return None
        spec = _holding(lease.owner, lease.token, current.acquired or now, now, seconds)
        if await _replace(
            caller, lease.name, _body(caller, lease.name, spec, current.resource_version)
        ):
            return attrs.evolve(lease, expires_at=now + timedelta(seconds=ttl_s))
    return None


async def release_lease(caller: KubeCaller, lease: Lease) -> None:
    """Clear the holder if ``lease`` is still the current holding; else do nothing. The
    Lease stays with its ``leaseTransitions``, so the next holding gets a larger token."""
    for _ in range(_ATTEMPTS):
        current = await _read(caller, lease.name)
        if current is None or (current.holder, current.token) != (lease.owner, lease.token):
            return
        spec = {"leaseTransitions": lease.token}
        if await _replace(
            caller, lease.name, _body(caller, lease.name, spec, current.resource_version)
        ):
            return
