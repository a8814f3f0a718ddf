"""``/health``, ``/ready`` and ``/metrics``: what orchestrators and Prometheus ask.

``/health`` says the process runs (restart it if not); ``/ready`` says it can take
webhooks now: the queue and the state store answer a cheap call within a short
timeout, and shutdown has not begun (a load balancer stops routing to it before it
stops listening). ``/metrics`` serves the metrics sink's exposition when the sink can
render one, with a few gauges refreshed at scrape time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runs_fleet_core.domain.ids import JobId
from runs_fleet_server.bootstrap import Services
from runs_fleet_server.common import error, without_credentials
from runs_fleet_server.gauges import refresh_gauges

_log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0


@attrs.define
class Probes:
    """The probe handlers, bound to the process's services."""

    services: Services

    async def health(self, request: Request) -> Response:
        """200 while the process runs."""
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """200 when the queue and state store answer; 503 otherwise or when draining."""
        if self.services.draining:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        adapters = self.services.adapters
        checks: dict[str, Callable[[], Awaitable[object]]] = {
            "state store": lambda: adapters.state.get_job(JobId(0)),
            # a queue may offer a cheaper check than listing its dead letters
            "queue": getattr(adapters.queue, "ping", None) or adapters.queue.dead_letters,
        }
        results = await asyncio.gather(*(_timed(check) for check in checks.values()))
        problems = {
            name: f"unavailable ({result})"
            for name, result in zip(checks, results, strict=True)
            if result != "ok"
        }
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(self, request: Request) -> Response:
        """The sink's exposition text; 404 when the sink does not render one."""
        sink = self.services.adapters.metrics
        render = getattr(sink, "render", None)
        if not callable(render):
            name = self.services.adapters.wiring.metrics
            return error(
                404, f"the metrics sink {name!r} does not serve /metrics; use 'prometheus'"
            )
        await refresh_gauges(self.services.adapters)
        body, content_type = render()
        return Response(body, headers={"content-type": content_type})


async def _timed(check: Callable[[], Awaitable[object]]) -> str:
    """``ok``, or the kind of failure (no message: it could name a host or a URL)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await check()
    except Exception as exc:
        cause = without_credentials(str(exc))
        _log.warning("readiness check failed: %s: %s", type(exc).__name__, cause)
        return "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
    return "ok"
