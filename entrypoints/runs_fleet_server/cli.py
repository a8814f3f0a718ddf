"""The ``runs-fleet serve`` and ``runs-fleet worker`` commands.

``runs_fleet_cli`` imports this module only when one of them runs, so ``--help`` never
pays for Starlette and uvicorn. Configuration problems raise ``ConfigError`` (the CLI
prints every problem and exits 2); a clean shutdown after SIGTERM/SIGINT exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping

from runs_fleet_core.wiring import start_services
from runs_fleet_scheduler.scheduler import run_scheduler
from runs_fleet_server.bootstrap import build_services, leadership_for, plugin_manager
from runs_fleet_server.serve import handle_signals, serve, work

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

SDK_LOGGERS = ("botocore", "boto3", "s3transfer")
"""Client libraries whose debug records quote whole requests and answers (the value of
an SSM SecureString parameter: a JIT config and a report token): held at INFO when
runs-fleet logs at debug, so that debug logging shows no secret."""

SCHEDULER_BY_DEFAULT = frozenset({"local", "memory"})
"""Modes whose ``serve`` runs the scheduler in the same process unless told otherwise."""


def serve_command(args: argparse.Namespace) -> int:
    """``runs-fleet serve [--listen HOST:PORT] [--no-worker] [--scheduler|--no-scheduler]``."""
    env = dict(os.environ)
    if args.listen:
        env["RUNS_FLEET_LISTEN"] = args.listen
    asyncio.run(_serve(env, with_worker=not args.no_worker, with_scheduler=args.scheduler))
    return 0


def worker_command(args: argparse.Namespace) -> int:
    """``runs-fleet worker``: dispatch job messages until SIGTERM/SIGINT."""
    asyncio.run(_work(dict(os.environ)))
    return 0


def scheduler_command(args: argparse.Namespace) -> int:
    """``runs-fleet scheduler``: the leader-elected pool and housekeeping loop alone."""
    asyncio.run(_schedule(dict(os.environ)))
    return 0


async def _serve(env: Mapping[str, str], *, with_worker: bool, with_scheduler: bool | None) -> None:
    _configure_logging(env)
    async with contextlib.AsyncExitStack() as stack:
        services = build_services(await start_services(env, plugin_manager(env), stack))
        if with_scheduler is None:
            with_scheduler = services.settings.mode in SCHEDULER_BY_DEFAULT
        host, port = services.listen
        await serve(
            services, host=host, port=port, with_worker=with_worker, with_scheduler=with_scheduler
        )


async def _work(env: Mapping[str, str]) -> None:
    _configure_logging(env)
    async with contextlib.AsyncExitStack() as stack:
        services = build_services(await start_services(env, plugin_manager(env), stack))
        stop = asyncio.Event()
        with handle_signals(stop):
            await work(services, stop)


async def _schedule(env: Mapping[str, str]) -> None:
    _configure_logging(env)
    async with contextlib.AsyncExitStack() as stack:
        services = build_services(await start_services(env, plugin_manager(env), stack))
        stack.push_async_callback(services.aclose)
        stop = asyncio.Event()
        with handle_signals(stop):
            await run_scheduler(
                leadership_for(services),
                stop,
                interval_s=services.scheduler_interval_s,
            )


def _configure_logging(env: Mapping[str, str]) -> None:
    """Log to stderr at ``RUNS_FLEET_LOG_LEVEL`` (info when unset or invalid: the
    settings check reports an invalid value)."""
    level = _LEVELS.get(env.get("RUNS_FLEET_LOG_LEVEL", "").strip().lower(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
