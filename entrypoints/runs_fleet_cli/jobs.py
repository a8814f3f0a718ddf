"""``runs-fleet jobs``: where a job is and why, told from the server's jobs API.

``jobs why JOB_ID`` reads the job's whole record (``GET /api/jobs/{job_id}``) and says in
plain words what runs-fleet did with it and what happens next, then prints its timeline
relative to when it was queued; ``jobs list`` is a compact table of ``GET /api/jobs``.
Both reach the server the way ``runs-fleet pools`` does (``--server``, else
``RUNS_FLEET_PUBLIC_URL``, else ``RUNS_FLEET_LISTEN``; the admin token from
``RUNS_FLEET_ADMIN_TOKEN``) and print its errors the same way, so an operator meets one
set of messages for one server.

The record is read back into the core's :class:`Job` with the converter that wrote it,
so the explanation (:mod:`runs_fleet_cli.jobs_explain`) works on typed values.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from runs_fleet_cli.jobs_explain import TEXT_WIDTH, explain, span, timeline
from runs_fleet_cli.output import emit_json, emit_table
from runs_fleet_cli.server_client import ServerClient, report_failure, server_options
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.errors import RunsFleetError

__all__ = [
    "EXIT_CODES",
    "EXIT_NOT_FOUND",
    "EXIT_SHOWN",
    "REASON_WIDTH",
    "add_parser",
    "configure",
    "explain",
    "jobs_list",
    "jobs_why",
    "timeline",
]

EXIT_SHOWN = 0
EXIT_NOT_FOUND = 1
REASON_WIDTH = 60
EXIT_CODES = (
    "exit codes: 0 the job was shown; 1 runs-fleet never saw the job; 2 a usage or "
    "configuration error, or the server could not be reached, refused the token or failed "
    "(the error says which)"
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``jobs`` and its sub-commands to the CLI's sub-parsers; return its parser."""
    parser = sub.add_parser(
        "jobs",
        help="explain where a job is and why, list jobs (through the server's API)",
        description="'jobs why JOB_ID' explains where a job is, why, and what happens next; "
        "'jobs list' lists jobs. Both read the server's jobs API.",
        epilog="exit codes: 0 shown; 1 'jobs why' found no such job; 2 a usage or "
        "configuration error, or the server could not be reached, refused the token or failed",
    )
    configure(parser)
    return parser


def configure(parser: argparse.ArgumentParser) -> None:
    """Give the ``jobs`` parser its sub-commands, each with its handler as ``handler``."""
    common = server_options()
    sub = parser.add_subparsers(dest="jobs_command", metavar="SUBCOMMAND", required=True)
    why = sub.add_parser(
        "why",
        parents=[common],
        help="say where a job is, why, and what happens next",
        description="Say where GitHub job JOB_ID is in runs-fleet, why, and what happens "
        "next, then list its status changes with times relative to when it was queued. "
        "--json prints the job's whole record instead.",
        epilog=EXIT_CODES,
    )
    why.add_argument("job_id", type=_job_id, metavar="JOB_ID", help="the GitHub job id")
    why.set_defaults(handler=jobs_why)
    listing = sub.add_parser(
        "list",
        parents=[common],
        help="list jobs with their status, runner, age and reason",
        description="List jobs in the order of their ids, oldest first.",
        epilog="exit codes: 0 listed; 2 a usage or configuration error, or the server "
        "could not be reached, refused the token or failed",
    )
    statuses = [s.value for s in JobStatus]
    listing.add_argument(
        "--status",
        choices=statuses,
        metavar="STATUS",
        help=f"only jobs in this status: {', '.join(statuses)}",
    )
    listing.add_argument("--repo", metavar="OWNER/NAME", help="only this repository's jobs")
    listing.add_argument("--pool", metavar="NAME", help="only jobs of this warm pool")
    listing.add_argument(
        "--limit", type=int, default=50, metavar="N", help="at most N jobs (1-500, default 50)"
    )
    listing.add_argument(
        "--after", type=_job_id, metavar="JOB_ID", help="only jobs with a larger id (the next page)"
    )
    listing.set_defaults(handler=jobs_list)


