"""EC2 mode's runner event feed against a moto server: EventBridge's EC2 events and the
agents' reports, read from SQS, as the worker sees them."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import boto3

from runs_fleet_core.converters import dumps, make_message_converter
from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.messages import AgentEvent, AgentReport
from runs_fleet_core.ports.events import RunnerEventKind
from runs_fleet_core.testing.memory import RecordingMetrics
from runs_fleet_ec2.events import SPOT_WARNING, STATE_CHANGE, Ec2RunnerEvents
from runs_fleet_ec2.resources import EVENT_RULE_NAME, ensure_event_rule
from runs_fleet_sqs.resources import ensure_queue
from tests.contract import test_ec2_provider
from tests.contract.test_ec2_provider import Ec2World, job_spec, name_of

world = test_ec2_provider.world
"""The provider tests' world (moto with subnets, launch templates, the breaker table)."""


async def _feed(world: Ec2World, metrics: RecordingMetrics) -> tuple[Ec2RunnerEvents, str, str]:
    events = await ensure_queue(world.caller, "ev", fifo=False, max_receives=5)
    reports = await ensure_queue(world.caller, "rep", fifo=False, max_receives=5)
    feed = Ec2RunnerEvents(
        world.caller,
        events_queue_url=events.url,
        termination_queue_url=reports.url,
        provider=world.provider(),
        metrics=metrics,
    )
    return feed, events.url, reports.url


def _ec2_event(detail_type: str, detail: dict[str, Any]) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": "7bf73129-1428-4cd3-a780-95db273d1602",
            "detail-type": detail_type,
            "source": "aws.ec2",
            "account": "123456789012",
            "time": "2026-11-22T10:00:00Z",
            "region": "us-east-1",
            "resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{detail['instance-id']}"],
            "detail": detail,
        }
    )


async def test_a_spot_warning_becomes_an_interruption_counted_in_the_breaker(
    world: Ec2World,
) -> None:
    metrics = RecordingMetrics()
    feed, events_url, _ = await _feed(world, metrics)
    launched = await world.provider().create_runner(job_spec(), runner_name=name_of(101))
    body = _ec2_event(
        SPOT_WARNING, {"instance-id": launched.runner_id, "instance-action": "terminate"}
    )
    await world.caller.call("sqs", "send_message", QueueUrl=events_url, MessageBody=body)
    received = await feed.receive(10, 1)
    assert [(e.kind, e.runner_id) for e in received] == [
        (RunnerEventKind.INTERRUPTION, launched.runner_id)
    ]
    state = await world.provider().describe_runner(launched.runner_id)
    family = state.details["instance_type"].split(".")[0]
    breaker = world.breaker()
    assert not await breaker.is_open(family, state.details["availability_zone"], world.clock.now())
    for _ in range(2):  # two more warnings (other messages) open it at the default of 3
        await world.caller.call("sqs", "send_message", QueueUrl=events_url, MessageBody=body)
        for event in await feed.receive(10, 1):
            await feed.ack(event)
    assert await breaker.is_open(family, state.details["availability_zone"], world.clock.now())
    for event in received:
        await feed.ack(event)
    assert await feed.receive(10, 0) == []


async def test_a_redelivered_warning_is_counted_once(world: Ec2World) -> None:
    feed, events_url, _ = await _feed(world, RecordingMetrics())
    launched = await world.provider().create_runner(job_spec(), runner_name=name_of(102))
    state = await world.provider().describe_runner(launched.runner_id)
    family, zone = state.details["instance_type"].split(".")[0], state.details["availability_zone"]
    body = _ec2_event(SPOT_WARNING, {"instance-id": launched.runner_id})
    await world.caller.call("sqs", "send_message", QueueUrl=events_url, MessageBody=body)
    for _ in range(3):  # received, never acked, received again (visibility 0 for speed)
        for event in await feed.receive(10, 1):
            _, _, handle = event.receipt.partition("|")
            await world.caller.call(
                "sqs",
                "change_message_visibility",
                QueueUrl=events_url,
                ReceiptHandle=handle,
                VisibilityTimeout=0,
            )
    assert not await world.breaker().is_open(family, zone, world.clock.now())


