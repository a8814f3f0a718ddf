"""EC2 mode's benchmark against a moto server: AWS API calls per job and dispatch
throughput.

Everything runs in this process as the server runs it (``build_services`` in
``RUNS_FLEET_MODE=ec2``), with the GitHub client replaced by the in-memory fake so only
AWS calls are counted. moto answers instantly and in one process, so the throughput is
an upper bound set by runs-fleet's own work and the number of calls, not by AWS; the
baseline is the raw SQS traffic of the same number of messages (send, receive, delete)
through the same caller, measured in the same run.

Calls per job are what the AWS bill and the API rate limits see: intake (record and
queue), then dispatch (claim, config, launch, record) for a cold start and for a job that
takes a stopped warm-pool instance.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.messages import WorkflowJobAction, WorkflowJobEvent
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.spec import Arch
from runs_fleet_core.testing.memory import RecordingMetrics
from runs_fleet_core.usecases.pools import reconcile_pools
from runs_fleet_core.usecases.worker import run_worker
from runs_fleet_ec2 import fleet
from runs_fleet_server.bootstrap import Services, build_services

JOBS = 200
CONCURRENCY = 8
REPOSITORY = "octo-org/bench"
LABEL = "runs-fleet=7/cpu=2/arch=arm64"
WARM_LABEL = "runs-fleet=7/cpu=2/arch=arm64/pool=warm"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _aws_env(url: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _network_and_templates() -> dict[str, str]:
    """What Terraform would create: subnets and the two launch templates."""
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{16 * n}.0/20", AvailabilityZone=zone)[
            "Subnet"
        ]["SubnetId"]
        for n, zone in enumerate(("us-east-1a", "us-east-1b"))
    ]
    for arch in Arch:
        ec2.create_launch_template(
            LaunchTemplateName=fleet.template_name(fleet.DEFAULT_TEMPLATE_NAME, arch),
            LaunchTemplateData={"ImageId": "ami-0123456789abcdef0"},
        )
    return {"RUNS_FLEET_PRIVATE_SUBNET_IDS": ",".join(subnets)}


async def _resources(env: Mapping[str, str]) -> dict[str, str]:
    from runs_fleet_aws.calls import AwsCaller
    from runs_fleet_core.plugins import PluginManager
    from runs_fleet_core.settings import inspect_settings
    from runs_fleet_core.wiring import setting_definitions
    from runs_fleet_ec2.resources import create_resources

    settings, _ = inspect_settings(env, setting_definitions(PluginManager()), require=False)
    caller = AwsCaller()
    try:
        return dict(await create_resources(settings, caller, queue_name="bench-jobs"))
    finally:
        caller.close()


def _event(job_id: int, label: str) -> WorkflowJobEvent:
    return WorkflowJobEvent(
        action=WorkflowJobAction.QUEUED,
        job_id=JobId(job_id),
        run_id=7,
        run_attempt=1,
        repository=REPOSITORY,
        labels=(label,),
        delivery_id=f"delivery-{job_id}",
    )


def _calls(metrics: RecordingMetrics) -> collections.Counter[str]:
    counted: collections.Counter[str] = collections.Counter()
    for (name, labels), value in metrics.counters.items():
        if name == "aws_api_calls":
            found = dict(labels)
            counted[f"{found['service']}.{found['operation']}"] += int(value)
    return counted


async def _one_job(services: Services, job_id: int, label: str) -> tuple[Any, Any]:
    """AWS calls of intake, then of dispatching the job's one message."""
    metrics = services.adapters.metrics
    assert isinstance(metrics, RecordingMetrics)
    before = _calls(metrics)
    await services.intake.take(_event(job_id, label))
    after_intake = _calls(metrics)
    [delivery] = await services.adapters.queue.receive(1, 5)
    outcome = await services.dispatcher.handle(delivery)
    after = _calls(metrics)
    return (after_intake - before, after - after_intake), outcome


