"""The job queue on Amazon SQS: at-least-once delivery without a server to run.

Why SQS in EC2 mode: ``send`` returns once SQS has stored the message redundantly, so
the webhook intake can answer GitHub 2xx knowing the job is safe, and every replica of
the dispatcher reads the same queue with nothing to operate.

FIFO queues (the URL ends in ``.fifo``) keep the port's promises:

* ``MessageDeduplicationId`` is the message's ``dedup_id`` (job id + attempt): SQS drops
  a second send with the same id for five minutes, so a redelivered webhook queues once;
* ``MessageGroupId`` is the job id. SQS orders and locks messages per group (a group
  with a message in flight hands out nothing else), so one group per job keeps the jobs
  of a run, and of different runs, from waiting behind each other.

Standard queues work too, without either parameter, but promise less: a duplicate send
is queued twice and SQS itself may deliver a message twice. The job claim in the state
store keeps a duplicate from starting a second runner; the cost is an extra delivery.

Attempts are SQS's ``ApproximateReceiveCount``. A message received more than
``max_attempts`` times is moved to the dead-letter queue by this adapter, with the reason
``exceeded N attempts``, instead of being delivered. The queue's ``RedrivePolicy`` is the
safety net: when SQS moves a message itself (``maxReceiveCount``), the listing reports it
as received that many times.

Visibility: a receive hides each message for ``visibility_timeout_s``, which is how long
the job of a dispatcher that died waits before another takes it over; while a delivery
is held, a heartbeat extends it, for at most ``max_hold_s`` after the receive. A delivery
whose visibility lapsed may be in another consumer's hands, so ``ack``, ``retry`` and
``dead_letter`` with it do nothing (see :mod:`runs_fleet_sqs.holds`).

This module implements the port and reads the settings. The heartbeat lives in
:mod:`runs_fleet_sqs.holds`, the dead-letter queue in :mod:`runs_fleet_sqs.deadletters`,
the calls that carry a receipt handle (never logged, cut out of errors) in
:mod:`runs_fleet_sqs.receipts`, and SQS's fixed limits in :mod:`runs_fleet_sqs.limits`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.converters import dumps, loads, make_message_converter
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.errors import AdapterError, ConfigError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports.queue import DeadLetter, Delivery, Redriven
from runs_fleet_sqs.deadletters import DeadLetterQueue
from runs_fleet_sqs.holds import Holds
from runs_fleet_sqs.limits import MAX_BATCH, MAX_VISIBILITY_S, MAX_WAIT_S
from runs_fleet_sqs.plugin import (
    DEFAULT_MAX_HOLD_S,
    DEFAULT_VISIBILITY_TIMEOUT_S,
    DLQ_URL,
    MAX_ATTEMPTS,
    MAX_HOLD,
    SETTINGS,
    VISIBILITY_TIMEOUT,
    queue_url,
)
from runs_fleet_sqs.receipts import Receipts, refused

__all__ = ["MAX_VISIBILITY_S", "SETTINGS", "SqsQueue", "from_context"]

_log = logging.getLogger(__name__)

_POLL_PAUSE_S = 0.05
_WAIT_ROUNDING_S = 0.1


class SqsQueue:
    """The :class:`~runs_fleet_core.ports.Queue` port on an SQS queue (FIFO or standard).

    ``dlq_url`` defaults to the queue named by the queue's ``RedrivePolicy`` (looked up on
    first need). ``visibility_timeout_s`` and ``max_hold_s`` are whole seconds; with
    ``max_hold_s == visibility_timeout_s`` no heartbeat runs. ``listing_wait_s`` is the
    long poll that ends a dead-letter listing: a short poll asks only a sample of SQS's
    servers and may miss messages, so keep it at 1 or more on SQS (0 suits single-node
    stand-ins such as moto or LocalStack). ``aclose`` stops the
    heartbeats (held messages come back after at most the visibility timeout) and closes
    ``caller`` when ``owns_caller``.
    """

    def __init__(
        self,
        caller: AwsCaller,
        url: str,
        *,
        dlq_url: str | None = None,
        max_attempts: int = 3,
        visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S,
        max_hold_s: int = DEFAULT_MAX_HOLD_S,
        listing_wait_s: int = 1,
        owns_caller: bool = False,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"{url!r} is not an SQS queue URL")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if not 1 <= visibility_timeout_s <= MAX_VISIBILITY_S:
            raise ValueError(
                f"visibility_timeout_s must be 1..{MAX_VISIBILITY_S}, got {visibility_timeout_s}"
            )
        if not visibility_timeout_s <= max_hold_s <= MAX_VISIBILITY_S:
            raise ValueError(
                f"max_hold_s must be between the visibility timeout ({visibility_timeout_s}) "
                f"and {MAX_VISIBILITY_S}, got {max_hold_s}"
            )
        self._caller = caller
        self.url = url
        self.fifo = url.endswith(".fifo")
        self.max_attempts = max_attempts
        self.visibility_timeout_s = int(visibility_timeout_s)
        self.max_hold_s = int(max_hold_s)
        self.listing_wait_s = min(max(int(listing_wait_s), 0), MAX_WAIT_S)
        self._owns_caller = owns_caller
        self._reason = f"exceeded {max_attempts} attempts"
        self._converter = make_message_converter()
        self._receipts = Receipts(caller, url)
        self._holds = Holds(self._receipts, self.visibility_timeout_s, self.max_hold_s)
        self._dead_letters = DeadLetterQueue(caller, url, self._receipts, dlq_url=dlq_url)

    async def aclose(self) -> None:
        """Stop every heartbeat, then close the caller if this queue owns it."""
        await self._holds.stop_all()
        if self._owns_caller:
            self._caller.close()

    async def send(self, message: JobMessage) -> None:
        """Store ``message``; on FIFO queues, with its job id as group and its
        ``dedup_id`` as deduplication id."""
        params: dict[str, Any] = {"QueueUrl": self.url, "MessageBody": self._body(message)}
        if self.fifo:
            params["MessageGroupId"] = str(message.job_id)
            params["MessageDeduplicationId"] = message.dedup_id
        await self._caller.call("sqs", "send_message", **params)

    async def receive(self, max_messages: int, wait_s: float) -> Sequence[Delivery]:
        """Up to ``max_messages`` (at most 10 per call, SQS's limit) deliveries, long
        polling (at most 20 s per call) until ``wait_s`` has passed."""
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_s, 0.0)
        self._holds.forget_lapsed(loop.time())
        while True:
            wait = int(min(max(deadline - loop.time() + _WAIT_ROUNDING_S, 0.0), MAX_WAIT_S))
            started = loop.time()
            reply = await self._caller.call(
                "sqs",
                "receive_message",
                QueueUrl=self.url,
                MaxNumberOfMessages=min(max_messages, MAX_BATCH),
                WaitTimeSeconds=wait,
                VisibilityTimeout=self.visibility_timeout_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            deliveries = await self._deliveries(reply.get("Messages", []), started)
            remaining = deadline - loop.time()
            if deliveries or remaining <= 0:
                return deliveries
            if wait == 0:
                await asyncio.sleep(min(_POLL_PAUSE_S, remaining))

    async def ack(self, delivery: Delivery) -> None:
        """Delete the message, unless this delivery lapsed. Acking twice is harmless."""
        if await self._holds.still_held(delivery, "ack"):
            await self._receipts.delete(delivery.receipt)

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """Show the message again after ``delay_s`` (rounded up to whole seconds, and
        cut to SQS's 12 hours after the receive, with a warning); dead-letter it now
        if its next delivery would exceed the maximum. A lapsed delivery is ignored."""
        hold = await self._holds.release(delivery.receipt)
        if not self._holds.valid(hold, delivery, "retry"):
            return
        if delivery.attempt >= self.max_attempts:
            await self._bury_delivery(delivery, self._reason)
            return
        wanted = math.ceil(max(delay_s, 0.0))
        elapsed = 0 if hold is None else math.ceil(asyncio.get_running_loop().time() - hold.since)
        limit = MAX_VISIBILITY_S - elapsed - 1
        if wanted > limit:
            _log.warning(
                "retry of job %s asked for a %d s delay; SQS hides a received message for "
                "at most 12 h after the receive, so it comes back after %d s",
                delivery.message.job_id,
                wanted,
                limit,
            )
        try:
            await self._receipts.change_visibility(delivery.receipt, min(wanted, limit))
        except AdapterError as exc:
            if not refused(exc):
                raise
            _log.info("retry of job %s: SQS refused the receipt: %s", delivery.message.job_id, exc)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Send the message to the dead-letter queue with ``reason`` and its attempts
        (message attributes ``Reason``, ``Attempts``), then delete it here. A lapsed
        delivery is ignored."""
        if await self._holds.still_held(delivery, "dead-letter"):
            await self._bury_delivery(delivery, reason)

    async def dead_letters(self) -> Sequence[DeadLetter]:
        """The dead letters, oldest first, read without consuming them.

        SQS has no way to read a queue without receiving: the listing receives up to
        ``PEEK_LIMIT`` messages, hiding each for ``PEEK_VISIBILITY_S`` (both in
        :mod:`runs_fleet_sqs.deadletters`), then shows them again at once. Each listing
        adds one to their receive counts (so give the dead-letter queue no redrive
        policy of its own); on a FIFO dead-letter queue, SQS hands out one batch per
        message group, so a second dead letter of the same job attempt may be missing
        from a listing. A message that is no job message is listed with ``message=None``.
        """
        return await self._dead_letters.listing(self.listing_wait_s)

    async def redrive(self, ids: Sequence[str] | None = None) -> Redriven:
        """Send dead letters back to this queue as new messages (their receive count,
        so their attempts, start again), deleting each from the dead-letter queue once
        sent; see :mod:`runs_fleet_sqs.deadletters`."""
        return await self._dead_letters.redrive(ids, self.listing_wait_s)

    async def purge(self, ids: Sequence[str]) -> Sequence[str]:
        """Delete the dead letters ``ids`` (SQS message ids); those that were found."""
        return await self._dead_letters.purge(ids, self.listing_wait_s)

    async def ping(self) -> None:
        """One cheap call that fails when the queue is unreachable (for ``/ready``,
        which must answer within a probe's timeout: listing dead letters long-polls)."""
        await self._caller.call(
            "sqs", "get_queue_attributes", QueueUrl=self.url, AttributeNames=["QueueArn"]
        )

    async def pending_count(self) -> int:
        """Messages waiting in the queue, as SQS approximates them (the ``queue_depth``
        gauge)."""
        reply = await self._caller.call(
            "sqs",
            "get_queue_attributes",
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages"],
        )
        return int(reply["Attributes"]["ApproximateNumberOfMessages"])

    async def dead_letter_url(self) -> str:
        """The dead-letter queue's URL: the configured one, else the one the queue's
        ``RedrivePolicy`` names; ``ConfigError`` when there is neither."""
        return await self._dead_letters.url()

    async def _deliveries(
        self, raws: Sequence[Mapping[str, Any]], started: float
    ) -> list[Delivery]:
        """Decode and hold each received message; one past the maximum, or unreadable,
        is dead-lettered instead (if that fails, it stays queued and the error is
        logged: the other deliveries of the batch must still reach the caller)."""
        deliveries = []
        for raw in raws:
            receipt, body = str(raw["ReceiptHandle"]), str(raw.get("Body", ""))
            count = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            try:
                message = loads(self._converter, body, JobMessage)
            except ValueError as exc:
                await self._dead_letters.bury_quietly(
                    body, receipt, "unreadable", f"unreadable message: {exc}", count
                )
                continue
            if count > self.max_attempts:
                await self._dead_letters.bury_quietly(
                    body, receipt, message.dedup_id, self._reason, count - 1
                )
                continue
            self._holds.hold(receipt, str(message.job_id), started)
            deliveries.append(Delivery(message=message, receipt=receipt, attempt=count))
        return deliveries

    async def _bury_delivery(self, delivery: Delivery, reason: str) -> None:
        message = delivery.message
        body = self._body(message)
        await self._dead_letters.bury(
            body, delivery.receipt, message.dedup_id, reason, delivery.attempt
        )

    def _body(self, message: JobMessage) -> str:
        return dumps(self._converter, message)


def from_context(
    context: AdapterContext, caller: AwsCaller, *, owns_caller: bool = False
) -> SqsQueue:
    """The queue the settings describe: ``RUNS_FLEET_QUEUE_URL`` (required),
    ``RUNS_FLEET_QUEUE_DLQ_URL``, ``RUNS_FLEET_MAX_ATTEMPTS``,
    ``RUNS_FLEET_SQS_VISIBILITY_TIMEOUT_S`` and ``RUNS_FLEET_SQS_MAX_HOLD_S``."""
    settings = context.settings
    url = queue_url(context)
    visibility = int(settings.get(VISIBILITY_TIMEOUT, DEFAULT_VISIBILITY_TIMEOUT_S))
    hold = int(settings.get(MAX_HOLD, DEFAULT_MAX_HOLD_S))
    problems = []
    if visibility > MAX_VISIBILITY_S:
        problems.append(f"{VISIBILITY_TIMEOUT}={visibility} is above SQS's {MAX_VISIBILITY_S}")
    if not visibility <= hold <= MAX_VISIBILITY_S:
        problems.append(
            f"{MAX_HOLD}={hold} must be at least {VISIBILITY_TIMEOUT} ({visibility}) and "
            f"at most {MAX_VISIBILITY_S} (SQS's 12 hours)"
        )
    if problems:
        raise ConfigError(problems)
    return SqsQueue(
        caller,
        url,
        dlq_url=settings.get(DLQ_URL) or None,
        max_attempts=int(settings.get(MAX_ATTEMPTS, 3)),
        visibility_timeout_s=visibility,
        max_hold_s=hold,
        owns_caller=owns_caller,
    )
