"""The EC2 pool provider against a real moto server: the PoolProvider contract, then what
EC2 adds (on-demand only, tags that tell pool runners from everything else, claims by
dispatch, reconciliation of stopped pools).

moto launches, stops and starts instances at once (no ``pending`` or ``stopping``), and
always fills a fleet. The transitions that take time on EC2 and the fleets it fills only
in part run through botocore's ``Stubber`` on the same provider's EC2 client.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from botocore.stub import Stubber

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.catalog import CORE_SETTINGS
from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.job import JobStatus
from runs_fleet_core.domain.labels import LabelDefaults
from runs_fleet_core.domain.messages import WorkflowJobAction, WorkflowJobEvent
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RunnerPhase
from runs_fleet_core.errors import NotFoundError, ProviderError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.settings import load_settings
from runs_fleet_core.testing.contracts import PoolProviderContract
from runs_fleet_core.testing.memory import (
    FakeGitHub,
    ManualClock,
    MemoryConfigStore,
    MemoryQueue,
    MemoryStateStore,
    RecordingMetrics,
)
from runs_fleet_core.usecases.dispatch import Dispatcher
from runs_fleet_core.usecases.intake import Intake
from runs_fleet_core.usecases.pools import reconcile_pools
from runs_fleet_ec2 import fleet, pool
from runs_fleet_ec2.fleet import FleetSettings
from runs_fleet_ec2.pool import Ec2PoolProvider
from tests.contract import test_ec2_provider
from tests.contract.test_ec2_provider import IMAGE, Ec2World

world = test_ec2_provider.world
"""The provider tests' fixture: a moto account with subnets and both launch templates."""

LINUX = PoolConfig(name="linux", label="runs-fleet=0/cpu=2+2/family=c7g", desired_running=1)
_deliveries = itertools.count(1)


def pools_of(world: Ec2World, **kwargs: Any) -> Ec2PoolProvider:
    kwargs.setdefault("poll_interval_s", 0.01)
    return Ec2PoolProvider(
        world.caller, world.settings(), clock=world.clock, metrics=world.metrics, **kwargs
    )


async def state_of(world: Ec2World, instance_id: str) -> str:
    return str((await world.instance(instance_id))["State"]["Name"])


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


class TestEc2PoolProvider(PoolProviderContract):
    @pytest.fixture
    def pool_provider(self, world: Ec2World) -> Ec2PoolProvider:
        return pools_of(world)


# -- what a pool runner is ---------------------------------------------------------------


async def test_pool_runners_are_on_demand_instances_with_the_pool_tag_and_no_job(
    world: Ec2World,
) -> None:
    [runner_id] = await pools_of(world).create_pool_runners(LINUX, 1)
    instance = await world.instance(runner_id)
    assert tags_of(instance) == {
        "runs-fleet:managed": "true",
        "runs-fleet:pool": "linux",
        "Name": "runs-fleet-pool-linux",
        "team": "ci",
    }
    assert "InstanceLifecycle" not in instance  # the label's default spot=true is overruled
    assert instance["InstanceType"] == "c7g.large"
    assert world.metrics.count("ec2_pool_launches", pool="linux", arch="arm64") == 1


async def test_a_listed_runner_says_its_type_and_since_when_it_is_idle(world: Ec2World) -> None:
    pools = pools_of(world)
    [runner_id] = await pools.create_pool_runners(LINUX, 1)
    [runner] = await pools.list_pool_runners("linux")
    assert (runner.runner_id, runner.instance_type) == (runner_id, "c7g.large")
    assert runner.idle_since == (await world.instance(runner_id))["LaunchTime"]


async def test_many_runners_are_asked_for_in_batches(
    world: Ec2World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool, "MAX_BATCH", 2)
    ids = await pools_of(world).create_pool_runners(LINUX, 5)
    assert len(set(ids)) == 5
    assert world.metrics.count("aws_api_calls", service="ec2", operation="CreateFleet") == 3


