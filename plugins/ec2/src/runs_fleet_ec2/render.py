"""``runs-fleet ec2 render LABEL``: the CreateFleet request a label would send.

An operator changing the launch template name, the subnets or the tags, or a workflow
author wondering which instance types ``cpu=4/ram=16`` may get, can see the exact
request without an AWS account at hand: it is built by the same functions the provider
uses, from the current settings, and no AWS call is made. What depends on AWS at launch
time is said in ``notes``: the architecture of a label without ``arch=`` (chosen by spot
price then, arm64 here) and the spot breaker (which may drop overrides then).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from runs_fleet_core.domain.ids import JobId, runner_name_for
from runs_fleet_core.domain.labels import parse_label
from runs_fleet_core.domain.spec import Arch, describe
from runs_fleet_core.errors import RunsFleetError
from runs_fleet_core.plugins import PluginManager
from runs_fleet_core.plugins.manager import DISABLE_VAR
from runs_fleet_core.ports import SystemClock
from runs_fleet_core.settings import Settings, inspect_settings
from runs_fleet_core.wiring import label_defaults, setting_definitions
from runs_fleet_ec2 import catalog, fleet
from runs_fleet_ec2.fleet import FleetSettings

EXIT_USAGE = 2


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``render`` (and its options) under the ``ec2`` command."""
    sub = parser.add_subparsers(dest="ec2_command", metavar="SUBCOMMAND", required=True)
    render = sub.add_parser(
        "render",
        help="print, as JSON, the CreateFleet request a runs-on label would send (no AWS call)",
    )
    render.add_argument(
        "label", metavar="LABEL", help='the runs-on label, e.g. "runs-fleet=1/cpu=4"'
    )
    render.add_argument(
        "--job-id", type=int, default=1, help="job id to put in the tags (default 1)"
    )
    render.add_argument(
        "--repository",
        default="OWNER/REPO",
        help="repository to put in the tags (default OWNER/REPO)",
    )
    render.add_argument(
        "--on-demand",
        action="store_true",
        help="render the on-demand request (the fallback when spot has no capacity)",
    )


def main(args: argparse.Namespace) -> int:
    """Load the settings from the environment (like ``runs-fleet labels explain``:
    problems are warnings) and :func:`run`."""
    env = os.environ
    disabled = [name.strip() for name in env.get(DISABLE_VAR, "").split(",") if name.strip()]
    definitions = setting_definitions(PluginManager(disabled=disabled))
    settings, problems = inspect_settings(env, definitions, require=False)
    for problem in problems:
        sys.stderr.write(f"warning: configuration problem: {problem}\n")
    return run(args, settings)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the request for ``args.label`` as one JSON object; exit 2 with the reason
    when the label or the fleet settings are invalid or no instance type fits."""
    try:
        document = render(
            args.label,
            settings,
            job_id=args.job_id,
            repository=args.repository,
            on_demand=args.on_demand,
        )
    except RunsFleetError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    return 0


def render(
    label: str,
    settings: Settings,
    *,
    job_id: int = 1,
    repository: str = "OWNER/REPO",
    on_demand: bool = False,
) -> dict[str, Any]:
    """The document ``render`` prints: the spec in words, the architecture and market,
    notes on what is decided only at launch, and the CreateFleet request."""
    spec = parse_label(label, defaults=label_defaults(settings)).for_job(JobId(job_id), repository)
    fleet_settings = FleetSettings.from_settings(settings)
    notes = []
    arch = spec.arch
    if arch is None:
        arches = catalog.arches_for(spec)
        arch = arches[0] if arches else Arch.ARM64
        if len(arches) > 1:
            notes.append(
                f"the label has no arch=: rendered for {arch}; at launch the architecture "
                "with the lower spot price is used"
            )
    spot_enabled = bool(settings.get(fleet.SPOT_ENABLED, True))
    spot = spec.spot and spot_enabled and not on_demand
    if spot:
        notes.append(
            "spot request: overrides whose family and zone have an open spot breaker are "
            "left out at launch; without spot capacity the on-demand request (--on-demand) "
            "follows"
        )
    elif not on_demand:
        why = "the label says spot=false" if not spec.spot else f"{fleet.SPOT_ENABLED}=false"
        notes.append(f"on-demand request: {why}")
    name = runner_name_for(spec.job_id or JobId(job_id), spec.attempt)
    request = fleet.build_request(
        spec,
        fleet_settings,
        arch=arch,
        spot=spot,
        runner_name=name,
        now=SystemClock().now(),
    )
    return {
        "spec": describe(spec),
        "arch": str(arch),
        "market": "spot" if spot else "on-demand",
        "runner_name": name,
        "notes": notes,
        "CreateFleet": request,
    }
