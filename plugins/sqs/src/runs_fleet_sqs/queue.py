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
the job of a dispatcher that died waits before another takes it over. While a delivery is
held (not yet acked, retried or dead-lettered), a background heartbeat extends it every
half timeout, for at most ``max_hold_s`` after the receive: a slow dispatch keeps its
message, a hung one gives it up. A delivery whose visibility lapsed may be in another
consumer's hands, so ``ack``, ``retry`` and ``dead_letter`` with it do nothing: the message
is delivered again and handled again, idempotently. (SQS documents that only the latest
receipt handle deletes a message, but does not promise it; checking the lapse here makes
the outcome certain within one process.)

Receipts are SQS receipt handles. They are never logged, and are cut out of errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from runs_fleet_aws.calls import AwsCaller, error_code
from runs_fleet_core.converters import dumps, loads, make_message_converter
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.errors import AdapterError, ConfigError, RunsFleetError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports.queue import DeadLetter, Delivery
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

__all__ = ["MAX_VISIBILITY_S", "SETTINGS", "SqsQueue", "from_context"]

_log = logging.getLogger(__name__)

MAX_VISIBILITY_S = 43_200
"""SQS keeps a received message hidden for at most 12 hours after the receive."""
MAX_WAIT_S = 20
"""SQS's longest long poll."""
MAX_BATCH = 10
"""SQS's most messages per receive."""
PEEK_VISIBILITY_S = 30
"""How long listing the dead letters hides them, should it fail to show them again."""
PEEK_LIMIT = 1000
"""Most dead letters one listing reads."""

_POLL_PAUSE_S = 0.05
_WAIT_ROUNDING_S = 0.1
_FORGET_AFTER_S = 3600.0
_REASON_MAX = 4096
_REASON, _ATTEMPTS, _AT = "Reason", "Attempts", "DeadLetteredAt"


