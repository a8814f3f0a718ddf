"""The SQS calls that name a message by its receipt handle, kept out of error messages.

A receipt handle stands for one delivery of one message: whoever has it may delete the
message or hide it again. The queue, the heartbeat and the dead-letter path all act by
receipt, and SQS quotes a handle it rejects in its error text, so every such call goes
through here and has the handle cut out of the ``AdapterError`` it raises. Receipts are
never logged either.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from runs_fleet_aws.calls import AwsCaller, error_code
from runs_fleet_core.errors import AdapterError

__all__ = ["Receipts", "refused"]

# One logger for the whole adapter: operators filter on the queue's name.
_log = logging.getLogger("runs_fleet_sqs.queue")


class Receipts:
    """Receipt calls on the queue at ``url``."""

    def __init__(self, caller: AwsCaller, url: str) -> None:
        self._caller = caller
        self._url = url

    async def delete(self, receipt: str) -> None:
        """Delete by receipt; a receipt SQS no longer accepts means the message is gone
        already or will be delivered again, and either way there is nothing to do."""
        try:
            with _scrubbed(receipt):
                await self._caller.call(
                    "sqs", "delete_message", QueueUrl=self._url, ReceiptHandle=receipt
                )
        except AdapterError as exc:
            if not refused(exc):
                raise
            _log.info("not deleted, SQS refused the receipt: %s", exc)

    async def change_visibility(self, receipt: str, timeout_s: int) -> None:
        """Hide the message for ``timeout_s`` from now (0 shows it again at once)."""
        with _scrubbed(receipt):
            await self._caller.call(
                "sqs",
                "change_message_visibility",
                QueueUrl=self._url,
                ReceiptHandle=receipt,
                VisibilityTimeout=timeout_s,
            )


def refused(exc: AdapterError) -> bool:
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
