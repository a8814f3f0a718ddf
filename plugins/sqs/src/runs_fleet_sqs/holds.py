"""Holding received messages: the SQS queue's visibility heartbeat.

A receive hides each message for the visibility timeout, which is how long the job of a
dispatcher that died waits before another takes it over, so it should be short; a
dispatch may take longer. While a delivery is held (not yet acked, retried or
dead-lettered), a background heartbeat extends its visibility every half timeout, for
at most the maximum hold after the receive: a slow dispatch keeps its message, a hung
one gives it up.

A hold also remembers until when SQS keeps its message hidden. A delivery whose
visibility lapsed may be in another consumer's hands, so the queue asks here before it
acks, retries or dead-letters, and does nothing with a lapsed one: the message is
delivered again and handled again, idempotently. (SQS documents that only the latest
receipt handle deletes a message, but does not promise it; checking the lapse here makes
the outcome certain within one process.)
"""

from __future__ import annotations

import asyncio
import logging
import math

import attrs

from runs_fleet_core.errors import AdapterError
from runs_fleet_core.ports.queue import Delivery
from runs_fleet_sqs.receipts import Receipts

__all__ = ["Hold", "Holds"]

# One logger for the whole adapter: operators filter on the queue's name.
_log = logging.getLogger("runs_fleet_sqs.queue")

_FORGET_AFTER_S = 3600.0


@attrs.define(eq=False)
class Hold:
    """A delivery this instance holds. Times are the event loop's, taken *before* the
    call that set them, so SQS never shows the message to others earlier than
    ``visible_until`` says."""

    job: str
    since: float
    visible_until: float
    hold_until: float
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    stopped: bool = False
    task: asyncio.Task[None] | None = None


class Holds:
    """The deliveries held by one queue, by receipt, each with its heartbeat.

    With ``max_hold_s == visibility_timeout_s`` no heartbeat runs, but lapses are still
    tracked.
    """

    def __init__(self, receipts: Receipts, visibility_timeout_s: int, max_hold_s: int) -> None:
        self._receipts = receipts
        self._visibility_timeout_s = visibility_timeout_s
        self._max_hold_s = max_hold_s
        self._holds: dict[str, Hold] = {}

    def hold(self, receipt: str, job: str, started: float) -> None:
        """Hold the delivery received (by the call that began at ``started``) with
        ``receipt``, starting its heartbeat if it may be held past one timeout."""
        hold = Hold(
            job=job,
            since=started,
            visible_until=started + self._visibility_timeout_s,
            hold_until=started + self._max_hold_s,
        )
        if hold.hold_until > hold.visible_until:
            hold.task = asyncio.create_task(self._heartbeat(receipt, hold))
        self._holds[receipt] = hold

    async def release(self, receipt: str) -> Hold | None:
        """Stop holding ``receipt``'s delivery; its hold, or ``None`` if it is not held
        here (not received by this instance, or released already)."""
        hold = self._holds.pop(receipt, None)
        if hold is not None:
            await self._stop(hold)
        return hold

    def valid(self, hold: Hold | None, delivery: Delivery, what: str) -> bool:
        """Whether ``delivery`` may still act on its message: it is not one of ours
        (then SQS judges the receipt), or its visibility has not lapsed."""
        if hold is None:
            return True
        now = asyncio.get_running_loop().time()
        if now < hold.visible_until:
            return True
        _log.info(
            "ignoring %s of job %s: the delivery lapsed %.1f s ago and another dispatcher "
            "may hold the message; it will be delivered again",
            what,
            delivery.message.job_id,
            now - hold.visible_until,
        )
        return False

    async def still_held(self, delivery: Delivery, what: str) -> bool:
        """Release ``delivery`` and say whether it may still ``what`` its message."""
        return self.valid(await self.release(delivery.receipt), delivery, what)

    def forget_lapsed(self, now: float) -> None:
        """Drop holds long lapsed (their deliveries were dropped by the consumer)."""
        for receipt, hold in list(self._holds.items()):
            if hold.visible_until + _FORGET_AFTER_S < now and (
                hold.task is None or hold.task.done()
            ):
                del self._holds[receipt]

    async def stop_all(self) -> None:
        """Stop every heartbeat and forget every hold; the messages come back after at
        most the visibility timeout."""
        holds, self._holds = list(self._holds.values()), {}
        for hold in holds:
            await self._stop(hold)

    async def _heartbeat(self, receipt: str, hold: Hold) -> None:
        """Extend the message's visibility when half of it is left, until the hold ends
        or an extension fails (then the message may be delivered again)."""
        loop = asyncio.get_running_loop()
        while hold.visible_until < hold.hold_until:
            await asyncio.sleep(hold.visible_until - self._visibility_timeout_s / 2 - loop.time())
            async with hold.lock:
                if hold.stopped:
                    return
                started = loop.time()
                timeout = min(self._visibility_timeout_s, math.ceil(hold.hold_until - started))
                try:
                    await self._receipts.change_visibility(receipt, timeout)
                except AdapterError as exc:
                    _log.warning(
                        "could not keep job %s's message hidden, so it may be delivered again: %s",
                        hold.job,
                        exc,
                    )
                    return
                if loop.time() >= hold.visible_until:
                    _log.warning(
                        "extending the visibility of job %s's message took until after it "
                        "lapsed; treating the delivery as lapsed",
                        hold.job,
                    )
                    return
                hold.visible_until = started + timeout

    async def _stop(self, hold: Hold) -> None:
        """Stop the heartbeat; an extension in flight lands before this returns, so it
        cannot overwrite what the caller does next."""
        hold.stopped = True
        if hold.task is not None and not hold.task.done():
            async with hold.lock:
                hold.task.cancel()
            await asyncio.wait([hold.task])