def jobs_why(args: argparse.Namespace) -> int:
    """Explain one job; exit 1 when the server never saw it."""
    api = ServerClient.from_env(args.server, os.environ)
    status, answer = api.call("GET", f"/api/jobs/{args.job_id}")
    if status == 404:
        if args.json:
            emit_json(answer)
        else:
            sys.stderr.write(
                f"runs-fleet never saw job {args.job_id}: it records a job when GitHub "
                "sends its workflow_job webhook and the job's runs-on has a runs-fleet= "
                "label. Check the label, and the webhook's recent deliveries in GitHub\n"
            )
        return EXIT_NOT_FOUND
    if status != 200:
        return report_failure(args, api, status, answer)
    if args.json:
        emit_json(answer)
        return EXIT_SHOWN
    job = _job(answer, api.url)
    sys.stdout.write(explain(job, datetime.now(UTC), width=_text_width()))
    return EXIT_SHOWN


def jobs_list(args: argparse.Namespace) -> int:
    """Print one page of jobs as a table."""
    query = {
        "status": args.status,
        "repo": args.repo,
        "pool": args.pool,
        "limit": args.limit,
        "cursor": args.after,
    }
    api = ServerClient.from_env(args.server, os.environ)
    path = "/api/jobs?" + urlencode({k: v for k, v in query.items() if v is not None})
    status, answer = api.call("GET", path)
    if status != 200:
        return report_failure(args, api, status, answer)
    if args.json:
        emit_json(answer)
        return EXIT_SHOWN
    jobs = answer.get("jobs") or []
    if not jobs:
        sys.stdout.write("no jobs match\n")
        return EXIT_SHOWN
    now = datetime.now(UTC)
    rows = [
        [
            str(job["job_id"]),
            job["status"],
            job["repository"],
            job["runner_name"] or "-",
            span(now - datetime.fromisoformat(job["created_at"]), precise=False),
        ]
        for job in jobs
    ]
    header = ["job", "status", "repository", "runner", "age"]
    room = _reason_room([header, *rows])
    emit_table(
        [[*header, "reason"]]
        + [[*row, _cut(job["reason"] or "", room)] for row, job in zip(rows, jobs, strict=True)]
    )
    if answer.get("next_cursor"):
        sys.stdout.write(f"more jobs follow: add --after {answer['next_cursor']}\n")
    return EXIT_SHOWN


# -- small pieces ------------------------------------------------------------------------


def _job(answer: dict[str, Any], url: str) -> Job:
    """The API's record as a :class:`Job`, read with the converter the server wrote it
    with (extra fields from a newer server are ignored)."""
    from cattrs.errors import BaseValidationError

    from runs_fleet_core.converters import make_record_converter

    try:
        return make_record_converter().structure(answer, Job)
    except (BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise RunsFleetError(
            f"{url} answered with a job record this runs-fleet cannot read ({exc}); is the "
            "CLI much older or newer than the server?"
        ) from None


def _job_id(text: str) -> int:
    """A GitHub job id from the command line (argparse turns the error into usage)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a job id: give the number GitHub shows in the job's URL, "
            "e.g. 289782451"
        )
    return int(text)


def _text_width() -> int:
    return min(shutil.get_terminal_size((TEXT_WIDTH, 24)).columns, TEXT_WIDTH)


def _reason_room(rows: Sequence[Sequence[str]]) -> int:
    """Characters left for the reason column: the terminal's width minus the other
    columns when writing to a terminal, else ``REASON_WIDTH``."""
    if not sys.stdout.isatty():
        return REASON_WIDTH
    used = sum(max(len(row[i]) for row in rows) + 2 for i in range(len(rows[0])))
    return max(shutil.get_terminal_size().columns - used, 20)


def _cut(text: str, room: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= room else text[: room - 1] + "…"
