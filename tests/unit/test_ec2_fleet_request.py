"""The CreateFleet request runs-fleet builds for a label, and ``runs-fleet ec2 render``.

These pin down what EC2 is asked for: which instance types in which subnets, spot or
on-demand, the root disk, the tags housekeeping and the agent rely on, and a client
token that makes a retried request harmless. No AWS call is made anywhere here.
"""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runs_fleet_core.catalog import CORE_SETTINGS
from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.labels import parse_label
from runs_fleet_core.domain.spec import Arch, RunnerSpec
from runs_fleet_core.errors import ConfigError, ProviderError
from runs_fleet_core.settings import Settings, load_settings
from runs_fleet_ec2 import breaker, catalog, fleet, provider, render
from runs_fleet_ec2.fleet import FleetSettings

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SUBNETS = ("subnet-a", "subnet-b", "subnet-c")
RUNNER = "runs-fleet-7001-1"


def spec_for(label: str) -> RunnerSpec:
    return parse_label(label).for_job(JobId(7001), "octo-org/app")


def request_for(
    label: str,
    *,
    settings: FleetSettings | None = None,
    arch: Arch = Arch.ARM64,
    spot: bool = True,
    runner_name: str = RUNNER,
    now: datetime = NOW,
) -> dict[str, Any]:
    return fleet.build_request(
        spec_for(label),
        settings or FleetSettings(subnet_ids=SUBNETS),
        arch=arch,
        spot=spot,
        runner_name=runner_name,
        now=now,
    )


