"""``runs-fleet aws create-resources``: the AWS resources EC2 mode's settings name.

For development, tests and users without Terraform: it creates, idempotently, the job
queue with its dead-letter queue (redrive after ``RUNS_FLEET_MAX_ATTEMPTS`` receives),
the jobs, pools and locks tables and the spot circuit breaker table (with their indexes
and TTL), and prints the settings that point runs-fleet at them. Running it again changes
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
    caller = AwsCaller(timeout_s=float(settings.get(TIMEOUT, 30.0)))
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
    return result