async def _throughput(services: Services) -> tuple[float, float]:
    """Jobs/min through intake-queued messages and the worker; raw queue msgs/min."""
    queue = services.adapters.queue
    for n in range(JOBS):
        await services.intake.take(_event(10_000 + n, LABEL))
    stop = asyncio.Event()
    started = time.perf_counter()
    worker = asyncio.create_task(
        run_worker(
            queue=queue,
            dispatcher=services.dispatcher,
            stop=stop,
            metrics=services.adapters.metrics,
            concurrency=CONCURRENCY,
            wait_s=1.0,
        )
    )
    metrics = services.adapters.metrics
    assert isinstance(metrics, RecordingMetrics)
    # + the cold job measured before; the metrics sink has no event to wait on
    while metrics.count("runners_launched") < JOBS + 1:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    stop.set()
    await worker
    jobs_per_min = JOBS / elapsed * 60

    from runs_fleet_core.testing.contracts.queue import job_message

    raw_started = time.perf_counter()
    for n in range(JOBS):
        await queue.send(job_message(50_000 + n))
    done = 0
    while done < JOBS:
        for delivery in await queue.receive(10, 1):
            await queue.ack(delivery)
            done += 1
    raw_per_min = JOBS / (time.perf_counter() - raw_started) * 60
    return jobs_per_min, raw_per_min


async def _measure(env: dict[str, str]) -> None:
    services = build_services(env)
    try:
        (cold_intake, cold_dispatch), cold = await _one_job(services, 1, LABEL)
        adapters = services.adapters
        await adapters.state.put_pool(
            PoolConfig(name="warm", label=WARM_LABEL, desired_stopped=1, backend="ec2")
        )
        await reconcile_pools(
            state=adapters.state,
            pool_providers=adapters.pool_providers,
            default_backend="ec2",
            clock=adapters.clock,
            metrics=RecordingMetrics(),
        )
        (warm_intake, warm_dispatch), warm = await _one_job(services, 2, WARM_LABEL)
        jobs_per_min, raw_per_min = await _throughput(services)
    finally:
        await services.aclose()
    print(f"{'measure':<44} {'figure':>14}  calls")
    print("-" * 100)
    for title, calls in (
        ("intake, one webhook (cold or warm)", cold_intake),
        (f"dispatch, cold start ({cold})", cold_dispatch),
        (f"dispatch, stopped warm-pool instance ({warm})", warm_dispatch),
    ):
        detail = ", ".join(f"{op} {n}" for op, n in sorted(calls.items()))
        print(f"{title:<44} {sum(calls.values()):>8} calls  {detail}")
    total_cold = sum(cold_intake.values()) + sum(cold_dispatch.values())
    total_warm = sum(warm_intake.values()) + sum(warm_dispatch.values())
    print(f"{'per cold-start job, in all':<44} {total_cold:>8} calls")
    print(f"{'per warm-pool job, in all':<44} {total_warm:>8} calls")
    ratio = jobs_per_min / raw_per_min
    print(
        f"{'dispatch throughput, worker c=' + str(CONCURRENCY):<44} {jobs_per_min:>8,.0f} jobs/min"
        f"  ({ratio:.0%} of raw SQS send+receive+delete: {raw_per_min:,.0f} msg/min)"
    )
    print(
        f"\n{JOBS} cold jobs against moto {_moto_version()}; GitHub is the in-memory fake; "
        "warm path: one stopped pool instance made by the pool loop before the job."
    )


def _moto_version() -> str:
    import moto

    return str(moto.__version__)


def main() -> int:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        aws = _aws_env(f"http://127.0.0.1:{port}")
        os.environ.update(aws)
        base = {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")}
        env = (
            base
            | _network_and_templates()
            | {
                "RUNS_FLEET_MODE": "ec2",
                "RUNS_FLEET_GITHUB_ADAPTER": "memory",
                "RUNS_FLEET_METRICS_ADAPTER": "memory",
                "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": "bench",
                "RUNS_FLEET_GITHUB_APP_ID": "1",
                "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY": "unused by the in-memory GitHub",
                "RUNS_FLEET_SECURITY_GROUP_ID": "sg-0bench",
                "RUNS_FLEET_INSTANCE_PROFILE_ARN": "arn:aws:iam::123456789012:instance-profile/r",
            }
        )
        env |= asyncio.run(_resources(env))
        print("EC2 mode against moto: AWS API calls per job, dispatch throughput\n", flush=True)
        asyncio.run(_measure(env))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
