"""The spot circuit breaker: stop asking for spot where it keeps being taken back.

When spot capacity of one instance family in one availability zone is being reclaimed,
every new spot runner there is likely to be interrupted too, and each interruption
costs a job its progress and a requeue. After ``threshold`` interruptions of a family
in a zone within ``window_s`` the breaker for that pair opens: the provider stops
offering that family in that zone to spot requests (and asks for on-demand when nothing
is left) until ``cooldown_s`` have passed.

The state lives in DynamoDB, one item per ``<family>#<zone>``, so every orchestrator
replica sees the same breaker. Each item keeps the recent interruption times and when
the breaker last opened; writes are conditional on a version number, so two replicas
recording interruptions at once never lose one. Items carry an ``expires_at`` epoch
time after which they are irrelevant, ready for a DynamoDB TTL on that attribute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import attrs

from runs_fleet_aws.calls import AwsCaller, error_code
from runs_fleet_core.errors import AdapterError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.settings import Kind, Setting

_log = logging.getLogger(__name__)

TABLE = "RUNS_FLEET_CIRCUIT_BREAKER_TABLE"
THRESHOLD = "RUNS_FLEET_CIRCUIT_BREAKER_THRESHOLD"
WINDOW = "RUNS_FLEET_CIRCUIT_BREAKER_WINDOW_S"
COOLDOWN = "RUNS_FLEET_CIRCUIT_BREAKER_COOLDOWN_S"

DEFAULT_TABLE = "runs-fleet-circuit-state"
DEFAULT_THRESHOLD = 3
DEFAULT_WINDOW_S = 900.0
DEFAULT_COOLDOWN_S = 1800.0

SETTINGS = (
    Setting(
        name=TABLE,
        help="DynamoDB table of the spot circuit breaker (hash key 'key', a string)",
        default=DEFAULT_TABLE,
    ),
    Setting(
        name=THRESHOLD,
        help="spot interruptions of one instance family in one availability zone, within "
        "RUNS_FLEET_CIRCUIT_BREAKER_WINDOW_S, after which runners there launch on-demand",
        kind=Kind.INT,
        default=DEFAULT_THRESHOLD,
        minimum=1,
    ),
    Setting(
        name=WINDOW,
        help="seconds within which spot interruptions count towards opening the breaker",
        kind=Kind.FLOAT,
        default=DEFAULT_WINDOW_S,
        minimum=1,
    ),
    Setting(
        name=COOLDOWN,
        help="seconds an open spot breaker keeps a family and zone on on-demand",
        kind=Kind.FLOAT,
        default=DEFAULT_COOLDOWN_S,
        minimum=1,
    ),
)

TABLE_KEY = "key"
"""The table's hash key (a string, ``<family>#<zone>``)."""
TTL_ATTRIBUTE = "expires_at"
"""Epoch seconds after which an item no longer matters (enable DynamoDB TTL on it)."""

TABLE_PARAMS: Mapping[str, Any] = {
    "AttributeDefinitions": [{"AttributeName": TABLE_KEY, "AttributeType": "S"}],
    "KeySchema": [{"AttributeName": TABLE_KEY, "KeyType": "HASH"}],
    "BillingMode": "PAY_PER_REQUEST",
}
"""``dynamodb.create_table`` parameters of the breaker table, all but ``TableName``."""

MAX_WRITE_ATTEMPTS = 8
BATCH_GET_LIMIT = 100


def breaker_key(family: str, zone: str) -> str:
    """The item key of one family in one availability zone."""
    return f"{family}#{zone}"


@attrs.frozen(kw_only=True)
class BreakerState:
    """One family-and-zone's recent interruptions (epoch seconds, oldest first) and
    when its breaker last opened; ``version`` guards concurrent writes."""

    interruptions: tuple[float, ...] = ()
    opened_at: float | None = None
    version: int = 0

    def is_open(self, now: float, cooldown_s: float) -> bool:
        """Whether the breaker is open at ``now``."""
        return self.opened_at is not None and now < self.opened_at + cooldown_s

    def with_interruption(self, now: float, threshold: int, window_s: float) -> BreakerState:
        """This state after one more interruption at ``now``: times outside the window
        dropped; at ``threshold`` it opens (again) and counting starts over."""
        recent = (*(t for t in self.interruptions if t > now - window_s), now)
        if len(recent) >= threshold:
            return BreakerState(opened_at=now, version=self.version + 1)
        return attrs.evolve(self, interruptions=recent, version=self.version + 1)

    @classmethod
    def from_item(cls, item: Mapping[str, Any] | None) -> BreakerState:
        if not item:
            return cls()
        times = tuple(float(v["N"]) for v in item.get("interruptions", {}).get("L", []))
        opened = item.get("opened_at", {}).get("N")
        return cls(
            interruptions=times,
            opened_at=None if opened is None else float(opened),
            version=int(item.get("version", {}).get("N", "0")),
        )

    def to_item(self, key: str, expires_at: float) -> dict[str, Any]:
        item: dict[str, Any] = {
            TABLE_KEY: {"S": key},
            "interruptions": {"L": [{"N": _number(t)} for t in self.interruptions]},
            "version": {"N": str(self.version)},
            TTL_ATTRIBUTE: {"N": str(int(expires_at))},
        }
        if self.opened_at is not None:
            item["opened_at"] = {"N": _number(self.opened_at)}
        return item


