"""The DynamoDB tables of the state store, as data, and how to create them.

The shapes live here once, as :class:`TableSpec` values, so that the store, the tests
and whatever provisions the tables (``ensure_table`` for a quick start, Terraform in
production) agree on them. Every table is on-demand (``PAY_PER_REQUEST``): a CI fleet's
load comes in bursts that provisioned capacity would either throttle or pay for idle.

Three tables, each named by a setting:

* **jobs** (``RUNS_FLEET_JOBS_TABLE``) — one item per job, keyed by ``job_id`` (N).
  Index ``by-status``: ``status`` (S) / ``job_id`` (N). Index ``by-pool``: ``pool`` (S) /
  ``status_job`` (S, ``<status>#<job id as 20 digits>``), so one pool's jobs in one
  status are a key-prefix query. Both indexes project ``ALL``. ``by-status`` has only
  nine key values; a fleet's job rate stays far below the 1,000 writes a second one
  index partition takes. TTL on ``expire_at``: finished jobs are deleted by DynamoDB
  after the retention period.
* **pools** (``RUNS_FLEET_POOLS_TABLE``) — one item per warm pool, keyed by ``name`` (S).
* **locks** (``RUNS_FLEET_LOCKS_TABLE``) — runner assignments and leases, keyed by
  ``kind`` (S: ``runner`` or ``lease``) / ``name`` (S: the runner id or lease name), so
  listing every assignment is a strongly consistent query of one partition. No TTL:
  a lease item keeps its fencing token across holdings, and an assignment is the busy
  signal that must not vanish on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import attrs

from runs_fleet_aws.calls import AwsCaller, error_code
from runs_fleet_core.errors import AdapterError, ConfigError
from runs_fleet_core.settings import Setting

_POLL_S = 1.0


@attrs.frozen(kw_only=True)
class Index:
    """A global secondary index projecting every attribute."""

    name: str
    hash_key: str
    range_key: str | None = None

    def key_schema(self) -> list[dict[str, str]]:
        return _key_schema(self.hash_key, self.range_key)


@attrs.frozen(kw_only=True)
class TableSpec:
    """The shape of one table: keys, the types of key attributes, indexes, TTL.

    ``attributes`` maps every attribute used as a key (of the table or an index) to
    its DynamoDB type (``S`` or ``N``); ``setting`` and ``default_name`` say how a
    deployment names the table.
    """

    role: str
    setting: str
    default_name: str
    hash_key: str
    range_key: str | None = None
    attributes: Mapping[str, str]
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str | None = None

    def key_schema(self) -> list[dict[str, str]]:
        return _key_schema(self.hash_key, self.range_key)

    def create_table_params(self, name: str) -> dict[str, Any]:
        """The ``CreateTable`` request for this shape under ``name``."""
        params: dict[str, Any] = {
            "TableName": name,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": self.key_schema(),
            "AttributeDefinitions": [
                {"AttributeName": attr, "AttributeType": kind}
                for attr, kind in sorted(self.attributes.items())
            ],
        }
        if self.indexes:
            params["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": index.name,
                    "KeySchema": index.key_schema(),
                    "Projection": {"ProjectionType": "ALL"},
                }
                for index in self.indexes
            ]
        return params


def _key_schema(hash_key: str, range_key: str | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key is not None:
        schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return schema


JOBS = TableSpec(
    role="jobs",
    setting="RUNS_FLEET_JOBS_TABLE",
    default_name="runs-fleet-jobs",
    hash_key="job_id",
    attributes={"job_id": "N", "status": "S", "pool": "S", "status_job": "S"},
    indexes=(
        Index(name="by-status", hash_key="status", range_key="job_id"),
        Index(name="by-pool", hash_key="pool", range_key="status_job"),
    ),
    ttl_attribute="expire_at",
)

POOLS = TableSpec(
    role="pools",
    setting="RUNS_FLEET_POOLS_TABLE",
    default_name="runs-fleet-pools",
    hash_key="name",
    attributes={"name": "S"},
)

LOCKS = TableSpec(
    role="locks",
    setting="RUNS_FLEET_LOCKS_TABLE",
    default_name="runs-fleet-locks",
    hash_key="kind",
    range_key="name",
    attributes={"kind": "S", "name": "S"},
)

TABLES = (JOBS, POOLS, LOCKS)

TABLE_SETTINGS: tuple[Setting, ...] = (
    Setting(
        name=JOBS.setting,
        help="DynamoDB table of job records (key job_id; indexes by-status and by-pool; "
        "TTL on expire_at)",
        default=JOBS.default_name,
    ),
    Setting(
        name=POOLS.setting,
        help="DynamoDB table of warm pool configs (key name)",
        default=POOLS.default_name,
    ),
    Setting(
        name=LOCKS.setting,
        help="DynamoDB table of runner assignments and leases (key kind + name)",
        default=LOCKS.default_name,
    ),
)
"""The table names as settings (declared with the store's in ``dynamodb.SETTINGS``)."""


async def ensure_table(
    caller: AwsCaller, spec: TableSpec, name: str, *, timeout_s: float = 300.0
) -> None:
    """Make sure table ``name`` exists with ``spec``'s shape, is ``ACTIVE`` and has TTL on.

    Creates it when missing (a concurrent creator is fine) and waits up to
    ``timeout_s`` for it and its indexes to become active. An existing table is accepted
    when its keys, key types and the spec's indexes match (extra indexes are allowed);
    otherwise ``ConfigError`` says what differs and which setting points at it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        table = await _describe(caller, name)
        if table is not None and _active(table):
            break
        if time.monotonic() > deadline:
            raise AdapterError(
                f"DynamoDB table {name!r} did not become ACTIVE within {timeout_s:.0f} s",
                retryable=True,
            )
        if table is None:
            await _create(caller, spec, name)  # then look again at once
        else:
            await asyncio.sleep(_POLL_S)
    problems = shape_problems(spec, name, table)
    if problems:
        raise ConfigError(problems)
    if spec.ttl_attribute is not None:
        await _enable_ttl(caller, spec, name, spec.ttl_attribute)


async def _describe(caller: AwsCaller, name: str) -> dict[str, Any] | None:
    try:
        answer = await caller.call("dynamodb", "describe_table", TableName=name)
    except AdapterError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    table: dict[str, Any] = answer["Table"]
    return table


async def _create(caller: AwsCaller, spec: TableSpec, name: str) -> None:
    try:
        await caller.call("dynamodb", "create_table", **spec.create_table_params(name))
    except AdapterError as exc:
        if error_code(exc) != "ResourceInUseException":  # created meanwhile
            raise


def _active(table: Mapping[str, Any]) -> bool:
    indexes = table.get("GlobalSecondaryIndexes", [])
    return table.get("TableStatus") == "ACTIVE" and all(
        index.get("IndexStatus", "ACTIVE") == "ACTIVE" for index in indexes
    )


def shape_problems(spec: TableSpec, name: str, table: Mapping[str, Any]) -> list[str]:
    """What keeps the described ``table`` from serving as ``spec``'s table (empty when
    it fits), each problem saying how to fix it."""
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    fix = (
        f"point {spec.setting} at another table (runs-fleet creates it) or recreate "
        f"{name!r} with the {spec.role} table's shape"
    )
    problems = []
    if _keys(table["KeySchema"], types) != _keys(spec.key_schema(), spec.attributes):
        problems.append(
            f"DynamoDB table {name!r} has the key {_keys(table['KeySchema'], types)}, but the "
            f"{spec.role} table needs {_keys(spec.key_schema(), spec.attributes)}: {fix}"
        )
    found = {i["IndexName"]: i["KeySchema"] for i in table.get("GlobalSecondaryIndexes", [])}
    for index in spec.indexes:
        wanted = _keys(index.key_schema(), spec.attributes)
        if index.name not in found:
            problems.append(
                f"DynamoDB table {name!r} has no global secondary index {index.name!r} "
                f"({wanted}, projecting ALL): add it, or {fix}"
            )
        elif _keys(found[index.name], types) != wanted:
            problems.append(
                f"index {index.name!r} of DynamoDB table {name!r} has the key "
                f"{_keys(found[index.name], types)}, not {wanted}: {fix}"
            )
    return problems


def _keys(schema: list[dict[str, str]], types: Mapping[str, str]) -> str:
    """A key schema as text, e.g. ``kind (S, HASH) + name (S, RANGE)``."""
    return " + ".join(
        f"{k['AttributeName']} ({types.get(k['AttributeName'], '?')}, {k['KeyType']})"
        for k in schema
    )


async def _enable_ttl(caller: AwsCaller, spec: TableSpec, name: str, attribute: str) -> None:
    answer = await caller.call("dynamodb", "describe_time_to_live", TableName=name)
    ttl = answer.get("TimeToLiveDescription", {})
    status, current = ttl.get("TimeToLiveStatus", "DISABLED"), ttl.get("AttributeName")
    if status in {"ENABLED", "ENABLING"} and current == attribute:
        return
    if status != "DISABLED":
        raise ConfigError(
            [
                f"DynamoDB table {name!r} has TTL {status.lower()} on {current!r}, but the "
                f"{spec.role} table expires items by {attribute!r}: switch its TTL to "
                f"{attribute!r} or point {spec.setting} at another table"
            ]
        )
    await caller.call(
        "dynamodb",
        "update_time_to_live",
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
    )
