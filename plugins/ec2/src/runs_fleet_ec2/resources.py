"""``runs-fleet aws create-resources``: the AWS resources EC2 mode's settings name.

For development, tests and users without Terraform: it creates, idempotently, the job
queue with its dead-letter queue (redrive after ``RUNS_FLEET_MAX_ATTEMPTS`` receives),
the jobs, pools and locks tables and the spot circuit breaker table (with their indexes
and TTL), the events queue with the EventBridge rule that feeds it EC2 spot warnings and
state changes, and the termination queue runners report to; and it prints the settings
that point runs-fleet at them. Running it again changes
nothing; a table that exists with another shape is an error naming the setting to change.
SSM needs nothing created: parameters appear under ``RUNS_FLEET_SSM_PREFIX`` as runners
get configs. The Terraform module must create the same shapes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_aws.plugin import TIMEOUT
from runs_fleet_core.errors import RunsFleetError
from runs_fleet_core.plugins import PluginManager
from runs_fleet_core.plugins.manager import DISABLE_VAR
from runs_fleet_core.settings import Settings, inspect_settings
from runs_fleet_core.wiring import setting_definitions
from runs_fleet_ec2 import breaker
from runs_fleet_ec2.events import EVENTS_QUEUE, SPOT_WARNING, STATE_CHANGE, TERMINATION_QUEUE
from runs_fleet_ec2.tables import JOBS, LOCKS, POOLS, TableSpec, ensure_table
from runs_fleet_sqs.resources import ensure_queue

CIRCUIT = TableSpec(
    role="spot circuit breaker",
    setting=breaker.TABLE,
    default_name="runs-fleet-circuit-state",
    hash_key=breaker.TABLE_KEY,
    attributes={breaker.TABLE_KEY: "S"},
    ttl_attribute=breaker.TTL_ATTRIBUTE,
)
TABLES = (JOBS, POOLS, LOCKS, CIRCUIT)
DEFAULT_QUEUE_NAME = "runs-fleet-jobs"
EVENTS_QUEUE_NAME = "runs-fleet-events"
TERMINATION_QUEUE_NAME = "runs-fleet-termination"
EVENT_RULE_NAME = "runs-fleet-ec2-events"
EVENT_RECEIVES = 5
"""Receives of an events or termination message before SQS sets it aside."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``create-resources`` under the ``aws`` command."""
    sub = parser.add_subparsers(dest="aws_command", metavar="SUBCOMMAND", required=True)
    create = sub.add_parser(
        "create-resources",
        help="create the SQS queues and DynamoDB tables EC2 mode uses (idempotent)",
    )
    create.add_argument(
        "--queue-name",
        default=DEFAULT_QUEUE_NAME,
        help=f"name of the job queue (default {DEFAULT_QUEUE_NAME}; .fifo is added for "
        "a FIFO queue, -dlq for its dead-letter queue)",
    )
    create.add_argument(
        "--standard-queue",
        action="store_true",
        help="create a standard queue instead of a FIFO one (no deduplication by job)",
    )
    create.add_argument("--json", action="store_true", help="print the settings as JSON")


def main(args: argparse.Namespace) -> int:
    """Create the resources of the settings in the environment; print the settings."""
    env = os.environ
    disabled = [name.strip() for name in env.get(DISABLE_VAR, "").split(",") if name.strip()]
    settings, problems = inspect_settings(
        env, setting_definitions(PluginManager(disabled=disabled)), require=False
    )
    if problems:
        raise RunsFleetError(
            "the configuration has problems; fix them first:\n  " + "\n  ".join(problems)
        )
    caller = AwsCaller(timeout_s=float(settings.get(TIMEOUT, 30.0))).require_region()
    try:
        created = asyncio.run(
            create_resources(
                settings,
                caller,
                queue_name=args.queue_name,
                fifo=not args.standard_queue,
            )
        )
    except ValueError as exc:  # a queue name SQS would refuse
        raise RunsFleetError(str(exc)) from exc
    finally:
        caller.close()
    if args.json:
        print(json.dumps(created, indent=2))
    else:
        sys.stderr.write("created or found; point runs-fleet at them with:\n")
        for name, value in created.items():
            print(f"export {name}={value}")
    return 0


async def create_resources(
    settings: Settings, caller: AwsCaller, *, queue_name: str, fifo: bool = True
) -> Mapping[str, str]:
    """Create what is missing; the settings that name every resource."""
    result: dict[str, str] = {}
    for spec in TABLES:
        name = str(settings.get(spec.setting, spec.default_name))
        await ensure_table(caller, spec, name)
        result[spec.setting] = name
    urls = await ensure_queue(
        caller,
        queue_name,
        fifo=fifo,
        # one more than the adapter allows: the adapter dead-letters with a reason first,
        # the redrive policy is the safety net for a consumer that never gets that far
        max_receives=int(settings.get("RUNS_FLEET_MAX_ATTEMPTS", 3)) + 1,
    )
    result["RUNS_FLEET_QUEUE_URL"] = urls.url
    result["RUNS_FLEET_QUEUE_DLQ_URL"] = urls.dlq_url
    events = await ensure_queue(caller, EVENTS_QUEUE_NAME, fifo=False, max_receives=EVENT_RECEIVES)
    await ensure_event_rule(caller, EVENT_RULE_NAME, events.url)
    result[EVENTS_QUEUE] = events.url
    reports = await ensure_queue(
        caller, TERMINATION_QUEUE_NAME, fifo=False, max_receives=EVENT_RECEIVES
    )
    result[TERMINATION_QUEUE] = reports.url
    return result


async def ensure_event_rule(caller: AwsCaller, name: str, queue_url: str) -> str:
    """The EventBridge rule ``name`` sending EC2 spot interruption warnings and instance
    state changes to the queue, with the queue policy that lets EventBridge send (only
    for this rule). Put calls are upserts, so running it again changes nothing."""
    attributes = await caller.call(
        "sqs", "get_queue_attributes", QueueUrl=queue_url, AttributeNames=["QueueArn"]
    )
    queue_arn = attributes["Attributes"]["QueueArn"]
    pattern = {"source": ["aws.ec2"], "detail-type": [SPOT_WARNING, STATE_CHANGE]}
    rule = await caller.call(
        "events",
        "put_rule",
        Name=name,
        EventPattern=json.dumps(pattern),
        State="ENABLED",
        Description="runs-fleet: EC2 spot interruption warnings and instance state changes",
    )
    rule_arn = str(rule["RuleArn"])
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "runs-fleet-ec2-events",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }
    await caller.call(
        "sqs",
        "set_queue_attributes",
        QueueUrl=queue_url,
        Attributes={"Policy": json.dumps(policy)},
    )
    await caller.call(
        "events", "put_targets", Rule=name, Targets=[{"Id": "runs-fleet-events", "Arn": queue_arn}]
    )
    return rule_arn
