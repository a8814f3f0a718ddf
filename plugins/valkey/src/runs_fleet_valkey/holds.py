"""Keeping received job messages hidden while their dispatch runs (the heartbeat).

A received entry waits in its consumer's pending list, and another consumer takes it
over (``XAUTOCLAIM``) once it has been idle for the visibility timeout. Without a
heartbeat that timeout must outlast the slowest dispatch, so a dispatcher that dies
(SIGKILL, a lost node) leaves its messages stuck for that long. With it, every held
delivery is renewed every third of the timeout, so the timeout can be short: a live
holder keeps its messages, a dead one loses them within the timeout.

A renewal is ``XCLAIM … JUSTID`` of the entry to its own consumer, which resets the
entry's idle time without counting a delivery. It runs in a script that first checks
that the entry is still pending for this consumer with the delivery counter of the
receipt, so a delivery another consumer took over meanwhile is never taken back. A
delivery stays hidden for at most ``max_hold_s`` after its receipt (a hung dispatch
must not hold a job forever): it is renewed only while the renewal keeps it within
that, so with ``max_hold_s`` equal to the timeout nothing is ever renewed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis import exceptions as redis_errors
from redis.asyncio import Redis

_log = logging.getLogger(__name__)

RENEW = """
local renewed = 0
for i = 3, #ARGV, 2 do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if pending[1] and tostring(pending[1][4]) == ARGV[i + 1] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    renewed = renewed + 1
  end
end
return renewed
"""
"""KEYS[1] the stream; ARGV: group, consumer, then entry id and delivery counter pairs."""


class Holds:
    """The deliveries one consumer holds, renewed in the background (see above)."""

    def __init__(
        self,
        client: Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        visibility_timeout_s: float,
        max_hold_s: float,
    ) -> None:
        if max_hold_s < visibility_timeout_s:
            raise ValueError("max_hold_s must be at least the visibility timeout")
        self.interval_s = visibility_timeout_s / 3
        self.visibility_timeout_s = visibility_timeout_s
        self.max_hold_s = max_hold_s
        self._stream = stream
        self._group = group
        self._consumer = consumer
        self._renew = client.register_script(RENEW)
        self._held: dict[str, tuple[int, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, entry_id: str, counter: int) -> None:
        """Start renewing the delivery ``entry_id``/``counter``."""
        loop = asyncio.get_running_loop()
        self._held[entry_id] = (counter, loop.time())
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._beat(), name=f"valkey-holds-{self._consumer}")

    def release(self, entry_id: str) -> None:
        """Stop renewing ``entry_id`` (acknowledged, retried or dead-lettered)."""
        self._held.pop(entry_id, None)

    async def renew(self) -> int:
        """Renew every delivery a renewal keeps within ``max_hold_s`` of its receipt;
        let the others go. Returns how many the server renewed."""
        now = asyncio.get_running_loop().time()
        for entry_id, (_, since) in list(self._held.items()):
            if now + self.visibility_timeout_s - since > self.max_hold_s:
                _log.warning(
                    "job message %s held for over %.0f s; let go so another dispatcher "
                    "takes it over",
                    entry_id,
                    self.max_hold_s,
                )
                del self._held[entry_id]
        if not self._held:
            return 0
        args: list[str | int] = [self._group, self._consumer]
        for entry_id, (counter, _) in self._held.items():
            args += [entry_id, counter]
        return int(await self._renew(keys=[self._stream], args=args))

    async def _beat(self) -> None:
        while self._held:
            await asyncio.sleep(self.interval_s)
            try:
                await self.renew()
            except (redis_errors.RedisError, OSError) as exc:
                # a renewal missed is a delivery that may come back: dispatch is idempotent
                _log.warning("job messages not renewed (next try in %.1f s): %s",
                             self.interval_s, exc)  # fmt: skip

    async def aclose(self) -> None:
        """Stop renewing; what is still held comes back after the visibility timeout."""
        self._held.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
