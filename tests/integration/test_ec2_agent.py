"""The EC2 agent as a process, against a moto server: instance, config, run.sh, reports,
and the instance's end.

Each test launches an instance in moto, puts its config with the real SSM config store,
and runs the agent for real (a child process with the moto environment) against a
stand-in ``run.sh`` that checks its arguments. Off EC2, ``RUNS_FLEET_INSTANCE_ID`` names
the instance and ``RUNS_FLEET_IMDS_URL`` points at a closed port (the agent then reads
its tags with DescribeTags) or at a small IMDSv2 stand-in on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.converters import loads, make_message_converter
from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.messages import AgentEvent, AgentReport
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_ec2.imds import Imds, ImdsError
from runs_fleet_ec2.ssm import SsmConfigStore
from tests.moto_server import MotoServer

JIT = "JIT-CONFIG-SECRET-ec2-0123456789"
TOKEN = "REPORT-TOKEN-SECRET-ec2-abcdef"
RUNNER = "runs-fleet-7-1"
AMI = "ami-0123456789abcdef0"
CHECKING_RUN_SH = f"""#!/bin/bash
echo $$ > runner.pid
[[ $# == 2 && $1 == --jitconfig && $2 == '{JIT}' ]] || exit 99
touch ran
exit "${{EXIT_WITH:-0}}"
"""
TRAPPING_RUN_SH = (
    "#!/bin/bash\ntrap 'echo TERM > got; exit 0' TERM\necho $$ > runner.pid\n"
    "while true; do sleep 0.1; done\n"
)
AGENT = "import sys; from runs_fleet_ec2.agent import run; sys.exit(run(sys.argv[1:]))"


def wait_for(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def gone(pid_file: Path) -> bool:
    """Whether the process whose pid is in ``pid_file`` has exited (or is a zombie)."""
    try:
        stat = Path(f"/proc/{int(pid_file.read_text())}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the socket is closed when this returns)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class Cloud:
    """The moto account of one test: instances, the config store, the report queue."""

    def __init__(self, server: MotoServer, caller: AwsCaller) -> None:
        self.server = server
        self.ec2 = boto3.client("ec2")
        self.sqs = boto3.client("sqs")
        self.store = SsmConfigStore(caller)
        self.queue_url = self.sqs.create_queue(
            QueueName="runs-fleet-reports.fifo", Attributes={"FifoQueue": "true"}
        )["QueueUrl"]

    def launch(self, **tags: str) -> str:
        answer = self.ec2.run_instances(
            ImageId=AMI,
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": key, "Value": value} for key, value in tags.items()],
                }
            ],
        )
        return str(answer["Instances"][0]["InstanceId"])

    def state(self, instance_id: str) -> str:
        answer = self.ec2.describe_instances(InstanceIds=[instance_id])
        return str(answer["Reservations"][0]["Instances"][0]["State"]["Name"])

    async def put_config(self, runner_id: str, **settings: str) -> None:
        config = RunnerConfig(
            runner_name=RUNNER,
            job_id=JobId(7),
            repository="octo-org/app",
            jit_config=JIT,
            settings={"report_queue_url": self.queue_url, "report_token": TOKEN, **settings},
        )
        await self.store.put(RunnerId(runner_id), config)

    def messages(self, queue_url: str | None = None) -> list[dict[str, Any]]:
        """Every message in the queue, in order."""
        found: list[dict[str, Any]] = []
        while True:
            answer = self.sqs.receive_message(
                QueueUrl=queue_url or self.queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
            )
            if not answer.get("Messages"):
                return found
            found += [dict(message) for message in answer["Messages"]]
            for message in answer["Messages"]:
                self.sqs.delete_message(
                    QueueUrl=queue_url or self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )

    def reports(self, queue_url: str | None = None) -> list[AgentReport]:
        converter = make_message_converter()
        return [loads(converter, m["Body"], AgentReport) for m in self.messages(queue_url)]


@pytest.fixture
def cloud(aws: MotoServer, aws_caller: AwsCaller) -> Cloud:
    return Cloud(aws, aws_caller)


class Agents:
    """Starts EC2 agents in ``work`` and kills every one left (with its session) at the end."""

    def __init__(self, work: Path, server: MotoServer) -> None:
        self.work = work
        self.server = server
        self.runner_dir = work / "runner"
        self.runner_dir.mkdir()
        self.started: list[subprocess.Popen[str]] = []

    def run_sh(self, script: str) -> None:
        path = self.runner_dir / "run.sh"
        path.write_text(script)
        path.chmod(0o755)

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """An agent with the moto environment, no reachable metadata, and ``env``."""
        command = [sys.executable, "-c", AGENT, "--runner-dir", str(self.runner_dir)]
        command += ["--poll-interval", "0.1", "--report-backoff", "0.05", *args]
        environment = {
            "PATH": os.environ["PATH"],
            "RUNS_FLEET_IMDS_URL": closed_port_url(),
            **self.server.env(),
            **env,
        }
        child = subprocess.Popen(
            command,
            cwd=self.work,
            env={name: value for name, value in environment.items() if value},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.started.append(child)
        return child

    def run(self, *args: str, **env: str) -> tuple[int, str]:
        """Run an agent to its end: its exit code and everything it printed."""
        out, err = self.start(*args, **env).communicate(timeout=60)
        return self.started[-1].returncode, out + err

    def kill_all(self) -> None:
        for child in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
                os.killpg(int((self.work / "runner.pid").read_text()), signal.SIGKILL)
            child.communicate()


@pytest.fixture
def agents(tmp_path: Path, aws: MotoServer) -> Iterator[Agents]:
    agents = Agents(tmp_path, aws)
    yield agents
    agents.kill_all()


class FakeImds:
    """An IMDSv2 stand-in on 127.0.0.1: a token from ``PUT /latest/api/token`` (which
    needs the TTL header), then ``GET``s that answer 401 without that token."""

    TOKEN = "imds-session-token"

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.token = self.TOKEN
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # header names in lowercase
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                imds.requests.append(
                    ("PUT", self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                if self.path != "/latest/api/token":
                    self._answer(404)
                elif not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self._answer(400)
                else:
                    self._answer(200, imds.token)

            def do_GET(self) -> None:
                imds.requests.append(
                    ("GET", self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                if self.headers.get("X-aws-ec2-metadata-token") != imds.token:
                    self._answer(401)
                elif self.path in imds.values:
                    self._answer(200, imds.values[self.path])
                else:
                    self._answer(404)

            def _answer(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


@pytest.fixture
def fake_imds() -> Iterator[Callable[[dict[str, str]], FakeImds]]:
    servers: list[FakeImds] = []

    def start(values: dict[str, str]) -> FakeImds:
        servers.append(FakeImds(values))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def imds_values(instance_id: str, **tags: str) -> dict[str, str]:
    values = {
        "/latest/meta-data/instance-id": instance_id,
        "/latest/dynamic/instance-identity/document": (
            f'{{"instanceId": "{instance_id}", "region": "us-east-1"}}'
        ),
        "/latest/meta-data/tags/instance": "\n".join(tags),
    }
    values.update({f"/latest/meta-data/tags/instance/{key}": value for key, value in tags.items()})
    return values


async def test_a_cold_start_runs_its_job_reports_to_sqs_and_terminates_itself(
    cloud: Cloud, agents: Agents
) -> None:
    instance = cloud.launch(**{"runs-fleet:runner-name": RUNNER, "runs-fleet:job-id": "7"})
    await cloud.put_config(RUNNER)
    agents.run_sh(CHECKING_RUN_SH)
    code, output = agents.run(RUNS_FLEET_INSTANCE_ID=instance)
    assert code == 0, output
    assert (agents.work / "ran").exists()
    messages = cloud.messages()
    assert [m["MessageAttributes"]["kind"]["StringValue"] for m in messages] == ["agent-report"] * 2
    assert [m["MessageAttributes"]["token"]["StringValue"] for m in messages] == [TOKEN] * 2
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {"7"}
    converter = make_message_converter()
    started, finished = (loads(converter, m["Body"], AgentReport) for m in messages)
    assert (started.event, started.job_id, started.runner_name) == (AgentEvent.STARTED, 7, RUNNER)
    assert (finished.event, finished.exit_code) == (AgentEvent.FINISHED, 0)
    assert await cloud.store.get(RunnerId(RUNNER)) is None
    assert cloud.state(instance) == "terminated"
    assert JIT not in output and TOKEN not in output


async def test_a_claimed_pool_instance_finds_its_config_under_its_id_and_passes_the_exit_code(
    cloud: Cloud, agents: Agents
) -> None:
    standard = cloud.sqs.create_queue(QueueName="runs-fleet-reports")["QueueUrl"]
    instance = cloud.launch(**{"runs-fleet:pool": "warm"})
    await cloud.put_config(instance, report_queue_url=standard)
    agents.run_sh(CHECKING_RUN_SH)
    code, output = agents.run(RUNS_FLEET_INSTANCE_ID=instance, EXIT_WITH="3")
    assert code == 3, output
    report = cloud.reports(standard)[-1]
    assert (report.event, report.exit_code) == (AgentEvent.FAILED, 3)
    assert await cloud.store.get(RunnerId(instance)) is None
    assert cloud.state(instance) == "terminated"


def test_a_pool_instance_without_a_config_stops_itself_without_running_the_runner(
    cloud: Cloud, agents: Agents
) -> None:
    instance = cloud.launch(**{"runs-fleet:pool": "warm"})
    agents.run_sh(CHECKING_RUN_SH)
    code, output = agents.run("--wait-for-config", "0.5", RUNS_FLEET_INSTANCE_ID=instance)
    assert code == 75, output
    assert cloud.state(instance) == "stopped"
    assert not (agents.work / "runner.pid").exists()
    assert cloud.messages() == []


def test_a_cold_instance_without_a_config_terminates_itself(cloud: Cloud, agents: Agents) -> None:
    instance = cloud.launch(**{"runs-fleet:runner-name": RUNNER})
    agents.run_sh(CHECKING_RUN_SH)
    code, output = agents.run("--wait-for-config", "0.3", RUNS_FLEET_INSTANCE_ID=instance)
    assert code == 75, output
    assert "no config for this instance" in output
    assert cloud.state(instance) == "terminated"
    assert not (agents.work / "runner.pid").exists()


async def test_a_waiting_agent_starts_once_its_config_appears(cloud: Cloud, agents: Agents) -> None:
    instance = cloud.launch(**{"runs-fleet:pool": "warm"})
    agents.run_sh(CHECKING_RUN_SH)
    agent = agents.start("--wait-for-config", "30", RUNS_FLEET_INSTANCE_ID=instance)
    wait_for(lambda: "looks for its config" in (agent.stderr.readline() if agent.stderr else ""))
    await cloud.put_config(instance)
    agent.communicate(timeout=30)
    assert agent.returncode == 0
    assert (agents.work / "ran").exists()


async def test_the_identity_comes_from_imdsv2_with_a_session_token(
    cloud: Cloud, agents: Agents, fake_imds: Callable[[dict[str, str]], FakeImds]
) -> None:
    instance = cloud.launch(**{"runs-fleet:runner-name": RUNNER})
    imds = fake_imds(imds_values(instance, **{"runs-fleet:runner-name": RUNNER, "team": "ci"}))
    await cloud.put_config(RUNNER)
    agents.run_sh(CHECKING_RUN_SH)
    # no instance id and no region in the environment: both come from the metadata
    code, output = agents.run(RUNS_FLEET_IMDS_URL=imds.url, AWS_REGION="", AWS_DEFAULT_REGION="")
    assert code == 0, output
    assert (agents.work / "ran").exists()
    assert cloud.state(instance) == "terminated"
    assert imds.requests[0][:2] == ("PUT", "/latest/api/token")
    gets = [(path, headers) for method, path, headers in imds.requests if method == "GET"]
    assert "/latest/meta-data/tags/instance/runs-fleet:runner-name" in {path for path, _ in gets}
    assert all(h.get("x-aws-ec2-metadata-token") == FakeImds.TOKEN for _, h in gets)


def test_the_imds_client_needs_its_token_and_tells_missing_tags_apart(
    fake_imds: Callable[[dict[str, str]], FakeImds],
) -> None:
    imds_server = fake_imds(imds_values("i-0abc", **{"runs-fleet:pool": "warm"}))
    bare = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as refused:
        bare.open(imds_server.url + "/latest/meta-data/instance-id", timeout=5)
    assert refused.value.code == 401
    refused.value.close()
    client = Imds(imds_server.url)
    assert client.instance_id() == "i-0abc"
    assert client.region() == "us-east-1"
    assert client.tag_keys() == ["runs-fleet:pool"]
    assert client.tag("runs-fleet:pool") == "warm"
    assert client.tag("runs-fleet:runner-name") is None
    del imds_server.values["/latest/meta-data/tags/instance"]
    assert client.tag_keys() is None  # tags are not in the metadata at all


def test_an_expired_imds_token_is_renewed(
    fake_imds: Callable[[dict[str, str]], FakeImds],
) -> None:
    imds_server = fake_imds(imds_values("i-0abc", **{"runs-fleet:pool": "warm"}))
    client = Imds(imds_server.url)
    assert client.instance_id() == "i-0abc"
    imds_server.token = "the-next-token"  # the first one expired
    assert client.tag("runs-fleet:pool") == "warm"
    assert [method for method, _, _ in imds_server.requests].count("PUT") == 2


def test_unreachable_metadata_is_a_clear_error() -> None:
    url = closed_port_url()
    with pytest.raises(ImdsError, match=re.escape(f"cannot reach instance metadata at {url}")):
        Imds(url, attempts=2, backoff_s=0.01).instance_id()


def test_without_an_instance_id_or_metadata_the_agent_says_what_to_set(agents: Agents) -> None:
    code, output = agents.run()
    assert code == 78
    assert "RUNS_FLEET_INSTANCE_ID" in output


async def test_sigterm_is_forwarded_to_the_runner_and_reported_interrupted(
    cloud: Cloud, agents: Agents
) -> None:
    instance = cloud.launch(**{"runs-fleet:runner-name": RUNNER})
    await cloud.put_config(RUNNER)
    agents.run_sh(TRAPPING_RUN_SH)
    agent = agents.start(RUNS_FLEET_INSTANCE_ID=instance)
    wait_for(lambda: (agents.work / "runner.pid").exists())
    agent.send_signal(signal.SIGTERM)
    agent.communicate(timeout=30)
    assert agent.returncode == 143
    assert (agents.work / "got").read_text().strip() == "TERM"
    assert gone(agents.work / "runner.pid")
    report = cloud.reports()[-1]
    assert (report.event, report.exit_code) == (AgentEvent.INTERRUPTED, 143)
    assert cloud.state(instance) == "terminated"


async def test_a_runner_past_its_maximum_runtime_is_stopped_reported_and_the_instance_released(
    cloud: Cloud, agents: Agents
) -> None:
    instance = cloud.launch(**{"runs-fleet:runner-name": RUNNER})
    await cloud.put_config(RUNNER, max_runtime_s="1")
    agents.run_sh(TRAPPING_RUN_SH)
    code, output = agents.run("--grace", "5", RUNS_FLEET_INSTANCE_ID=instance)
    assert code == 124, output
    assert (agents.work / "got").read_text().strip() == "TERM"  # asked to stop, then gone
    assert gone(agents.work / "runner.pid")
    started, report = cloud.reports()
    assert started.event is AgentEvent.STARTED
    assert (report.event, report.exit_code) == (AgentEvent.FAILED, 124)
    assert report.detail and "maximum runtime" in report.detail
    assert await cloud.store.get(RunnerId(RUNNER)) is None
    assert cloud.state(instance) == "terminated"
    assert JIT not in output and TOKEN not in output


async def test_an_undeliverable_report_does_not_change_the_exit_code(
    cloud: Cloud, agents: Agents
) -> None:
    instance = cloud.launch(**{"runs-fleet:runner-name": RUNNER})
    missing = cloud.queue_url.replace("runs-fleet-reports", "no-such-queue")
    await cloud.put_config(RUNNER, report_queue_url=missing)
    agents.run_sh(CHECKING_RUN_SH)
    code, output = agents.run(RUNS_FLEET_INSTANCE_ID=instance, RUNS_FLEET_RUNNER_NAME=RUNNER)
    assert code == 0, output
    assert output.count("could not deliver") == 2
    assert "NonExistentQueue" in output
    assert JIT not in output and TOKEN not in output
    assert cloud.state(instance) == "terminated"


async def test_no_terminate_leaves_the_instance_running(cloud: Cloud, agents: Agents) -> None:
    instance = cloud.launch(**{"runs-fleet:runner-name": RUNNER})
    await cloud.put_config(RUNNER)
    agents.run_sh(CHECKING_RUN_SH)
    code, _ = agents.run("--no-terminate", RUNS_FLEET_INSTANCE_ID=instance)
    assert code == 0
    assert cloud.state(instance) == "running"
