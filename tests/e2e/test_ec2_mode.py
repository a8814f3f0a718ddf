"""EC2 mode end to end against a moto server and the GitHub simulator: a signed
``queued`` webhook becomes one EC2 instance with its job's tags, its runner config in
SSM; the EC2 agent (playing the instance) runs the simulated runner and reports through
the termination queue; GitHub's ``completed`` webhook ends the job, its config is
deleted and the instance is gone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from runs_fleet_core.domain.spec import Arch
from tests.e2e.ec2_stack import IMAGES, Ec2Stack, ec2_stack
from tests.e2e.local_stack import LABEL, REPOSITORY, runner_name
from tests.moto_server import MotoServer

SSM_PREFIX = "/runs-fleet/runners"


@pytest.fixture
def stack(tmp_path: Path, aws: MotoServer) -> Iterator[Ec2Stack]:
    for started in ec2_stack(tmp_path, aws):
        started.start()
        yield started


def _tags(instance: dict[str, object]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance["Tags"]}  # type: ignore[attr-defined,index]


def test_a_queued_job_gets_one_tagged_instance_and_its_config_in_ssm(stack: Ec2Stack) -> None:
    job_id, delivery = stack.queue_job()
    name = runner_name(job_id)
    [instance] = stack.wait_for(
        "the runner's instance",
        lambda: stack.instances(**{"runs-fleet:job-id": str(job_id)}) or None,
    )
    record = stack.wait_for(
        "the runner id on the job", lambda: (r := stack.job(job_id)) and r["runner_id"] and r
    )
    assert record["status"] == "launching" and record["runner_id"] == instance["InstanceId"]
    tags = _tags(instance)
    # no arch= and equal spot prices: arm64, from the arm64 launch template
    assert instance["ImageId"] == IMAGES[Arch.ARM64]
    assert instance["InstanceType"].split(".")[0] in {
        "c6g",
        "c7g",
        "c8g",
        "m7g",
        "m8g",
        "r7g",
        "t4g",
    }
    assert tags["runs-fleet:managed"] == "true"
    assert tags["runs-fleet:runner-name"] == name
    assert tags["runs-fleet:repo"] == REPOSITORY
    parameter = stack.parameter(f"{SSM_PREFIX}/{name}")
    assert parameter is not None and parameter["Type"] == "SecureString"
    config = json.loads(parameter["Value"])
    assert config["runner_name"] == name and config["job_id"] == job_id
    assert config["jit_config"]  # what GitHub issued for this runner
    assert stack.jit_configs() == [name]
    assert (
        config["settings"]["report_queue_url"]
        == stack.resources["RUNS_FLEET_TERMINATION_QUEUE_URL"]
    )
    for how in ("redeliver", "duplicate"):
        assert stack.resend(delivery, how) == 202
    assert len(stack.instances(**{"runs-fleet:job-id": str(job_id)})) == 1
    assert LABEL in config["labels"] or config["labels"] == [LABEL]


def test_the_agent_runs_the_job_reports_through_sqs_and_everything_is_cleaned_up(
    stack: Ec2Stack,
) -> None:
    job_id, _ = stack.queue_job()
    name = runner_name(job_id)
    [instance] = stack.wait_for(
        "the runner's instance",
        lambda: stack.instances(**{"runs-fleet:job-id": str(job_id)}) or None,
    )
    instance_id = instance["InstanceId"]
    parameter = stack.wait_for("the runner config", lambda: stack.parameter(f"{SSM_PREFIX}/{name}"))
    jit_config = json.loads(parameter["Value"])["jit_config"]
    done = stack.run_agent(instance_id)
    assert done.returncode == 0, done.stderr
    record = stack.wait_for_status(job_id, "completed")
    statuses = [entry["status"] for entry in record["timeline"]]
    assert statuses == ["queued", "claimed", "launching", "running", "completed"]
    assert stack.github_job(job_id)["runner_name"] == name
    assert stack.parameter(f"{SSM_PREFIX}/{name}") is None
    [after] = stack.instances(**{"runs-fleet:job-id": str(job_id)})
    assert after["State"]["Name"] == "terminated"
    assert jit_config not in done.stderr + done.stdout  # the agent never logs it
    assert jit_config not in json.dumps(record)  # nor does the jobs API show it


def test_a_spot_interruption_gives_exactly_one_on_demand_replacement(stack: Ec2Stack) -> None:
    job_id, _ = stack.queue_job()
    tag = {"runs-fleet:job-id": str(job_id)}
    [first] = stack.wait_for("the spot instance", lambda: stack.instances(**tag) or None)
    warning = {"instance-id": first["InstanceId"], "instance-action": "terminate"}
    for _ in range(2):  # EventBridge may deliver an event twice
        boto3.client("events").put_events(
            Entries=[
                {
                    "Source": "aws.ec2",
                    "DetailType": "EC2 Spot Instance Interruption Warning",
                    "Detail": json.dumps(warning),
                }
            ]
        )
    record = stack.wait_for(
        "the on-demand replacement",
        lambda: (r := stack.job(job_id)) and r["attempt"] == 2 and r["runner_id"] and r,
    )
    assert record["status"] == "launching"
    assert record["spec"]["spot"] is False
    instances = stack.instances(**tag)
    assert len(instances) == 2
    [second] = [i for i in instances if i["InstanceId"] != first["InstanceId"]]
    assert record["runner_id"] == second["InstanceId"]
    assert first.get("InstanceLifecycle") == "spot"
    assert second.get("InstanceLifecycle") != "spot"
    assert {t["Key"]: t["Value"] for t in second["Tags"]}["runs-fleet:runner-name"] == (
        runner_name(job_id, 2)
    )
    assert stack.jit_configs() == [runner_name(job_id), runner_name(job_id, 2)]
    time.sleep(2)  # room for a third instance, if the duplicate warning made one
    assert len(stack.instances(**tag)) == 2


def test_a_warm_pool_job_takes_a_stopped_instance_instead_of_launching_one(
    stack: Ec2Stack,
) -> None:
    label = "runs-fleet=4242/cpu=2/arch=arm64/pool=warm"
    made = stack.pools("set", "warm", "--label", label, "--running", "0", "--stopped", "1")
    assert made.returncode == 0, made.stderr
    [pooled] = stack.wait_for(
        "a stopped warm-pool instance",
        lambda: (
            [
                i
                for i in stack.instances(**{"runs-fleet:pool": "warm"})
                if i["State"]["Name"] == "stopped"
            ]
            or None
        ),
        timeout_s=60,
    )
    job_id, _ = stack.queue_job(labels=[label])
    record = stack.wait_for(
        "the job on the warm instance",
        lambda: (r := stack.job(job_id)) and r["runner_id"] and r,
    )
    assert record["runner_id"] == pooled["InstanceId"]
    assert stack.instances(**{"runs-fleet:job-id": str(job_id)}) == []  # nothing launched
    [started] = [
        i
        for i in stack.instances(**{"runs-fleet:pool": "warm"})
        if i["InstanceId"] == pooled["InstanceId"]
    ]
    assert started["State"]["Name"] == "running"
    parameter = stack.parameter(f"{SSM_PREFIX}/{pooled['InstanceId']}")
    assert parameter is not None
    assert json.loads(parameter["Value"])["runner_name"] == runner_name(job_id)
    shown = stack.pools("show", "warm", "--json")
    assert shown.returncode == 0, shown.stderr
    runners = json.loads(shown.stdout)["runners"]
    assert {r["runner_id"]: r["job_id"] for r in runners}[pooled["InstanceId"]] == job_id
