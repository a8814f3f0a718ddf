"""Serving the simulated GitHub over HTTP with uvicorn, inside the caller's event loop.

Tests write ``async with SimulatorServer(sim) as server:`` and get a real HTTP server on
a free port of 127.0.0.1; the command line runs the same thing until interrupted. The
server runs as a task of the running loop, so the simulator's state is only ever
touched from that loop (a test must ``await`` while a subprocess talks to it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from types import TracebackType

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from runs_fleet_github_simulator.control import control_routes
from runs_fleet_github_simulator.org_rest import org_routes
from runs_fleet_github_simulator.rest import rest_routes
from runs_fleet_github_simulator.routing import error_response
from runs_fleet_github_simulator.runs_rest import runs_routes
from runs_fleet_github_simulator.simulator import GitHubSimulator


def build_app(sim: GitHubSimulator) -> Starlette:
    """The ASGI application: GitHub's REST subset plus ``/_simulator/`` endpoints."""

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return error_response(status, "Not Found" if status == 404 else str(exc))

    return Starlette(
        routes=[*rest_routes(sim), *runs_routes(sim), *org_routes(sim), *control_routes(sim)],
        exception_handlers={HTTPException: http_error},
    )


class _Server(uvicorn.Server):
    """uvicorn that leaves signal handling to the embedding program."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SimulatorServer:
    """The simulator served by uvicorn on ``host:port`` (``port=0``: a free one).

    ``url`` is known once started; it also becomes the simulator's ``api_url`` (what
    JIT configs and payload links point at). Signals are left to the caller.
    """

    def __init__(
        self,
        sim: GitHubSimulator,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.sim = sim
        config = uvicorn.Config(
            build_app(sim),
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._url is None:
            raise RuntimeError("the simulator server is not started")
        return self._url

    async def start(self) -> None:
        """Start serving; returns once the port is bound."""
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError("the simulator server stopped while starting")
            await asyncio.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self._url = f"http://{host}:{port}"
        self.sim.api_url = self._url

    async def stop(self) -> None:
        """Release waiting runners, send queued webhooks, and shut down."""
        await self.sim.aclose()
        self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"SimulatorServer(url={self._url!r})"
