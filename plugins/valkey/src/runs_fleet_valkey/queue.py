"""The job queue on Valkey Streams: at-least-once delivery shared by every replica.

Why Streams: a consumer group gives each entry to one consumer and remembers it in a
pending list with a delivery counter until it is acknowledged, so a dispatcher that
dies mid-job does not lose the message: after the visibility timeout another one
takes it over (``XAUTOCLAIM``) and sees the attempt number go up. The lesson this
adapter exists for: a consumer that never looks at its pending list strands failed
entries there forever, so every ``receive`` reclaims idle entries first and counts
deliveries, and a message out of attempts goes to a dead-letter stream, not round again.

Layout (``name`` defaults to ``runs-fleet:jobs``): the stream ``name`` with the consumer
group ``runs-fleet``; ``name:dead``, the dead-letter stream (kept until a person deals
with it); ``name:delayed``, a sorted set of retries scored by due time; and one key
``name:dedup:<dedup id>`` per message queued or in flight. The Lua scripts that decide
each step atomically, and the exact entry format, are in
:mod:`runs_fleet_valkey.queue_scripts`; listing, redriving and purging dead letters in
:mod:`runs_fleet_valkey.deadletters`.

Retries: ``retry(delivery, delay)`` acknowledges and deletes the stream entry and parks
the message in the sorted set with its attempt count; ``receive`` moves due ones back
into the stream as new entries that remember the count. Time is the server's clock
throughout (idle times and due times), so replicas with skewed clocks agree.

Bounds: ``XADD ... MAXLEN ~ max_length`` caps the stream. Acked entries are deleted, so
the stream only holds queued and in-flight messages and the cap is reached only by a
backlog that large; beyond it the oldest entries are trimmed, even undelivered ones.
Keep ``max_length`` far above any backlog you expect. Dedup keys expire after
``dedup_ttl_s`` as a safety net against keys orphaned by a trim.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from runs_fleet_core.converters import dumps, loads, make_message_converter
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.ports.queue import DeadLetter, Delivery, Redriven
from runs_fleet_valkey import queue_scripts
from runs_fleet_valkey.client import backend_errors, connect, server_address
from runs_fleet_valkey.deadletters import DeadLetterStream
from runs_fleet_valkey.holds import Holds

T = TypeVar("T")
_log = logging.getLogger(__name__)

DEFAULT_NAME = "runs-fleet:jobs"
DEFAULT_GROUP = "runs-fleet"
DEFAULT_MAX_LENGTH = 100_000
DEFAULT_DEDUP_TTL_S = 86_400.0
DEFAULT_VISIBILITY_TIMEOUT_S = 60.0
DEFAULT_MAX_HOLD_S = 900.0
_BLOCK_SLICE_S = 1.0
"""Longest single blocking read: between reads, due retries and idle entries are looked at."""

ScriptArg = str | int | float
Raw = tuple[str, str, int, int]
"""(entry id, payload, attempt, delivery counter) of one delivery, as the scripts return it."""


def default_consumer_name() -> str:
    """A consumer name unique to this adapter instance: host, process and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _parse_receipt(receipt: str) -> tuple[str, int]:
    entry_id, sep, counter = receipt.rpartition("/")
    if not sep or not entry_id or not counter.isdigit():
        raise ValueError(f"{receipt!r} is not a receipt of a Valkey queue")
    return entry_id, int(counter)