async def test_listing_reads_every_page(world: Ec2World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "MAX_BATCH", 1)  # moto pages by reservation: one per fleet
    ids = await pools_of(world).create_pool_runners(LINUX, 6)
    before = world.metrics.count("aws_api_calls", operation="DescribeInstances")
    listed = await pools_of(world, page_size=5).list_pool_runners("linux")
    assert sorted(r.runner_id for r in listed) == sorted(ids)
    assert world.metrics.count("aws_api_calls", operation="DescribeInstances") - before == 2


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("", "is not a runs-fleet label; set it to the runs-on label"),
        ("runs-fleet=0/cpu=2/pool=windows", "names pool windows"),
        ("runs-fleet=0/cpu=lots", "its label is invalid: segment 'cpu=lots'"),
        ("self-hosted", "is not a runs-fleet label"),
        ("runs-fleet=0/cpu=256", "no EC2 instance type fits"),
    ],
)
async def test_a_pool_whose_label_cannot_launch_fails_for_good_and_calls_no_aws(
    ec2: StubbedEc2, label: str, expected: str
) -> None:
    bad = PoolConfig(name="linux", label=label)
    with pytest.raises(ProviderError) as caught:
        await ec2.pools().create_pool_runners(bad, 1)  # the stubbed EC2 answers nothing
    assert caught.value.retryable is False
    assert expected in str(caught.value)


# -- instances that are not pool runners ---------------------------------------------------


async def run_instance(world: Ec2World, tags: dict[str, str]) -> str:
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    response = await world.caller.call(
        "ec2", "run_instances", ImageId=IMAGE, MinCount=1, MaxCount=1, TagSpecifications=spec
    )
    return str(response["Instances"][0]["InstanceId"])


FOREIGN = {
    "unmanaged": {"team": "ci", "runs-fleet:pool": "linux"},
    "a job's runner in the pool": {
        "runs-fleet:managed": "true",
        "runs-fleet:pool": "linux",
        "runs-fleet:job-id": "101",
    },
    "managed but in no pool": {"runs-fleet:managed": "true"},
}


@pytest.mark.parametrize("tags", FOREIGN.values(), ids=FOREIGN.keys())
async def test_an_instance_that_is_not_a_pool_runner_is_refused_and_left_alone(
    world: Ec2World, tags: dict[str, str]
) -> None:
    pools = pools_of(world)
    [ours] = await pools.create_pool_runners(LINUX, 1)
    foreign = await run_instance(world, tags)
    with pytest.raises(NotFoundError, match=foreign):
        await pools.stop_runners([ours, RunnerId(foreign)])
    assert (await state_of(world, ours), await state_of(world, foreign)) == ("running", "running")
    await world.caller.call("ec2", "stop_instances", InstanceIds=[foreign])
    with pytest.raises(NotFoundError, match=foreign):
        await pools.start_runners([RunnerId(foreign)])
    assert await state_of(world, foreign) == "stopped"
    await pools.terminate_runners([RunnerId(foreign)])
    assert await state_of(world, foreign) == "stopped"
    assert [r.runner_id for r in await pools.list_pool_runners("linux")] == [ours]


@pytest.mark.parametrize("runner_id", ["i-00000000000000000", "mem-pool-1"])
async def test_ids_ec2_never_had_are_not_found_except_when_terminating(
    world: Ec2World, runner_id: str
) -> None:
    pools = pools_of(world)
    with pytest.raises(NotFoundError):
        await pools.start_runners([RunnerId(runner_id)])
    with pytest.raises(NotFoundError):
        await pools.stop_runners([RunnerId(runner_id)])
    await pools.terminate_runners([RunnerId(runner_id)])


async def test_a_terminated_runner_cannot_be_started_again(world: Ec2World) -> None:
    pools = pools_of(world)
    [runner_id] = await pools.create_pool_runners(LINUX, 1, stopped=True)
    await pools.terminate_runners([runner_id])
    with pytest.raises(NotFoundError):
        await pools.start_runners([runner_id])
    assert await state_of(world, runner_id) == "terminated"


# -- with the core's use cases ------------------------------------------------------------


def job_event(job_id: int, label: str) -> WorkflowJobEvent:
    return WorkflowJobEvent(
        action=WorkflowJobAction.QUEUED,
        job_id=JobId(job_id),
        run_id=42,
        run_attempt=1,
        repository="octo-org/app",
        labels=(label,),
        delivery_id=f"d-{next(_deliveries)}",
    )


