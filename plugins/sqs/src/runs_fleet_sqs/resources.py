"""Create the job queue and its dead-letter queue, or bring existing ones in line.

Terraform is the usual way to create them; this is for ``runs-fleet`` commands that set
up a deployment without it, and for tests. Running it again is safe: an existing queue
keeps its URL and messages, and attributes that differ from the ones asked for are
updated rather than reported as a conflict.
"""

from __future__ import annotations

import json
import re

import attrs

from runs_fleet_aws.calls import AwsCaller, error_code
from runs_fleet_core.errors import AdapterError

MAX_RETENTION_S = 1_209_600
"""14 days, SQS's longest: dead letters wait for a person."""

_NAME = re.compile(r"[A-Za-z0-9_-]{1,71}")
_EXISTS_CODES = frozenset({"QueueAlreadyExists", "QueueNameExists"})


@attrs.frozen
class QueueUrls:
    """The job queue's URL and its dead-letter queue's."""

    url: str
    dlq_url: str


async def ensure_queue(
    caller: AwsCaller,
    name: str,
    *,
    fifo: bool = True,
    max_receives: int = 3,
    visibility_timeout_s: int = 60,
) -> QueueUrls:
    """Create (or update) the queue ``name`` and its dead-letter queue ``<name>-dlq``.

    With ``fifo`` both names get the ``.fifo`` suffix (``name`` may carry it already),
    and content-based deduplication is off: runs-fleet sends its own deduplication ids.
    The queue's ``RedrivePolicy`` moves a message received ``max_receives`` times to the
    dead-letter queue, which keeps messages for 14 days. ``visibility_timeout_s`` is the
    queue's default; the adapter passes its own on every receive.
    """
    base = name.removesuffix(".fifo")
    if name.endswith(".fifo") and not fifo:
        raise ValueError(f"queue name {name!r} ends in .fifo, which only a FIFO queue may")
    if not _NAME.fullmatch(base):
        raise ValueError(
            f"queue name {name!r} is not valid: use 1 to 71 letters, digits, '-' or '_' "
            "(SQS allows 80 characters, and '-dlq.fifo' must fit)"
        )
    if not 1 <= max_receives <= 1000:
        raise ValueError(f"max_receives must be 1..1000 (SQS's range), got {max_receives}")
    if not 0 <= visibility_timeout_s <= 43_200:
        raise ValueError(f"visibility_timeout_s must be 0..43200, got {visibility_timeout_s}")
    suffix = ".fifo" if fifo else ""
    kind = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
    dlq_url = await _ensure(
        caller, f"{base}-dlq{suffix}", {**kind, "MessageRetentionPeriod": str(MAX_RETENTION_S)}
    )
    reply = await caller.call(
        "sqs", "get_queue_attributes", QueueUrl=dlq_url, AttributeNames=["QueueArn"]
    )
    dlq_arn = reply["Attributes"]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}
    url = await _ensure(
        caller,
        f"{base}{suffix}",
        {
            **kind,
            "VisibilityTimeout": str(visibility_timeout_s),
            "RedrivePolicy": json.dumps(redrive),
        },
    )
    return QueueUrls(url=url, dlq_url=dlq_url)


async def _ensure(caller: AwsCaller, name: str, attributes: dict[str, str]) -> str:
    """The URL of queue ``name`` with ``attributes``, creating it or updating them."""
    try:
        reply = await caller.call("sqs", "create_queue", QueueName=name, Attributes=attributes)
        return str(reply["QueueUrl"])
    except AdapterError as exc:
        if exc.__cause__ is None or error_code(exc.__cause__) not in _EXISTS_CODES:
            raise
    url = str((await caller.call("sqs", "get_queue_url", QueueName=name))["QueueUrl"])
    changeable = {key: value for key, value in attributes.items() if key != "FifoQueue"}
    await caller.call("sqs", "set_queue_attributes", QueueUrl=url, Attributes=changeable)
    return url
