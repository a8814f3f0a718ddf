"""The EC2 agent's logs in CloudWatch Logs, against a moto server: the agent runs for
real (a child process) with a stand-in ``run.sh`` that prints secrets, and the log
stream then holds the runner's and the agent's lines with every secret masked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.domain.messages import AgentEvent
from tests.integration.test_ec2_agent import JIT, RUNNER, TOKEN, Agents, Cloud
from tests.moto_server import MotoServer

GROUP = "/runs-fleet/runners"
INSTALLATION_TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PRINTING_RUN_SH = f"""#!/bin/bash
echo $$ > runner.pid
[[ $# == 2 && $1 == --jitconfig && $2 == '{JIT}' ]] || exit 99
echo "Listening for Jobs"
echo "starting with --jitconfig $2"
echo "git credential: {INSTALLATION_TOKEN}"
echo "aws_secret_access_key={AWS_SECRET}" >&2
echo "report token {TOKEN} leaked by a step"
echo "Job hello completed with result: Succeeded"
touch ran
"""
SECRETS = (JIT, TOKEN, INSTALLATION_TOKEN, AWS_SECRET)


@pytest.fixture
def cloud(aws: MotoServer, aws_caller: AwsCaller) -> Cloud:
    return Cloud(aws, aws_caller)


@pytest.fixture
def agents(tmp_path: Path, aws: MotoServer) -> Iterator[Agents]:
    agents = Agents(tmp_path, aws)
    yield agents
    agents.kill_all()


@pytest.fixture
def logs(aws: MotoServer) -> Any:
    client = boto3.client("logs")
    client.create_log_group(logGroupName=GROUP)
    return client


def stream_events(logs: Any, stream: str) -> tuple[list[str], str]:
    """The messages of ``stream``, and every answer GetLogEvents gave, as one text."""
    answers = []
    messages: list[str] = []
    token = None
    while True:
        params = {"logGroupName": GROUP, "logStreamName": stream, "startFromHead": True}
        answer = logs.get_log_events(**params, **({"nextToken": token} if token else {}))
        answers.append(answer)
        messages += [event["message"] for event in answer["events"]]
        if not answer["events"] or answer.get("nextForwardToken") == token:
            return messages, json.dumps(answers, default=str)
        token = answer["nextForwardToken"]


def streams(logs: Any) -> list[str]:
    answer = logs.describe_log_streams(logGroupName=GROUP)
    return [stream["logStreamName"] for stream in answer["logStreams"]]


async def test_the_runners_and_the_agents_lines_reach_the_stream_without_secrets(
    cloud: Cloud, agents: Agents, logs: Any
) -> None:
    instance = cloud.launch(**{"runs-fleet:runner-name": RUNNER})
    await cloud.put_config(RUNNER)
    agents.run_sh(PRINTING_RUN_SH)
    agent = agents.start(RUNS_FLEET_INSTANCE_ID=instance, RUNS_FLEET_EC2_LOG_GROUP=GROUP)
    stdout, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
    assert streams(logs) == [f"{RUNNER}/{instance}"]
    messages, everything = stream_events(logs, f"{RUNNER}/{instance}")
    for secret in SECRETS:
        assert secret not in everything, secret
    assert "Listening for Jobs" in messages
    assert "starting with --jitconfig ***" in messages
    assert "git credential: ***" in messages
    assert "aws_secret_access_key=***" in messages  # the runner's stderr too
    assert "report token *** leaked by a step" in messages
    assert "Job hello completed with result: Succeeded" in messages
    agent_lines = [m for m in messages if m.startswith("runs-fleet-agent ")]
    assert any("looks for its config" in m for m in agent_lines), agent_lines
    assert any(f"runner {RUNNER} takes job 7" in m for m in agent_lines), agent_lines
    assert any("job 7 ended: finished (exit code 0)" in m for m in agent_lines), agent_lines
    # the job went as it goes without shipping: its reports, the instance's end
    assert [r.event for r in cloud.reports()] == [AgentEvent.STARTED, AgentEvent.FINISHED]
    assert cloud.state(instance) == "terminated"
    # the runner's output still reaches the agent's stdout, unchanged
    assert "Listening for Jobs\n" in stdout
    assert f"git credential: {INSTALLATION_TOKEN}\n" in stdout
    assert "lines shipped, 0 dropped" in stderr


async def test_a_missing_log_group_leaves_the_job_unaffected(
    cloud: Cloud, agents: Agents, logs: Any
) -> None:
    instance = cloud.launch(**{"runs-fleet:runner-name": RUNNER})
    await cloud.put_config(RUNNER)
    agents.run_sh(PRINTING_RUN_SH)
    code, output = agents.run(
        RUNS_FLEET_INSTANCE_ID=instance, RUNS_FLEET_EC2_LOG_GROUP="/no/such/group"
    )
    assert code == 0, output
    assert "log group /no/such/group does not exist" in output
    assert (agents.work / "ran").exists()
    assert [r.event for r in cloud.reports()] == [AgentEvent.STARTED, AgentEvent.FINISHED]
    assert cloud.state(instance) == "terminated"
    assert streams(logs) == []


def test_a_pool_instance_ships_its_wait_under_pool(cloud: Cloud, agents: Agents, logs: Any) -> None:
    instance = cloud.launch(**{"runs-fleet:pool": "warm"})
    agents.run_sh(PRINTING_RUN_SH)
    code, output = agents.run(
        "--wait-for-config", "0.3", RUNS_FLEET_INSTANCE_ID=instance, RUNS_FLEET_EC2_LOG_GROUP=GROUP
    )
    assert code == 75, output
    messages, _ = stream_events(logs, f"pool/{instance}")
    assert any("no config for this instance" in m for m in messages), messages
    assert cloud.state(instance) == "stopped"


async def test_without_a_log_group_nothing_is_shipped(
    cloud: Cloud, agents: Agents, logs: Any
) -> None:
    instance = cloud.launch(**{"runs-fleet:runner-name": RUNNER})
    await cloud.put_config(RUNNER)
    agents.run_sh(PRINTING_RUN_SH)
    agent = agents.start(RUNS_FLEET_INSTANCE_ID=instance)
    stdout, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
    assert streams(logs) == []
    assert "Listening for Jobs\n" in stdout
    assert "aws_secret_access_key" in stderr  # the runner writes to the agent's stderr itself
