"""``/api/pools``: how an operator defines, inspects and removes warm pools.

The server owns the StateStore (in local mode it is an embedded Valkey only this
process runs; in hybrid mode the orchestrator is in Kubernetes), so this API is the one
way in for the ``runs-fleet pools`` command. It writes pool configs only; the pool
loop's leader makes the runners match them.

A written config is checked as a whole (:mod:`runs_fleet_server.pools_check`) and every
problem is answered at once (422), so an operator fixes them in one go. Deleting never
orphans runners: a pool that still has runners is wound down instead (sizes and
schedules to zero, so the pool loop removes them as they go idle) and answered 409; the
config goes once its runners have.
Authorization is the jobs API's: the admin token when one is set, loopback otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import attrs
import cattrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runs_fleet_core.converters import make_record_converter
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.errors import NotFoundError
from runs_fleet_core.ports.compute import PoolProvider
from runs_fleet_core.wiring import label_defaults
from runs_fleet_server.bootstrap import Services
from runs_fleet_server.common import UNAVAILABLE, BodyTooLarge, admin_denied, error, read_body
from runs_fleet_server.pools_check import check_pool

__all__ = ["BODY_LIMIT", "STATE_UNAVAILABLE", "TIMEOUT_S", "PoolsApi", "check_pool"]

_log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
"""Time allowed for the StateStore and pool provider calls of one request."""
BODY_LIMIT = 64 * 1024
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
