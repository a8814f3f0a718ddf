"""EC2 mode's runner event feed: EventBridge's EC2 events and the agents' reports, both
read from SQS.

Two queues, both optional:

* the **events queue** (``RUNS_FLEET_EVENTS_QUEUE_URL``) receives, through an
  EventBridge rule, "EC2 Spot Instance Interruption Warning" (two minutes before a spot
  instance is reclaimed) and "EC2 Instance State-change Notification" events. A warning
  becomes an ``interruption`` event and is counted in the spot circuit breaker of the
  instance's family and zone; a change to ``stopping``, ``stopped``, ``shutting-down`` or
  ``terminated`` becomes a ``gone`` event; other states are dropped.
* the **termination queue** (``RUNS_FLEET_TERMINATION_QUEUE_URL``) receives the agents'
  reports: the body is the ``AgentReport`` as JSON, with message attributes ``kind``
  (``agent-report``) and ``token`` (the runner's report token, checked by the core).

A message that is not one of these is deleted and counted
(``runner_events_unreadable``): it would never become readable by being delivered again.
Receipts are ``<queue index>|<SQS receipt handle>``; ``ack`` deletes the message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.converters import loads, make_message_converter
from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.messages import AgentReport
from runs_fleet_core.errors import AdapterError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports import Metrics
from runs_fleet_core.ports.events import RunnerEvent, RunnerEventKind
from runs_fleet_core.settings import Setting
from runs_fleet_ec2.agent_reports import REPORT_KIND
from runs_fleet_ec2.provider import Ec2Provider

EVENTS_QUEUE = "RUNS_FLEET_EVENTS_QUEUE_URL"
TERMINATION_QUEUE = "RUNS_FLEET_TERMINATION_QUEUE_URL"
SPOT_WARNING = "EC2 Spot Instance Interruption Warning"
STATE_CHANGE = "EC2 Instance State-change Notification"
GONE_STATES = frozenset({"stopping", "stopped", "shutting-down", "terminated"})

SETTINGS = (
    Setting(
        name=EVENTS_QUEUE,
        help="URL of the SQS queue an EventBridge rule sends EC2 spot interruption "
        "warnings and instance state changes to ('runs-fleet aws create-resources' "
        "creates both); unset: no EC2 events are read",
    ),
)

_log = logging.getLogger(__name__)


class Ec2RunnerEvents:
    """The :class:`~runs_fleet_core.ports.events.RunnerEvents` feed of the ``ec2``
    backend. ``provider`` counts spot interruptions in its circuit breaker."""

    def __init__(
        self,
        caller: AwsCaller,
        *,
        events_queue_url: str | None,
        termination_queue_url: str | None,
        provider: Ec2Provider | None,
        metrics: Metrics,
    ) -> None:
        self._caller = caller
        self._queues = [url for url in (events_queue_url, termination_queue_url) if url]
        self._provider = provider
        self._metrics = metrics
        self._converter = make_message_converter()
        self._counted: set[str] = set()
        """Message ids whose interruption the breaker has counted (redeliveries skip)."""

    async def receive(self, max_events: int, wait_s: float) -> Sequence[RunnerEvent]:
        """Events from every queue, each long-polled at most ``wait_s`` (whole
        seconds, at most 20) in parallel."""
        if not self._queues:
            await asyncio.sleep(max(wait_s, 0.0))
            return []
        batches = await asyncio.gather(
            *(self._receive(i, url, max_events, wait_s) for i, url in enumerate(self._queues))
        )
        return [event for batch in batches for event in batch][:max_events]

    async def ack(self, event: RunnerEvent) -> None:
        index, _, handle = event.receipt.partition("|")
        await self._delete(self._queues[int(index)], handle)

    async def _receive(
        self, index: int, url: str, max_events: int, wait_s: float
    ) -> list[RunnerEvent]:
        reply = await self._caller.call(
            "sqs",
            "receive_message",
            QueueUrl=url,
            MaxNumberOfMessages=max(1, min(10, max_events)),
            WaitTimeSeconds=max(0, min(20, int(wait_s))),
            MessageAttributeNames=["All"],
        )
        events = []
        for message in reply.get("Messages", []):
            receipt = f"{index}|{message['ReceiptHandle']}"
            try:
                event = self._read(message, receipt)
            except (ValueError, KeyError, TypeError) as exc:
                _log.warning(
                    "unreadable runner event message %s dropped: %s", message.get("MessageId"), exc
                )
                self._metrics.increment("runner_events_unreadable")
                await self._delete(url, message["ReceiptHandle"])
                continue
            if event is None:  # understood, and nothing to do
                await self._delete(url, message["ReceiptHandle"])
                continue
            if event.kind is RunnerEventKind.INTERRUPTION:
                await self._count_interruption(message.get("MessageId", ""), event)
            events.append(event)
        return events

    def _read(self, message: Mapping[str, Any], receipt: str) -> RunnerEvent | None:
        attributes = message.get("MessageAttributes") or {}
        kind = attributes.get("kind", {}).get("StringValue")
        if kind == REPORT_KIND:
            report = loads(self._converter, message["Body"], AgentReport)
            token = attributes.get("token", {}).get("StringValue", "")
            return RunnerEvent(
                kind=RunnerEventKind.REPORT, receipt=receipt, report=report, token=token
            )
        body = json.loads(message["Body"])
        if not isinstance(body, dict) or body.get("source") != "aws.ec2":
            raise ValueError("neither an agent report nor an EC2 event from EventBridge")
        detail = body["detail"]
        instance = RunnerId(str(detail["instance-id"]))
        if body.get("detail-type") == SPOT_WARNING:
            action = detail.get("instance-action", "terminate")
            return RunnerEvent(
                kind=RunnerEventKind.INTERRUPTION,
                receipt=receipt,
                runner_id=instance,
                detail=f"spot interruption warning ({action}) for {instance}",
            )
        if body.get("detail-type") == STATE_CHANGE:
            state = str(detail["state"])
            if state not in GONE_STATES:
                return None
            return RunnerEvent(
                kind=RunnerEventKind.GONE,
                receipt=receipt,
                runner_id=instance,
                detail=f"instance {instance} is {state}",
            )
        return None

    async def _count_interruption(self, message_id: str, event: RunnerEvent) -> None:
        if self._provider is None or event.runner_id is None or message_id in self._counted:
            return
        try:
            await self._provider.record_spot_interruption(event.runner_id)
        except AdapterError as exc:  # the instance may be gone already: still requeue
            _log.warning("spot interruption of %s not counted: %s", event.runner_id, exc)
            return
        if len(self._counted) > 10_000:
            self._counted.clear()
        self._counted.add(message_id)

    async def _delete(self, url: str, handle: str) -> None:
        await self._caller.call("sqs", "delete_message", QueueUrl=url, ReceiptHandle=handle)


def from_context(context: AdapterContext, caller: AwsCaller) -> Ec2RunnerEvents:
    """The feed of the queues the settings name, counting interruptions in the spot
    breaker of the deployment's provider settings."""
    from runs_fleet_ec2 import provider

    settings = context.settings
    return Ec2RunnerEvents(
        caller,
        events_queue_url=settings.get(EVENTS_QUEUE) or None,
        termination_queue_url=settings.get(TERMINATION_QUEUE) or None,
        provider=provider.from_context(context, caller),
        metrics=context.metrics,
    )
