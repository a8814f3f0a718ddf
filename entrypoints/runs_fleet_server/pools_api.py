"""``/api/pools``: how an operator defines, inspects and removes warm pools.

The server owns the StateStore (in local mode it is an embedded Valkey only this
process runs; in hybrid mode the orchestrator is in Kubernetes), so this API is the one
way in for the ``runs-fleet pools`` command. It writes pool configs only; the pool
loop's leader makes the runners match them.

A written config is checked as a whole and every problem is answered at once (422), so
an operator fixes them in one go. Deleting never orphans runners: a pool that still has
runners is wound down instead (sizes and schedules to zero, so the pool loop removes
them as they go idle) and answered 409; the config goes once its runners have.
Authorization is the jobs API's: the admin token when one is set, loopback otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs
import cattrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runs_fleet_core.converters import make_record_converter
from runs_fleet_core.domain.labels import LabelDefaults, parse_label
from runs_fleet_core.domain.pool import POOL_NAME_RE, PoolConfig
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import LabelError, NotFoundError
from runs_fleet_core.ports.compute import PoolProvider
from runs_fleet_core.wiring import label_defaults
from runs_fleet_server.bootstrap import Services
from runs_fleet_server.common import UNAVAILABLE, BodyTooLarge, admin_denied, error, read_body

_log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
"""Time allowed for the StateStore and pool provider calls of one request."""
BODY_LIMIT = 64 * 1024
MAX_RUNNERS = 1000
"""Most idle runners one pool (or one of its schedules) may ask for: a guard against a
typo that would start thousands of machines, well above any real pool."""
MAX_IDLE_TIMEOUT_S = 7 * 24 * 3600
MAX_SCHEDULES = 50
FIELDS = ("label", "desired_running", "desired_stopped", "idle_timeout_s", "schedules", "backend")
ECHOED = ("name", "ephemeral")
"""Fields of a GET answer that a PUT accepts back unchanged, so a shown pool can be edited
and written again."""
SCHEDULE_FIELDS = ("weekdays", "start_hour", "end_hour", "desired_running", "desired_stopped")
STATE_UNAVAILABLE = "the state store is unavailable; try again later"


@attrs.define
class PoolsApi:
    """The pools API handlers, bound to the process's services."""

    services: Services
    converter: cattrs.Converter = attrs.field(factory=make_record_converter, init=False)

    async def list_pools(self, request: Request) -> Response:
        """Every pool's config (configured and ephemeral), by name."""
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            async with asyncio.timeout(TIMEOUT_S):
                pools = await self.services.adapters.state.list_pools()
        except UNAVAILABLE:
            return error(503, STATE_UNAVAILABLE)
        ordered = sorted(pools, key=lambda pool: pool.name)
        return JSONResponse({"pools": [self._config(pool) for pool in ordered]})

    async def get_pool(self, request: Request) -> Response:
        """One pool's config and its runners as the pool provider lists them, each with
        the job it is bound to (``job_id``, ``null`` when idle); 404 when unknown.

        A runner list that cannot be had leaves ``runners`` ``null`` (provider failure)
        or empty (no pool provider for the backend) and says why in ``runners_error``.
        """
        if (denied := self._denied(request)) is not None:
            return denied
        name = request.path_params["name"]
        try:
            async with asyncio.timeout(TIMEOUT_S):
                config = await self.services.adapters.state.get_pool(name)
                if config is None:
                    return _unknown(name)
                bound = {
                    a.runner_id: a.job_id
                    for a in await self.services.adapters.state.list_assignments()
                }
        except UNAVAILABLE:
            return error(503, STATE_UNAVAILABLE)
        answer = self._config(config)
        provider = self._provider(config)
        if provider is None:
            answer["runners"] = []
            answer["runners_error"] = (
                f"backend {self._backend(config)!r} keeps no warm pools in this deployment, "
                "so the pool loop skips this pool"
            )
            return JSONResponse(answer)
        try:
            async with asyncio.timeout(TIMEOUT_S):
                runners = await provider.list_pool_runners(config.name)
        except (*UNAVAILABLE, NotFoundError) as exc:
            answer["runners"] = None
            answer["runners_error"] = f"the pool provider could not list them: {_cause(exc)}"
            return JSONResponse(answer)
        answer["runners"] = [
            {
                "runner_id": runner.runner_id,
                "phase": runner.phase.value,
                "job_id": bound.get(runner.runner_id),
                "idle_since": self.converter.unstructure(runner.idle_since),
                "instance_type": runner.instance_type,
            }
            for runner in sorted(runners, key=lambda runner: runner.runner_id)
        ]
        return JSONResponse(answer)

    async def put_pool(self, request: Request) -> Response:
        """Create or replace one pool (201 created, 200 replaced) and answer it as
        stored. A replaced pool becomes a configured one even if runs-fleet made it
        ephemeral: an operator's config wins. 422 lists every problem with the body."""
        if (denied := self._denied(request)) is not None:
            return denied
        name = request.path_params["name"]
        try:
            body = json.loads(await read_body(request, BODY_LIMIT))
        except BodyTooLarge:
            return error(413, f"the body is larger than {BODY_LIMIT // 1024} KiB")
        except ValueError as exc:
            return error(400, f"the body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object such as " + _example(name))
        adapters = self.services.adapters
        raw, problems = check_pool(
            name,
            body,
            labels=label_defaults(self.services.settings),
            backends=adapters.wiring.backends,
            pool_backends=tuple(adapters.pool_providers),
            default_backend=adapters.wiring.default_backend,
        )
        if problems:
            return error(422, f"pool {name!r} was not saved", problems=problems)
        config = self.converter.structure(raw, PoolConfig)
        try:
            async with asyncio.timeout(TIMEOUT_S):
                existed = await adapters.state.get_pool(name) is not None
                await adapters.state.put_pool(config)
        except UNAVAILABLE:
            return error(503, STATE_UNAVAILABLE)
        _log.info("pool %s: %s through the pools API", name, "replaced" if existed else "created")
        headers = {} if existed else {"Location": f"/api/pools/{name}"}
        return JSONResponse(
            self._config(config), status_code=200 if existed else 201, headers=headers
        )

    async def delete_pool(self, request: Request) -> Response:
        """Delete a pool whose provider lists no runner for it (200). A pool that still
        has runners is wound down instead (409 with their count): no size, no schedule,
        no idle timeout, so the pool loop removes each runner once it is idle; delete it
        again once they are gone. Its config is kept until then because the pool loop
        only removes the runners of pools it knows: deleting it now would orphan them.

        The sizes drop before the runners are counted, so a pass of the pool loop that
        reads the config afterwards adds nothing; only a pass that read it just before
        and creates runners after the count can still leave some behind."""
        if (denied := self._denied(request)) is not None:
            return denied
        name = request.path_params["name"]
        state = self.services.adapters.state
        try:
            async with asyncio.timeout(TIMEOUT_S):
                config = await state.get_pool(name)
                if config is None:
                    return _unknown(name)
                provider = self._provider(config)
                if provider is not None:
                    # Shrink first, then look: a pass of the pool loop that starts now
                    # no longer adds runners to a pool this request may drop.
                    await self._wind_down(config)
        except UNAVAILABLE:
            return error(503, STATE_UNAVAILABLE)
        try:
            async with asyncio.timeout(TIMEOUT_S):
                # Without a pool provider for its backend the pool loop never ran a
                # runner for this pool: there is nothing to orphan.
                runners = [] if provider is None else await provider.list_pool_runners(name)
                if runners:
                    return _still_has_runners(name, len(runners))
                await state.delete_pool(name)
        except (*UNAVAILABLE, NotFoundError) as exc:
            shrunk = "; its sizes are now 0" if provider is not None else ""
            return error(503, f"pool {name!r} was not deleted: {_cause(exc)}{shrunk}; try again")
        _log.info("pool %s: deleted through the pools API", name)
        return JSONResponse({"deleted": name})

    async def _wind_down(self, config: PoolConfig) -> None:
        """Store ``config`` with nothing to keep, so the pool loop scales it to zero."""
        wound_down = attrs.evolve(
            config, desired_running=0, desired_stopped=0, schedules=(), idle_timeout_s=0
        )
        if wound_down != config:
            await self.services.adapters.state.put_pool(wound_down)

    def _denied(self, request: Request) -> Response | None:
        return admin_denied(request, self.services.admin_token, "the pools API")

    def _backend(self, config: PoolConfig) -> str:
        return config.backend or self.services.adapters.wiring.default_backend

    def _provider(self, config: PoolConfig) -> PoolProvider | None:
        return self.services.adapters.pool_providers.get(self._backend(config))

    def _config(self, config: PoolConfig) -> dict[str, Any]:
        raw: dict[str, Any] = self.converter.unstructure(config)
        return raw