@attrs.define(eq=False)
class _Hold:
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
        self._dlq_url = dlq_url or None
        self._redrive_receives: int | None = None
        self._facts_loaded = False
        self._reason = f"exceeded {max_attempts} attempts"
        self._converter = make_message_converter()
        self._holds: dict[str, _Hold] = {}

    async def aclose(self) -> None:
        """Stop every heartbeat, then close the caller if this queue owns it."""
        holds, self._holds = list(self._holds.values()), {}
        for hold in holds:
            await self._stop(hold)
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
        self._forget_lapsed(loop.time())
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
        if await self._still_held(delivery, "ack"):
            await self._delete(delivery.receipt)

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """Show the message again after ``delay_s`` (rounded up to whole seconds, and
        cut to SQS's 12 hours after the receive, with a warning); dead-letter it now
        if its next delivery would exceed the maximum. A lapsed delivery is ignored."""
        hold = await self._release(delivery.receipt)
        if not self._valid(hold, delivery, "retry"):
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
            await self._change_visibility(delivery.receipt, min(wanted, limit))
        except AdapterError as exc:
            if not _refused(exc):
                raise
            _log.info("retry of job %s: SQS refused the receipt: %s", delivery.message.job_id, exc)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Send the message to the dead-letter queue with ``reason`` and its attempts
        (message attributes ``Reason``, ``Attempts``), then delete it here. A lapsed
        delivery is ignored."""
        if await self._still_held(delivery, "dead-letter"):
            await self._bury_delivery(delivery, reason)

    async def dead_letters(self) -> Sequence[DeadLetter]:
        """The dead letters, oldest first, read without consuming them.

        SQS has no way to read a queue without receiving: the listing receives up to
        ``PEEK_LIMIT`` messages, hiding each for ``PEEK_VISIBILITY_S``, then shows them
        again at once. Each listing adds one to their receive counts (so give the
        dead-letter queue no redrive policy of its own); on a FIFO dead-letter queue,
        SQS hands out one batch per message group, so a second dead letter of the same
        job attempt may be missing from a listing. Unreadable messages are skipped with
        a warning.
        """
        dlq = await self.dead_letter_url()
        peeked: list[Mapping[str, Any]] = []
        try:
            while len(peeked) < PEEK_LIMIT:
                reply = await self._caller.call(
                    "sqs",
                    "receive_message",
                    QueueUrl=dlq,
                    MaxNumberOfMessages=MAX_BATCH,
                    WaitTimeSeconds=self.listing_wait_s,
                    VisibilityTimeout=PEEK_VISIBILITY_S,
                    MessageSystemAttributeNames=["SentTimestamp"],
                    MessageAttributeNames=["All"],
                )
                page = reply.get("Messages", [])
                if not page:
                    break
                peeked.extend(page)
            else:
                _log.warning("listing only the first %d dead letters of %s", PEEK_LIMIT, dlq)
        finally:
            await self._show_again(dlq, peeked)
        letters = [letter for raw in peeked if (letter := await self._dead_letter(raw))]
        return [letter for _, letter in sorted(letters, key=lambda pair: pair[0])]

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
        if self._dlq_url is None:
            await self._load_facts()
        if self._dlq_url is None:
            raise ConfigError(
                [
                    f"the queue {self.url} has no dead-letter queue: set {DLQ_URL} to its "
                    "URL, or give the queue a RedrivePolicy naming one (as "
                    "runs_fleet_sqs.resources.ensure_queue does)"
                ]
            )
        return self._dlq_url

    # -- receiving -----------------------------------------------------------------

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
                await self._bury_quietly(
                    body, receipt, "unreadable", f"unreadable message: {exc}", count
                )
                continue
            if count > self.max_attempts:
                await self._bury_quietly(body, receipt, message.dedup_id, self._reason, count - 1)
                continue
            self._hold(receipt, str(message.job_id), started)
            deliveries.append(Delivery(message=message, receipt=receipt, attempt=count))
        return deliveries

    async def _bury_quietly(
        self, body: str, receipt: str, key: str, reason: str, attempts: int
    ) -> None:
        try:
            await self._bury(body, receipt, key, reason, attempts)
        except RunsFleetError as exc:
            _log.error(
                "could not dead-letter message %s (%s), it stays queued: %s", key, reason, exc
            )

    def _forget_lapsed(self, now: float) -> None:
        """Drop holds long lapsed (their deliveries were dropped by the consumer)."""
        for receipt, hold in list(self._holds.items()):
            if hold.visible_until + _FORGET_AFTER_S < now and (
                hold.task is None or hold.task.done()
            ):
                del self._holds[receipt]

    # -- holding: the heartbeat ----------------------------------------------------

    def _hold(self, receipt: str, job: str, started: float) -> None:
        hold = _Hold(
            job=job,
            since=started,
            visible_until=started + self.visibility_timeout_s,
            hold_until=started + self.max_hold_s,
        )
        if hold.hold_until > hold.visible_until:
            hold.task = asyncio.create_task(self._heartbeat(receipt, hold))
        self._holds[receipt] = hold

    async def _heartbeat(self, receipt: str, hold: _Hold) -> None:
        """Extend the message's visibility when half of it is left, until the hold ends
        or an extension fails (then the message may be delivered again)."""
        loop = asyncio.get_running_loop()
        while hold.visible_until < hold.hold_until:
            await asyncio.sleep(hold.visible_until - self.visibility_timeout_s / 2 - loop.time())
            async with hold.lock:
                if hold.stopped:
                    return
                started = loop.time()
                timeout = min(self.visibility_timeout_s, math.ceil(hold.hold_until - started))
                try:
                    await self._change_visibility(receipt, timeout)
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

    async def _stop(self, hold: _Hold) -> None:
        """Stop the heartbeat; an extension in flight lands before this returns, so it
        cannot overwrite what the caller does next."""
        hold.stopped = True
        if hold.task is not None and not hold.task.done():
            async with hold.lock:
                hold.task.cancel()
            await asyncio.wait([hold.task])

    async def _release(self, receipt: str) -> _Hold | None:
        hold = self._holds.pop(receipt, None)
        if hold is not None:
            await self._stop(hold)
        return hold

    def _valid(self, hold: _Hold | None, delivery: Delivery, what: str) -> bool:
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

    async def _still_held(self, delivery: Delivery, what: str) -> bool:
        return self._valid(await self._release(delivery.receipt), delivery, what)

    # -- dead letters --------------------------------------------------------------

    async def _bury_delivery(self, delivery: Delivery, reason: str) -> None:
        message = delivery.message
        body = self._body(message)
        await self._bury(body, delivery.receipt, message.dedup_id, reason, delivery.attempt)

    async def _bury(self, body: str, receipt: str, key: str, reason: str, attempts: int) -> None:
        """Send ``body`` to the dead-letter queue, then delete it here (a crash between
        the two dead-letters it twice, never loses it).

        On a FIFO dead-letter queue the group is ``key`` (job id + attempt: dead letters
        of different attempts never hide each other from a listing) and the
        deduplication id is ``key`` plus a digest of the receipt: unique to this
        delivery, the same for a retried send.
        """
        dlq = await self.dead_letter_url()
        reason = (reason or "no reason given")[:_REASON_MAX]
        params: dict[str, Any] = {
            "QueueUrl": dlq,
            "MessageBody": body,
            "MessageAttributes": {
                _REASON: {"DataType": "String", "StringValue": reason},
                _ATTEMPTS: {"DataType": "Number", "StringValue": str(attempts)},
                _AT: {"DataType": "Number", "StringValue": str(time.time_ns())},
            },
        }
        if dlq.endswith(".fifo"):
            digest = hashlib.sha256(receipt.encode()).hexdigest()[:64]
            params["MessageGroupId"] = key
            params["MessageDeduplicationId"] = f"{key}:{digest}"
        await self._caller.call("sqs", "send_message", **params)
        await self._delete(receipt)

    async def _dead_letter(self, raw: Mapping[str, Any]) -> tuple[int, DeadLetter] | None:
        """One listed dead letter with its sort key (when it was dead-lettered, in ns)."""
        try:
            message = loads(self._converter, str(raw.get("Body", "")), JobMessage)
        except ValueError as exc:
            _log.warning("skipping unreadable dead letter %s: %s", raw.get("MessageId"), exc)
            return None
        fields = raw.get("MessageAttributes", {})
        sent_ns = int(raw.get("Attributes", {}).get("SentTimestamp", "0")) * 1_000_000
        at = int(fields.get(_AT, {}).get("StringValue", sent_ns))
        if _REASON in fields:
            reason = str(fields[_REASON]["StringValue"])
            attempts = int(fields.get(_ATTEMPTS, {}).get("StringValue", "0"))
        else:
            await self._load_facts()
            attempts = self._redrive_receives or 0
            reason = (
                f"moved by the queue's redrive policy after {attempts} receive(s) without an ack"
                if attempts
                else "no reason recorded (not dead-lettered by runs-fleet)"
            )
        return at, DeadLetter(message=message, reason=reason, attempts=attempts)

    async def _show_again(self, dlq: str, peeked: Sequence[Mapping[str, Any]]) -> None:
        """Make listed dead letters visible again (best effort: they reappear after
        ``PEEK_VISIBILITY_S`` anyway)."""
        for start in range(0, len(peeked), MAX_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": raw["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, raw in enumerate(peeked[start : start + MAX_BATCH])
            ]
            try:
                reply = await self._caller.call(
                    "sqs", "change_message_visibility_batch", QueueUrl=dlq, Entries=entries
                )
            except AdapterError as exc:
                _log.warning("listed dead letters stay hidden for %d s: %s", PEEK_VISIBILITY_S, exc)
                continue
            if reply.get("Failed"):
                _log.warning(
                    "%d listed dead letters stay hidden for %d s",
                    len(reply["Failed"]),
                    PEEK_VISIBILITY_S,
                )

    async def _load_facts(self) -> None:
        """Read the queue's RedrivePolicy once: the dead-letter queue (unless configured)
        and after how many receives SQS moves a message there."""
        if self._facts_loaded:
            return
        reply = await self._caller.call(
            "sqs", "get_queue_attributes", QueueUrl=self.url, AttributeNames=["RedrivePolicy"]
        )
        policy_text = reply.get("Attributes", {}).get("RedrivePolicy")
        if policy_text:
            policy = json.loads(policy_text)
            self._redrive_receives = int(policy["maxReceiveCount"])
            if self._dlq_url is None:
                arn = str(policy["deadLetterTargetArn"]).split(":")
                found = await self._caller.call(
                    "sqs", "get_queue_url", QueueName=arn[5], QueueOwnerAWSAccountId=arn[4]
                )
                self._dlq_url = str(found["QueueUrl"])
        self._facts_loaded = True

    # -- SQS calls with a receipt (errors never quote it) ------------------------------

    async def _delete(self, receipt: str) -> None:
        """Delete by receipt; a receipt SQS no longer accepts means the message is gone
        already or will be delivered again, and either way there is nothing to do."""
        try:
            with _scrubbed(receipt):
                await self._caller.call(
                    "sqs", "delete_message", QueueUrl=self.url, ReceiptHandle=receipt
                )
        except AdapterError as exc:
            if not _refused(exc):
                raise
            _log.info("not deleted, SQS refused the receipt: %s", exc)

    async def _change_visibility(self, receipt: str, timeout_s: int) -> None:
        with _scrubbed(receipt):
            await self._caller.call(
                "sqs",
                "change_message_visibility",
                QueueUrl=self.url,
                ReceiptHandle=receipt,
                VisibilityTimeout=timeout_s,
            )

    def _body(self, message: JobMessage) -> str:
        return dumps(self._converter, message)


def _refused(exc: AdapterError) -> bool:
    """Whether SQS refused the receipt itself (deleted, expired, or never issued)."""
    code = error_code(exc.__cause__) if exc.__cause__ is not None else ""
    if code == "ReceiptHandleIsInvalid":
        return True
    return code == "InvalidParameterValue" and "receipt handle" in str(exc).lower()


@contextlib.contextmanager
def _scrubbed(receipt: str) -> Iterator[None]:
    """Re-raise an ``AdapterError`` whose message quotes ``receipt`` without it."""
    try:
        yield
    except AdapterError as exc:
        text = str(exc)
        if receipt not in text:
            raise
        clean = AdapterError(text.replace(receipt, "<receipt>"), retryable=exc.retryable)
        raise clean from exc.__cause__


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
