"""``runs-fleet``: argument parsing and error handling around the sub-commands.

``serve`` and ``worker`` run the server (``runs_fleet_server``), imported only then.

``main(argv) -> int`` is what tests call; ``run()`` is the console script. Plugins
may add sub-commands; they are loaded only when the command line asks for one that is
not built in, which keeps ``runs-fleet --help`` fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from runs_fleet_cli import dead_letters as dead_letters_command
from runs_fleet_cli import jobs as jobs_command
from runs_fleet_cli import pools as pools_command
from runs_fleet_core import __version__
from runs_fleet_core.errors import ConfigError, RunsFleetError
from runs_fleet_core.settings import env_flag

EXIT_USAGE = 2
EXIT_INTERNAL = 1
BUILT_IN = {
    "agent", "demo", "labels", "config", "dead-letters", "jobs", "plugins", "pools", "scheduler",
    "serve", "worker",
}  # fmt: skip
SERVER_LIBRARIES = {"starlette", "uvicorn"}


def _builtin(name: str) -> Callable[[argparse.Namespace], int]:
    """A handler that imports the commands module only when it runs (fast --help)."""

    def handler(args: argparse.Namespace) -> int:
        from runs_fleet_cli import commands

        result: int = getattr(commands, name)(args)
        return result

    return handler


def _server_command(name: str) -> Callable[[argparse.Namespace], int]:
    """A handler that imports the server only when it runs (fast --help); a missing
    server library is a configuration problem with the command that fixes it."""

    def handler(args: argparse.Namespace) -> int:
        try:
            from runs_fleet_server import cli
        except ImportError as exc:
            if exc.name not in SERVER_LIBRARIES:
                raise
            raise ConfigError(
                [
                    f"runs-fleet {args.command} needs {exc.name}, which is not installed: "
                    "pip install --force-reinstall runs-fleet"
                ]
            ) from None
        result: int = getattr(cli, name)(args)
        return result

    return handler


def _add_server_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve", help="run the webhook server (and, unless --no-worker, the dispatch worker)"
    )
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to listen on (default: RUNS_FLEET_LISTEN, else 127.0.0.1:8080)",
    )
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="only take webhooks; run 'runs-fleet worker' elsewhere to dispatch jobs",
    )
    serve.add_argument(
        "--scheduler",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run pool reconciliation and housekeeping in this process (default: on "
        "in local and memory modes; elsewhere run 'runs-fleet scheduler')",
    )
    serve.set_defaults(handler=_server_command("serve_command"))
    worker = sub.add_parser("worker", help="run the dispatch worker alone (no HTTP server)")
    worker.set_defaults(handler=_server_command("worker_command"))
    scheduler = sub.add_parser(
        "scheduler", help="run pool reconciliation and housekeeping (one leader among replicas)"
    )
    scheduler.set_defaults(handler=_server_command("scheduler_command"))
    demo = sub.add_parser(
        "demo",
        help="watch jobs go from a simulated GitHub to local runners and back (needs the "
        "GitHub simulator: nox -s demo installs it)",
    )
    demo.set_defaults(handler=_demo)
    sub.add_parser(
        "agent",
        help="run one job on this runner (started by runs-fleet on the runner; "
        "'runs-fleet agent --help' for its options)",
    )


def _demo(args: argparse.Namespace) -> int:
    from runs_fleet_cli.demo.run import demo_command

    return demo_command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runs-fleet",
        description="Ephemeral self-hosted GitHub Actions runners on demand.",
        epilog="Plugins may add more commands: 'runs-fleet plugins' lists them.",
    )
    parser.add_argument("--version", action="version", version=f"runs-fleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    labels = sub.add_parser("labels", help="work with runs-on labels")
    labels_sub = labels.add_subparsers(dest="labels_command", metavar="SUBCOMMAND", required=True)
    explain = labels_sub.add_parser(
        "explain", help="show the runner a runs-on label asks for, or why it is refused"
    )
    explain.add_argument(
        "runs_on",
        metavar="RUNS_ON",
        help='the runs-on label, e.g. "runs-fleet=1/cpu=4/arch=arm64" '
        "(several labels: separate them with commas)",
    )
    explain.add_argument("--json", action="store_true", help="print one JSON object")
    explain.set_defaults(handler=_builtin("labels_explain"))

    config = sub.add_parser("config", help="check the configuration")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    check = config_sub.add_parser(
        "check", help="validate every setting for the chosen mode; exit 2 listing all problems"
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument(
        "--github",
        nargs="*",
        metavar="OWNER/REPO",
        help="also ask GitHub whether the App's id, key, installation and permissions let "
        "runs-fleet serve these repositories (none: only the App itself)",
    )
    check.set_defaults(handler=_builtin("config_check"))

    plugins = sub.add_parser(
        "plugins", help="list plugins, what they provide, and why one is unavailable"
    )
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(handler=_builtin("plugins_list"))
    pools_command.add_parser(sub)
    jobs_command.add_parser(sub)
    dead_letters_command.add_parser(sub)
    _add_server_commands(sub)
    return parser


def _add_plugin_commands(parser: argparse.ArgumentParser) -> None:
    from runs_fleet_cli.bootstrap import plugin_manager

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for offer in plugin_manager(os.environ).commands().commands.offers():
        command = offer.item
        child = sub.add_parser(command.name, help=f"{command.help} (plugin {offer.plugin})")
        command.configure(child)
        child.set_defaults(handler=command.run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv``; return the exit code (0 ok, 2 user error, 1 bug)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["agent"]:  # the agent parses its own options
        from runs_fleet_agent.cli import main as agent_main

        return agent_main(args_list[1:])
    parser = _parser()
    try:
        first = next((a for a in args_list if not a.startswith("-")), None)
        if first is not None and first not in BUILT_IN:
            _add_plugin_commands(parser)
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exit_:  # --help, --version and usage errors
            return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
        if not hasattr(args, "handler"):
            parser.print_help()
            return EXIT_USAGE
        return int(args.handler(args))
    except RunsFleetError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the user gets a sentence, not a traceback
        if env_flag(os.environ, "RUNS_FLEET_DEBUG"):
            raise
        sys.stderr.write(
            f"runs-fleet: internal error: {type(exc).__name__}: {exc}\n"
            "run again with RUNS_FLEET_DEBUG=1 to see the traceback, and "
            "please report it\n"
        )
        return EXIT_INTERNAL


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