def check_pool(
    name: str,
    body: Mapping[str, Any],
    *,
    labels: LabelDefaults,
    backends: Sequence[str],
    pool_backends: Collection[str],
    default_backend: str,
) -> tuple[dict[str, Any], list[str]]:
    """The pool config ``body`` asks for under ``name`` (as the record converter's
    primitives, ready to structure into a :class:`PoolConfig`) and every problem with
    it; the config is only meaningful when there is none.

    ``backends`` are the deployment's backends, ``pool_backends`` those with a pool
    provider, ``default_backend`` what a pool without a backend uses.
    """
    problems: list[str] = []
    if not POOL_NAME_RE.fullmatch(name):
        problems.append(
            f"name {name!r}: a pool name is 1-63 characters of lower-case letters, digits, "
            "'_' and '-', starting with a letter or digit (labels name it as pool=NAME)"
        )
    for key in body:
        if key not in FIELDS + ECHOED:
            problems.append(f"unknown field {key!r}; the fields are {', '.join(FIELDS)}")
    if "name" in body and body["name"] != name:
        problems.append(f"name {body['name']!r} differs from the pool named in the URL ({name!r})")
    if body.get("ephemeral", False) is not False:
        problems.append(
            "ephemeral must be false or left out: runs-fleet makes ephemeral pools itself, "
            "and a pool written here is a configured one"
        )
    spec = _label(body.get("label"), name, labels, problems)
    backend = _backend(
        body.get("backend"), spec, backends, pool_backends, default_backend, problems
    )
    raw = {
        "name": name,
        "label": spec.label if spec else "",
        "desired_running": _whole(body, "desired_running", problems, high=MAX_RUNNERS),
        "desired_stopped": _whole(body, "desired_stopped", problems, high=MAX_RUNNERS),
        "idle_timeout_s": _whole(
            body, "idle_timeout_s", problems, high=MAX_IDLE_TIMEOUT_S, default=600
        ),
        "schedules": _schedules(body.get("schedules", []), problems),
        "ephemeral": False,
        "backend": backend,
    }
    return raw, problems


