"""The CreateFleet request for one runner, and its answer, without touching AWS.

Everything that decides what EC2 is asked for lives here as pure functions of the spec,
the settings, the chosen architecture and market: the provider sends the result, and
``runs-fleet ec2 render`` prints it, so what an operator previews is exactly what a job
would launch.

Choices worth knowing:

* One ``instant`` fleet per runner with a target capacity of 1: the call returns the
  instance (or the reasons there is none) synchronously, and nothing keeps running on
  the EC2 side once the instance is gone.
* Up to 20 overrides (EC2's limit per launch template config): the smallest matching
  instance types, each in every configured subnet, so Fleet may pick any of them in any
  availability zone.
* The root disk size from ``disk=`` goes into each override's ``BlockDeviceMappings``
  (an encrypted gp3 volume on the launch template's root device), which CreateFleet
  accepts for instant fleets; the launch template needs no version per size.
* Instances and their volumes are tagged in the same request, so no instance ever
  exists without the tags that housekeeping and the agent look for.
* The ``ClientToken`` makes a retried request idempotent; see :func:`client_token`.
* An instant fleet answers with the instance, or with ``Errors`` and no instance;
  :mod:`runs_fleet_ec2.fleet_answer` reads it (re-exported here) and tells which
  failures another market or a later attempt may cure.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from runs_fleet_core.domain.spec import Arch, RunnerSpec
from runs_fleet_core.errors import ConfigError, ProviderError
from runs_fleet_core.settings import Kind, Setting, Settings
from runs_fleet_ec2 import catalog
from runs_fleet_ec2.catalog import InstanceType
from runs_fleet_ec2.fleet_answer import CAPACITY_CODES as CAPACITY_CODES
from runs_fleet_ec2.fleet_answer import FleetAnswer as FleetAnswer
from runs_fleet_ec2.fleet_answer import is_permanent as is_permanent
from runs_fleet_ec2.fleet_answer import read_answer as read_answer

TEMPLATE_NAME = "RUNS_FLEET_LAUNCH_TEMPLATE_NAME"
TEMPLATE_VERSION = "RUNS_FLEET_LAUNCH_TEMPLATE_VERSION"
EC2_TAGS = "RUNS_FLEET_EC2_TAGS"
ROOT_DEVICE = "RUNS_FLEET_EC2_ROOT_DEVICE_NAME"
ON_DEMAND_STRATEGY = "RUNS_FLEET_EC2_ON_DEMAND_STRATEGY"
SUBNETS = "RUNS_FLEET_PRIVATE_SUBNET_IDS"
INSTANCE_PROFILE = "RUNS_FLEET_INSTANCE_PROFILE_ARN"
SPOT_ENABLED = "RUNS_FLEET_SPOT_ENABLED"  # declared by the provider, which decides the market

DEFAULT_TEMPLATE_NAME = "runs-fleet-runner"
DEFAULT_TEMPLATE_VERSION = "$Latest"
DEFAULT_ROOT_DEVICE = "/dev/xvda"
ON_DEMAND_STRATEGIES = ("lowest-price", "prioritized")
SPOT_STRATEGY = "price-capacity-optimized"

SETTINGS = (
    Setting(
        name=TEMPLATE_NAME,
        help="EC2 launch template of the runners: one per architecture, named "
        "<name>-arm64 and <name>-amd64, or put {arch} where the architecture goes "
        "(e.g. runner-{arch}-v2)",
        default=DEFAULT_TEMPLATE_NAME,
    ),
    Setting(
        name=TEMPLATE_VERSION,
        help="launch template version to launch: $Latest, $Default or a version number to pin one",
        default=DEFAULT_TEMPLATE_VERSION,
    ),
    Setting(
        name=EC2_TAGS,
        help='extra tags on every runner instance and its volumes, e.g. {"team": "ci"} '
        "(no aws: or runs-fleet: prefix; at most 33)",
        kind=Kind.MAPPING,
        default={},
    ),
    Setting(
        name=ROOT_DEVICE,
        help="root device name of the runner AMI, whose size disk= sets: /dev/xvda for "
        "Amazon Linux, /dev/sda1 for Ubuntu",
        default=DEFAULT_ROOT_DEVICE,
    ),
    Setting(
        name=ON_DEMAND_STRATEGY,
        help="how EC2 picks among the candidate types for on-demand runners: lowest-price, "
        "or prioritized (the smallest matching type first)",
        default="lowest-price",
        choices=ON_DEMAND_STRATEGIES,
    ),
)

MAX_OVERRIDES = 20
"""EC2 Fleet accepts at most 20 overrides per launch template config."""
MAX_TAGS = 40
"""Tags runs-fleet puts on an instance in total (EC2 allows 50; the rest stay free for
tags added later, such as those AWS Backup or cost tools add)."""

TAG_PREFIX = "runs-fleet:"
MANAGED_TAG = "runs-fleet:managed"
JOB_TAG = "runs-fleet:job-id"
RUN_TAG = "runs-fleet:run-id"
REPO_TAG = "runs-fleet:repo"
POOL_TAG = "runs-fleet:pool"
RUNNER_NAME_TAG = "runs-fleet:runner-name"
NAME_TAG = "Name"
OWN_TAGS = (MANAGED_TAG, JOB_TAG, RUN_TAG, REPO_TAG, POOL_TAG, RUNNER_NAME_TAG, NAME_TAG)
MAX_OPERATOR_TAGS = MAX_TAGS - len(OWN_TAGS)

TOKEN_WINDOW_S = 600
"""How long a client token stays the same for an unchanged request (see client_token)."""

# Instance tags readable through instance metadata (the agent reads its runner name
# there) may only use these characters in keys; a key outside them fails the launch.
_TAG_KEY_RE = re.compile(r"[A-Za-z0-9+\-=.,_:@]+")
_IMDS_FORBIDDEN_KEYS = frozenset({".", "..", "_index"})
_TEMPLATE_NAME_RE = re.compile(r"[A-Za-z0-9().\-/_]{3,128}")
_VERSION_RE = re.compile(r"\$Latest|\$Default|[1-9][0-9]*")
_DEVICE_RE = re.compile(r"/dev/[a-z0-9]+")


def _frozen(value: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class FleetSettings:
    """The settings a CreateFleet request is built from.

    Build it with :meth:`from_settings`, which checks every value and reports all
    problems at once; constructing it directly (tests, tools) skips the checks.
    """

    template_name: str = DEFAULT_TEMPLATE_NAME
    template_version: str = DEFAULT_TEMPLATE_VERSION
    subnet_ids: tuple[str, ...] = ()
    tags: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen, hash=False)
    root_device_name: str = DEFAULT_ROOT_DEVICE
    on_demand_strategy: str = "lowest-price"
    instance_profile_arn: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> FleetSettings:
        """The fleet settings of a deployment; ``ConfigError`` listing every problem."""
        fleet = cls(
            template_name=str(settings.get(TEMPLATE_NAME, DEFAULT_TEMPLATE_NAME)),
            template_version=str(settings.get(TEMPLATE_VERSION, DEFAULT_TEMPLATE_VERSION)),
            subnet_ids=tuple(settings.get(SUBNETS, [])),
            tags=settings.get(EC2_TAGS, {}),
            root_device_name=str(settings.get(ROOT_DEVICE, DEFAULT_ROOT_DEVICE)),
            on_demand_strategy=str(settings.get(ON_DEMAND_STRATEGY, "lowest-price")),
            instance_profile_arn=settings.get(INSTANCE_PROFILE) or None,
        )
        problems = fleet.problems()
        if problems:
            raise ConfigError(problems)
        return fleet

    def problems(self) -> list[str]:
        """Every invalid value, one message each (empty when all are valid)."""
        problems = tag_problems(self.tags)
        for arch in Arch:
            name = template_name(self.template_name, arch)
            if not _TEMPLATE_NAME_RE.fullmatch(name):
                problems.append(
                    f"{TEMPLATE_NAME}: {self.template_name!r} gives the launch template name "
                    f"{name!r} for {arch}; a name is 3-128 letters, digits and ( ) . - / _"
                )
                break
        if not _VERSION_RE.fullmatch(self.template_version):
            problems.append(
                f"{TEMPLATE_VERSION}: {self.template_version!r} is not a launch template "
                "version; use $Latest, $Default or a version number such as 3"
            )
        if not _DEVICE_RE.fullmatch(self.root_device_name):
            problems.append(
                f"{ROOT_DEVICE}: {self.root_device_name!r} is not a device name such as "
                "/dev/xvda or /dev/sda1 (see the AMI's RootDeviceName)"
            )
        if self.on_demand_strategy not in ON_DEMAND_STRATEGIES:
            problems.append(
                f"{ON_DEMAND_STRATEGY}: must be one of {', '.join(ON_DEMAND_STRATEGIES)}"
            )
        return problems


def tag_problems(tags: Mapping[str, str]) -> list[str]:
    """Every reason the operator's tags cannot go on an instance, all at once.

    Keys and values follow EC2's limits (key 1-128, value at most 256 characters, no
    ``aws:`` prefix); keys also follow the stricter rules of tags readable through
    instance metadata, because the agent reads its runner name there; ``runs-fleet:``
    keys and more than :data:`MAX_OPERATOR_TAGS` tags are refused so runs-fleet's own
    tags always fit.
    """
    problems: list[str] = []
    if len(tags) > MAX_OPERATOR_TAGS:
        problems.append(
            f"{EC2_TAGS}: {len(tags)} tags given, at most {MAX_OPERATOR_TAGS} are allowed "
            f"(runs-fleet adds {len(OWN_TAGS)} of its own and keeps the total at {MAX_TAGS})"
        )
    for key, value in tags.items():
        where = f"{EC2_TAGS}: tag {key!r}"
        if not 1 <= len(key) <= 128:
            problems.append(f"{where}: a key must be 1-128 characters long")
        if key.lower().startswith("aws:") or value.lower().startswith("aws:"):
            problems.append(f"{where}: the aws: prefix is reserved for AWS")
        if key.startswith(TAG_PREFIX):
            problems.append(f"{where}: the {TAG_PREFIX} prefix is reserved for runs-fleet")
        if key and (not _TAG_KEY_RE.fullmatch(key) or key in _IMDS_FORBIDDEN_KEYS):
            problems.append(
                f"{where}: a key may contain only letters, digits and + - = . , _ : @, and "
                "may not be '.', '..' or '_index' (instance metadata refuses others, and "
                "the runner reads its tags there)"
            )
        if len(value) > 256:
            problems.append(f"{where}: the value is {len(value)} characters, at most 256")
    return problems


def template_name(pattern: str, arch: Arch) -> str:
    """The launch template for ``arch``: ``pattern`` with ``{arch}`` replaced, or
    ``<pattern>-<arch>`` when it has no ``{arch}``."""
    if "{arch}" in pattern:
        return pattern.replace("{arch}", str(arch))
    return f"{pattern}-{arch}"


@attrs.frozen
class Placement:
    """One override: an instance type in a subnet (``None``: the template's own)."""

    instance_type: InstanceType
    subnet_id: str | None


def placements(
    types_: Sequence[InstanceType],
    subnet_ids: Sequence[str],
    *,
    allowed: Callable[[Placement], bool] | None = None,
    limit: int = MAX_OVERRIDES,
) -> list[Placement]:
    """Each type (smallest first) in each subnet, skipping what ``allowed`` refuses,
    cut at ``limit``: the smallest types get every subnet, so Fleet can move to another
    availability zone before it moves to a bigger type."""
    subnets: Sequence[str | None] = list(subnet_ids) or [None]
    chosen: list[Placement] = []
    for instance_type in types_:
        for subnet in subnets:
            placement = Placement(instance_type, subnet)
            if allowed is None or allowed(placement):
                chosen.append(placement)
            if len(chosen) == limit:
                return chosen
    return chosen


def runner_tags(
    spec: RunnerSpec, runner_name: str, operator_tags: Mapping[str, str]
) -> list[dict[str, str]]:
    """The tags of a runner's instance and volumes: the operator's, then runs-fleet's
    (``Name`` only when the operator did not choose one). Empty values are left out."""
    own = {
        MANAGED_TAG: "true",
        RUNNER_NAME_TAG: runner_name,
        JOB_TAG: "" if spec.job_id is None else str(spec.job_id),
        RUN_TAG: str(spec.run_id),
        REPO_TAG: spec.repository,
        POOL_TAG: spec.pool or "",
    }
    merged = {NAME_TAG: runner_name, **operator_tags, **own}
    return [{"Key": key, "Value": value[:256]} for key, value in merged.items() if value]


def client_token(runner_name: str, market: str, request: Mapping[str, Any], now: datetime) -> str:
    """The idempotency token of one CreateFleet request (at most 64 characters).

    It starts with the runner name and the market, so a repeated request for the same
    runner (a botocore retry after a lost response, a re-delivered job) launches nothing
    new, while the on-demand fallback is a request of its own. It ends with a digest of
    the request's parameters and a :data:`TOKEN_WINDOW_S` time window: EC2 refuses a
    token reused with other parameters (``IdempotentParameterMismatch``, for example
    after the spot breaker changed the overrides), and it answers a reused token with
    the first answer, so a request that found no capacity would fail the same way for
    as long as the token lived. Instances launched earlier are found by their runner
    name tag before any request is made, so a new window never adds a second one.
    """
    body = {k: v for k, v in request.items() if k != "ClientToken"}
    window = int(now.timestamp() // TOKEN_WINDOW_S)
    text = json.dumps([body, window], sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    suffix = f"-{market}-{digest}"
    return runner_name[: 64 - len(suffix)] + suffix


def build_request(
    spec: RunnerSpec,
    settings: FleetSettings,
    *,
    arch: Arch,
    spot: bool,
    runner_name: str,
    now: datetime,
    chosen: Sequence[Placement] | None = None,
) -> dict[str, Any]:
    """The CreateFleet parameters that start one runner for ``spec``.

    ``chosen`` are the overrides to offer (default: the smallest matching types of
    ``arch`` in every subnet); ``ProviderError`` (not retryable) when no type matches.
    """
    if chosen is None:
        chosen = placements(catalog.candidates(spec, arch), settings.subnet_ids)
    if not chosen:
        blamed = arch if catalog.matching(spec) else spec.arch  # arch only if another fits
        raise ProviderError(
            f"no EC2 instance type fits '{spec.label}': "
            f"{catalog.why_nothing_matches(spec, blamed)}",
            retryable=False,
        )
    market = "spot" if spot else "on-demand"
    tags = runner_tags(spec, runner_name, settings.tags)
    request: dict[str, Any] = {
        "Type": "instant",
        "TargetCapacitySpecification": {
            "TotalTargetCapacity": 1,
            "DefaultTargetCapacityType": market,
            ("SpotTargetCapacity" if spot else "OnDemandTargetCapacity"): 1,
        },
        "LaunchTemplateConfigs": [
            {
                "LaunchTemplateSpecification": {
                    "LaunchTemplateName": template_name(settings.template_name, arch),
                    "Version": settings.template_version,
                },
                "Overrides": _overrides(chosen, spec, settings, spot),
            }
        ],
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tags},
            {"ResourceType": "volume", "Tags": tags},
        ],
    }
    if spot:
        request["SpotOptions"] = {
            "AllocationStrategy": SPOT_STRATEGY,
            "InstanceInterruptionBehavior": "terminate",
        }
    else:
        request["OnDemandOptions"] = {"AllocationStrategy": settings.on_demand_strategy}
    request["ClientToken"] = client_token(runner_name, "spot" if spot else "od", request, now)
    return request


def _overrides(
    chosen: Sequence[Placement], spec: RunnerSpec, settings: FleetSettings, spot: bool
) -> list[dict[str, Any]]:
    disk = {
        "DeviceName": settings.root_device_name,
        "Ebs": {
            "VolumeSize": spec.disk_gib,
            "VolumeType": "gp3",
            "Encrypted": True,
            "DeleteOnTermination": True,
        },
    }
    rank = {name: i for i, name in enumerate(dict.fromkeys(p.instance_type.name for p in chosen))}
    overrides = []
    for placement in chosen:
        override: dict[str, Any] = {"InstanceType": placement.instance_type.name}
        if placement.subnet_id is not None:
            override["SubnetId"] = placement.subnet_id
        override["BlockDeviceMappings"] = [disk]
        if settings.instance_profile_arn:
            override["IamInstanceProfile"] = {"Arn": settings.instance_profile_arn}
        if not spot and settings.on_demand_strategy == "prioritized":
            override["Priority"] = float(rank[placement.instance_type.name])
        overrides.append(override)
    return overrides
