"""The EC2 provider against a real moto server: the Provider contract, then what EC2 adds.

moto runs instant fleets, tags instances from the request and filters DescribeInstances
by tag and state, which is all the contract needs. It does not model capacity: spot and
on-demand always succeed, every spot price is the same, and a client token is not
remembered. So the fallback paths (capacity errors, a fleet answering with errors and
no instance) and the price comparison run through botocore's ``Stubber`` on the same
provider's EC2 client, while DynamoDB (the spot breaker) stays the real moto one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest
from botocore.stub import Stubber

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.catalog import CORE_SETTINGS
from runs_fleet_core.domain.ids import JobId, RunId, RunnerId
from runs_fleet_core.domain.labels import parse_label
from runs_fleet_core.domain.runner import RunnerPhase
from runs_fleet_core.domain.spec import Arch, RunnerSpec
from runs_fleet_core.errors import ConfigError, ProviderError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.settings import load_settings
from runs_fleet_core.testing.contracts import ProviderContract
from runs_fleet_core.testing.memory import ManualClock, RecordingMetrics
from runs_fleet_ec2 import breaker as breaker_module
from runs_fleet_ec2 import fleet, provider
from runs_fleet_ec2.breaker import SpotCircuitBreaker
from runs_fleet_ec2.fleet import FleetSettings
from runs_fleet_ec2.pricing import SpotPrices
from runs_fleet_ec2.provider import Ec2Provider
from tests.moto_server import MotoServer

BREAKER_TABLE = "runs-fleet-circuit-state"
ZONES = ("us-east-1a", "us-east-1b")
C7G_LABEL = "runs-fleet=31337/cpu=2+2/family=c7g/arch=arm64"
IMAGE = "ami-0123456789abcdef0"  # moto does not check that an AMI exists


@attrs.frozen
class Ec2World:
    """A moto account with a VPC, one subnet per zone, both launch templates and the
    breaker table; the clock and metrics the providers built here share."""

    caller: AwsCaller
    subnets: tuple[str, ...]
    clock: ManualClock
    metrics: RecordingMetrics

    def settings(self, **changes: Any) -> FleetSettings:
        return FleetSettings(**{"subnet_ids": self.subnets, "tags": {"team": "ci"}, **changes})

    def breaker(self) -> SpotCircuitBreaker:
        return SpotCircuitBreaker(self.caller, table=BREAKER_TABLE)

    def provider(
        self, *, spot_enabled: bool = True, page_size: int = 1000, **changes: Any
    ) -> Ec2Provider:
        return Ec2Provider(
            self.caller,
            self.settings(**changes),
            clock=self.clock,
            metrics=self.metrics,
            breaker=self.breaker(),
            prices=SpotPrices(self.caller, self.clock),
            spot_enabled=spot_enabled,
            page_size=page_size,
        )

    async def instances(self, runner_name: str) -> list[dict[str, Any]]:
        """Every instance (any state) tagged with ``runner_name``."""
        response = await self.caller.call(
            "ec2",
            "describe_instances",
            Filters=[{"Name": f"tag:{fleet.RUNNER_NAME_TAG}", "Values": [runner_name]}],
        )
        return [i for r in response["Reservations"] for i in r["Instances"]]

    async def instance(self, instance_id: str) -> dict[str, Any]:
        response = await self.caller.call("ec2", "describe_instances", InstanceIds=[instance_id])
        result: dict[str, Any] = response["Reservations"][0]["Instances"][0]
        return result


@pytest.fixture
async def world(aws: MotoServer) -> AsyncIterator[Ec2World]:
    metrics = RecordingMetrics()
    caller = AwsCaller(metrics=metrics)
    vpc = (await caller.call("ec2", "create_vpc", CidrBlock="10.0.0.0/16"))["Vpc"]["VpcId"]
    subnets = []
    for n, zone in enumerate(ZONES):
        created = await caller.call(
            "ec2",
            "create_subnet",
            VpcId=vpc,
            CidrBlock=f"10.0.{n}.0/24",
            AvailabilityZone=zone,
        )
        subnets.append(created["Subnet"]["SubnetId"])
    for arch in Arch:
        await caller.call(
            "ec2",
            "create_launch_template",
            LaunchTemplateName=fleet.template_name(fleet.DEFAULT_TEMPLATE_NAME, arch),
            LaunchTemplateData={"ImageId": IMAGE},
        )
    await caller.call(
        "dynamodb", "create_table", TableName=BREAKER_TABLE, **breaker_module.TABLE_PARAMS
    )
    yield Ec2World(caller=caller, subnets=tuple(subnets), clock=ManualClock(), metrics=metrics)
    caller.close()


def job_spec(label: str = C7G_LABEL, job_id: int = 101) -> RunnerSpec:
    return parse_label(label).for_job(JobId(job_id), "octo-org/app")


def name_of(job_id: int) -> str:
    return f"runs-fleet-{job_id}-1"


class TestEc2Provider(ProviderContract):
    unknown_runner_id = "i-00000000000000000"

    @pytest.fixture
    def provider(self, world: Ec2World) -> Ec2Provider:
        return world.provider()

    @pytest.fixture
    def runner_spec(self) -> RunnerSpec:
        return RunnerSpec(run_id=RunId("31337"), label="runs-fleet=31337/cpu=2", pool="default")


# -- what a launched runner looks like ---------------------------------------------------


async def test_a_runner_is_a_spot_instance_tagged_for_its_job(world: Ec2World) -> None:
    spec = job_spec("runs-fleet=31337/cpu=2+2/family=c7g/arch=arm64/pool=linux")
    result = await world.provider().create_runner(spec, runner_name=name_of(101))
    instance = await world.instance(result.runner_id)
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags == {
        "runs-fleet:managed": "true",
        "runs-fleet:job-id": "101",
        "runs-fleet:run-id": "31337",
        "runs-fleet:repo": "octo-org/app",
        "runs-fleet:pool": "linux",
        "runs-fleet:runner-name": name_of(101),
        "Name": name_of(101),
        "team": "ci",
    }
    assert instance["InstanceLifecycle"] == "spot"
    assert instance["InstanceType"] == "c7g.large"
    assert result.details["lifecycle"] == "spot"
    assert result.details["instance_type"] == "c7g.large"
    assert result.details["subnet_id"] == world.subnets[0]
    assert world.metrics.count("ec2_fleet_launches", market="spot", arch="arm64") == 1


async def test_a_described_runner_says_its_job_pool_name_type_and_zone(world: Ec2World) -> None:
    spec = job_spec("runs-fleet=31337/cpu=2+2/family=c7g/arch=arm64/pool=linux")
    ec2 = world.provider()
    result = await ec2.create_runner(spec, runner_name=name_of(101))
    state = await ec2.describe_runner(result.runner_id)
    assert (state.job_id, state.pool, state.runner_name) == (101, "linux", name_of(101))
    assert state.launched_at is not None
    assert state.details["instance_type"] == "c7g.large"
    assert state.details["availability_zone"] == ZONES[0]
    assert state.details["lifecycle"] == "spot"


@pytest.mark.parametrize(
    ("label", "spot_enabled", "why"),
    [(C7G_LABEL + "/spot=false", True, "label"), (C7G_LABEL, False, "setting")],
)
async def test_spot_is_not_asked_for_when_the_label_or_the_deployment_says_no(
    world: Ec2World, label: str, spot_enabled: bool, why: str
) -> None:
    ec2 = world.provider(spot_enabled=spot_enabled)
    result = await ec2.create_runner(job_spec(label), runner_name=name_of(101))
    assert "InstanceLifecycle" not in await world.instance(result.runner_id), why
    assert result.details["lifecycle"] == "on-demand"
    assert world.metrics.count("ec2_spot_fallbacks") == 0


async def test_a_spec_no_type_fits_is_refused_for_good_before_any_launch(
    world: Ec2World,
) -> None:
    spec = job_spec("runs-fleet=31337/cpu=128+256")
    with pytest.raises(ProviderError) as caught:
        await world.provider().create_runner(spec, runner_name=name_of(101))
    assert caught.value.retryable is False
    assert "cpu=128-256 vCPU" in str(caught.value)
    assert await world.instances(name_of(101)) == []


async def test_another_replica_creating_the_same_runner_gets_the_same_instance(
    world: Ec2World,
) -> None:
    first = await world.provider().create_runner(job_spec(), runner_name=name_of(101))
    second = await world.provider().create_runner(job_spec(), runner_name=name_of(101))
    assert second.runner_id == first.runner_id
    assert second.details["runner_name"] == name_of(101)
    assert [i["InstanceId"] for i in await world.instances(name_of(101))] == [first.runner_id]


async def test_a_runner_whose_instance_was_terminated_gets_a_new_one(world: Ec2World) -> None:
    ec2 = world.provider()
    first = await ec2.create_runner(job_spec(), runner_name=name_of(101))
    await ec2.terminate_runner(first.runner_id)
    world.clock.advance(fleet.TOKEN_WINDOW_S)
    second = await ec2.create_runner(job_spec(), runner_name=name_of(101))
    assert second.runner_id != first.runner_id


async def test_a_label_without_arch_gets_arm64_when_prices_tie(world: Ec2World) -> None:
    spec = job_spec("runs-fleet=31337/cpu=2+2/family=c7g+c7i")
    result = await world.provider().create_runner(spec, runner_name=name_of(101))
    assert result.details["arch"] == "arm64"
    assert "cheaper spot price" in result.details["arch_choice"]
    assert (await world.instance(result.runner_id))["InstanceType"] == "c7g.large"


async def test_from_context_builds_the_provider_from_settings(world: Ec2World) -> None:
    definitions = {
        s.name: s
        for s in (
            *CORE_SETTINGS,
            *fleet.SETTINGS,
            *breaker_module.SETTINGS,
            *provider.SETTINGS,
        )
    }
    env = {
        "RUNS_FLEET_PRIVATE_SUBNET_IDS": ",".join(world.subnets),
        "RUNS_FLEET_SPOT_ENABLED": "false",
        "RUNS_FLEET_EC2_TAGS": '{"cost-center": "42"}',
    }
    context = AdapterContext(
        settings=load_settings(env, definitions, require=False),
        clock=world.clock,
        metrics=world.metrics,
    )
    ec2 = provider.from_context(context, world.caller)
    result = await ec2.create_runner(job_spec(), runner_name=name_of(101))
    instance = await world.instance(result.runner_id)
    assert "InstanceLifecycle" not in instance
    assert {"Key": "cost-center", "Value": "42"} in instance["Tags"]
    bad = {**env, "RUNS_FLEET_EC2_TAGS": '{"aws:a": "1", "b/c": "2"}'}
    bad_context = attrs.evolve(context, settings=load_settings(bad, definitions, require=False))
    with pytest.raises(ConfigError) as caught:
        provider.from_context(bad_context, world.caller)
    assert len(caught.value.problems) == 2


# -- the spot circuit breaker ------------------------------------------------------------


async def interrupt(breaker: SpotCircuitBreaker, world: Ec2World, zone: str, times: int) -> bool:
    is_open = False
    for _ in range(times):
        is_open = await breaker.record_interruption("c7g", zone, world.clock.now())
        world.clock.advance(60)
    return is_open


async def test_the_breaker_opens_after_k_interruptions_within_the_window(
    world: Ec2World,
) -> None:
    breaker = world.breaker()
    assert await interrupt(breaker, world, ZONES[0], 2) is False
    assert not await breaker.is_open("c7g", ZONES[0], world.clock.now())
    assert await interrupt(breaker, world, ZONES[0], 1) is True
    assert await breaker.is_open("c7g", ZONES[0], world.clock.now())
    assert not await breaker.is_open("c7g", ZONES[1], world.clock.now())
    assert not await breaker.is_open("m7g", ZONES[0], world.clock.now())


async def test_interruptions_spread_wider_than_the_window_never_open_it(
    world: Ec2World,
) -> None:
    breaker = world.breaker()
    for _ in range(5):
        assert await breaker.record_interruption("c7g", ZONES[0], world.clock.now()) is False
        world.clock.advance(breaker.window_s / 2 + 1)
    assert not await breaker.is_open("c7g", ZONES[0], world.clock.now())


async def test_the_breaker_closes_after_the_cooldown(world: Ec2World) -> None:
    breaker = world.breaker()
    await interrupt(breaker, world, ZONES[0], 3)
    world.clock.advance(breaker.cooldown_s - 120)  # the last interruption was 60 s ago
    assert await breaker.is_open("c7g", ZONES[0], world.clock.now())
    world.clock.advance(60)
    assert not await breaker.is_open("c7g", ZONES[0], world.clock.now())


async def test_concurrent_interruptions_from_several_replicas_all_count(
    world: Ec2World,
) -> None:
    replicas = [world.breaker() for _ in range(3)]
    now = world.clock.now()
    await asyncio.gather(*(b.record_interruption("c7g", ZONES[0], now) for b in replicas))
    assert await replicas[0].is_open("c7g", ZONES[0], now)


async def test_an_open_breaker_everywhere_sends_the_runner_to_on_demand(
    world: Ec2World,
) -> None:
    breaker = world.breaker()
    for zone in ZONES:
        await interrupt(breaker, world, zone, 3)
    ec2 = world.provider()
    result = await ec2.create_runner(job_spec(), runner_name=name_of(101))
    assert "InstanceLifecycle" not in await world.instance(result.runner_id)
    assert "spot breaker open" in result.details["spot_skipped"]
    assert world.metrics.count("ec2_spot_fallbacks", reason="breaker") == 1
    world.clock.advance(breaker.cooldown_s)
    later = await ec2.create_runner(job_spec(job_id=102), runner_name=name_of(102))
    assert (await world.instance(later.runner_id))["InstanceLifecycle"] == "spot"


async def test_an_open_breaker_in_one_zone_keeps_spot_in_the_others(world: Ec2World) -> None:
    await interrupt(world.breaker(), world, ZONES[0], 3)
    result = await world.provider().create_runner(job_spec(), runner_name=name_of(101))
    instance = await world.instance(result.runner_id)
    assert instance["InstanceLifecycle"] == "spot"
    assert instance["Placement"]["AvailabilityZone"] == ZONES[1]
    assert result.details["subnet_id"] == world.subnets[1]


async def test_an_interrupted_runner_counts_against_its_family_and_zone(
    world: Ec2World,
) -> None:
    ec2 = world.provider()
    breaker = world.breaker()
    for job_id in (101, 102, 103):
        result = await ec2.create_runner(job_spec(job_id=job_id), runner_name=name_of(job_id))
        await ec2.record_spot_interruption(result.runner_id)
    assert await breaker.is_open("c7g", ZONES[0], world.clock.now())
    assert not await breaker.is_open("c7g", ZONES[1], world.clock.now())


# -- capacity failures (Stubber on the provider's EC2 client) ----------------------------


@contextmanager
def stubbed_ec2(world: Ec2World) -> Iterator[Stubber]:
    """EC2 answers only what the test queues, in order; every answer must be used."""
    stubber = Stubber(world.caller.client("ec2"))
    with stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def queue_lookups(stubber: Stubber, world: Ec2World, runner_name: str) -> None:
    """The calls before any launch: no instance has the runner name; subnet zones."""
    stubber.add_response(
        "describe_instances",
        {"Reservations": []},
        {
            "Filters": [
                {"Name": f"tag:{fleet.RUNNER_NAME_TAG}", "Values": [runner_name]},
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "stopping", "stopped"],
                },
            ]
        },
    )
    stubber.add_response(
        "describe_subnets",
        {
            "Subnets": [
                {"SubnetId": s, "AvailabilityZone": z}
                for s, z in zip(world.subnets, ZONES, strict=True)
            ]
        },
        {"SubnetIds": list(world.subnets)},
    )


def expected_request(world: Ec2World, *, spot: bool, runner_name: str) -> dict[str, Any]:
    return fleet.build_request(
        job_spec(),
        world.settings(),
        arch=Arch.ARM64,
        spot=spot,
        runner_name=runner_name,
        now=world.clock.now(),
    )


def launched(instance_id: str, lifecycle: str) -> dict[str, Any]:
    return {
        "FleetId": "fleet-11111111-2222-3333-4444-555555555555",
        "Instances": [
            {"InstanceIds": [instance_id], "InstanceType": "c7g.large", "Lifecycle": lifecycle}
        ],
        "Errors": [],
    }


def no_instance(*codes: str, lifecycle: str = "spot") -> dict[str, Any]:
    return {
        "FleetId": "fleet-11111111-2222-3333-4444-555555555555",
        "Instances": [],
        "Errors": [
            {"ErrorCode": code, "ErrorMessage": f"{code} for c7g.large", "Lifecycle": lifecycle}
            for code in codes
        ],
    }


@pytest.mark.parametrize(
    "capacity_error",
    [
        "InsufficientInstanceCapacity",
        "MaxSpotInstanceCountExceeded",
        "SpotMaxPriceTooLow",
        "UnfulfillableCapacity",
    ],
)
async def test_a_spot_capacity_error_falls_back_to_on_demand_once(
    world: Ec2World, capacity_error: str
) -> None:
    name = name_of(101)
    with stubbed_ec2(world) as stubber:
        queue_lookups(stubber, world, name)
        spot = expected_request(world, spot=True, runner_name=name)
        stubber.add_client_error(
            "create_fleet", service_error_code=capacity_error, expected_params=spot
        )
        on_demand = expected_request(world, spot=False, runner_name=name)
        stubber.add_response(
            "create_fleet", launched("i-0123456789abcdef0", "on-demand"), on_demand
        )
        result = await world.provider().create_runner(job_spec(), runner_name=name)
    assert result.runner_id == "i-0123456789abcdef0"
    assert result.details["lifecycle"] == "on-demand"
    assert result.details["spot_failed"] == capacity_error
    assert on_demand["ClientToken"] != spot["ClientToken"]
    assert world.metrics.count("ec2_spot_fallbacks", reason="capacity") == 1


async def test_a_spot_fleet_with_errors_and_no_instance_falls_back_to_on_demand(
    world: Ec2World,
) -> None:
    name = name_of(101)
    with stubbed_ec2(world) as stubber:
        queue_lookups(stubber, world, name)
        stubber.add_response(
            "create_fleet", no_instance("UnfulfillableCapacity", "InsufficientInstanceCapacity")
        )
        stubber.add_response("create_fleet", launched("i-0123456789abcdef0", "on-demand"))
        result = await world.provider().create_runner(job_spec(), runner_name=name)
    assert result.runner_id == "i-0123456789abcdef0"
    assert result.details["spot_failed"] == "InsufficientInstanceCapacity, UnfulfillableCapacity"


async def test_when_on_demand_fails_too_the_error_is_retryable_and_names_the_codes(
    world: Ec2World,
) -> None:
    name = name_of(101)
    with stubbed_ec2(world) as stubber:
        queue_lookups(stubber, world, name)
        stubber.add_response("create_fleet", no_instance("UnfulfillableCapacity"))
        stubber.add_client_error("create_fleet", service_error_code="InsufficientInstanceCapacity")
        with pytest.raises(ProviderError) as caught:
            await world.provider().create_runner(job_spec(), runner_name=name)
    assert caught.value.retryable is True
    message = str(caught.value)
    assert "spot: UnfulfillableCapacity" in message
    assert "on-demand: InsufficientInstanceCapacity" in message
    assert name in message


async def test_an_on_demand_only_runner_is_not_retried_on_spot(world: Ec2World) -> None:
    name = name_of(101)
    with stubbed_ec2(world) as stubber:
        stubber.add_response("describe_instances", {"Reservations": []})
        stubber.add_response(
            "create_fleet", no_instance("InsufficientInstanceCapacity", lifecycle="on-demand")
        )
        with pytest.raises(ProviderError) as caught:
            await world.provider(spot_enabled=False).create_runner(job_spec(), runner_name=name)
    assert caught.value.retryable is True
    assert "spot:" not in str(caught.value)


async def test_a_configuration_error_is_not_retried_on_demand(world: Ec2World) -> None:
    name = name_of(101)
    with stubbed_ec2(world) as stubber:
        queue_lookups(stubber, world, name)
        stubber.add_client_error(
            "create_fleet",
            service_error_code="InvalidLaunchTemplateName.NotFoundException",
            service_message="The specified launch template, with template name "
            "runs-fleet-runner-arm64, does not exist.",
        )
        with pytest.raises(ProviderError) as caught:
            await world.provider().create_runner(job_spec(), runner_name=name)
    assert caught.value.retryable is False
    assert "InvalidLaunchTemplateName.NotFoundException" in str(caught.value)


async def test_fleet_errors_that_only_a_fix_can_cure_are_not_retryable(world: Ec2World) -> None:
    name = name_of(101)
    with stubbed_ec2(world) as stubber:
        queue_lookups(stubber, world, name)
        stubber.add_response("create_fleet", no_instance("InvalidParameterValue"))
        stubber.add_response(
            "create_fleet", no_instance("InvalidParameterValue", lifecycle="on-demand")
        )
        with pytest.raises(ProviderError) as caught:
            await world.provider().create_runner(job_spec(), runner_name=name)
    assert caught.value.retryable is False


# -- choosing the architecture by spot price ----------------------------------------------


def prices(**by_type: str) -> dict[str, Any]:
    return {
        "SpotPriceHistory": [
            {
                "InstanceType": name.replace("_", "."),
                "SpotPrice": price,
                "AvailabilityZone": zone,
                "ProductDescription": "Linux/UNIX",
            }
            for name, price in by_type.items()
            for zone in ZONES
        ]
    }


CHOICES = {Arch.ARM64: ["c7g.large"], Arch.AMD64: ["c7i.large"]}


@pytest.mark.parametrize(
    ("arm", "amd", "expected"),
    [
        ("0.0300", "0.0200", Arch.AMD64),
        ("0.0200", "0.0300", Arch.ARM64),
        ("0.02", "0.02", Arch.ARM64),
    ],
)
async def test_the_architecture_with_the_lower_spot_price_is_chosen(
    world: Ec2World, arm: str, amd: str, expected: Arch
) -> None:
    spot_prices = SpotPrices(world.caller, world.clock)
    with stubbed_ec2(world) as stubber:
        stubber.add_response("describe_spot_price_history", prices(c7g_large=arm, c7i_large=amd))
        choice = await spot_prices.cheaper_arch(CHOICES, ZONES)
    assert choice.arch is expected


async def test_spot_prices_are_cached_for_ten_minutes(world: Ec2World) -> None:
    spot_prices = SpotPrices(world.caller, world.clock)
    with stubbed_ec2(world) as stubber:
        stubber.add_response(
            "describe_spot_price_history", prices(c7g_large="0.03", c7i_large="0.02")
        )
        assert (await spot_prices.cheaper_arch(CHOICES, ZONES)).arch is Arch.AMD64
        world.clock.advance(599)
        assert (await spot_prices.cheaper_arch(CHOICES, ZONES)).arch is Arch.AMD64
    world.clock.advance(2)
    with stubbed_ec2(world) as stubber:
        stubber.add_response(
            "describe_spot_price_history", prices(c7g_large="0.01", c7i_large="0.02")
        )
        assert (await spot_prices.cheaper_arch(CHOICES, ZONES)).arch is Arch.ARM64


async def test_without_spot_prices_arm64_is_chosen(world: Ec2World) -> None:
    spot_prices = SpotPrices(world.caller, world.clock)
    with stubbed_ec2(world) as stubber:
        stubber.add_client_error(
            "describe_spot_price_history", service_error_code="UnauthorizedOperation"
        )
        failed = await spot_prices.cheaper_arch(CHOICES, ZONES)
    assert failed.arch is Arch.ARM64
    assert "UnauthorizedOperation" in failed.reason
    with stubbed_ec2(world) as stubber:
        stubber.add_response("describe_spot_price_history", {"SpotPriceHistory": []})
        empty = await SpotPrices(world.caller, world.clock).cheaper_arch(CHOICES, ZONES)
    assert empty.arch is Arch.ARM64


async def test_an_architecture_without_spot_offers_loses_to_one_with(world: Ec2World) -> None:
    with stubbed_ec2(world) as stubber:
        stubber.add_response("describe_spot_price_history", prices(c7i_large="0.05"))
        choice = await SpotPrices(world.caller, world.clock).cheaper_arch(CHOICES, ZONES)
    assert choice.arch is Arch.AMD64


async def test_a_runner_without_arch_launches_on_the_cheaper_architecture(
    world: Ec2World,
) -> None:
    spec = job_spec("runs-fleet=31337/cpu=2+2/family=c7g+c7i")
    name = name_of(101)
    with stubbed_ec2(world) as stubber:
        queue_lookups(stubber, world, name)
        stubber.add_response(
            "describe_spot_price_history", prices(c7g_large="0.03", c7i_large="0.02")
        )
        amd64 = fleet.build_request(
            spec,
            world.settings(),
            arch=Arch.AMD64,
            spot=True,
            runner_name=name,
            now=world.clock.now(),
        )
        stubber.add_response("create_fleet", launched("i-0123456789abcdef0", "spot"), amd64)
        result = await world.provider().create_runner(spec, runner_name=name)
    assert result.details["arch"] == "amd64"
    assert "amd64 from $0.0200/h" in result.details["arch_choice"]


# -- the rest of the port ------------------------------------------------------------------


async def test_listing_skips_instances_runs_fleet_does_not_manage(world: Ec2World) -> None:
    ec2 = world.provider()
    ours = await ec2.create_runner(job_spec(), runner_name=name_of(101))
    await world.caller.call(
        "ec2",
        "run_instances",
        ImageId=IMAGE,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "ci"}]}],
    )
    assert [s.runner_id for s in await ec2.list_runners()] == [ours.runner_id]


async def test_terminating_an_id_ec2_never_had_is_not_an_error(world: Ec2World) -> None:
    await world.provider().terminate_runner(RunnerId("i-00000000000000000"))


async def test_a_shutting_down_runner_counts_as_terminated(world: Ec2World) -> None:
    instance = {
        "InstanceId": "i-0123456789abcdef0",
        "InstanceType": "c7g.large",
        "State": {"Code": 32, "Name": "shutting-down"},
        "Tags": [{"Key": fleet.JOB_TAG, "Value": "101"}],
    }
    with stubbed_ec2(world) as stubber:
        stubber.add_response("describe_instances", {"Reservations": [{"Instances": [instance]}]})
        state = await world.provider().describe_runner(RunnerId("i-0123456789abcdef0"))
    assert state.phase is RunnerPhase.TERMINATED
    assert state.job_id == 101


async def test_listing_reads_every_page(world: Ec2World) -> None:
    def page(instance_id: str, **more: str) -> dict[str, Any]:
        instance = {
            "InstanceId": instance_id,
            "State": {"Code": 16, "Name": "running"},
            "Tags": [{"Key": fleet.MANAGED_TAG, "Value": "true"}],
        }
        return {"Reservations": [{"Instances": [instance]}], **more}

    filters = [
        {"Name": f"tag:{fleet.MANAGED_TAG}", "Values": ["true"]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ]
    with stubbed_ec2(world) as stubber:
        first = {"Filters": filters, "MaxResults": 5}
        stubber.add_response(
            "describe_instances", page("i-0000000000000000a", NextToken="t"), first
        )
        second = {**first, "NextToken": "t"}
        stubber.add_response("describe_instances", page("i-0000000000000000b"), second)
        listed = await world.provider(page_size=5).list_runners()
    assert sorted(s.runner_id for s in listed) == ["i-0000000000000000a", "i-0000000000000000b"]
