"""The built-in sub-commands: ``labels explain``, ``config check``, ``plugins``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

from runs_fleet_cli.bootstrap import plugin_manager
from runs_fleet_cli.output import emit_json, emit_table
from runs_fleet_core.converters import make_message_converter
from runs_fleet_core.domain.labels import parse_runs_on
from runs_fleet_core.domain.spec import RunnerSpec, describe
from runs_fleet_core.errors import ConfigError, LabelError, RunsFleetError
from runs_fleet_core.plugins import AdapterContext, PluginManager
from runs_fleet_core.ports import SystemClock
from runs_fleet_core.ports.github import GitHubAccessCheck
from runs_fleet_core.settings import Secret, Settings, inspect_settings
from runs_fleet_core.wiring import (
    NullMetrics,
    choose_wiring,
    inspect_deployment,
    label_defaults,
    setting_definitions,
)

EXPLAIN_FIELDS = (
    "run_id",
    "cpu_min",
    "cpu_max",
    "ram_min",
    "ram_max",
    "arch",
    "os",
    "families",
    "gen",
    "disk_gib",
    "pool",
    "spot",
    "backend",
    "private",
    "preset",
    "label",
    "labels",
)
EXIT_USAGE = 2


def spec_as_dict(spec: RunnerSpec) -> dict[str, Any]:
    raw = make_message_converter().unstructure(spec)
    return {name: raw[name] for name in EXPLAIN_FIELDS}


def labels_explain(args: argparse.Namespace) -> int:
    """Print the spec a ``runs-on`` value resolves to, or why it is refused."""
    env = os.environ
    try:
        plugins = plugin_manager(env)
        settings, problems = inspect_settings(env, setting_definitions(plugins), require=False)
        for problem in problems:
            sys.stderr.write(
                f"warning: configuration problem ('runs-fleet config check' "
                f"lists them all): {problem}\n"
            )
        defaults = label_defaults(settings)
        labels = (
            [part.strip() for part in args.runs_on.split(",")]
            if "," in args.runs_on
            else [args.runs_on]
        )
        spec = parse_runs_on(labels, defaults=defaults)
        if spec is None:
            raise LabelError(
                "no label starts with 'runs-fleet=': runs-fleet ignores this "
                "job; start the label with runs-fleet=${{ github.run_id }}"
            )
    except RunsFleetError as exc:
        if args.json:
            emit_json({"error": str(exc)})
        else:
            sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    if args.json:
        emit_json(spec_as_dict(spec))
    else:
        sys.stdout.write(describe(spec) + "\n\n")
        emit_table([("field", "value")] + [(k, _show(v)) for k, v in spec_as_dict(spec).items()])
    return 0


def _show(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "-"
    return str(value).lower() if isinstance(value, bool) else str(value)


def config_check(args: argparse.Namespace) -> int:
    """Check the whole configuration for the chosen mode, including what ``serve``
    needs; list every problem."""
    from runs_fleet_server.bootstrap import server_problems

    env = os.environ
    try:
        plugins = plugin_manager(env)
        settings, problems = inspect_deployment(env, plugins)
        problems += server_problems(settings, problems)
        if not problems and args.github is not None:
            problems += asyncio.run(github_problems(settings, plugins, args.github))
        if problems:
            raise ConfigError(problems)
    except RunsFleetError as exc:
        if args.json:
            emit_json({"ok": False, "problems": getattr(exc, "problems", [str(exc)])})
        else:
            sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    wiring = choose_wiring(settings)
    if args.json:
        emit_json(
            {
                "ok": True,
                "mode": settings.mode,
                "wiring": make_message_converter().unstructure(wiring),
                "warnings": list(settings.warnings),
            }
        )
        return 0
    for warning in settings.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    sys.stdout.write(f"configuration OK for mode {settings.mode}\n")
    emit_table(
        [("setting", "value", "from")]
        + [
            (name, "(secret)" if _secret(value) else _show(value), settings.sources.get(name, ""))
            for name, value in sorted(settings.values.items())
            if settings.sources.get(name) != "default" or value not in (None, [], {})
        ]
    )
    return 0


async def github_problems(
    settings: Settings, plugins: PluginManager, repositories: Sequence[str]
) -> list[str]:
    """Ask GitHub, as the deployment's GitHub adapter, whether it can serve
    ``repositories`` (App id, key, installation, permissions)."""
    wiring = choose_wiring(settings)
    context = AdapterContext(settings=settings, clock=SystemClock(), metrics=NullMetrics())
    github = plugins.adapters().github_clients.get(wiring.github)(context)
    try:
        if not isinstance(github, GitHubAccessCheck):
            return []
        return await github.access_problems(list(repositories))
    finally:
        close = getattr(github, "aclose", None)
        if callable(close):
            await close()


def _secret(value: object) -> bool:
    return isinstance(value, Secret)


def plugins_list(args: argparse.Namespace) -> int:
    """List every discovered plugin, its version, what it provides, or why it can't load."""
    statuses = plugin_manager(os.environ).statuses()
    if args.json:
        emit_json([make_message_converter().unstructure(s) for s in statuses])
        return 0
    emit_table(
        [("plugin", "version", "status", "provides")]
        + [
            (
                s.name,
                s.version,
                "available" if s.available else f"unavailable: {s.reason}",
                ", ".join(s.provides) or "-",
            )
            for s in statuses
        ]
    )
    return 0
