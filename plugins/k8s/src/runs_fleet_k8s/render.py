"""``runs-fleet k8s render LABEL``: the Kubernetes objects a label would create.

An operator choosing node labels, tolerations or the spot convention, or a workflow
author wondering where ``cpu=4/arch=arm64/spot=false`` lands, can read the exact
manifests without a cluster at hand: they are built by the same functions the provider
uses, from the current settings, and no API call is made. The output is a multi-document
YAML stream (the runner Job, its ConfigMap and Secret, and its NetworkPolicy for a
private job); notes on what the preview cannot show go to stderr as YAML comments, so
stdout stays valid YAML.

The Secret is an example with every value replaced by ``<redacted>``: a preview never
holds a JIT config or a report token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no annotations

from runs_fleet_core.domain.ids import JobId, runner_name_for
from runs_fleet_core.domain.labels import parse_label
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.domain.spec import describe
from runs_fleet_core.errors import RunsFleetError
from runs_fleet_core.plugins import PluginManager
from runs_fleet_core.plugins.manager import DISABLE_VAR
from runs_fleet_core.settings import Settings, inspect_settings
from runs_fleet_core.wiring import label_defaults, setting_definitions
from runs_fleet_k8s import config_files, configs, manifests, names
from runs_fleet_k8s.pod_settings import RUNNER_IMAGE, RunnerPodSettings

EXIT_USAGE = 2
EXAMPLE_IMAGE = "registry.example/runs-fleet-runner:example"
"""Stands in for an unset ``RUNS_FLEET_KUBE_RUNNER_IMAGE`` (and says so on stderr)."""
EXAMPLE_SERVER = "http://runs-fleet.runs-fleet.svc:8080"
REDACTED = "<redacted>"
REPORTS_PATH = "/api/agent/reports"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``render`` (and its options) under the ``k8s`` command."""
    sub = parser.add_subparsers(dest="k8s_command", metavar="SUBCOMMAND", required=True)
    render = sub.add_parser(
        "render",
        help="print, as YAML, the Job, config and network policy a runs-on label would "
        "create (no cluster needed)",
    )
    render.add_argument(
        "label", metavar="LABEL", help='the runs-on label, e.g. "runs-fleet=1/cpu=4"'
    )
    render.add_argument(
        "--job-id", type=int, default=1, help="job id to put in names and labels (default 1)"
    )
    render.add_argument(
        "--repository",
        default="OWNER/REPO",
        help="repository of the example runner config (default OWNER/REPO)",
    )


def main(args: argparse.Namespace) -> int:
    """Load the settings from the environment (like ``runs-fleet ec2 render``: problems
    are warnings) and :func:`run`."""
    env = os.environ
    disabled = [name.strip() for name in env.get(DISABLE_VAR, "").split(",") if name.strip()]
    definitions = setting_definitions(PluginManager(disabled=disabled))
    settings, problems = inspect_settings(env, definitions, require=False)
    for problem in problems:
        sys.stderr.write(f"warning: configuration problem: {problem}\n")
    return run(args, settings)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the manifests of ``args.label`` as YAML documents; exit 2 with the reason
    when the label or the runner pod settings are invalid."""
    try:
        documents, notes = render(
            args.label, settings, job_id=args.job_id, repository=args.repository
        )
    except RunsFleetError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    for note in notes:
        sys.stderr.write(f"# {note}\n")
    # A JSON round trip leaves no object shared between two places, so the YAML has no
    # anchors or aliases: every document reads (and applies) on its own.
    plain = json.loads(json.dumps(documents))
    sys.stdout.write(yaml.safe_dump_all(plain, sort_keys=False))
    return 0


def render(
    label: str, settings: Settings, *, job_id: int = 1, repository: str = "OWNER/REPO"
) -> tuple[list[dict[str, Any]], list[str]]:
    """The documents ``render`` prints and the notes on what they cannot show."""
    spec = parse_label(label, defaults=label_defaults(settings)).for_job(JobId(job_id), repository)
    pod_settings = RunnerPodSettings.from_settings(settings, default_image=EXAMPLE_IMAGE)
    notes = [f"{label}: {describe(spec)}"]
    if not settings.get(RUNNER_IMAGE):
        notes.append(f"{RUNNER_IMAGE} is not set: the Job shows the example image {EXAMPLE_IMAGE}")
    runner_name = runner_name_for(JobId(job_id), spec.attempt)
    job = manifests.runner_job(spec, runner_name, pod_settings)
    example = RunnerConfig(
        runner_name=runner_name,
        job_id=JobId(job_id),
        repository=repository,
        jit_config=REDACTED,
        labels=spec.labels or (spec.label,),
        settings={"report_url": _reports_url(settings), "report_token": REDACTED},
    )
    documents = [job, *_config_objects(runner_name, example, pod_settings.namespace)]
    notes.append(
        "the ConfigMap and Secret are written before the Job; once the Job exists they are "
        "owned by it (ownerReferences), so Kubernetes deletes them with it"
    )
    if spec.private:
        policy = manifests.network_policy(job["metadata"]["name"], {names.JOB_ID: str(job_id)})
        policy["metadata"]["namespace"] = pod_settings.namespace
        documents.append(policy)
        notes.append(
            "private=true: the NetworkPolicy is created before the Job, so it is in "
            "force before the runner's pod exists"
        )
    return documents, notes


def _reports_url(settings: Settings) -> str:
    server = str(settings.get("RUNS_FLEET_PUBLIC_URL") or EXAMPLE_SERVER).rstrip("/")
    return server + REPORTS_PATH


def _config_objects(runner_name: str, config: RunnerConfig, namespace: str) -> list[dict[str, Any]]:
    """The ConfigMap and Secret of ``config`` as the config store writes them, every
    value of the Secret shown as ``<redacted>``."""
    public, hidden = config_files.split(config)

    def metadata(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": namespace,
            "labels": {
                names.MANAGED_BY: names.MANAGER,
                names.COMPONENT: configs.COMPONENT,
                names.JOB_ID: str(config.job_id),
            },
            "annotations": {configs.RUNNER_ID_ANNOTATION: runner_name},
        }

    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(names.config_map_name(runner_name)),
        "data": public,
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata(names.config_secret_name(runner_name)),
        "stringData": dict.fromkeys(hidden, REDACTED),
    }
    return [config_map, secret]