def overrides(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    [config] = request["LaunchTemplateConfigs"]
    result: list[dict[str, Any]] = config["Overrides"]
    return result


def tags_of(request: Mapping[str, Any], resource: str) -> dict[str, str]:
    [spec] = [s for s in request["TagSpecifications"] if s["ResourceType"] == resource]
    return {t["Key"]: t["Value"] for t in spec["Tags"]}


def settings_from(env: Mapping[str, str]) -> Settings:
    definitions = {
        s.name: s for s in (*CORE_SETTINGS, *fleet.SETTINGS, *breaker.SETTINGS, *provider.SETTINGS)
    }
    return load_settings(env, definitions, require=False)


# -- the catalog -----------------------------------------------------------------------


def test_the_catalog_has_both_architectures_and_current_families() -> None:
    families = {t.family for t in catalog.CATALOG}
    assert {"m7i", "m7a", "m7g", "m8g", "c7i", "c7a", "c7g", "c8g", "r7i", "r7g"} <= families
    assert {t.arch for t in catalog.CATALOG} == {Arch.ARM64, Arch.AMD64}
    assert catalog.BY_NAME["c7g.xlarge"].vcpu == 4
    assert catalog.BY_NAME["r7i.large"].memory_gib == 16
    assert catalog.BY_NAME["t4g.medium"].generation == 4


def test_candidates_fit_every_constraint_smallest_first() -> None:
    spec = spec_for("runs-fleet=1/cpu=4+16/ram=16/arch=amd64/gen=7")
    found = catalog.candidates(spec)
    assert found
    assert all(4 <= t.vcpu <= 16 and t.memory_gib >= 16 for t in found)
    assert all(t.arch is Arch.AMD64 and t.generation >= 7 for t in found)
    assert [t.sort_key for t in found] == sorted(t.sort_key for t in found)
    assert found[0].name == "m7a.xlarge"


def test_a_family_list_keeps_only_those_families() -> None:
    found = catalog.candidates(spec_for("runs-fleet=1/cpu=2+8/family=c7g+m8g"))
    assert {t.family for t in found} == {"c7g", "m8g"}


def test_at_most_twenty_candidates_are_offered() -> None:
    spec = spec_for("runs-fleet=1/cpu=1+64")
    assert len(catalog.matching(spec)) > catalog.MAX_CANDIDATES
    assert len(catalog.candidates(spec)) == catalog.MAX_CANDIDATES


@pytest.mark.parametrize(
    ("label", "words"),
    [
        ("runs-fleet=1/cpu=128+256", ["cpu=128-256 vCPU", "1-64 vCPU", "change cpu="]),
        ("runs-fleet=1/family=p5", ["family p5 is not in the runs-fleet instance catalog"]),
        ("runs-fleet=1/family=c7g/arch=amd64", ["arch=amd64", "family=c7g"]),
        ("runs-fleet=1/cpu=2/ram=64", ["ram=64+ GiB", "cpu=2-4 vCPU", "change ram= or cpu="]),
        ("runs-fleet=1/gen=9", ["gen=9", "generation 3-8"]),
    ],
)
def test_a_spec_nothing_fits_is_refused_naming_the_constraint(label: str, words: list[str]) -> None:
    with pytest.raises(ProviderError) as caught:
        request_for(label, arch=parse_label(label).arch or Arch.ARM64)
    assert caught.value.retryable is False
    for word in words:
        assert word in str(caught.value)


# -- overrides -------------------------------------------------------------------------


def test_overrides_are_capped_at_twenty_smallest_types_first() -> None:
    found = overrides(request_for("runs-fleet=1/cpu=1+64"))
    assert len(found) == fleet.MAX_OVERRIDES
    sizes = [catalog.BY_NAME[o["InstanceType"]].sort_key for o in found]
    assert sizes == sorted(sizes)
    assert found[0]["InstanceType"] == "c6g.medium"


def test_each_type_is_offered_in_every_subnet_before_a_bigger_type() -> None:
    found = overrides(request_for("runs-fleet=1/cpu=1+64"))
    first_types = list(dict.fromkeys(o["InstanceType"] for o in found))[:6]
    for name in first_types:
        assert [o["SubnetId"] for o in found if o["InstanceType"] == name] == list(SUBNETS)


def test_a_single_type_is_spread_over_all_subnets() -> None:
    found = overrides(request_for("runs-fleet=1/cpu=2+2/family=c7g"))
    assert [(o["InstanceType"], o["SubnetId"]) for o in found] == [
        ("c7g.large", s) for s in SUBNETS
    ]


def test_without_subnets_the_launch_template_network_is_used() -> None:
    found = overrides(request_for("runs-fleet=1/cpu=2", settings=FleetSettings()))
    assert found
    assert all("SubnetId" not in o for o in found)


def test_the_launch_template_is_chosen_per_architecture() -> None:
    for arch in Arch:
        [config] = request_for("runs-fleet=1/cpu=2", arch=arch)["LaunchTemplateConfigs"]
        assert config["LaunchTemplateSpecification"] == {
            "LaunchTemplateName": f"runs-fleet-runner-{arch}",
            "Version": "$Latest",
        }
        assert all(catalog.BY_NAME[o["InstanceType"]].arch is arch for o in config["Overrides"])


def test_an_arch_placeholder_and_a_pinned_version_are_honoured() -> None:
    settings = FleetSettings(template_name="ci-{arch}-runner", template_version="7")
    [config] = request_for("runs-fleet=1", settings=settings, arch=Arch.AMD64)[
        "LaunchTemplateConfigs"
    ]
    assert config["LaunchTemplateSpecification"] == {
        "LaunchTemplateName": "ci-amd64-runner",
        "Version": "7",
    }


def test_the_disk_becomes_an_encrypted_gp3_root_volume_in_every_override() -> None:
    settings = FleetSettings(subnet_ids=SUBNETS, root_device_name="/dev/sda1")
    found = overrides(request_for("runs-fleet=1/cpu=2/disk=250", settings=settings))
    for override in found:
        assert override["BlockDeviceMappings"] == [
            {
                "DeviceName": "/dev/sda1",
                "Ebs": {
                    "VolumeSize": 250,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ]


def test_the_instance_profile_setting_reaches_every_override() -> None:
    arn = "arn:aws:iam::123456789012:instance-profile/runs-fleet-runner"
    settings = FleetSettings(subnet_ids=SUBNETS, instance_profile_arn=arn)
    assert all(
        o["IamInstanceProfile"] == {"Arn": arn}
        for o in overrides(request_for("runs-fleet=1", settings=settings))
    )


# -- markets ---------------------------------------------------------------------------


def test_a_spot_request_is_instant_for_one_instance_price_capacity_optimized() -> None:
    request = request_for("runs-fleet=1/cpu=2")
    assert request["Type"] == "instant"
    assert request["TargetCapacitySpecification"] == {
        "TotalTargetCapacity": 1,
        "DefaultTargetCapacityType": "spot",
        "SpotTargetCapacity": 1,
    }
    assert request["SpotOptions"]["AllocationStrategy"] == "price-capacity-optimized"
    assert "OnDemandOptions" not in request


def test_an_on_demand_request_has_no_spot_options() -> None:
    request = request_for("runs-fleet=1/cpu=2", spot=False)
    assert request["TargetCapacitySpecification"] == {
        "TotalTargetCapacity": 1,
        "DefaultTargetCapacityType": "on-demand",
        "OnDemandTargetCapacity": 1,
    }
    assert request["OnDemandOptions"] == {"AllocationStrategy": "lowest-price"}
    assert "SpotOptions" not in request
    assert all("Priority" not in o for o in overrides(request))


def test_prioritized_on_demand_prefers_the_smallest_type_in_any_subnet() -> None:
    settings = FleetSettings(subnet_ids=SUBNETS, on_demand_strategy="prioritized")
    request = request_for("runs-fleet=1/cpu=2+8", settings=settings, spot=False)
    assert request["OnDemandOptions"] == {"AllocationStrategy": "prioritized"}
    found = overrides(request)
    by_type: dict[str, set[float]] = {}
    for o in found:
        by_type.setdefault(o["InstanceType"], set()).add(o["Priority"])
    assert all(len(p) == 1 for p in by_type.values())
    priorities = [p.pop() for p in by_type.values()]
    assert priorities == sorted(priorities) == [float(i) for i in range(len(by_type))]


# -- tags ------------------------------------------------------------------------------


def test_instances_and_volumes_carry_the_runner_tags() -> None:
    label = "runs-fleet=555/cpu=2/pool=linux"
    request = request_for(label)
    expected = {
        "runs-fleet:managed": "true",
        "runs-fleet:job-id": "7001",
        "runs-fleet:run-id": "555",
        "runs-fleet:repo": "octo-org/app",
        "runs-fleet:pool": "linux",
        "runs-fleet:runner-name": RUNNER,
        "Name": RUNNER,
    }
    assert tags_of(request, "instance") == expected
    assert tags_of(request, "volume") == expected


def test_a_runner_without_pool_gets_no_empty_pool_tag() -> None:
    assert "runs-fleet:pool" not in tags_of(request_for("runs-fleet=1/cpu=2"), "instance")


def test_operator_tags_are_added_and_may_choose_the_name() -> None:
    settings = FleetSettings(subnet_ids=SUBNETS, tags={"team": "ci", "Name": "ci-runner"})
    tags = tags_of(request_for("runs-fleet=1", settings=settings), "instance")
    assert tags["team"] == "ci"
    assert tags["Name"] == "ci-runner"
    assert tags["runs-fleet:runner-name"] == RUNNER


def test_every_bad_operator_tag_is_reported_at_once() -> None:
    env = {
        "RUNS_FLEET_EC2_TAGS": json.dumps(
            {
                "aws:owner": "me",
                "runs-fleet:managed": "false",
                "cost/center": "42",
                "k" * 129: "x",
                "note": "v" * 257,
                "fine": "ok",
            }
        )
    }
    with pytest.raises(ConfigError) as caught:
        FleetSettings.from_settings(settings_from(env))
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 5
    assert "'aws:owner': the aws: prefix is reserved" in problems
    assert "'runs-fleet:managed': the runs-fleet: prefix is reserved" in problems
    assert "'cost/center': a key may contain only" in problems
    assert "1-128 characters" in problems
    assert "'note': the value is 257 characters" in problems
    assert "'fine'" not in problems


def test_too_many_operator_tags_are_refused_with_the_limit() -> None:
    tags = {f"tag{i}": "x" for i in range(fleet.MAX_OPERATOR_TAGS + 1)}
    with pytest.raises(ConfigError) as caught:
        FleetSettings.from_settings(settings_from({"RUNS_FLEET_EC2_TAGS": json.dumps(tags)}))
    assert caught.value.problems == [
        f"RUNS_FLEET_EC2_TAGS: {len(tags)} tags given, at most 33 are allowed (runs-fleet "
        "adds 7 of its own and keeps the total at 40)"
    ]
    allowed = dict(list(tags.items())[:-1])
    settings = FleetSettings(subnet_ids=SUBNETS, tags=allowed)
    assert len(tags_of(request_for("runs-fleet=1/pool=p", settings=settings), "instance")) == 40


def test_bad_template_name_version_and_device_are_reported_together() -> None:
    env = {
        "RUNS_FLEET_LAUNCH_TEMPLATE_NAME": "bad name!",
        "RUNS_FLEET_LAUNCH_TEMPLATE_VERSION": "latest",
        "RUNS_FLEET_EC2_ROOT_DEVICE_NAME": "xvda",
    }
    with pytest.raises(ConfigError) as caught:
        FleetSettings.from_settings(settings_from(env))
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "RUNS_FLEET_LAUNCH_TEMPLATE_NAME",
        "RUNS_FLEET_LAUNCH_TEMPLATE_VERSION",
        "RUNS_FLEET_EC2_ROOT_DEVICE_NAME",
    ]


def test_settings_carry_subnets_instance_profile_and_defaults() -> None:
    env = {
        "RUNS_FLEET_PRIVATE_SUBNET_IDS": "subnet-1, subnet-2",
        "RUNS_FLEET_INSTANCE_PROFILE_ARN": "arn:aws:iam::1:instance-profile/r",
    }
    assert FleetSettings.from_settings(settings_from(env)) == FleetSettings(
        subnet_ids=("subnet-1", "subnet-2"),
        instance_profile_arn="arn:aws:iam::1:instance-profile/r",
    )


# -- client token ----------------------------------------------------------------------


def test_the_same_request_gets_the_same_client_token() -> None:
    first = request_for("runs-fleet=1/cpu=2")
    again = request_for("runs-fleet=1/cpu=2", now=NOW + timedelta(seconds=30))
    assert first["ClientToken"] == again["ClientToken"]
    assert first["ClientToken"].startswith(f"{RUNNER}-spot-")
    assert len(first["ClientToken"]) <= 64


def test_the_on_demand_fallback_has_a_token_of_its_own() -> None:
    spot = request_for("runs-fleet=1/cpu=2")["ClientToken"]
    on_demand = request_for("runs-fleet=1/cpu=2", spot=False)["ClientToken"]
    assert on_demand.startswith(f"{RUNNER}-od-")
    assert on_demand != spot


def test_changed_parameters_or_another_runner_get_another_token() -> None:
    base = request_for("runs-fleet=1/cpu=2")["ClientToken"]
    fewer_subnets = FleetSettings(subnet_ids=SUBNETS[:2])
    assert request_for("runs-fleet=1/cpu=2", settings=fewer_subnets)["ClientToken"] != base
    assert request_for("runs-fleet=1/cpu=2", runner_name="runs-fleet-7002-1")["ClientToken"] != (
        base
    )


def test_a_token_expires_with_its_time_window() -> None:
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a window boundary
    first = request_for("runs-fleet=1", now=start)["ClientToken"]
    later = start + timedelta(seconds=fleet.TOKEN_WINDOW_S)
    assert request_for("runs-fleet=1", now=later - timedelta(seconds=1))["ClientToken"] == first
    assert request_for("runs-fleet=1", now=later)["ClientToken"] != first


def test_a_long_runner_name_still_gives_a_valid_token() -> None:
    token = request_for("runs-fleet=1", runner_name="r" * 80)["ClientToken"]
    assert len(token) == 64
    assert token.isascii()


# -- runs-fleet ec2 render -------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment in which any AWS call would fail: a closed endpoint, no region
    and no credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def render_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="runs-fleet ec2")
    render.configure(parser)
    return parser.parse_args(["render", *argv])


@pytest.mark.usefixtures("no_aws")
def test_render_prints_the_request_as_json_without_calling_aws(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RUNS_FLEET_PRIVATE_SUBNET_IDS", "subnet-1,subnet-2")
    code = render.main(render_args("runs-fleet=9/cpu=4/arch=amd64/disk=80", "--job-id", "12"))
    out = capsys.readouterr().out
    assert code == 0
    document = json.loads(out)
    assert (document["arch"], document["market"]) == ("amd64", "spot")
    assert document["runner_name"] == "runs-fleet-12-1"
    request = document["CreateFleet"]
    assert request["Type"] == "instant"
    assert {o["SubnetId"] for o in overrides(request)} == {"subnet-1", "subnet-2"}
    assert {o["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] for o in overrides(request)} == {80}
    assert tags_of(request, "instance")["runs-fleet:job-id"] == "12"


@pytest.mark.usefixtures("no_aws")
def test_render_says_which_arch_it_chose_for_a_label_without_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert render.run(render_args("runs-fleet=9/cpu=2"), settings_from({})) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["arch"] == "arm64"
    assert any("no arch=" in note and "spot price" in note for note in document["notes"])


@pytest.mark.usefixtures("no_aws")
def test_render_shows_the_on_demand_request_when_spot_is_off_or_asked_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_from({"RUNS_FLEET_SPOT_ENABLED": "false"})
    assert render.run(render_args("runs-fleet=9/arch=arm64"), settings) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["market"] == "on-demand"
    assert "RUNS_FLEET_SPOT_ENABLED=false" in document["notes"][0]
    assert render.run(render_args("runs-fleet=9", "--on-demand"), settings_from({})) == 0
    assert "OnDemandOptions" in json.loads(capsys.readouterr().out)["CreateFleet"]


@pytest.mark.usefixtures("no_aws")
@pytest.mark.parametrize(
    ("label", "env", "message"),
    [
        ("runs-fleet=9/cpus=4", {}, "unknown key 'cpus'"),
        ("runs-fleet=9/cpu=256", {}, "no EC2 instance type fits"),
        ("runs-fleet=9", {"RUNS_FLEET_EC2_TAGS": '{"aws:x": "y"}'}, "aws: prefix is reserved"),
    ],
)
def test_render_explains_what_it_cannot_render(
    label: str, env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert render.run(render_args(label), settings_from(env)) == render.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
