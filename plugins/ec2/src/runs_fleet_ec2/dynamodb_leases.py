"""Leases on the DynamoDB locks table: who leads, decided by compare-and-set.

A lease is one locks-table item (``kind`` = ``lease``) holding ``owner``, a fencing
``token`` and ``expires_us``. Taking it reads the item, decides, then writes on
condition that the item is still as read; renewing and releasing are conditional on
owner and token being the stored ones. The item survives releases (only owner and
expiry go), so the next holding stores token + 1 and tokens only grow: a replica that
lost its lease unawares is fenced off by its smaller token.

These are functions of the caller and the table rather than methods, so that
:class:`~runs_fleet_ec2.dynamodb.DynamoDBStateStore` stays about jobs, assignments and
pools and hands its lease methods here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import attrs

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.domain.lease import Lease
from runs_fleet_core.errors import AdapterError
from runs_fleet_ec2.dynamodb_items import (
    LEASE,
    epoch_us,
    failed_condition,
    lock_key,
    number_attr,
    string_attr,
)

_LEASE_ATTEMPTS = 3


async def acquire_lease(
    caller: AwsCaller, table: str, name: str, owner: str, ttl_s: float, now: datetime
) -> Lease | None:
    """Take lease ``name`` in ``table`` for ``owner`` if free, expired (by ``now``) or
    already ``owner``'s (which extends it, same token); ``None`` while another holds it.

    Read the lease item strongly consistently, decide, then write on condition that the
    item is still as read (compare-and-set on owner and token). A new holding stores
    token + 1. A lost race is decided again from a fresh read, a few times at most.
    """
    expires_us = epoch_us(now + timedelta(seconds=ttl_s))
    for _ in range(_LEASE_ATTEMPTS):
        answer = await caller.call(
            "dynamodb", "get_item", TableName=table, Key=lock_key(LEASE, name), ConsistentRead=True
        )
        current: dict[str, Any] | None = answer.get("Item")
        decision = _lease_decision(current, owner, epoch_us(now))
        if decision is None:
            return None
        token, condition = decision
        item = {
            **lock_key(LEASE, name),
            "owner": string_attr(owner),
            "token": number_attr(token),
            "expires_us": number_attr(expires_us),
        }
        try:
            await caller.call("dynamodb", "put_item", TableName=table, Item=item, **condition)
        except AdapterError as exc:
            if failed_condition(exc) is None:
                raise
            continue
        return Lease(name=name, owner=owner, token=token, expires_at=now + timedelta(seconds=ttl_s))
    return None


async def renew_lease(
    caller: AwsCaller, table: str, lease: Lease, ttl_s: float, now: datetime
) -> Lease | None:
    """Move the expiry of ``lease`` to ``now + ttl_s`` on condition that owner and
    token are still the stored ones (even past the expiry, as long as nobody took
    it); ``None`` if it was lost or released."""
    expires_at = now + timedelta(seconds=ttl_s)
    try:
        await caller.call(
            "dynamodb",
            "update_item",
            TableName=table,
            Key=lock_key(LEASE, lease.name),
            UpdateExpression="SET #expires = :expires",
            **_held_by(lease.owner, lease.token, {":expires": number_attr(epoch_us(expires_at))}),
        )
    except AdapterError as exc:
        if failed_condition(exc) is None:
            raise
        return None
    return attrs.evolve(lease, expires_at=expires_at)


async def release_lease(caller: AwsCaller, table: str, lease: Lease) -> None:
    """Remove owner and expiry if ``lease`` is still the current holding (the token
    stays, so the next holding gets a larger one); else do nothing."""
    try:
        await caller.call(
            "dynamodb",
            "update_item",
            TableName=table,
            Key=lock_key(LEASE, lease.name),
            UpdateExpression="REMOVE #owner, #expires",
            **_held_by(lease.owner, lease.token, {}),
        )
    except AdapterError as exc:
        if failed_condition(exc) is None:
            raise


def _lease_decision(
    current: dict[str, Any] | None, owner: str, now_us: int
) -> tuple[int, dict[str, Any]] | None:
    """For the lease item ``current``: ``None`` when another owner holds it, else the
    token to write and the condition that the item is still as read."""
    if current is None:
        return 1, {
            "ConditionExpression": "attribute_not_exists(#kind)",
            "ExpressionAttributeNames": {"#kind": "kind"},
        }
    token = int(current["token"]["N"])
    holder = current.get("owner", {}).get("S")
    if holder is not None and now_us < int(current["expires_us"]["N"]):
        if holder != owner:
            return None
        return token, _held_by(owner, token)  # the holder extends its lease
    return token + 1, {  # free or expired: a new holding
        "ConditionExpression": "#token = :token AND "
        "(attribute_not_exists(#owner) OR #expires <= :now)",
        "ExpressionAttributeNames": {
            "#token": "token",
            "#owner": "owner",
            "#expires": "expires_us",
        },
        "ExpressionAttributeValues": {":token": number_attr(token), ":now": number_attr(now_us)},
    }


def _held_by(owner: str, token: int, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The condition "``owner`` and ``token`` are the stored ones"; with ``values``, for
    an UpdateItem whose expression also uses ``#expires`` and those values."""
    names = {"#owner": "owner", "#token": "token"}
    if values is not None:
        names["#expires"] = "expires_us"
    return {
        "ConditionExpression": "#owner = :owner AND #token = :token",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": {
            ":owner": string_attr(owner),
            ":token": number_attr(token),
            **(values or {}),
        },
    }