async def dispatch(world: Ec2World, *job_ids: int) -> tuple[list[str], MemoryStateStore, Any]:
    """Take ``pool=linux`` jobs in and dispatch them with the EC2 providers; the
    outcomes, the state store and the config store."""
    state, configs = MemoryStateStore(), MemoryConfigStore()
    queue = MemoryQueue(world.clock)
    intake = Intake(
        state=state,
        queue=queue,
        clock=world.clock,
        metrics=world.metrics,
        labels=LabelDefaults(),
        backends=("ec2",),
        default_backend="ec2",
    )
    for job_id in job_ids:
        await intake.take(job_event(job_id, "runs-fleet=42/cpu=2+2/family=c7g/pool=linux"))
    dispatcher = Dispatcher(
        state=state,
        queue=queue,
        configs=configs,
        github=FakeGitHub(),
        providers={"ec2": world.provider()},
        pool_providers={"ec2": pools_of(world)},
        clock=world.clock,
        metrics=world.metrics,
        owner="worker-1",
        default_backend="ec2",
    )
    outcomes = []
    while deliveries := await queue.receive(10, 0):
        for delivery in deliveries:
            outcomes.append(str(await dispatcher.handle(delivery)))
    return outcomes, state, configs


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
async def test_a_pool_job_claims_a_warm_runner_which_runs_in_ec2(
    world: Ec2World, stopped: bool
) -> None:
    [runner_id] = await pools_of(world).create_pool_runners(LINUX, 1, stopped=stopped)
    outcomes, state, configs = await dispatch(world, 101)
    assert outcomes == ["warm"]
    job = await state.get_job(JobId(101))
    assert job is not None and job.status is JobStatus.LAUNCHING and job.runner_id == runner_id
    config = await configs.get(runner_id)
    assert config is not None and config.job_id == 101
    assert await state_of(world, runner_id) == "running"


async def test_a_job_that_finds_the_pool_busy_gets_a_runner_that_is_no_pool_runner(
    world: Ec2World,
) -> None:
    [warm] = await pools_of(world).create_pool_runners(LINUX, 1, stopped=True)
    outcomes, state, _ = await dispatch(world, 101, 102)
    assert sorted(outcomes) == ["launched", "warm"]
    cold = [j.runner_id for j in await state.list_jobs() if j.runner_id != warm]
    assert len(cold) == 1 and cold[0] is not None
    assert tags_of(await world.instance(cold[0]))["runs-fleet:pool"] == "linux"
    assert [r.runner_id for r in await pools_of(world).list_pool_runners("linux")] == [warm]


async def test_reconciling_a_pool_leaves_the_desired_runners_running_and_stopped(
    world: Ec2World,
) -> None:
    state = MemoryStateStore()
    config = PoolConfig(name="linux", label=LINUX.label, desired_running=1, desired_stopped=2)
    await state.put_pool(config)
    pools = pools_of(world)
    await reconcile_pools(
        state=state,
        pool_providers={"ec2": pools},
        default_backend="ec2",
        clock=world.clock,
        metrics=world.metrics,
    )
    phases = sorted(r.phase for r in await pools.list_pool_runners("linux"))
    assert phases == [RunnerPhase.RUNNING, RunnerPhase.STOPPED, RunnerPhase.STOPPED]
    assert world.metrics.count("pool_reconcile_errors") == 0


async def test_from_context_reads_label_presets_tags_and_the_ready_timeout(
    world: Ec2World,
) -> None:
    definitions = {s.name: s for s in (*CORE_SETTINGS, *fleet.SETTINGS, *pool.SETTINGS)}
    env = {
        "RUNS_FLEET_PRIVATE_SUBNET_IDS": ",".join(world.subnets),
        "RUNS_FLEET_EC2_TAGS": '{"cost-center": "42"}',
        "RUNS_FLEET_PRESETS": '{"big": "cpu=8+8/arch=amd64/family=c7i"}',
        "RUNS_FLEET_EC2_POOL_READY_TIMEOUT_S": "42",
    }
    context = AdapterContext(
        settings=load_settings(env, definitions, require=False),
        clock=world.clock,
        metrics=world.metrics,
    )
    pools = pool.from_context(context, world.caller)
    big = PoolConfig(name="big", label="runs-fleet=0/runner=big")
    [runner_id] = await pools.create_pool_runners(big, 1)
    instance = await world.instance(runner_id)
    assert instance["InstanceType"] == "c7i.2xlarge"
    assert tags_of(instance)["cost-center"] == "42"
    assert pools.ready_timeout_s == 42


