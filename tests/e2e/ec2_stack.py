"""The EC2-mode stack of the end-to-end tests: a moto server standing in for AWS, the
GitHub simulator, and ``runs-fleet serve`` in ``RUNS_FLEET_MODE=ec2`` as subprocesses.

The AWS side is set up the way an operator would: ``runs-fleet aws create-resources``
for the queues, tables and EventBridge rule, and a VPC with subnets and the two launch
templates (Terraform's part). No instance boots in moto, so a test plays the instance:
it runs the EC2 agent with ``RUNS_FLEET_INSTANCE_ID`` naming the instance runs-fleet
launched, and the simulated runner in its runner directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3

from runs_fleet_cli.demo.processes import free_port, wait_until_ready
from runs_fleet_core.domain.spec import Arch
from runs_fleet_ec2 import fleet
from tests.e2e.local_stack import LocalStack, _clean_env, closed_at_exit
from tests.moto_server import MotoServer

IMAGES = {Arch.ARM64: "ami-0a1b2c3d4e5f60001", Arch.AMD64: "ami-0a1b2c3d4e5f60002"}
"""One AMI per architecture's launch template: an instance's image says which one launched it."""
ZONES = ("us-east-1a", "us-east-1b")
PROFILE = "arn:aws:iam::123456789012:instance-profile/runs-fleet-runner"


class Ec2Stack(LocalStack):
    """One test's moto-backed AWS, GitHub simulator and ``runs-fleet serve`` (ec2)."""

    def __init__(self, workdir: Path, aws: MotoServer, **options: Any) -> None:
        super().__init__(workdir, **options)
        self.aws = aws
        self.resources: dict[str, str] = {}
        self.subnets: list[str] = []
        self.security_group = ""

    def start(self, *, worker: bool = True, job_seconds: float = 0.5) -> None:
        self.create_aws_resources()
        # a port picked before all those AWS calls may have become some connection's
        # local port since: pick runs-fleet's port now, right before it is used
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.start_simulator(job_seconds=job_seconds)
        self.start_serve(worker=worker)

    def create_aws_resources(self) -> None:
        """What Terraform (network, launch templates) and ``runs-fleet aws
        create-resources`` (queues, tables, the EventBridge rule) create."""
        ec2 = boto3.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        for n, zone in enumerate(ZONES):
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24", AvailabilityZone=zone)
            self.subnets.append(subnet["Subnet"]["SubnetId"])
        self.security_group = ec2.create_security_group(
            GroupName="runs-fleet-runners", Description="runners", VpcId=vpc
        )["GroupId"]
        for arch in Arch:
            ec2.create_launch_template(
                LaunchTemplateName=fleet.template_name(fleet.DEFAULT_TEMPLATE_NAME, arch),
                LaunchTemplateData={
                    "ImageId": IMAGES[arch],
                    "SecurityGroupIds": [self.security_group],
                },
            )
        done = self.run_logged(
            "aws-create-resources",
            [sys.executable, "-m", "runs_fleet_cli", "aws", "create-resources", "--json"],
            env=_clean_env() | self.aws.env() | self.settings,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        self.resources = json.loads(done.stdout)

    def env(self) -> dict[str, str]:
        return (
            super().env()
            | self.aws.env()
            | self.resources
            | {
                "RUNS_FLEET_MODE": "ec2",
                "RUNS_FLEET_PRIVATE_SUBNET_IDS": ",".join(self.subnets),
                "RUNS_FLEET_SECURITY_GROUP_ID": self.security_group,
                "RUNS_FLEET_INSTANCE_PROFILE_ARN": PROFILE,
                "RUNS_FLEET_SQS_VISIBILITY_TIMEOUT_S": "5",
                "RUNS_FLEET_SCHEDULER_INTERVAL_S": "1",
            }
            | self.settings
        )

    def start_serve(self, *, worker: bool = True) -> subprocess.Popen[bytes]:
        """``runs-fleet serve`` with its scheduler too (in EC2 mode it runs apart by
        default), so warm pools are kept in this one process."""
        argv = ["-m", "runs_fleet_cli", "serve", "--scheduler"]
        argv += [] if worker else ["--no-worker"]
        process = self._start("runs-fleet-serve", argv, self.env())
        wait_until_ready(f"{self.api}/ready", process, self.logs[process.pid], 30)
        return process

    # --- AWS as the test sees it --------------------------------------------------------

    def instances(self, **tags: str) -> list[dict[str, Any]]:
        """Every instance (any state) carrying ``tags`` (``runs-fleet:job-id`` …)."""
        filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in tags.items()]
        reply = boto3.client("ec2").describe_instances(Filters=filters)
        return [i for r in reply["Reservations"] for i in r["Instances"]]

    def parameter(self, name: str) -> dict[str, Any] | None:
        """The SSM parameter ``name`` (decrypted), or ``None``."""
        ssm = boto3.client("ssm")
        try:
            reply: dict[str, Any] = ssm.get_parameter(Name=name, WithDecryption=True)
        except ssm.exceptions.ParameterNotFound:
            return None
        return reply["Parameter"]

    def run_agent(
        self,
        instance_id: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Be the instance: run the EC2 agent with ``RUNS_FLEET_INSTANCE_ID`` and the
        simulated runner, until it exits."""
        return self.run_logged(
            f"ec2-agent-{instance_id}",
            self._agent_argv(*args),
            env=self._agent_env(instance_id, env),
            timeout=timeout,
        )

    def start_agent(self, instance_id: str, *args: str) -> subprocess.Popen[bytes]:
        """Boot the instance: the EC2 agent in the background, in its own process group
        (a test that kills the group takes the whole "machine" down with it)."""
        return self._start(
            f"ec2-agent-{instance_id}", self._agent_argv(*args)[1:], self._agent_env(instance_id)
        )

    @staticmethod
    def _agent_argv(*args: str) -> list[str]:
        return [sys.executable, "-m", "runs_fleet_cli", "ec2", "agent", *args]

    def _agent_env(self, instance_id: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
        return (
            _clean_env()
            | self.aws.env()
            | {
                "RUNS_FLEET_INSTANCE_ID": instance_id,
                "RUNS_FLEET_RUNNER_DIR": str(self.workdir / "runner"),
                "RUNS_FLEET_IMDS_URL": "http://127.0.0.1:9",  # no metadata service here
            }
            | dict(env or {})
        )


def ec2_stack(workdir: Path, aws: MotoServer, **options: Any) -> Iterator[Ec2Stack]:
    """An :class:`Ec2Stack` that is closed (and checked to leave no process) on exit."""
    with closed_at_exit(Ec2Stack(workdir, aws, **options)) as stack:
        yield stack
