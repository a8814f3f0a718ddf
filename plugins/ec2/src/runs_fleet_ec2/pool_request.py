"""A warm pool's CreateFleet request, and how a pool runner is told from other instances.

A pool runner is launched from its pool's label like a job's runner
(:func:`runs_fleet_ec2.fleet.build_request`). What sets it apart from a job's instance,
and how it is recognised:

* No ``runs-fleet:job-id`` tag: no job exists when it starts. A job's own instance may
  carry the pool tag too (a ``pool=`` job that found no free warm runner), so an
  instance with a job tag is never treated as a pool runner.
* No ``runs-fleet:runner-name`` (nor run id) tag: the runner name comes with the job
  that claims the instance, and dispatch stores that job's config under the instance
  id. An agent that finds no runner name among its tags is a warm runner and waits for
  the config of its instance id.
* Always on-demand, whatever the label says: a spot instance launched by a one-time
  request cannot be stopped, only terminated, and a stopped warm runner is the point
  of a pool. (Spot's discount would also be paid back by an interrupted idle runner.)

These are pure functions of a pool's config, the fleet settings and an instance
description, kept apart from the waiting and polling of
:class:`~runs_fleet_ec2.pool.Ec2PoolProvider`, which sends what they build and
filters what EC2 describes with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from runs_fleet_core.domain.labels import LabelDefaults
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.pool_labels import pool_spec as spec_of_pool
from runs_fleet_core.domain.spec import Arch, RunnerSpec
from runs_fleet_ec2 import catalog, fleet, instances
from runs_fleet_ec2.fleet import FleetSettings

POOL_NAME_PREFIX = "runs-fleet-pool-"
"""Start of a pool runner's ``Name`` tag and of its CreateFleet client tokens."""


def pool_spec(pool: PoolConfig, defaults: LabelDefaults) -> RunnerSpec:
    """The spec ``pool``'s runners are launched from: its label, in the pool, on-demand
    (a stopped spot instance may be reclaimed; see the core's ``pool_spec`` for the
    label checks)."""
    return attrs.evolve(spec_of_pool(pool, defaults), spot=False)


def pool_tags(spec: RunnerSpec, operator_tags: Mapping[str, str]) -> list[dict[str, str]]:
    """The tags of a pool runner's instance and volumes: a job runner's tags without
    the job, run, repository and runner name, ``Name`` = ``runs-fleet-pool-<pool>`` unless the
    operator chose one."""
    assert spec.pool is not None
    tags = fleet.runner_tags(spec, POOL_NAME_PREFIX + spec.pool, operator_tags)
    dropped = {fleet.JOB_TAG, fleet.RUN_TAG, fleet.REPO_TAG, fleet.RUNNER_NAME_TAG}
    return [tag for tag in tags if tag["Key"] not in dropped]


def pool_arch(spec: RunnerSpec) -> Arch:
    """The label's architecture, else arm64 when it fits (as for on-demand job
    runners: there is no spot price to compare)."""
    arches = catalog.arches_for(spec)
    return spec.arch or (arches[0] if arches else Arch.ARM64)


def build_pool_request(
    spec: RunnerSpec,
    settings: FleetSettings,
    *,
    arch: Arch,
    count: int,
    now: datetime,
    token: str,
) -> dict[str, Any]:
    """The CreateFleet parameters that add ``count`` runners of ``spec``'s pool.

    The job runner's request (:func:`fleet.build_request`), on-demand, with the
    capacity, the pool's tags and the given client token. ``ProviderError`` (not
    retryable) when no instance type fits the label.
    """
    name = POOL_NAME_PREFIX + (spec.pool or "")
    request = fleet.build_request(spec, settings, arch=arch, spot=False, runner_name=name, now=now)
    request["TargetCapacitySpecification"] = {
        "TotalTargetCapacity": count,
        "DefaultTargetCapacityType": "on-demand",
        "OnDemandTargetCapacity": count,
    }
    tags = pool_tags(spec, settings.tags)
    request["TagSpecifications"] = [
        {"ResourceType": "instance", "Tags": tags},
        {"ResourceType": "volume", "Tags": tags},
    ]
    request["ClientToken"] = token
    return request


def is_pool_instance(instance: Mapping[str, Any]) -> bool:
    """Whether ``instance`` is a runs-fleet pool runner: managed, in a pool, no job."""
    tags = instances.tags(instance)
    return (
        tags.get(fleet.MANAGED_TAG) == "true"
        and bool(tags.get(fleet.POOL_TAG))
        and not tags.get(fleet.JOB_TAG)
    )