def _number(value: float) -> str:
    return f"{value:.3f}"


class SpotCircuitBreaker:
    """The breaker over one DynamoDB table, shared by every replica."""

    def __init__(
        self,
        caller: AwsCaller,
        *,
        table: str = DEFAULT_TABLE,
        threshold: int = DEFAULT_THRESHOLD,
        window_s: float = DEFAULT_WINDOW_S,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
    ) -> None:
        self._caller = caller
        self.table = table
        self.threshold = threshold
        self.window_s = window_s
        self.cooldown_s = cooldown_s

    async def record_interruption(self, family: str, zone: str, now: datetime) -> bool:
        """Count a spot interruption of ``family`` in ``zone``; whether the breaker is
        open afterwards. Concurrent callers each get their interruption counted."""
        key = breaker_key(family, zone)
        at = now.timestamp()
        expires = at + max(self.window_s, self.cooldown_s) + 3600
        for _ in range(MAX_WRITE_ATTEMPTS):
            current = await self._read(key)
            updated = current.with_interruption(at, self.threshold, self.window_s)
            try:
                await self._caller.call(
                    "dynamodb",
                    "put_item",
                    TableName=self.table,
                    Item=updated.to_item(key, expires),
                    **_unchanged(current),
                )
            except AdapterError as exc:
                cause = exc.__cause__
                if cause is not None and error_code(cause) == "ConditionalCheckFailedException":
                    continue
                raise
            if updated.opened_at == at:
                _log.warning(
                    "spot breaker opened for %s in %s: %d interruptions within %.0f s; "
                    "spot requests avoid it for %.0f s",
                    family,
                    zone,
                    self.threshold,
                    self.window_s,
                    self.cooldown_s,
                )
            return updated.is_open(at, self.cooldown_s)
        raise AdapterError(
            f"spot breaker {key} in table {self.table}: {MAX_WRITE_ATTEMPTS} concurrent "
            "updates in a row lost the race; the interruption was not counted",
            retryable=True,
        )

    async def is_open(self, family: str, zone: str, now: datetime) -> bool:
        """Whether spot requests should avoid ``family`` in ``zone`` at ``now``."""
        return (await self.open_pairs([(family, zone)], now)) == {(family, zone)}

    async def open_pairs(
        self, pairs: Iterable[tuple[str, str]], now: datetime
    ) -> set[tuple[str, str]]:
        """The (family, zone) pairs among ``pairs`` whose breaker is open at ``now``,
        read in as few calls as DynamoDB allows."""
        wanted = {breaker_key(family, zone): (family, zone) for family, zone in pairs}
        keys = sorted(wanted)
        found: dict[str, BreakerState] = {}
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            found |= await self._read_many(keys[start : start + BATCH_GET_LIMIT])
        at = now.timestamp()
        return {wanted[key] for key, state in found.items() if state.is_open(at, self.cooldown_s)}

    async def _read(self, key: str) -> BreakerState:
        response = await self._caller.call(
            "dynamodb",
            "get_item",
            TableName=self.table,
            Key={TABLE_KEY: {"S": key}},
            ConsistentRead=True,
        )
        return BreakerState.from_item(response.get("Item"))

    async def _read_many(self, keys: list[str]) -> dict[str, BreakerState]:
        found: dict[str, BreakerState] = {}
        request: dict[str, Any] = {self.table: {"Keys": [{TABLE_KEY: {"S": key}} for key in keys]}}
        for attempt in range(MAX_WRITE_ATTEMPTS):
            if attempt:  # DynamoDB left keys unread under load: back off before asking again
                await asyncio.sleep(0.05 * 2**attempt)
            response = await self._caller.call("dynamodb", "batch_get_item", RequestItems=request)
            for item in response.get("Responses", {}).get(self.table, []):
                found[item[TABLE_KEY]["S"]] = BreakerState.from_item(item)
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            _log.warning("spot breaker: some keys of %s stayed unread; treated as closed", keys)
        return found


def _unchanged(current: BreakerState) -> dict[str, Any]:
    """The condition that the item is still as read: absent, or at the same version."""
    if current.version == 0:
        return {
            "ConditionExpression": "attribute_not_exists(#k)",
            "ExpressionAttributeNames": {"#k": TABLE_KEY},
        }
    return {
        "ConditionExpression": "#v = :v",
        "ExpressionAttributeNames": {"#v": "version"},
        "ExpressionAttributeValues": {":v": {"N": str(current.version)}},
    }


def from_context(context: AdapterContext, caller: AwsCaller) -> SpotCircuitBreaker:
    """The breaker of the deployment's settings."""
    settings = context.settings
    return SpotCircuitBreaker(
        caller,
        table=str(settings.get(TABLE, DEFAULT_TABLE)),
        threshold=int(settings.get(THRESHOLD, DEFAULT_THRESHOLD)),
        window_s=float(settings.get(WINDOW, DEFAULT_WINDOW_S)),
        cooldown_s=float(settings.get(COOLDOWN, DEFAULT_COOLDOWN_S)),
    )