# -- what moto does not model (Stubber on the provider's EC2 client) ------------------------


@attrs.frozen
class StubbedEc2:
    """EC2 answering only what a test queues, in order, and a way to build providers."""

    stubber: Stubber
    caller: AwsCaller
    metrics: RecordingMetrics

    def pools(self, **kwargs: Any) -> Ec2PoolProvider:
        kwargs.setdefault("poll_interval_s", 0.01)
        return Ec2PoolProvider(
            self.caller, FleetSettings(), clock=ManualClock(), metrics=self.metrics, **kwargs
        )


@pytest.fixture
def ec2(aws_caller: AwsCaller, aws_metrics: RecordingMetrics) -> Iterator[StubbedEc2]:
    """A stubbed EC2 client; every answer a test queues must be used."""
    stubber = Stubber(aws_caller.client("ec2"))
    with stubber:
        yield StubbedEc2(stubber=stubber, caller=aws_caller, metrics=aws_metrics)
        stubber.assert_no_pending_responses()


def described(state: str, **fields: Any) -> dict[str, Any]:
    """A DescribeInstances answer with one pool runner of pool linux in ``state``."""
    tags = {"runs-fleet:managed": "true", "runs-fleet:pool": "linux"}
    instance = {
        "InstanceId": RUNNER,
        "State": {"Name": state},
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        **fields,
    }
    return {"Reservations": [{"Instances": [instance]}]}


def fleet_answer(ids: list[str], *codes: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"FleetId": "fleet-0123456789abcdef0"}
    if ids:
        answer["Instances"] = [{"InstanceIds": ids, "InstanceType": "c7g.large"}]
    answer["Errors"] = [
        {"ErrorCode": code, "ErrorMessage": f"{code} in us-east-1a", "Lifecycle": "on-demand"}
        for code in codes
    ]
    return answer


RUNNER = "i-0123456789abcdef0"


async def test_a_stopping_runner_is_started_once_it_has_stopped(ec2: StubbedEc2) -> None:
    for state in ("stopping", "stopping", "stopped"):
        ec2.stubber.add_response("describe_instances", described(state))
    ec2.stubber.add_response("start_instances", {}, {"InstanceIds": [RUNNER]})
    await ec2.pools().start_runners([RunnerId(RUNNER)])


async def test_a_runner_still_stopping_after_the_ready_timeout_is_retried_later(
    ec2: StubbedEc2,
) -> None:
    ec2.stubber.add_response("describe_instances", described("stopping"))
    ec2.stubber.add_response("describe_instances", described("stopping"))
    with pytest.raises(ProviderError) as caught:
        await ec2.pools(ready_timeout_s=0).start_runners([RunnerId(RUNNER)])
    assert caught.value.retryable is True
    assert f"{RUNNER}: still stopping after 0 s" in str(caught.value)


async def test_a_start_ec2_refuses_for_the_state_it_is_in_is_retried_later(
    ec2: StubbedEc2,
) -> None:
    ec2.stubber.add_response("describe_instances", described("stopped"))
    ec2.stubber.add_client_error("start_instances", service_error_code="IncorrectInstanceState")
    with pytest.raises(ProviderError) as caught:
        await ec2.pools().start_runners([RunnerId(RUNNER)])
    assert caught.value.retryable is True
    assert "IncorrectInstanceState" in str(caught.value)


async def test_a_runner_that_vanishes_while_terminating_does_not_keep_the_others(
    ec2: StubbedEc2,
) -> None:
    other = "i-0fedcba9876543210"
    both = described("running")
    instance = both["Reservations"][0]["Instances"][0]
    both["Reservations"][0]["Instances"].append({**instance, "InstanceId": other})
    ec2.stubber.add_response("describe_instances", both)
    gone = "InvalidInstanceID.NotFound"
    for ids in ([RUNNER, other], [RUNNER]):
        ec2.stubber.add_client_error(
            "terminate_instances", gone, expected_params={"InstanceIds": ids}
        )
    ec2.stubber.add_response("terminate_instances", {}, {"InstanceIds": [other]})
    await ec2.pools().terminate_runners([RunnerId(RUNNER), RunnerId(other)])


