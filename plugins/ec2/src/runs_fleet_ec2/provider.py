"""The EC2 provider: one instance per job, started by an instant EC2 Fleet.

Creating a runner goes, in order:

1. Look for an instance already tagged with the runner name (not terminated): a
   re-delivered job, another replica or a crashed attempt may have started it, and the
   same name must never get a second instance. Within one process, creates of the same
   name are serialised, so the second finds what the first started; across processes
   the fleet's client token does the same job.
2. Choose the architecture (the spec's, or the one with the cheaper spot price) and the
   smallest matching instance types.
3. Ask for spot, leaving out the families and zones whose spot breaker is open, unless
   the spec or the deployment wants on-demand or the breaker left nothing.
4. When spot finds no capacity, ask for on-demand once. When that fails as well, raise a
   retryable ``ProviderError`` naming EC2's error codes, so dispatch tries again later.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from runs_fleet_aws.calls import AwsCaller, error_code
from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.runner import RunnerPhase, RunnerResult, RunnerState
from runs_fleet_core.domain.spec import Arch, RunnerSpec, describe
from runs_fleet_core.errors import AdapterError, NotFoundError, ProviderError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports import Clock, Metrics
from runs_fleet_core.settings import Kind, Setting
from runs_fleet_ec2 import breaker as breaker_module
from runs_fleet_ec2 import catalog, fleet, instances
from runs_fleet_ec2.breaker import SpotCircuitBreaker
from runs_fleet_ec2.fleet import FleetAnswer, FleetSettings, Placement
from runs_fleet_ec2.pricing import SpotPrices

_log = logging.getLogger(__name__)

NAME = "ec2"
SPOT_ENABLED = fleet.SPOT_ENABLED

SETTINGS = (
    Setting(
        name=SPOT_ENABLED,
        help="start EC2 runners on spot first (on-demand when spot has no capacity); "
        "false: always on-demand",
        kind=Kind.BOOL,
        default=True,
    ),
)

_ALIVE_STATES = ("pending", "running", "stopping", "stopped")
_PHASES = {
    "pending": RunnerPhase.PENDING,
    "running": RunnerPhase.RUNNING,
    "stopping": RunnerPhase.STOPPING,
    "stopped": RunnerPhase.STOPPED,
    # shutting-down never comes back: for runs-fleet the runner is gone already
    "shutting-down": RunnerPhase.TERMINATED,
    "terminated": RunnerPhase.TERMINATED,
}
_NOT_FOUND = "InvalidInstanceID.NotFound"
_MALFORMED = "InvalidInstanceID.Malformed"
LIST_PAGE_SIZE = 1000


class Ec2Provider:
    """The :class:`~runs_fleet_core.ports.Provider` port over EC2 Fleet.

    Runner id = instance id. Every instance carries the tags of :mod:`fleet`
    (``runs-fleet:managed``, ``runs-fleet:runner-name`` …), which is how runners are
    found again, listed, and matched to their jobs.
    """

    def __init__(
        self,
        caller: AwsCaller,
        settings: FleetSettings,
        *,
        clock: Clock,
        metrics: Metrics,
        breaker: SpotCircuitBreaker,
        prices: SpotPrices,
        spot_enabled: bool = True,
        page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        self._caller = caller
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._breaker = breaker
        self._prices = prices
        self._spot_enabled = spot_enabled
        self._page_size = page_size
        self._zones: dict[str, str] | None = None
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def name(self) -> str:
        """``ec2``."""
        return NAME

    async def create_runner(self, spec: RunnerSpec, *, runner_name: str) -> RunnerResult:
        """Start an instance for ``spec``'s job, or return the live one already tagged
        with ``runner_name``."""
        if spec.job_id is None:
            raise ValueError(f"spec for runner {runner_name!r} has no job_id")
        async with self._locked(runner_name):
            existing = await self._find(runner_name)
            if existing is not None:
                state = self._state(existing)
                return RunnerResult(
                    runner_id=state.runner_id,
                    provider=NAME,
                    details={"runner_name": runner_name, **state.details},
                )
            return await self._launch(spec, runner_name)

    async def terminate_runner(self, runner_id: RunnerId) -> None:
        """Terminate the instance; one that is already gone is fine."""
        try:
            await self._caller.call("ec2", "terminate_instances", InstanceIds=[runner_id])
        except AdapterError as exc:
            if error_code(exc) == _NOT_FOUND:
                return
            raise ProviderError(str(exc), retryable=exc.retryable) from exc

    async def describe_runner(self, runner_id: RunnerId) -> RunnerState:
        """The instance's state; ``NotFoundError`` when EC2 does not know the id (never
        created, not an instance id, or terminated long enough ago to be forgotten)."""
        try:
            response = await self._caller.call("ec2", "describe_instances", InstanceIds=[runner_id])
        except AdapterError as exc:
            if error_code(exc) in (_NOT_FOUND, _MALFORMED):
                raise NotFoundError(
                    f"runner {runner_id} does not exist in provider {NAME}"
                ) from exc
            raise ProviderError(str(exc), retryable=exc.retryable) from exc
        found = instances.instances(response)
        if not found:
            raise NotFoundError(f"runner {runner_id} does not exist in provider {NAME}")
        return self._state(found[0])

    async def list_runners(self) -> Sequence[RunnerState]:
        """Every instance tagged ``runs-fleet:managed=true`` that is not shutting down or
        terminated, all pages, oldest first."""
        filters = [
            {"Name": f"tag:{fleet.MANAGED_TAG}", "Values": ["true"]},
            {"Name": "instance-state-name", "Values": list(_ALIVE_STATES)},
        ]
        found = await self._describe_all(filters)
        return [self._state(i) for i in sorted(found, key=instances.launch_order)]

    async def record_spot_interruption(self, runner_id: RunnerId) -> bool:
        """Count a spot interruption of this runner's instance family in its zone in the
        spot breaker; whether the breaker is open for them now."""
        state = await self.describe_runner(runner_id)
        instance_type = state.details.get("instance_type", "")
        zone = state.details.get("availability_zone", "")
        if not instance_type or not zone:
            raise ProviderError(
                f"runner {runner_id} has no instance type or zone to blame", retryable=False
            )
        family = catalog.family_of(instance_type)
        return await self._breaker.record_interruption(family, zone, self._clock.now())

    # -- creating -------------------------------------------------------------------

    async def _launch(self, spec: RunnerSpec, runner_name: str) -> RunnerResult:
        now = self._clock.now()
        want_spot = spec.spot and self._spot_enabled
        arch, arch_reason = await self._arch(spec, want_spot)
        types = catalog.candidates(spec, arch)
        if not types:
            raise ProviderError(
                f"no EC2 instance type fits '{spec.label}': "
                f"{catalog.why_nothing_matches(spec, spec.arch)}",
                retryable=False,
            )
        details = {"runner_name": runner_name, "arch": str(arch)}
        if arch_reason:
            details["arch_choice"] = arch_reason
        tried: list[tuple[str, FleetAnswer]] = []
        if want_spot:
            spot_places = await self._spot_placements(types)
            if spot_places:
                launch = await self._create(spec, arch, True, runner_name, now, spot_places)
                if launch.instance_id is not None:
                    return self._launched(launch, "spot", details)
                tried.append(("spot", launch))
                self._metrics.increment("ec2_spot_fallbacks", labels={"reason": "capacity"})
                _log.info(
                    "no spot capacity for %s (%s); trying on-demand",
                    runner_name,
                    ", ".join(launch.codes),
                )
                details["spot_failed"] = ", ".join(launch.codes)
            else:
                self._metrics.increment("ec2_spot_fallbacks", labels={"reason": "breaker"})
                details["spot_skipped"] = "spot breaker open for every candidate family and zone"
        places = fleet.placements(types, self._settings.subnet_ids)
        launch = await self._create(spec, arch, False, runner_name, now, places)
        if launch.instance_id is not None:
            return self._launched(launch, "on-demand", details)
        tried.append(("on-demand", launch))
        raise self._no_capacity(spec, arch, runner_name, tried)

    async def _arch(self, spec: RunnerSpec, spot: bool) -> tuple[Arch, str]:
        """The spec's architecture, else the only one that fits, else (for spot) the one
        with the lower spot price, else arm64."""
        if spec.arch is not None:
            return spec.arch, ""
        arches = catalog.arches_for(spec)
        if len(arches) < 2:
            return (arches[0] if arches else Arch.ARM64), ""
        if not spot:
            return Arch.ARM64, "on-demand: arm64 when either architecture fits"
        choices = {arch: [t.name for t in catalog.candidates(spec, arch)] for arch in arches}
        zones = sorted(set((await self._subnet_zones()).values()))
        choice = await self._prices.cheaper_arch(choices, zones)
        return choice.arch, choice.reason

    async def _spot_placements(self, types: Sequence[catalog.InstanceType]) -> list[Placement]:
        """The overrides for spot: every candidate except those whose (family, zone)
        breaker is open. A breaker that cannot be read blocks nothing."""
        zones = await self._subnet_zones()
        subnets = self._settings.subnet_ids
        pairs = {(t.family, zones.get(s, "")) for t in types for s in subnets or [""]}
        try:
            open_pairs = await self._breaker.open_pairs(pairs, self._clock.now())
        except AdapterError as exc:
            _log.warning("spot breaker unreadable, ignoring it: %s", exc)
            open_pairs = set()

        def allowed(placement: Placement) -> bool:
            zone = zones.get(placement.subnet_id or "", "")
            return (placement.instance_type.family, zone) not in open_pairs

        return fleet.placements(types, subnets, allowed=allowed)

    async def _subnet_zones(self) -> dict[str, str]:
        """Subnet id → availability zone, read once (subnets never move)."""
        if self._zones is not None:
            return self._zones
        subnets = list(self._settings.subnet_ids)
        if not subnets:
            self._zones = {}
            return self._zones
        try:
            response = await self._caller.call("ec2", "describe_subnets", SubnetIds=subnets)
        except AdapterError as exc:
            _log.warning("cannot read the zones of %s: %s", ", ".join(subnets), exc)
            return {}
        self._zones = {s["SubnetId"]: s["AvailabilityZone"] for s in response.get("Subnets", [])}
        return self._zones

    async def _create(
        self,
        spec: RunnerSpec,
        arch: Arch,
        spot: bool,
        runner_name: str,
        now: datetime,
        places: Sequence[Placement],
    ) -> FleetAnswer:
        request = fleet.build_request(
            spec,
            self._settings,
            arch=arch,
            spot=spot,
            runner_name=runner_name,
            now=now,
            chosen=places,
        )
        try:
            response = await self._caller.call("ec2", "create_fleet", **request)
        except AdapterError as exc:
            code = error_code(exc)
            if code in fleet.CAPACITY_CODES:
                return FleetAnswer(errors=((code, str(exc)),))
            raise ProviderError(str(exc), retryable=exc.retryable) from exc
        return fleet.read_answer(response)

    def _launched(self, launch: FleetAnswer, market: str, details: dict[str, str]) -> RunnerResult:
        assert launch.instance_id is not None
        self._metrics.increment(
            "ec2_fleet_launches", labels={"market": market, "arch": details["arch"]}
        )
        return RunnerResult(
            runner_id=RunnerId(launch.instance_id),
            provider=NAME,
            details={
                **details,
                "instance_type": launch.instance_type,
                "lifecycle": market,
                "subnet_id": launch.subnet_id,
                "fleet_id": launch.fleet_id,
            },
        )

    def _no_capacity(
        self, spec: RunnerSpec, arch: Arch, runner_name: str, tried: list[tuple[str, FleetAnswer]]
    ) -> ProviderError:
        codes = [code for _, launch in tried for code in launch.codes]
        retryable = not codes or not all(fleet.is_permanent(code) for code in codes)
        parts = []
        for market, launch in tried:
            example = launch.errors[0][1] if launch.errors else "no instance and no reason"
            parts.append(f"{market}: {', '.join(launch.codes) or 'no error code'} ({example})")
        return ProviderError(
            f"EC2 started no instance for runner {runner_name} ({describe(spec)}, {arch}): "
            + "; ".join(parts),
            retryable=retryable,
        )

    # -- reading --------------------------------------------------------------------

    async def _find(self, runner_name: str) -> dict[str, Any] | None:
        """The oldest live instance tagged with ``runner_name``, if any."""
        filters = [
            {"Name": f"tag:{fleet.RUNNER_NAME_TAG}", "Values": [runner_name]},
            {"Name": "instance-state-name", "Values": list(_ALIVE_STATES)},
        ]
        try:
            response = await self._caller.call("ec2", "describe_instances", Filters=filters)
        except AdapterError as exc:
            raise ProviderError(str(exc), retryable=exc.retryable) from exc
        found = sorted(instances.instances(response), key=instances.launch_order)
        return found[0] if found else None

    async def _describe_all(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        def walk() -> list[dict[str, Any]]:
            paginator = self._caller.client("ec2").get_paginator("describe_instances")
            pages = paginator.paginate(
                Filters=filters, PaginationConfig={"PageSize": self._page_size}
            )
            return [i for page in pages for i in instances.instances(page)]

        try:
            return await self._caller.run("ec2.describe_instances", walk)
        except AdapterError as exc:
            raise ProviderError(str(exc), retryable=exc.retryable) from exc

    def _state(self, instance: Mapping[str, Any]) -> RunnerState:
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        job = tags.get(fleet.JOB_TAG, "")
        details = {
            "instance_type": str(instance.get("InstanceType", "")),
            "lifecycle": str(instance.get("InstanceLifecycle") or "on-demand"),
            "availability_zone": str(instance.get("Placement", {}).get("AvailabilityZone", "")),
            "state": str(instance.get("State", {}).get("Name", "")),
        }
        if instance.get("PrivateIpAddress"):
            details["private_ip"] = str(instance["PrivateIpAddress"])
        return RunnerState(
            runner_id=RunnerId(str(instance["InstanceId"])),
            phase=_PHASES.get(details["state"], RunnerPhase.UNKNOWN),
            provider=NAME,
            launched_at=instance.get("LaunchTime"),
            job_id=JobId(int(job)) if job.isdigit() else None,
            pool=tags.get(fleet.POOL_TAG) or None,
            runner_name=tags.get(fleet.RUNNER_NAME_TAG) or None,
            details=details,
        )

    @asynccontextmanager
    async def _locked(self, runner_name: str) -> AsyncIterator[None]:
        """Serialise creates of one runner name in this process. The map holds locks
        weakly: one lives as long as a create holds or awaits it."""
        lock = self._locks.get(runner_name)
        if lock is None:
            lock = self._locks[runner_name] = asyncio.Lock()
        async with lock:
            yield


def from_context(context: AdapterContext, caller: AwsCaller) -> Ec2Provider:
    """The EC2 provider of the deployment's settings; ``ConfigError`` listing every
    invalid fleet setting."""
    settings = context.settings
    return Ec2Provider(
        caller,
        FleetSettings.from_settings(settings),
        clock=context.clock,
        metrics=context.metrics,
        breaker=breaker_module.from_context(context, caller),
        prices=SpotPrices(caller, context.clock),
        spot_enabled=bool(settings.get(SPOT_ENABLED, True)),
    )