def _label(value: Any, name: str, labels: LabelDefaults, problems: list[str]) -> RunnerSpec | None:
    if value is None:
        problems.append(
            "label is required: the runs-on label the pool's runners are built from, "
            f"e.g. runs-fleet=pool/cpu=4/pool={name}"
        )
        return None
    if not isinstance(value, str):
        problems.append(f"label must be a string such as runs-fleet=pool/cpu=4/pool={name}")
        return None
    try:
        spec = parse_label(value, defaults=labels)
    except LabelError as exc:
        problems.append(f"label: {exc}")
        return None
    if spec.pool is not None and spec.pool != name:
        problems.append(
            f"label: pool={spec.pool} names another pool; the label of pool {name!r} may "
            f"name only itself (pool={name}) or no pool"
        )
    return spec


def _backend(
    value: Any,
    spec: RunnerSpec | None,
    backends: Sequence[str],
    pool_backends: Collection[str],
    default_backend: str,
    problems: list[str],
) -> str | None:
    """The backend to store (``None``: the deployment's default), checked."""
    capable = ", ".join(b for b in backends if b in pool_backends) or "none in this deployment"
    if value is not None and (not isinstance(value, str) or not value):
        problems.append(
            f"backend must be a backend name or null; backends with warm pools: {capable}"
        )
        return None
    from_label = spec.backend if spec else None
    if value and from_label and value != from_label:
        problems.append(
            f"backend {value!r} contradicts the label's backend={from_label}; give one of "
            "them or make them agree"
        )
        return None
    chosen: str | None = value or from_label
    effective = chosen or default_backend
    if chosen is not None and chosen not in backends:
        problems.append(
            f"backend {chosen!r} is not a backend of this deployment "
            f"({', '.join(backends)}); backends with warm pools: {capable}"
        )
    elif effective not in pool_backends:
        which = "" if chosen else " (the deployment's default)"
        problems.append(
            f"backend {effective!r}{which} keeps no warm pools; backends with warm pools: {capable}"
        )
    return chosen


