"""``python -m runs_fleet_github_simulator``: run the simulated GitHub for a demo.

It prints its URL on the first line of stdout (and writes it to ``--url-file``), then
serves until SIGINT/SIGTERM. Point runs-fleet at it with ``RUNS_FLEET_GITHUB_API_URL``,
``RUNS_FLEET_GITHUB_APP_ID`` and the key written to ``--app-key-out``; queue jobs
through ``POST /_simulator/jobs``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
from pathlib import Path

from runs_fleet_github_simulator.keys import generate_app_key
from runs_fleet_github_simulator.records import ORGANIZATION, USER
from runs_fleet_github_simulator.runner_dir import write_runner_dir
from runs_fleet_github_simulator.server import SimulatorServer
from runs_fleet_github_simulator.simulator import GitHubSimulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runs_fleet_github_simulator",
        description="A simulated GitHub (REST subset, signed workflow_job webhooks, "
        "simulated runners) for runs-fleet demos and tests. Not GitHub.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0: a free one)")
    parser.add_argument("--app-id", type=int, default=1, help="the simulated App's id")
    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument("--app-key-out", type=Path, help="write a new App private key here")
    key.add_argument("--app-public-key", type=Path, help="or use this App public key (PEM)")
    parser.add_argument("--webhook-url", help="where to send workflow_job webhooks")
    parser.add_argument(
        "--webhook-secret-file",
        type=Path,
        help="the webhook secret; a random one is written there if the file is missing",
    )
    parser.add_argument(
        "--repo", action="append", default=[], help="an organization repository (repeatable)"
    )
    parser.add_argument(
        "--user-repo", action="append", default=[], help="a user repository (repeatable)"
    )
    parser.add_argument("--token-ttl", type=float, default=3600.0, help="token lifetime (s)")
    parser.add_argument("--runner-dir", type=Path, help="write a simulated runner dir here")
    parser.add_argument("--job-seconds", type=float, default=1.0, help="simulated job length")
    parser.add_argument("--url-file", type=Path, help="also write the URL to this file")
    return parser


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret 0600, in a directory made 0700 if it does not exist yet."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _public_key(args: argparse.Namespace) -> bytes:
    if args.app_public_key is not None:
        return bytes(args.app_public_key.read_bytes())
    pair = generate_app_key()
    _write_private(args.app_key_out, pair.private_pem)
    return pair.public_pem


def _webhook_secret(path: Path | None) -> bytes:
    if path is None:
        return b""
    if not path.exists():
        _write_private(path, secrets.token_hex(32).encode())
    return path.read_bytes().rstrip(b"\r\n")


async def _serve(args: argparse.Namespace) -> None:
    sim = GitHubSimulator(
        app_id=args.app_id,
        app_public_key=_public_key(args),
        webhook_url=args.webhook_url,
        webhook_secret=_webhook_secret(args.webhook_secret_file),
        token_ttl_s=args.token_ttl,
    )
    for name in args.repo:
        sim.add_repository(name, owner_type=ORGANIZATION)
    for name in args.user_repo:
        sim.add_repository(name, owner_type=USER)
    if args.runner_dir is not None:
        write_runner_dir(args.runner_dir, job_seconds=args.job_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = SimulatorServer(sim, host=args.host, port=args.port, log_level="info")
    await server.start()
    print(server.url, flush=True)
    if args.url_file is not None:
        args.url_file.write_text(server.url + "\n")
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and serve until interrupted; the exit code."""
    args = _parser().parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError) as exc:
        print(f"runs-fleet-github-simulator: {exc}", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
