"""``runs-fleet aws create-resources`` against a moto server, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import boto3

from tests.moto_server import MotoServer


def _create(aws: MotoServer, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runs_fleet_cli", "aws", "create-resources", *args],
        env={**os.environ, **aws.env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_it_creates_the_queues_and_tables_ec2_mode_names_and_again_changes_nothing(
    aws: MotoServer,
) -> None:
    first = _create(aws, "--json", RUNS_FLEET_JOBS_TABLE="ci-jobs")
    assert first.returncode == 0, first.stderr
    created: dict[str, Any] = json.loads(first.stdout)
    assert created["RUNS_FLEET_JOBS_TABLE"] == "ci-jobs"
    assert created["RUNS_FLEET_QUEUE_URL"].endswith("/runs-fleet-jobs.fifo")
    assert created["RUNS_FLEET_QUEUE_DLQ_URL"].endswith("/runs-fleet-jobs-dlq.fifo")
    assert created["RUNS_FLEET_EVENTS_QUEUE_URL"].endswith("/runs-fleet-events")
    assert created["RUNS_FLEET_TERMINATION_QUEUE_URL"].endswith("/runs-fleet-termination")
    targets = boto3.client("events").list_targets_by_rule(Rule="runs-fleet-ec2-events")
    assert [t["Arn"].rsplit(":", 1)[1] for t in targets["Targets"]] == ["runs-fleet-events"]

    dynamodb = boto3.client("dynamodb")
    tables = set(dynamodb.list_tables()["TableNames"])
    assert tables == {"ci-jobs", "runs-fleet-pools", "runs-fleet-locks", "runs-fleet-circuit-state"}
    jobs = dynamodb.describe_table(TableName="ci-jobs")["Table"]
    assert {i["IndexName"] for i in jobs["GlobalSecondaryIndexes"]} == {"by-status", "by-pool"}
    ttl = dynamodb.describe_time_to_live(TableName="ci-jobs")["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"

    sqs = boto3.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=created["RUNS_FLEET_QUEUE_URL"], AttributeNames=["All"]
    )["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":runs-fleet-jobs-dlq.fifo")
    assert int(redrive["maxReceiveCount"]) == 4  # RUNS_FLEET_MAX_ATTEMPTS (3) + 1
    assert attributes["FifoQueue"] == "true"

    again = _create(aws, "--json", RUNS_FLEET_JOBS_TABLE="ci-jobs")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == created


def test_without_json_it_prints_the_settings_to_export(aws: MotoServer) -> None:
    done = _create(aws)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "export RUNS_FLEET_LOCKS_TABLE=runs-fleet-locks" in lines
    assert any(line.startswith("export RUNS_FLEET_QUEUE_URL=http") for line in lines)


def test_a_bad_queue_name_is_refused_with_the_rule_and_creates_no_queue(aws: MotoServer) -> None:
    done = _create(aws, "--queue-name", "no spaces please")
    assert done.returncode == 2
    assert "queue name 'no spaces please' is not valid" in done.stderr
    assert "Traceback" not in done.stderr
    assert boto3.client("sqs").list_queues().get("QueueUrls", []) == []


def test_an_existing_table_of_another_shape_is_an_error_naming_the_setting(
    aws: MotoServer,
) -> None:
    boto3.client("dynamodb").create_table(
        TableName="runs-fleet-pools",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )
    done = _create(aws)
    assert done.returncode == 2
    assert "RUNS_FLEET_POOLS_TABLE" in done.stderr and "Traceback" not in done.stderr


def test_without_a_region_it_says_how_to_set_one(aws: MotoServer) -> None:
    env = {k: v for k, v in {**os.environ, **aws.env()}.items() if "REGION" not in k}
    done = subprocess.run(
        [sys.executable, "-m", "runs_fleet_cli", "aws", "create-resources"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "no AWS region: set AWS_REGION" in done.stderr and "Traceback" not in done.stderr
