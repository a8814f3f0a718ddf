"""``runs-fleet pools``: define, list, show and delete warm pools on a running server.

The server owns the StateStore (in local mode an embedded Valkey only the server may
run; in hybrid mode the orchestrator runs in Kubernetes), so this command never builds
one: it calls the server's pools API through :mod:`runs_fleet_cli.server_client`, with
the admin token when one is configured, and prints its errors the way every command that
talks to the server does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from runs_fleet_cli.output import emit_json, emit_table
from runs_fleet_cli.server_client import ServerClient, report_failure, server_options
from runs_fleet_core.errors import RunsFleetError

__all__ = [
    "DAYS",
    "SCHEDULE_FORM",
    "ServerClient",
    "add_parser",
    "configure",
    "format_schedule",
    "parse_schedule",
    "pools_delete",
    "pools_list",
    "pools_set",
    "pools_show",
    "report_failure",
    "server_options",
]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SCHEDULE_FORM = "days=mon-fri/hours=8-18/running=4/stopped=2"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``pools`` and its sub-commands to the CLI's sub-parsers; return its parser."""
    parser = sub.add_parser(
        "pools", help="define, list, show and delete warm pools (through the server's API)"
    )
    configure(parser)
    return parser


def configure(parser: argparse.ArgumentParser) -> None:
    """Give the ``pools`` parser its sub-commands, each with its handler as ``handler``."""
    common = server_options()
    sub = parser.add_subparsers(dest="pools_command", metavar="SUBCOMMAND", required=True)
    listing = sub.add_parser("list", parents=[common], help="list every pool and its sizes")
    listing.set_defaults(handler=pools_list)
    show = sub.add_parser("show", parents=[common], help="show one pool and its runners")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(handler=pools_show)
    put = sub.add_parser(
        "set",
        parents=[common],
        help="create a pool or replace its whole config (schedules included)",
        description="Create pool NAME, or replace its whole config: what is not given "
        "(idle timeout, backend, schedules) takes its default. Jobs use the pool when their "
        "label says pool=NAME.",
    )
    put.add_argument("name", metavar="NAME", help="lower-case letters, digits, '_' and '-'")
    put.add_argument(
        "--label",
        required=True,
        help="the runs-on label the pool's runners are built from, e.g. "
        "runs-fleet=pool/cpu=4/arch=arm64/pool=NAME",
    )
    put.add_argument(
        "--running", type=int, required=True, metavar="N", help="idle runners kept started"
    )
    put.add_argument(
        "--stopped", type=int, required=True, metavar="N", help="idle runners kept stopped"
    )
    put.add_argument(
        "--idle-timeout",
        type=int,
        metavar="S",
        help="seconds a surplus runner stays idle before it is scaled down (default 600)",
    )
    put.add_argument("--backend", metavar="B", help="the backend (default: the deployment's)")
    put.add_argument(
        "--schedule",
        action="append",
        default=[],
        metavar="SPEC",
        help=f"sizes for a weekly window in UTC, e.g. {SCHEDULE_FORM} (days and hours "
        "default to all; the first matching schedule wins; repeat for more)",
    )
    put.set_defaults(handler=pools_set)
    delete = sub.add_parser(
        "delete",
        parents=[common],
        help="delete a pool; one with runners is first scaled to zero (run it again later)",
    )
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(handler=pools_delete)


def pools_list(args: argparse.Namespace) -> int:
    """Print every pool with its sizes."""
    api = ServerClient.from_env(args.server, os.environ)
    status, answer = api.call("GET", "/api/pools")
    if status != 200:
        return report_failure(args, api, status, answer)
    if args.json:
        emit_json(answer)
        return 0
    pools = answer.get("pools", [])
    if not pools:
        sys.stdout.write(
            "no pools; define one with 'runs-fleet pools set NAME --label LABEL "
            "--running N --stopped N'\n"
        )
        return 0
    emit_table(
        [("name", "backend", "running", "stopped", "idle timeout", "schedules", "kind", "label")]
        + [
            (
                pool["name"],
                pool["backend"] or "(default)",
                str(pool["desired_running"]),
                str(pool["desired_stopped"]),
                f"{pool['idle_timeout_s']} s",
                str(len(pool["schedules"])),
                "ephemeral" if pool["ephemeral"] else "configured",
                pool["label"],
            )
            for pool in pools
        ]
    )
    return 0


def pools_show(args: argparse.Namespace) -> int:
    """Print one pool's config and its runners."""
    api = ServerClient.from_env(args.server, os.environ)
    status, answer = api.call("GET", f"/api/pools/{quote(args.name, safe='')}")
    if status != 200:
        return report_failure(args, api, status, answer)
    if args.json:
        emit_json(answer)
        return 0
    _print_config(answer)
    runners = answer.get("runners") or []
    if answer.get("runners_error"):
        sys.stdout.write(f"runners       not listed: {answer['runners_error']}\n")
    elif not runners:
        sys.stdout.write("runners       none\n")
    else:
        busy = sum(1 for runner in runners if runner["job_id"] is not None)
        sys.stdout.write(f"runners       {len(runners)} ({busy} busy)\n\n")
        emit_table(
            [("runner", "phase", "job", "idle since", "type")]
            + [
                (
                    runner["runner_id"],
                    runner["phase"],
                    "-" if runner["job_id"] is None else str(runner["job_id"]),
                    runner["idle_since"] or "-",
                    runner["instance_type"] or "-",
                )
                for runner in runners
            ]
        )
    return 0


