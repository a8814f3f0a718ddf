"""``runs-fleet dead-letters``: see the job messages runs-fleet gave up on, send them back.

``list`` is a table of ``GET /api/dead-letters``; ``redrive ID ...`` (or ``--all``)
sends dead letters back to the job queue once their cause is fixed
(``POST /api/dead-letters/redrive``), and ``purge ID`` drops one for good
(``DELETE /api/dead-letters/{id}``). They reach the server as ``runs-fleet jobs`` does
(``--server``, else ``RUNS_FLEET_PUBLIC_URL``, else ``RUNS_FLEET_LISTEN``; the admin
token from ``RUNS_FLEET_ADMIN_TOKEN``) and print its errors the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from runs_fleet_cli.jobs_explain import span
from runs_fleet_cli.output import emit_json, emit_table
from runs_fleet_cli.server_client import ServerClient, report_failure, server_options

__all__ = ["add_parser", "dead_letters_list", "dead_letters_purge", "dead_letters_redrive"]

EXIT_DONE = 0
EXIT_NOT_DONE = 1
EXIT_USAGE = 2
REASON_WIDTH = 60
LIST_HINT = "'runs-fleet dead-letters list' shows the ids"
EXIT_CODES = (
    "exit codes: 0 done; 1 an id named no dead letter, or one could not be redriven "
    "(the error says which); 2 a usage or configuration error, or the server could not "
    "be reached, refused the token or failed"
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``dead-letters`` and its sub-commands to the CLI's sub-parsers."""
    parser = sub.add_parser(
        "dead-letters",
        help="list job messages runs-fleet gave up on, redrive or purge them",
        description="Job messages are dead-lettered after RUNS_FLEET_MAX_ATTEMPTS failed "
        "dispatch attempts, or at once when they cannot be read. Once the cause is fixed, "
        "'redrive' sends them back to the job queue with all their attempts; 'purge' "
        "drops one for good.",
        epilog=EXIT_CODES,
    )
    common = server_options()
    commands = parser.add_subparsers(
        dest="dead_letters_command", metavar="SUBCOMMAND", required=True
    )
    listing = commands.add_parser(
        "list",
        parents=[common],
        help="list dead letters, oldest first, with their job, attempts and reason",
        epilog=EXIT_CODES,
    )
    listing.add_argument(
        "--limit", type=int, default=50, metavar="N", help="at most N (1-500, default 50)"
    )
    listing.add_argument(
        "--after", metavar="CURSOR", help="the next page (as the previous page says)"
    )
    listing.set_defaults(handler=dead_letters_list)
    redrive = commands.add_parser(
        "redrive",
        parents=[common],
        help="send dead letters back to the job queue (attempts start again)",
        description="Send the dead letters ID ... (or --all) back to the job queue as new "
        "messages: the worker dispatches them again, with all their attempts.",
        epilog=EXIT_CODES,
    )
    redrive.add_argument("ids", nargs="*", metavar="ID", help="dead-letter ids (from 'list')")
    redrive.add_argument("--all", action="store_true", help="every dead letter")
    redrive.set_defaults(handler=dead_letters_redrive)
    purge = commands.add_parser(
        "purge",
        parents=[common],
        help="delete one dead letter for good",
        epilog=EXIT_CODES,
    )
    purge.add_argument("id", metavar="ID", help="the dead-letter id (from 'list')")
    purge.set_defaults(handler=dead_letters_purge)
    return parser


def dead_letters_list(args: argparse.Namespace) -> int:
    """Print one page of dead letters as a table."""
    if not 1 <= args.limit <= 500:
        sys.stderr.write("error: --limit must be between 1 and 500\n")
        return EXIT_USAGE
    api = ServerClient.from_env(args.server, os.environ)
    query = {"limit": args.limit} | ({"cursor": args.after} if args.after else {})
    status, answer = api.call("GET", "/api/dead-letters?" + urlencode(query))
    if status != 200:
        return report_failure(args, api, status, answer)
    if args.json:
        emit_json(answer)
        return EXIT_DONE
    letters = answer.get("dead_letters") or []
    if not letters:
        sys.stdout.write("no dead letters\n")
        return EXIT_DONE
    now = datetime.now(UTC)
    header = ["id", "job", "repository", "attempts", "age", "reason"]
    emit_table([header] + [_row(letter, now) for letter in letters])
    if answer.get("next_cursor"):
        sys.stdout.write(f"more dead letters follow: add --after {answer['next_cursor']}\n")
    return EXIT_DONE


def dead_letters_redrive(args: argparse.Namespace) -> int:
    """Redrive the named dead letters (or all); exit 1 if one could not be."""
    if bool(args.ids) == bool(args.all):
        sys.stderr.write(
            "error: name the dead letters to redrive (ID ...) or give --all, not both; "
            f"{LIST_HINT}\n"
        )
        return EXIT_USAGE
    api = ServerClient.from_env(args.server, os.environ)
    body: dict[str, Any] = {"all": True} if args.all else {"ids": args.ids}
    status, answer = api.call("POST", "/api/dead-letters/redrive", body)
    if status != 200:
        return report_failure(args, api, status, answer)
    not_found, unreadable = answer.get("not_found") or [], answer.get("unreadable") or []
    if args.json:
        emit_json(answer)
    else:
        moved = answer.get("moved_ids") or []
        sys.stdout.write(
            f"redriven {len(moved)} dead letter(s){': ' if moved else ''}{' '.join(moved)}\n"
        )
        for dead_id in not_found:
            sys.stderr.write(
                f"error: there is no dead letter {dead_id} (redriven or purged already?); "
                f"{LIST_HINT}\n"
            )
        for dead_id in unreadable:
            sys.stderr.write(
                f"error: dead letter {dead_id} holds no readable job message, so it cannot "
                f"be redriven: drop it with 'runs-fleet dead-letters purge {dead_id}'\n"
            )
    return EXIT_NOT_DONE if not_found or unreadable else EXIT_DONE


def dead_letters_purge(args: argparse.Namespace) -> int:
    """Delete one dead letter; exit 1 when there is none with that id."""
    api = ServerClient.from_env(args.server, os.environ)
    status, answer = api.call("DELETE", f"/api/dead-letters/{quote(args.id, safe='')}")
    if status == 404:
        if args.json:
            emit_json(answer)
        else:
            sys.stderr.write(f"error: there is no dead letter {args.id}; {LIST_HINT}\n")
        return EXIT_NOT_DONE
    if status != 200:
        return report_failure(args, api, status, answer)
    if args.json:
        emit_json(answer)
    else:
        sys.stdout.write(f"purged dead letter {args.id}\n")
    return EXIT_DONE


def _row(letter: dict[str, Any], now: datetime) -> list[str]:
    at = letter.get("dead_lettered_at")
    age = span(now - datetime.fromisoformat(at), precise=False) if at else "-"
    if letter.get("readable"):
        job, repository = str(letter["job_id"]), str(letter["repository"])
    else:
        job, repository = "-", f"(unreadable, {letter.get('size', 0)} bytes)"
    return [letter["id"], job, repository, str(letter["attempts"]), age, _cut(letter["reason"])]


def _cut(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 1] + "…"