async def test_state_changes_to_stopped_or_terminated_are_gone_events_others_dropped(
    world: Ec2World,
) -> None:
    feed, events_url, _ = await _feed(world, RecordingMetrics())
    for state in ("pending", "running", "stopped", "terminated"):
        body = _ec2_event(STATE_CHANGE, {"instance-id": f"i-0{state}", "state": state})
        await world.caller.call("sqs", "send_message", QueueUrl=events_url, MessageBody=body)
    seen: list[tuple[RunnerEventKind, RunnerId | None]] = []
    for _ in range(3):
        for event in await feed.receive(10, 1):
            seen.append((event.kind, event.runner_id))
            await feed.ack(event)
    assert sorted(seen) == [
        (RunnerEventKind.GONE, RunnerId("i-0stopped")),
        (RunnerEventKind.GONE, RunnerId("i-0terminated")),
    ]
    attributes = await world.caller.call(
        "sqs",
        "get_queue_attributes",
        QueueUrl=events_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    assert set(attributes["Attributes"].values()) == {"0"}  # the dropped ones were deleted


async def test_an_agent_report_carries_its_token_and_junk_is_dropped_and_counted(
    world: Ec2World,
) -> None:
    metrics = RecordingMetrics()
    feed, _, reports_url = await _feed(world, metrics)
    report = AgentReport(
        job_id=JobId(7),
        runner_name="runs-fleet-7-1",
        event=AgentEvent.FINISHED,
        at=datetime(2026, 11, 22, tzinfo=UTC),
        exit_code=0,
    )
    await world.caller.call(
        "sqs",
        "send_message",
        QueueUrl=reports_url,
        MessageBody=dumps(make_message_converter(), report),
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "agent-report"},
            "token": {"DataType": "String", "StringValue": "t0k3n"},
        },
    )
    await world.caller.call("sqs", "send_message", QueueUrl=reports_url, MessageBody="{not json")
    received = []
    for _ in range(3):
        received += await feed.receive(10, 1)
    assert [(e.kind, e.report, e.token) for e in received] == [
        (RunnerEventKind.REPORT, report, "t0k3n")
    ]
    assert "t0k3n" not in repr(received[0])
    assert metrics.count("runner_events_unreadable") == 1


async def test_the_event_rule_routes_ec2_events_to_the_queue(world: Ec2World) -> None:
    events = await ensure_queue(world.caller, "routed", fifo=False, max_receives=5)
    rule_arn = await ensure_event_rule(world.caller, EVENT_RULE_NAME, events.url)
    assert rule_arn == await ensure_event_rule(world.caller, EVENT_RULE_NAME, events.url)
    client = boto3.client("events")
    rule = client.describe_rule(Name=EVENT_RULE_NAME)
    assert json.loads(rule["EventPattern"])["detail-type"] == [SPOT_WARNING, STATE_CHANGE]
    targets = client.list_targets_by_rule(Rule=EVENT_RULE_NAME)["Targets"]
    assert [t["Arn"].rsplit(":", 1)[1] for t in targets] == ["routed"]
    client.put_events(
        Entries=[
            {
                "Source": "aws.ec2",
                "DetailType": SPOT_WARNING,
                "Detail": json.dumps({"instance-id": "i-0abc", "instance-action": "terminate"}),
            }
        ]
    )
    feed = Ec2RunnerEvents(
        world.caller,
        events_queue_url=events.url,
        termination_queue_url=None,
        provider=None,
        metrics=RecordingMetrics(),
    )
    received = await feed.receive(10, 2)
    assert [(e.kind, e.runner_id) for e in received] == [
        (RunnerEventKind.INTERRUPTION, RunnerId("i-0abc"))
    ]


def test_the_plugin_lists_its_settings_without_loading_boto3() -> None:
    code = (
        "import sys, runs_fleet_ec2.plugin as p; p.settings(); "
        "sys.exit(any(m.split('.')[0] in ('boto3', 'botocore') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