def pools_set(args: argparse.Namespace) -> int:
    """Create or replace one pool; print it as stored."""
    body: dict[str, Any] = {
        "label": args.label,
        "desired_running": args.running,
        "desired_stopped": args.stopped,
        "schedules": [parse_schedule(spec) for spec in args.schedule],
        "backend": args.backend,
    }
    if args.idle_timeout is not None:
        body["idle_timeout_s"] = args.idle_timeout
    api = ServerClient.from_env(args.server, os.environ)
    status, answer = api.call("PUT", f"/api/pools/{quote(args.name, safe='')}", body)
    if status not in (200, 201):
        return report_failure(args, api, status, answer)
    if args.json:
        emit_json(answer)
        return 0
    sys.stdout.write(f"pool {answer['name']} {'created' if status == 201 else 'replaced'}\n")
    _print_config(answer)
    return 0


def pools_delete(args: argparse.Namespace) -> int:
    """Delete one pool, or scale it to zero when it still has runners (exit 2)."""
    api = ServerClient.from_env(args.server, os.environ)
    status, answer = api.call("DELETE", f"/api/pools/{quote(args.name, safe='')}")
    if status != 200:
        return report_failure(args, api, status, answer)
    if args.json:
        emit_json(answer)
    else:
        sys.stdout.write(f"pool {args.name} deleted\n")
    return 0


def parse_schedule(text: str) -> dict[str, Any]:
    """``days=mon-fri/hours=8-18/running=4/stopped=2`` as a schedule of the pools API.

    ``days`` lists days and ranges joined by ``+`` (``mon-wed+sat``; a range may wrap,
    ``fri-mon``); ``hours`` is ``START-END`` in UTC, end excluded (``22-6`` wraps past
    midnight). Left out: every day, the whole day, nothing kept. The server checks the
    ranges; this only reads the form. Raises ``RunsFleetError`` for a malformed one.
    """
    usage = f"--schedule {text!r}: write it as {SCHEDULE_FORM}"
    counts = {"running": "desired_running", "stopped": "desired_stopped"}
    schedule: dict[str, Any] = {}
    seen: set[str] = set()
    for segment in text.strip().split("/"):
        key, sep, value = segment.partition("=")
        if not sep or key not in ("days", "hours", *counts) or key in seen:
            raise RunsFleetError(f"{usage} (keys days, hours, running, stopped; each once)")
        seen.add(key)
        try:
            if key == "days":
                schedule["weekdays"] = _days(value.lower())
            elif key == "hours":
                start, end = value.split("-")
                schedule["start_hour"], schedule["end_hour"] = int(start), int(end)
            else:
                schedule[counts[key]] = int(value)
        except ValueError:
            raise RunsFleetError(f"{usage} ({segment!r} cannot be read)") from None
    return schedule


def format_schedule(schedule: Mapping[str, Any]) -> str:
    """A schedule of the pools API in the form :func:`parse_schedule` reads."""
    return (
        f"days={_format_days(schedule['weekdays'])}"
        f"/hours={schedule['start_hour']}-{schedule['end_hour']}"
        f"/running={schedule['desired_running']}/stopped={schedule['desired_stopped']}"
    )


def _days(text: str) -> list[int]:
    days: list[int] = []
    for part in text.split("+"):
        first, _, last = part.partition("-")
        start, end = DAYS.index(first), DAYS.index(last or first)
        days += [(start + i) % 7 for i in range((end - start) % 7 + 1)]
    return days


def _format_days(days: Sequence[int]) -> str:
    ordered = sorted(set(days))
    runs: list[list[int]] = []
    for day in ordered:
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return "+".join(
        DAYS[run[0]] if len(run) == 1 else f"{DAYS[run[0]]}-{DAYS[run[-1]]}" for run in runs
    )


def _print_config(pool: Mapping[str, Any]) -> None:
    lines = [
        ("pool", pool["name"] + (" (ephemeral: made by runs-fleet)" if pool["ephemeral"] else "")),
        ("label", pool["label"]),
        ("backend", pool["backend"] or "the deployment's default"),
        ("running", str(pool["desired_running"])),
        ("stopped", str(pool["desired_stopped"])),
        ("idle timeout", f"{pool['idle_timeout_s']} s"),
    ]
    lines += [("schedule", format_schedule(s)) for s in pool["schedules"]]
    for key, value in lines:
        sys.stdout.write(f"{key:<13} {value}\n")
