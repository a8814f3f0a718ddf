"""Automatic pipelining of one Lua script's calls.

A burst of webhooks makes many concurrent calls of the same script (record a job and
queue its message). Sent one by one, each costs a socket write, a connection taken from
the pool and a wake-up for its reply; the server's work per call is tiny beside that.
:class:`ScriptBatcher` gathers the calls made during one turn of the event loop and
sends them as one pipeline (``EVALSHA`` each, not a transaction: every call stays atomic
on its own, as before), then hands each caller its own reply or error. A lone call goes
out as it would have without batching, and no call waits for more than the current loop
turn, so latency does not grow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

MAX_BATCH = 128
"""Calls sent in one pipeline at most (a bigger burst goes out in several)."""

Call = tuple[Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    """Calls of ``script`` on ``client``, pipelined per event-loop turn."""

    def __init__(self, client: Redis, script: AsyncScript, *, max_batch: int = MAX_BATCH) -> None:
        self._client = client
        self._script = script
        self._max_batch = max_batch
        self._pending: list[Call] = []
        self._scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()

    async def __call__(self, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's reply for ``keys`` and ``args``; raises what the call raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_pending)
        return await future

    def _flush_pending(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self._max_batch):
            task = asyncio.ensure_future(self._send(pending[start : start + self._max_batch]))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _send(self, calls: list[Call]) -> None:
        live = [call for call in calls if not call[2].done()]  # a caller may have given up
        try:
            if len(live) == 1:
                keys, args, future = live[0]
                _settle(future, await self._script(keys=keys, args=args))
                return
            replies = await self._pipelined(live)
            retry = []
            for call, reply in zip(live, replies, strict=True):
                if isinstance(reply, redis_errors.NoScriptError):
                    retry.append(call)  # the server lost its script cache (a restart)
                else:
                    _settle(call[2], reply)
            for keys, args, future in retry:
                _settle(future, await self._script(keys=keys, args=args))
        except BaseException as exc:  # a connection failure fails every call of the batch
            for _, _, future in live:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    async def _pipelined(self, calls: list[Call]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args, _ in calls:
                pipe.evalsha(self._script.sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _settle(future: asyncio.Future[Any], reply: Any) -> None:
    if future.done():
        return
    if isinstance(reply, BaseException):
        future.set_exception(reply)
    else:
        future.set_result(reply)
