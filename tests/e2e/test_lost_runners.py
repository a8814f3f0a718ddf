"""A runner lost while GitHub runs its job, end to end in EC2 mode (moto server, the GitHub
simulator, ``runs-fleet serve``): AWS reclaims the spot instance mid-job, GitHub fails
the job, and with ``RUNS_FLEET_RERUN_LOST_JOBS=1`` runs-fleet has GitHub re-run it, which
queues a new job that gets a fresh runner. No replacement is launched for the job GitHub
had already started (no runner could take it), and a re-run is asked for once."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from runs_fleet_cli.demo.processes import http_json
from tests.e2e.ec2_stack import Ec2Stack, ec2_stack
from tests.e2e.local_stack import runner_name
from tests.moto_server import MotoServer


@pytest.fixture
def stack(tmp_path: Path, aws: MotoServer) -> Iterator[Ec2Stack]:
    for started in ec2_stack(tmp_path, aws, settings={"RUNS_FLEET_RERUN_LOST_JOBS": "1"}):
        started.start(job_seconds=120)
        yield started


def _spot_warning(instance_id: str) -> None:
    detail = {"instance-id": instance_id, "instance-action": "terminate"}
    boto3.client("events").put_events(
        Entries=[
            {
                "Source": "aws.ec2",
                "DetailType": "EC2 Spot Instance Interruption Warning",
                "Detail": json.dumps(detail),
            }
        ]
    )


def test_a_job_failed_by_a_reclaimed_spot_runner_is_rerun_once_on_a_fresh_runner(
    stack: Ec2Stack,
) -> None:
    job_id, _ = stack.queue_job()
    name = runner_name(job_id)
    tag = {"runs-fleet:job-id": str(job_id)}
    [instance] = stack.wait_for("the spot instance", lambda: stack.instances(**tag) or None)
    agent = stack.start_agent(instance["InstanceId"])
    github_job: dict[str, Any] = stack.wait_for(
        "GitHub to run the job on its runner",
        lambda: (j := stack.github_job(job_id))["status"] == "in_progress" and j,
        timeout_s=30,
    )
    assert github_job["runner_name"] == name
    stack.wait_for(
        "runs-fleet to see the job run on its runner",
        lambda: (r := stack.job(job_id)) and r.get("observed_runner") == name,
    )

    _spot_warning(instance["InstanceId"])
    lost = stack.wait_for(
        "runs-fleet to record the loss", lambda: (r := stack.job(job_id)) and r["runner_lost"] and r
    )
    assert lost["status"] == "running" and lost["attempt"] == 1
    os.killpg(agent.pid, signal.SIGKILL)  # the machine is gone: no report, no goodbye
    agent.wait()
    http_json("POST", f"{stack.simulator}/_simulator/runners/{github_job['runner_id']}/lost")

    reruns: list[dict[str, int]] = stack.wait_for(
        "the re-run", lambda: http_json("GET", f"{stack.simulator}/_simulator/reruns") or None
    )
    [rerun] = reruns
    assert rerun["job_id"] == job_id
    new_id = rerun["new_job_id"]
    new_tag = {"runs-fleet:job-id": str(new_id)}
    [fresh] = stack.wait_for("the re-run's instance", lambda: stack.instances(**new_tag) or None)
    assert fresh["InstanceId"] != instance["InstanceId"]
    record = stack.wait_for_status(job_id, "completed")
    assert "spot" in record["reason"] and "re-run requested" in record["reason"]
    assert len(stack.instances(**tag)) == 1  # nothing relaunched for the job GitHub had started
    assert stack.jit_configs() == [name, runner_name(new_id)]
    new_record = stack.wait_for_status(new_id, "launching", "running")
    assert new_record["attempt"] == 1
