"""The SQS queue's dead letters: moving a message to the dead-letter queue, and listing.

SQS gives neither half ready-made. It moves a message to the dead-letter queue only
when the receive count passes the ``RedrivePolicy``'s ``maxReceiveCount``, with no
reason attached, so the adapter moves messages itself: it sends the body to the
dead-letter queue with the message attributes ``Reason``, ``Attempts`` and
``DeadLetteredAt``, then deletes it from the job queue. And SQS cannot read a queue
without receiving from it, so a listing receives the dead letters and shows them again.

The dead-letter queue is the configured one, else the one the job queue's
``RedrivePolicy`` names; that policy's ``maxReceiveCount`` is also the attempt count of
a dead letter SQS moved itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.converters import loads, make_message_converter
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.errors import AdapterError, ConfigError, RunsFleetError
from runs_fleet_core.ports.queue import DeadLetter
from runs_fleet_sqs.limits import MAX_BATCH
from runs_fleet_sqs.plugin import DLQ_URL
from runs_fleet_sqs.receipts import Receipts

__all__ = ["PEEK_LIMIT", "PEEK_VISIBILITY_S", "DeadLetterQueue"]

# One logger for the whole adapter: operators filter on the queue's name.
_log = logging.getLogger("runs_fleet_sqs.queue")

PEEK_VISIBILITY_S = 30
"""How long listing the dead letters hides them, should it fail to show them again."""
PEEK_LIMIT = 1000
"""Most dead letters one listing reads."""

_REASON_MAX = 4096
_REASON, _ATTEMPTS, _AT = "Reason", "Attempts", "DeadLetteredAt"


class DeadLetterQueue:
    """The dead-letter queue of the job queue at ``url`` (whose receipts ``receipts``
    acts on); ``dlq_url`` when configured, else found from the ``RedrivePolicy`` on
    first need."""

    def __init__(
        self, caller: AwsCaller, url: str, receipts: Receipts, *, dlq_url: str | None = None
    ) -> None:
        self._caller = caller
        self._url = url
        self._receipts = receipts
        self._dlq_url = dlq_url or None
        self._redrive_receives: int | None = None
        self._facts_loaded = False
        self._converter = make_message_converter()

    async def url(self) -> str:
        """The dead-letter queue's URL: the configured one, else the one the queue's
        ``RedrivePolicy`` names; ``ConfigError`` when there is neither."""
        if self._dlq_url is None:
            await self._load_facts()
        if self._dlq_url is None:
            raise ConfigError(
                [
                    f"the queue {self._url} has no dead-letter queue: set {DLQ_URL} to its "
                    "URL, or give the queue a RedrivePolicy naming one (as "
                    "runs_fleet_sqs.resources.ensure_queue does)"
                ]
            )
        return self._dlq_url

    async def bury(self, body: str, receipt: str, key: str, reason: str, attempts: int) -> None:
        """Send ``body`` to the dead-letter queue, then delete it here (a crash between
        the two dead-letters it twice, never loses it).

        On a FIFO dead-letter queue the group is ``key`` (job id + attempt: dead letters
        of different attempts never hide each other from a listing) and the
        deduplication id is ``key`` plus a digest of the receipt: unique to this
        delivery, the same for a retried send.
        """
        dlq = await self.url()
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
        await self._receipts.delete(receipt)

    async def bury_quietly(
        self, body: str, receipt: str, key: str, reason: str, attempts: int
    ) -> None:
        """:meth:`bury`, logging a failure instead of raising it (the message stays
        queued), for a receive that must still hand out the rest of its batch."""
        try:
            await self.bury(body, receipt, key, reason, attempts)
        except RunsFleetError as exc:
            _log.error(
                "could not dead-letter message %s (%s), it stays queued: %s", key, reason, exc
            )

    async def listing(self, wait_s: int) -> list[DeadLetter]:
        """The dead letters, oldest first, read without consuming them.

        The listing receives up to ``PEEK_LIMIT`` messages, hiding each for
        ``PEEK_VISIBILITY_S``, then shows them again at once; it ends with a receive
        that long-polls ``wait_s``. Unreadable messages are skipped with a warning.
        """
        dlq = await self.url()
        peeked: list[Mapping[str, Any]] = []
        try:
            while len(peeked) < PEEK_LIMIT:
                reply = await self._caller.call(
                    "sqs",
                    "receive_message",
                    QueueUrl=dlq,
                    MaxNumberOfMessages=MAX_BATCH,
                    WaitTimeSeconds=wait_s,
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
            "sqs", "get_queue_attributes", QueueUrl=self._url, AttributeNames=["RedrivePolicy"]
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
