"""Running the server: uvicorn and the dispatch worker in one process, stopped gracefully.

One system closed its listener on SIGTERM while the load balancer still routed to it,
and lost webhooks. Here shutdown goes: ``/ready`` turns 503 at once, the server keeps
serving for ``RUNS_FLEET_SHUTDOWN_DELAY_S`` (time for the load balancer to notice),
then stops accepting connections and lets the requests in flight finish; meanwhile the
worker takes no new deliveries and finishes those it holds; last, the adapters close.
A second SIGINT skips the wait for requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from runs_fleet_core.errors import ConfigError
from runs_fleet_core.usecases.events import run_runner_events
from runs_fleet_core.usecases.worker import WorkerReport, run_worker
from runs_fleet_scheduler.scheduler import run_scheduler
from runs_fleet_server.app import create_app
from runs_fleet_server.bootstrap import Services, leadership_for

_log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 20
"""How long requests in flight may take to finish once the server stops accepting."""
_STARTUP_POLL_S = 0.01


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: :func:`serve` owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def force(self) -> None:
        """Stop waiting for requests in flight."""
        self.force_exit = True


async def serve(
    services: Services,
    *,
    host: str,
    port: int,
    with_worker: bool = True,
    with_scheduler: bool = False,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve the app on ``host:port`` (port 0: any free port) and, ``with_worker``, run
    the dispatch worker beside it (and, ``with_scheduler``, the leader-elected pool and
    housekeeping loop), until ``stop`` is set; then shut down gracefully and
    close the adapters. Without a ``stop`` event, SIGTERM and SIGINT stop it. ``ready``
    is set once the server accepts connections. ``ConfigError`` if it cannot listen.
    """
    own_stop = stop is None
    stop = stop or asyncio.Event()
    try:
        sock = listen(host, port)
        await services.astart()
    except BaseException:
        await services.aclose()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    services.address = (bound_host, bound_port)
    services.agent.bind(bound_host, bound_port)
    server = _server(services)
    tasks: set[asyncio.Task[Any]] = {asyncio.create_task(server.serve(sockets=[sock]), name="http")}
    worker_stop = asyncio.Event()
    if with_worker:
        tasks.add(asyncio.create_task(work_only(services, worker_stop), name="worker"))
    if with_scheduler:
        leadership = leadership_for(services)
        loop = run_scheduler(leadership, worker_stop, interval_s=services.scheduler_interval_s)
        tasks.add(asyncio.create_task(loop, name="scheduler"))
    try:
        signals = handle_signals(stop, server.force) if own_stop else contextlib.nullcontext()
        with signals:
            await _started(server, tasks)
            _log.info("listening on %s:%s (worker: %s)", bound_host, bound_port, with_worker)
            if ready is not None:
                ready.set()
            await _first_of(stop, tasks)
            failures = await _shut_down(services, server, worker_stop, tasks, delay=stop.is_set())
        if failures:
            raise failures[0]
        if not stop.is_set():
            raise RuntimeError("the server stopped without being asked to")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sock.close()
        await services.aclose()


async def work(services: Services, stop: asyncio.Event) -> WorkerReport:
    """Run the dispatch worker alone until ``stop`` is set, then close the adapters."""
    try:
        await services.astart()
        return await work_only(services, stop)
    finally:
        await services.aclose()


async def work_only(services: Services, stop: asyncio.Event) -> WorkerReport:
    """The dispatch worker of ``services``, and beside it the readers of the backends'
    runner event feeds, if any (adapters left open)."""
    feeds = services.adapters.runner_events
    events = (
        asyncio.create_task(
            run_runner_events(
                feeds=feeds,
                handler=services.runner_events,
                stop=stop,
                wait_s=services.worker_wait_s,
            ),
            name="runner-events",
        )
        if feeds
        else None
    )
    try:
        return await run_worker(
            queue=services.adapters.queue,
            dispatcher=services.dispatcher,
            stop=stop,
            metrics=services.adapters.metrics,
            concurrency=services.worker_concurrency,
            wait_s=services.worker_wait_s,
        )
    finally:
        if events is not None:
            if not stop.is_set():  # the worker failed: do not leave the readers behind
                events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that says it is TCP.

    ``socket.create_server`` leaves the protocol 0, accepted connections inherit it, and
    asyncio sets ``TCP_NODELAY`` only on connections whose protocol is ``IPPROTO_TCP``.
    Without it, a response written in two parts (uvicorn writes the headers, then the
    body) waits for the client's delayed ACK of the first part: about 40 ms on Linux.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(
            [f"RUNS_FLEET_LISTEN: cannot listen on {host}:{port}: {exc.strerror or exc}"]
        ) from exc
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, listener.detach())


def _server(services: Services) -> _Server:
    config = uvicorn.Config(
        create_app(services),
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT_S,
    )
    return _Server(config)


async def _started(server: _Server, tasks: set[asyncio.Task[Any]]) -> None:
    """Wait until uvicorn accepts connections; re-raise if a task ends before."""
    while not server.started:
        for task in tasks:
            if task.done():
                task.result()
                raise RuntimeError(f"the {task.get_name()} task ended before the server started")
        await asyncio.sleep(_STARTUP_POLL_S)


async def _first_of(stop: asyncio.Event, tasks: set[asyncio.Task[Any]]) -> None:
    """Wait until ``stop`` is set or one of ``tasks`` ends."""
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()


async def _shut_down(
    services: Services,
    server: _Server,
    worker_stop: asyncio.Event,
    tasks: set[asyncio.Task[Any]],
    *,
    delay: bool,
) -> list[BaseException]:
    """Drain and stop the server and the worker; the exceptions their tasks ended with."""
    services.draining = True
    if delay and services.shutdown_delay_s > 0:
        _log.info("shutting down in %.1f s; /ready answers 503", services.shutdown_delay_s)
        await asyncio.sleep(services.shutdown_delay_s)
    _log.info("shutting down: finishing requests and deliveries in flight")
    server.should_exit = True
    worker_stop.set()
    ordered = sorted(tasks, key=lambda task: task.get_name())
    results = await asyncio.gather(*ordered, return_exceptions=True)
    failures = []
    for task, result in zip(ordered, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            _log.error("the %s task failed", task.get_name(), exc_info=result)
            failures.append(result)
    return failures


@contextlib.contextmanager
def handle_signals(stop: asyncio.Event, force: Callable[[], None] | None = None) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT set ``stop``; a second SIGINT also calls
    ``force``. Does nothing off the main thread (signals cannot be handled there)."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set() and signum == signal.SIGINT and force is not None:
            force()
        stop.set()

    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
