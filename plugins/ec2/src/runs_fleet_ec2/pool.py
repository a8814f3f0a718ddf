"""Warm pools on EC2: instances launched before any job, kept running or stopped.

A pool runner is an on-demand instance tagged ``runs-fleet:managed=true`` and
``runs-fleet:pool=<pool>``, launched by an instant EC2 Fleet from the pool's label with
the same launch templates, catalog and overrides as a job's runner (:mod:`fleet`).
Its request, and what sets it apart from a job's instance, are pure and live in
:mod:`runs_fleet_ec2.pool_request`; this module holds the provider that launches,
lists, starts, stops and terminates pool runners.

Stopping and starting look at the tags first: an id that is not a live pool runner is
refused with ``NotFoundError`` before anything is asked of EC2, so a stray id never
stops an instance runs-fleet does not own, nor a job's runner. EC2 cannot stop a
pending instance nor start a stopping one; such transitions are waited out (bounded by
``RUNS_FLEET_EC2_POOL_READY_TIMEOUT_S``) rather than failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from runs_fleet_aws.calls import AwsCaller, error_code
from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.labels import LabelDefaults
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import PoolRunner, RunnerPhase
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import AdapterError, NotFoundError, ProviderError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports import Clock, Metrics
from runs_fleet_core.settings import Kind, Setting
from runs_fleet_core.wiring import label_defaults
from runs_fleet_ec2 import fleet, instances
from runs_fleet_ec2.fleet import FleetSettings
from runs_fleet_ec2.pool_request import (
    POOL_NAME_PREFIX,
    build_pool_request,
    is_pool_instance,
    pool_arch,
    pool_spec,
    pool_tags,
)

__all__ = [
    "DEFAULT_READY_TIMEOUT_S",
    "LIST_PAGE_SIZE",
    "MAX_BATCH",
    "MAX_FILTER_VALUES",
    "NAME",
    "POLL_INTERVAL_S",
    "READY_TIMEOUT",
    "SETTINGS",
    "Ec2PoolProvider",
    "build_pool_request",
    "from_context",
    "is_pool_instance",
    "pool_arch",
    "pool_spec",
    "pool_tags",
]

_log = logging.getLogger(__name__)

NAME = "ec2"
READY_TIMEOUT = "RUNS_FLEET_EC2_POOL_READY_TIMEOUT_S"
DEFAULT_READY_TIMEOUT_S = 300.0

SETTINGS = (
    Setting(
        name=READY_TIMEOUT,
        help="seconds to wait for a warm-pool instance to finish a transition before "
        "acting on it: to reach running before it is stopped (pools with stopped "
        "runners), or to finish stopping before it is started again",
        kind=Kind.FLOAT,
        default=DEFAULT_READY_TIMEOUT_S,
        minimum=1,
    ),
)

POLL_INTERVAL_S = 5.0
"""How often a transition is checked while waiting (DescribeInstances is cheap, but
shares the account's request rate with everything else)."""
MAX_BATCH = 100
"""Instances asked of one CreateFleet call; larger counts take several calls."""
MAX_FILTER_VALUES = 200
"""EC2 takes at most this many values in one DescribeInstances filter."""
LIST_PAGE_SIZE = 1000

_PHASES = {
    "pending": RunnerPhase.PENDING,
    "running": RunnerPhase.RUNNING,
    "stopping": RunnerPhase.STOPPING,
    "stopped": RunnerPhase.STOPPED,
}
_GONE = frozenset({"shutting-down", "terminated"})
_NOT_FOUND = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
_WRONG_STATE = "IncorrectInstanceState"
# "User initiated (2026-01-05 09:00:00 GMT)": when a stopped instance was stopped.
_TRANSITION_RE = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")


class Ec2PoolProvider:
    """The :class:`~runs_fleet_core.ports.PoolProvider` port over EC2 instances.

    Runner id = instance id (also the key of the config a claiming job stores).
    ``ready_timeout_s`` bounds each wait for a transition; ``poll_interval_s`` is how
    often it is checked meanwhile.
    """

    def __init__(
        self,
        caller: AwsCaller,
        settings: FleetSettings,
        *,
        clock: Clock,
        metrics: Metrics,
        labels: LabelDefaults | None = None,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        poll_interval_s: float = POLL_INTERVAL_S,
        page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        self._caller = caller
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._labels = labels or LabelDefaults()
        self.ready_timeout_s = ready_timeout_s
        self._poll_interval_s = poll_interval_s
        self._page_size = page_size

    @property
    def name(self) -> str:
        """``ec2``."""
        return NAME

    async def list_pool_runners(self, pool: str) -> Sequence[PoolRunner]:
        """Every pending, running, stopping or stopped pool runner of ``pool``, all
        pages, oldest first. ``idle_since`` is when it last started (EC2's launch time
        moves on every start) or, when stopped, when it was stopped."""
        filters = [
            {"Name": f"tag:{fleet.MANAGED_TAG}", "Values": ["true"]},
            {"Name": f"tag:{fleet.POOL_TAG}", "Values": [pool]},
            {"Name": "instance-state-name", "Values": list(_PHASES)},
        ]
        found = [i for i in await self._describe(filters) if is_pool_instance(i)]
        return [_runner(i) for i in sorted(found, key=instances.launch_order)]

    async def create_pool_runners(
        self, pool: PoolConfig, count: int, *, stopped: bool = False
    ) -> Sequence[RunnerId]:
        """Launch ``count`` runners into ``pool``; with ``stopped``, stop each once EC2
        reports it running. Returns the ids of the instances EC2 started.

        EC2 may start fewer than asked (capacity): the ones started are returned and
        the next reconcile pass asks for the rest. ``ProviderError`` when it starts none
        (retryable unless the request itself is wrong). With ``stopped``, an instance
        still pending after the ready timeout is left running (logged and counted as
        ``ec2_pool_stop_timeouts``): the pool's reconciliation stops or removes it later.
        """
        if count < 0:
            raise ValueError(f"cannot create {count} runners")
        if count == 0:
            return []
        spec = pool_spec(pool, self._labels)
        ids: list[RunnerId] = []
        for start in range(0, count, MAX_BATCH):
            ids += await self._launch(spec, min(MAX_BATCH, count - start))
        if stopped:
            await self._stop_when_running(pool.name, ids)
        return ids

    async def start_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Start the stopped pool runners among ``runner_ids``; pending and running ones
        are left as they are, stopping ones are started once stopped.

        ``NotFoundError``, before anything starts, for an id that is not a live pool
        runner (unknown, terminated, not managed by runs-fleet, or a job's instance).
        A runner still stopping after the ready timeout raises a retryable
        ``ProviderError``.
        """
        await self._move(runner_ids, "start", waiting="stopping", ready="stopped")

    async def stop_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Stop the running pool runners among ``runner_ids``; stopping and stopped ones
        are left as they are, pending ones are stopped once running.

        ``NotFoundError``, before anything stops, for an id that is not a live pool
        runner. A runner still pending after the ready timeout raises a retryable
        ``ProviderError``.
        """
        await self._move(runner_ids, "stop", waiting="pending", ready="running")

    async def terminate_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Terminate the pool runners among ``runner_ids``. Ids already gone or unknown
        to EC2 are fine; an instance that is not a pool runner is left alone (logged)."""
        found = await self._by_id(runner_ids)
        doomed: list[str] = []
        for instance_id, instance in found.items():
            if instances.state(instance) not in _PHASES:
                continue
            if is_pool_instance(instance):
                doomed.append(instance_id)
            else:
                _log.warning("not terminating %s: it is not a runs-fleet pool runner", instance_id)
        try:
            await self._change("terminate_instances", doomed)
        except NotFoundError:  # one vanished since it was read: the others still go
            for instance_id in doomed:
                with contextlib.suppress(NotFoundError):
                    await self._change("terminate_instances", [instance_id])

    # -- launching -------------------------------------------------------------------

    async def _launch(self, spec: RunnerSpec, count: int) -> list[RunnerId]:
        """One CreateFleet call for ``count`` runners. The client token is new for each
        call, so botocore's retries of it never launch twice, while the next reconcile
        pass (which wants more runners) is not answered with this call's instances."""
        pool, arch = spec.pool or "", pool_arch(spec)
        request = build_pool_request(
            spec,
            self._settings,
            arch=arch,
            count=count,
            now=self._clock.now(),
            token=f"{POOL_NAME_PREFIX}{uuid.uuid4().hex}",
        )
        try:
            response = await self._caller.call("ec2", "create_fleet", **request)
        except AdapterError as exc:
            retryable = exc.retryable or error_code(exc) in fleet.CAPACITY_CODES
            raise ProviderError(f"pool {pool}: {exc}", retryable=retryable) from exc
        ids = [RunnerId(str(i)) for e in response.get("Instances", []) for i in e["InstanceIds"]]
        answer = fleet.read_answer(response)
        if ids:
            labels = {"pool": pool, "arch": str(arch)}
            self._metrics.increment("ec2_pool_launches", len(ids), labels=labels)
        if len(ids) < count:
            example = answer.errors[0][1] if answer.errors else "no instance and no reason"
            text = (
                f"EC2 started {len(ids)} of {count} runners for pool {pool}: "
                f"{', '.join(answer.codes) or 'no error code'} ({example})"
            )
            if not ids:
                permanent = bool(answer.codes) and all(map(fleet.is_permanent, answer.codes))
                raise ProviderError(text, retryable=not permanent)
            _log.warning("%s; the next reconcile pass asks for the rest", text)
        return ids

    async def _stop_when_running(self, pool: str, ids: list[RunnerId]) -> None:
        states = await self._await_states(ids, {"running"})
        running = [i for i in ids if states.get(i) == "running"]
        late = [i for i in ids if states.get(i, "pending") == "pending"]
        if late:
            self._metrics.increment("ec2_pool_stop_timeouts", len(late), labels={"pool": pool})
            _log.warning(
                "pool %s: %s not running after %.0f s; left running for the next reconcile pass",
                pool,
                ", ".join(late),
                self.ready_timeout_s,
            )
        await self._change("stop_instances", running)

    # -- reading and changing ------------------------------------------------------------

    async def _known(self, runner_ids: Sequence[RunnerId], verb: str) -> dict[str, str]:
        """The EC2 state of each id, all of them live pool runners; else ``NotFoundError``
        naming the others."""
        found = await self._by_id(runner_ids)
        missing = [
            i
            for i in dict.fromkeys(runner_ids)
            if i not in found
            or instances.state(found[i]) not in _PHASES
            or not is_pool_instance(found[i])
        ]
        if missing:
            raise NotFoundError(
                f"cannot {verb} runner(s) {', '.join(missing)} of pool provider {NAME}: "
                "not a runs-fleet pool instance, or already terminated"
            )
        return {i: instances.state(found[i]) for i in dict.fromkeys(runner_ids)}

    async def _await_states(self, ids: Sequence[str], wanted: Collection[str]) -> dict[str, str]:
        """Poll until every id is in a ``wanted`` state or gone, or the ready timeout
        passes; the last states seen (an id EC2 does not show yet is absent)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout_s
        while True:
            states = {i: instances.state(x) for i, x in (await self._by_id(ids)).items()}
            settled = all(states.get(i) in wanted or states.get(i) in _GONE for i in ids)
            if settled or loop.time() >= deadline:
                return states
            await asyncio.sleep(min(self._poll_interval_s, max(deadline - loop.time(), 0)))

    async def _move(
        self, runner_ids: Sequence[RunnerId], verb: str, *, waiting: str, ready: str
    ) -> None:
        """Start or stop (``verb``) every runner in state ``ready``, after waiting for
        those in state ``waiting`` to reach it; runners in other states stay as they are."""
        states = await self._known(runner_ids, verb)
        transit = [i for i, state in states.items() if state == waiting]
        if transit:
            states |= await self._await_states(transit, {ready})
        gone = [i for i in transit if states.get(i, "terminated") in _GONE]
        if gone:
            raise NotFoundError(f"cannot {verb} runner(s) {', '.join(gone)}: terminated meanwhile")
        late = [i for i in transit if states.get(i) != ready]
        if late:
            raise ProviderError(
                f"cannot {verb} runner(s) {', '.join(late)}: still {waiting} after "
                f"{self.ready_timeout_s:.0f} s ({READY_TIMEOUT}); try again later",
                retryable=True,
            )
        await self._change(f"{verb}_instances", [i for i, s in states.items() if s == ready])

    async def _change(self, operation: str, instance_ids: Sequence[str]) -> None:
        """``start_instances``, ``stop_instances`` or ``terminate_instances`` on ids
        already checked to be pool runners; ``NotFoundError`` if one vanished since."""
        if not instance_ids:
            return
        try:
            await self._caller.call("ec2", operation, InstanceIds=list(instance_ids))
        except AdapterError as exc:
            code = error_code(exc)
            if code in _NOT_FOUND:
                raise NotFoundError(f"pool provider {NAME}: {exc}") from exc
            retryable = exc.retryable or code == _WRONG_STATE
            raise ProviderError(str(exc), retryable=retryable) from exc

    async def _by_id(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Instance id → instance, for the ids EC2 knows (a filter, not ``InstanceIds``:
        an unknown or malformed id is simply absent instead of failing the call)."""
        unique = list(dict.fromkeys(ids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(unique), MAX_FILTER_VALUES):
            chunk = unique[start : start + MAX_FILTER_VALUES]
            for instance in await self._describe([{"Name": "instance-id", "Values": chunk}]):
                found[str(instance["InstanceId"])] = instance
        return found

    async def _describe(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        def walk() -> list[dict[str, Any]]:
            paginator = self._caller.client("ec2").get_paginator("describe_instances")
            pages = paginator.paginate(
                Filters=filters, PaginationConfig={"PageSize": self._page_size}
            )
            return [
                i
                for page in pages
                for r in page.get("Reservations", [])
                for i in r.get("Instances", [])
            ]

        try:
            return await self._caller.run("ec2.describe_instances", walk)
        except AdapterError as exc:
            raise ProviderError(str(exc), retryable=exc.retryable) from exc


def _runner(instance: Mapping[str, Any]) -> PoolRunner:
    state = instances.state(instance)
    return PoolRunner(
        runner_id=RunnerId(str(instance["InstanceId"])),
        pool=instances.tags(instance)[fleet.POOL_TAG],
        phase=_PHASES.get(state, RunnerPhase.UNKNOWN),
        idle_since=_idle_since(instance, state),
        instance_type=str(instance.get("InstanceType") or "") or None,
    )


def _idle_since(instance: Mapping[str, Any], state: str) -> datetime | None:
    """When the runner last became idle: its stop time if stopped (read from EC2's
    state transition reason), else its last start (``LaunchTime``)."""
    if state in ("stopping", "stopped"):
        found = _TRANSITION_RE.search(str(instance.get("StateTransitionReason") or ""))
        if found:
            return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    launched = instance.get("LaunchTime")
    return launched if isinstance(launched, datetime) else None


def from_context(context: AdapterContext, caller: AwsCaller) -> Ec2PoolProvider:
    """The EC2 pool provider of the deployment's settings; ``ConfigError`` listing every
    invalid fleet setting."""
    settings = context.settings
    return Ec2PoolProvider(
        caller,
        FleetSettings.from_settings(settings),
        clock=context.clock,
        metrics=context.metrics,
        labels=label_defaults(settings),
        ready_timeout_s=float(settings.get(READY_TIMEOUT, DEFAULT_READY_TIMEOUT_S)),
    )