def _whole(
    body: Mapping[str, Any],
    field: str,
    problems: list[str],
    *,
    high: int,
    default: int | None = None,
    where: str = "",
) -> int:
    """``body[field]`` checked to be a whole number in ``0..high``; required when there
    is no ``default``. A problem leaves 0 in its place."""
    if field not in body or body[field] is None:
        if default is None:
            problems.append(f"{where}{field} is required: a whole number from 0 to {high}")
            return 0
        return default
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        problems.append(
            f"{where}{field} must be a whole number from 0 to {high}, got {json.dumps(value)}"
        )
        return 0
    return value


def _schedules(value: Any, problems: list[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        problems.append("schedules must be a list of objects (or left out)")
        return []
    if len(value) > MAX_SCHEDULES:
        problems.append(f"schedules: at most {MAX_SCHEDULES} are allowed, got {len(value)}")
        return []
    return [_schedule(item, f"schedules[{i}].", problems) for i, item in enumerate(value)]


def _schedule(item: Any, where: str, problems: list[str]) -> dict[str, Any]:
    """One schedule, checked; the domain's defaults fill what it leaves out (every day,
    the whole day, nothing kept)."""
    if not isinstance(item, dict):
        problems.append(f"{where[:-1]} must be an object with fields {', '.join(SCHEDULE_FIELDS)}")
        return {}
    for key in item:
        if key not in SCHEDULE_FIELDS:
            problems.append(
                f"{where}{key}: unknown field; the fields are {', '.join(SCHEDULE_FIELDS)}"
            )
    weekdays = item.get("weekdays", list(range(7)))
    if (
        not isinstance(weekdays, list)
        or not weekdays
        or any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 6 for d in weekdays)
        or len(set(weekdays)) != len(weekdays)
    ):
        problems.append(
            f"{where}weekdays must list different days from 0 (Monday) to 6 (Sunday), "
            f"got {json.dumps(weekdays)}"
        )
        weekdays = list(range(7))
    start = _whole(item, "start_hour", problems, high=23, default=0, where=where)
    end = _whole(item, "end_hour", problems, high=24, default=24, where=where)
    if start == end:
        problems.append(
            f"{where}start_hour and end_hour are both {start}: the window would be empty "
            "(hours are UTC, start included, end excluded; start > end wraps past midnight)"
        )
    return {
        "weekdays": weekdays,
        "start_hour": start,
        "end_hour": end,
        "desired_running": _whole(
            item, "desired_running", problems, high=MAX_RUNNERS, default=0, where=where
        ),
        "desired_stopped": _whole(
            item, "desired_stopped", problems, high=MAX_RUNNERS, default=0, where=where
        ),
    }


def _example(name: str) -> str:
    return (
        f'{{"label": "runs-fleet=pool/cpu=4/pool={name}", '
        '"desired_running": 2, "desired_stopped": 2}'
    )


def _unknown(name: str) -> Response:
    return error(404, f"pool {name!r} is not known to runs-fleet")


def _still_has_runners(name: str, count: int) -> Response:
    return error(
        409,
        f"pool {name!r} still has {count} runner(s), so it was not deleted: its sizes and "
        "schedules are now 0 and the pool loop removes its runners as they go idle; "
        "delete it again once they are gone",
        runners=count,
    )


def _cause(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT_S:g} s"
    return str(exc) or type(exc).__name__
