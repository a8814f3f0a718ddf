"""The SQS queue's dead letters: moving a message to the dead-letter queue, listing,
redriving and purging them.

SQS gives neither half ready-made. It moves a message to the dead-letter queue only
when the receive count passes the ``RedrivePolicy``'s ``maxReceiveCount``, with no
reason attached, so the adapter moves messages itself: it sends the body to the
dead-letter queue with the message attributes ``Reason``, ``Attempts`` and
``DeadLetteredAt``, then deletes it from the job queue. And SQS cannot read a queue
without receiving from it, so a listing receives the dead letters and shows them again.

The dead-letter queue is the configured one, else the one the job queue's
``RedrivePolicy`` names; that policy's ``maxReceiveCount`` is also the attempt count of
a dead letter SQS moved itself.

Redrive is by hand too (``StartMessageMoveTask`` moves everything or nothing and cannot
say which messages moved; moto does not offer it either): a listing's receive finds the
dead letters by message id, each is sent to the job queue as a new message, then deleted
here. On a FIFO job queue its deduplication id is the message's own plus the dead
letter's message id: SQS still remembers the original id for five minutes and would drop
the send, and a repeated redrive of the same dead letter is still dropped. A dead letter
hidden by a listing running at the same moment is not seen, and reported as not found.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.converters import loads, make_message_converter
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.errors import AdapterError, ConfigError, RunsFleetError
from runs_fleet_core.ports.queue import DeadLetter, Redriven
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
        self._dlq_receipts: Receipts | None = None
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
        that long-polls ``wait_s``. A message that is no job message is listed with
        ``message=None``.
        """
        async with self._peeking(wait_s) as peeked:
            raws = list(peeked.values())
        letters = [await self._dead_letter(raw) for raw in raws]
        return [letter for _, letter in sorted(letters, key=lambda pair: pair[0])]

    async def redrive(self, ids: Sequence[str] | None, wait_s: int) -> Redriven:
        """Send the dead letters ``ids`` (``None``: all) back to the job queue as new
        messages, each deleted here once sent (see the module docstring)."""
        moved, not_found, unreadable = [], [], []
        async with self._peeking(wait_s) as peeked:
            wanted = sorted(peeked, key=lambda i: _at(peeked[i])) if ids is None else ids
            for message_id in dict.fromkeys(wanted):
                raw = peeked.get(message_id)
                if raw is None:
                    not_found.append(message_id)
                    continue
                body = str(raw.get("Body", ""))
                message = self._message(body)
                if message is None:
                    unreadable.append(message_id)
                    continue
                await self._send_back(body, message, message_id)
                await self._delete(peeked.pop(message_id))
                moved.append(message_id)
        return Redriven(
            moved=tuple(moved), not_found=tuple(not_found), unreadable=tuple(unreadable)
        )

    async def purge(self, ids: Sequence[str], wait_s: int) -> list[str]:
        """Delete the dead letters ``ids``; those that were found."""
        purged = []
        async with self._peeking(wait_s) as peeked:
            for message_id in dict.fromkeys(ids):
                if message_id in peeked:
                    await self._delete(peeked.pop(message_id))
                    purged.append(message_id)
        return purged

    @contextlib.asynccontextmanager
    async def _peeking(self, wait_s: int) -> AsyncIterator[dict[str, Mapping[str, Any]]]:
        """Up to ``PEEK_LIMIT`` dead letters by message id, received (hidden); those
        still in the mapping at the end are shown again."""
        dlq = await self.url()
        peeked: dict[str, Mapping[str, Any]] = {}
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
                peeked.update((str(raw["MessageId"]), raw) for raw in page)
            else:
                _log.warning("listing only the first %d dead letters of %s", PEEK_LIMIT, dlq)
            yield peeked
        finally:
            await self._show_again(dlq, list(peeked.values()))

    async def _send_back(self, body: str, message: JobMessage, message_id: str) -> None:
        params: dict[str, Any] = {"QueueUrl": self._url, "MessageBody": body}
        if self._url.endswith(".fifo"):
            params["MessageGroupId"] = str(message.job_id)
            params["MessageDeduplicationId"] = f"{message.dedup_id}:redriven:{message_id}"[:128]
        await self._caller.call("sqs", "send_message", **params)

    async def _delete(self, raw: Mapping[str, Any]) -> None:
        if self._dlq_receipts is None:
            self._dlq_receipts = Receipts(self._caller, await self.url())
        await self._dlq_receipts.delete(str(raw["ReceiptHandle"]))

    def _message(self, body: str) -> JobMessage | None:
        try:
            return loads(self._converter, body, JobMessage)
        except ValueError:
            return None

    async def _dead_letter(self, raw: Mapping[str, Any]) -> tuple[int, DeadLetter]:
        """One listed dead letter with its sort key (when it was dead-lettered, in ns)."""
        body = str(raw.get("Body", ""))
        fields = raw.get("MessageAttributes", {})
        at = _at(raw)
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
        return at, DeadLetter(
            id=str(raw["MessageId"]),
            message=self._message(body),
            reason=reason,
            attempts=attempts,
            dead_lettered_at=datetime.fromtimestamp(at / 1e9, UTC) if at else None,
            size=len(body.encode()),
        )

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


def _at(raw: Mapping[str, Any]) -> int:
    """When ``raw`` was dead-lettered, in ns: as runs-fleet recorded it, else when it
    was sent to the dead-letter queue (0 if SQS did not say)."""
    sent_ns = int(raw.get("Attributes", {}).get("SentTimestamp", "0")) * 1_000_000
    text = str(raw.get("MessageAttributes", {}).get(_AT, {}).get("StringValue", sent_ns))
    return int(text) if text.isdigit() else sent_ns