def _entries(reply: Any, stream: str) -> list[tuple[str, dict[str, str]]]:
    """The (id, fields) pairs of ``stream`` in an XREADGROUP reply (RESP2 or RESP3 shape)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        items = reply.get(stream) or []
        if items and isinstance(items[0], list):
            items = items[0]
    else:
        items = next((entries for name, entries in reply if name == stream), [])
    return [(entry_id, dict(fields)) for entry_id, fields in items]


class ValkeyQueue:
    """The :class:`~runs_fleet_core.ports.Queue` port on a Valkey stream.

    ``client`` is owned by the queue (:meth:`aclose` closes it); build both with
    :meth:`from_url`. ``consumer`` names this instance in the consumer group and must
    be unique per live instance (the default is). A message whose next delivery would
    exceed ``max_attempts`` is dead-lettered with the reason ``"exceeded N attempts"``.
    """

    def __init__(
        self,
        client: Redis,
        *,
        name: str = DEFAULT_NAME,
        max_attempts: int = 3,
        visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S,
        max_hold_s: float = DEFAULT_MAX_HOLD_S,
        max_length: int = DEFAULT_MAX_LENGTH,
        dedup_ttl_s: float = DEFAULT_DEDUP_TTL_S,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if visibility_timeout_s < 0.01:
            raise ValueError(f"visibility_timeout_s must be positive, got {visibility_timeout_s}")
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        if dedup_ttl_s < visibility_timeout_s:
            raise ValueError("dedup_ttl_s must be at least the visibility timeout")
        if not name:
            raise ValueError("the queue name must not be empty")
        self._client = client
        self.name = name
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self.max_attempts = max_attempts
        self.visibility_timeout_s = visibility_timeout_s
        self.max_length = max_length
        self._dedup_ttl_ms = int(dedup_ttl_s * 1000)
        self._server = server_address(client)
        self._keys = [name, f"{name}:delayed", f"{name}:dead"]
        self._dedup_prefix = f"{name}:dedup:"
        self._reason = f"exceeded {max_attempts} attempts"
        self._converter = make_message_converter()
        self._group_ready = False
        self._send = client.register_script(queue_scripts.SEND)
        self._take = client.register_script(queue_scripts.TAKE)
        self._ack = client.register_script(queue_scripts.ACK)
        self._retry = client.register_script(queue_scripts.RETRY)
        self._bury = client.register_script(queue_scripts.DEAD_LETTER)
        self._forget = client.register_script(queue_scripts.FORGET_CONSUMER)
        self._holds = Holds(
            client,
            stream=name,
            group=group,
            consumer=self.consumer,
            visibility_timeout_s=visibility_timeout_s,
            max_hold_s=max(max_hold_s, visibility_timeout_s),
        )
        self._dead = DeadLetterStream(
            client,
            stream=name,
            dead=self._keys[2],
            dedup_prefix=self._dedup_prefix,
            max_length=max_length,
            dedup_ttl_ms=self._dedup_ttl_ms,
            converter=self._converter,
        )

    @classmethod
    def from_url(cls, url: str, *, socket_timeout_s: float = 10.0, **options: Any) -> ValkeyQueue:
        """A queue on the server at ``url`` (see :func:`runs_fleet_valkey.client.connect`);
        ``options`` are the constructor's keyword arguments. Connects on first use."""
        return cls(connect(url, socket_timeout_s=socket_timeout_s), **options)

    @property
    def dead_letter_stream(self) -> str:
        """The key of the dead-letter stream."""
        return self._keys[2]

    async def aclose(self) -> None:
        """Leave the consumer group if this instance holds no delivery, then close the
        client's connections."""
        await self._holds.aclose()
        try:
            await self._forget(keys=[self.name], args=[self.group, self.consumer])
        except redis_errors.RedisError as exc:
            _log.debug("could not remove consumer %s: %s", self.consumer, exc)
        await self._client.aclose()

    async def send(self, message: JobMessage) -> None:
        """Add ``message`` to the stream, unless one with its ``dedup_id`` is queued or
        in flight (checked and written in one script)."""
        keys, args = self.send_arguments(message)
        with backend_errors("send"):
            await self._send(keys=keys, args=args)

    def send_arguments(self, message: JobMessage) -> tuple[list[str], list[str | int]]:
        """The keys and arguments of ``send`` in
        :data:`~runs_fleet_valkey.queue_scripts.SEND_FUNCTION`, for a script that sends
        atomically with another write (the state store's outbox)."""
        payload = dumps(self._converter, message)
        keys = [self.name, self._dedup_prefix + message.dedup_id]
        return keys, [payload, message.dedup_id, self.max_length, self._dedup_ttl_ms]

    @property
    def server(self) -> tuple[object, ...]:
        """Where this queue lives (host, port, database, socket path): two adapters on
        the same server may write together in one script."""
        return self._server

    async def receive(self, max_messages: int, wait_s: float) -> Sequence[Delivery]:
        """Due retries, then entries idle past the visibility timeout, then new entries;
        waits up to ``wait_s`` (in blocking reads of at most a second) for the first."""
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_s, 0.0)
        with backend_errors("receive"):
            while True:
                raws = await self._grouped(lambda: self._take_now(max_messages))
                remaining = deadline - loop.time()
                if not raws and remaining > 0:
                    slice_s = min(remaining, _BLOCK_SLICE_S)
                    read = functools.partial(self._read_new, max_messages, slice_s)
                    raws = await self._grouped(read)
                deliveries = await self._deliveries(raws)
                if deliveries or deadline - loop.time() <= 0:
                    return deliveries

    async def ack(self, delivery: Delivery) -> None:
        """Remove the message if ``delivery`` is its live delivery; otherwise (acked
        already, or delivered again since) do nothing."""
        entry_id, counter = _parse_receipt(delivery.receipt)
        self._holds.release(entry_id)
        with backend_errors("ack"):
            await self._grouped(
                lambda: self._ack(
                    keys=self._keys, args=[self.group, entry_id, counter, self._dedup_prefix]
                )
            )

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """Park the message for ``delay_s`` seconds (server time), keeping its attempt
        count; dead-letter it now if its next delivery would exceed the maximum.
        A stale delivery is ignored."""
        entry_id, counter = _parse_receipt(delivery.receipt)
        self._holds.release(entry_id)
        delay_ms = int(max(delay_s, 0.0) * 1000)
        args: list[ScriptArg] = [self.group, entry_id, counter, self._dedup_prefix, delay_ms]
        with backend_errors("retry"):
            await self._grouped(
                lambda: self._retry(keys=self._keys, args=[*args, self.max_attempts, self._reason])
            )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the message to the dead-letter stream with ``reason`` and its attempts.
        A stale delivery is ignored."""
        entry_id, counter = _parse_receipt(delivery.receipt)
        self._holds.release(entry_id)
        args: list[ScriptArg] = [self.group, entry_id, counter, self._dedup_prefix, reason]
        with backend_errors("dead-letter"):
            await self._grouped(lambda: self._bury(keys=self._keys, args=args))

    async def dead_letters(self) -> Sequence[DeadLetter]:
        """The dead letters, oldest first; an entry without a readable message is listed
        with ``message=None``."""
        with backend_errors("dead-letter listing"):
            return await self._dead.listing()

    async def redrive(self, ids: Sequence[str] | None = None) -> Redriven:
        """Send dead letters back as fresh messages, each added and removed in one
        script (see :mod:`runs_fleet_valkey.deadletters`)."""
        with backend_errors("redrive"):
            return await self._dead.redrive(ids)

    async def purge(self, ids: Sequence[str]) -> Sequence[str]:
        """Delete the dead letters ``ids``; those that were there."""
        with backend_errors("dead-letter purge"):
            return await self._dead.purge(ids)

    async def _grouped(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` with the consumer group in place, creating it (again) when the
        server says it is missing (a new server, or the stream was deleted)."""
        if not self._group_ready:
            await self._create_group()
        try:
            return await call()
        except redis_errors.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._create_group()
            return await call()

    async def _create_group(self) -> None:
        try:
            await self._client.xgroup_create(self.name, self.group, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _take_now(self, max_messages: int) -> list[Raw]:
        visibility_ms = max(1, int(self.visibility_timeout_s * 1000))
        reply = await self._take(
            keys=self._keys,
            args=[
                self.group,
                self.consumer,
                visibility_ms,
                max_messages,
                self.max_attempts,
                self.max_length,
                self._dedup_prefix,
                self._reason,
            ],
        )
        return [(str(i), str(p), int(a), int(c)) for i, p, a, c in reply]

    async def _read_new(self, max_messages: int, block_s: float) -> list[Raw]:
        """Block up to ``block_s`` for new entries; each is a first delivery (counter 1)."""
        reply = await self._client.xreadgroup(
            self.group,
            self.consumer,
            {self.name: ">"},
            count=max_messages,
            block=max(1, int(block_s * 1000)),
        )
        raws: list[Raw] = []
        for entry_id, fields in _entries(reply, self.name):
            attempts = fields.get("attempts", "")
            before = int(attempts) if attempts.isdigit() else 0  # as the scripts read it
            raw = (entry_id, fields.get("payload", ""), before + 1, 1)
            if raw[2] > self.max_attempts:  # not written by this adapter, but be safe
                await self._bury(keys=self._keys, args=self._bury_args(raw, self._reason))
                continue
            raws.append(raw)
        return raws

    def _bury_args(self, raw: Raw, reason: str) -> list[ScriptArg]:
        return [self.group, raw[0], raw[3], self._dedup_prefix, reason]

    async def _deliveries(self, raws: list[Raw]) -> list[Delivery]:
        """Decode payloads; a payload that is not a message is dead-lettered, not retried."""
        deliveries = []
        for raw in raws:
            entry_id, payload, attempt, counter = raw
            try:
                message = loads(self._converter, payload, JobMessage)
            except ValueError as exc:
                reason = f"unreadable message: {exc}"
                await self._bury(keys=self._keys, args=self._bury_args(raw, reason))
                continue
            receipt = f"{entry_id}/{counter}"
            deliveries.append(Delivery(message=message, receipt=receipt, attempt=attempt))
            self._holds.hold(entry_id, counter)
        return deliveries