async def test_a_pending_runner_is_stopped_once_it_runs(ec2: StubbedEc2) -> None:
    ec2.stubber.add_response("describe_instances", described("pending"))
    ec2.stubber.add_response("describe_instances", described("running"))
    ec2.stubber.add_response("stop_instances", {}, {"InstanceIds": [RUNNER]})
    await ec2.pools().stop_runners([RunnerId(RUNNER)])


async def test_a_pending_runner_is_listed_as_pending(ec2: StubbedEc2) -> None:
    ec2.stubber.add_response("describe_instances", described("pending"))
    [runner] = await ec2.pools().list_pool_runners("linux")
    assert runner.phase is RunnerPhase.PENDING


async def test_a_stopped_runner_is_idle_since_it_was_stopped(ec2: StubbedEc2) -> None:
    answer = described(
        "stopped",
        LaunchTime=datetime(2026, 1, 5, 7, 0, tzinfo=UTC),
        StateTransitionReason="User initiated (2026-01-05 08:30:00 GMT)",
    )
    ec2.stubber.add_response("describe_instances", answer)
    [runner] = await ec2.pools().list_pool_runners("linux")
    assert runner.phase is RunnerPhase.STOPPED
    assert runner.idle_since == datetime(2026, 1, 5, 8, 30, tzinfo=UTC)


async def test_a_runner_created_stopped_that_never_runs_is_left_running_and_counted(
    ec2: StubbedEc2,
) -> None:
    ec2.stubber.add_response("create_fleet", fleet_answer([RUNNER]))
    ec2.stubber.add_response("describe_instances", described("pending"))
    ids = await ec2.pools(ready_timeout_s=0).create_pool_runners(LINUX, 1, stopped=True)
    assert ids == [RUNNER]
    assert ec2.metrics.count("ec2_pool_stop_timeouts", pool="linux") == 1
    assert ec2.metrics.count("aws_api_calls", operation="StopInstances") == 0


async def test_a_fleet_filled_in_part_gives_the_runners_it_started(ec2: StubbedEc2) -> None:
    ec2.stubber.add_response("create_fleet", fleet_answer([RUNNER], "InsufficientInstanceCapacity"))
    assert await ec2.pools().create_pool_runners(LINUX, 2) == [RUNNER]


@pytest.mark.parametrize(
    ("code", "retryable"),
    [("InsufficientInstanceCapacity", True), ("InvalidParameterValue", False)],
)
async def test_a_fleet_that_starts_nothing_raises_with_ec2s_reason(
    ec2: StubbedEc2, code: str, retryable: bool
) -> None:
    ec2.stubber.add_response("create_fleet", fleet_answer([], code))
    with pytest.raises(ProviderError) as caught:
        await ec2.pools().create_pool_runners(LINUX, 2)
    assert caught.value.retryable is retryable
    assert f"EC2 started 0 of 2 runners for pool linux: {code}" in str(caught.value)


async def test_a_capacity_error_from_create_fleet_is_retryable(ec2: StubbedEc2) -> None:
    ec2.stubber.add_client_error("create_fleet", service_error_code="InsufficientInstanceCapacity")
    with pytest.raises(ProviderError) as caught:
        await ec2.pools().create_pool_runners(LINUX, 1)
    assert caught.value.retryable is True
    assert "InsufficientInstanceCapacity" in str(caught.value)


async def test_each_create_is_one_on_demand_request_with_a_client_token_of_its_own(
    world: Ec2World,
) -> None:
    sent: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sent.append(dict(params))

    events = world.caller.client("ec2").meta.events
    events.register("provide-client-params.ec2.CreateFleet", record)
    try:
        pools = pools_of(world)
        await pools.create_pool_runners(LINUX, 3)
        await pools.create_pool_runners(LINUX, 1)
    finally:
        events.unregister("provide-client-params.ec2.CreateFleet", record)
    assert [r["TargetCapacitySpecification"] for r in sent] == [
        {
            "TotalTargetCapacity": n,
            "DefaultTargetCapacityType": "on-demand",
            "OnDemandTargetCapacity": n,
        }
        for n in (3, 1)
    ]
    assert all("SpotOptions" not in r for r in sent)
    assert sent[0]["ClientToken"] != sent[1]["ClientToken"]
