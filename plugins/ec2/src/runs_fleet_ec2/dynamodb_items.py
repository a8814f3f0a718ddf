"""How the DynamoDB state store spells its items, and how it reads a lost conditional write.

The store (:mod:`runs_fleet_ec2.dynamodb`) and its leases
(:mod:`runs_fleet_ec2.dynamodb_leases`) write the same locks table and decide races the
same way, so the pieces both need live here once: typed attribute values, the key of a
locks-table item, timestamps as integers a condition can compare, and telling "the
condition failed, here is the item that won" apart from any other failure.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from runs_fleet_aws.calls import error_code
from runs_fleet_core.errors import AdapterError

CONDITION_FAILED = "ConditionalCheckFailedException"
RUNNER = "runner"
"""The locks-table ``kind`` of a runner assignment."""
LEASE = "lease"
"""The locks-table ``kind`` of a lease."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def string_attr(value: str) -> dict[str, str]:
    """``value`` as a DynamoDB string attribute."""
    return {"S": value}


def number_attr(value: int) -> dict[str, str]:
    """``value`` as a DynamoDB number attribute."""
    return {"N": str(value)}


def lock_key(kind: str, name: str) -> dict[str, Any]:
    """The key of the locks-table item ``name`` of ``kind`` (:data:`RUNNER`, :data:`LEASE`)."""
    return {"kind": string_attr(kind), "name": string_attr(name)}


def epoch_us(moment: datetime) -> int:
    """``moment`` as whole microseconds since the epoch (naive values count as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def failed_condition(exc: AdapterError) -> dict[str, Any] | None:
    """The item a conditional write lost against (``{}`` when there was none), or
    ``None`` when ``exc`` is some other failure."""
    cause = exc.__cause__
    if cause is None or error_code(cause) != CONDITION_FAILED:
        return None
    item: dict[str, Any] = getattr(cause, "response", {}).get("Item", {})
    return item
