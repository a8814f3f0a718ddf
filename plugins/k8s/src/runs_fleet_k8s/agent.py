"""``runs-fleet k8s agent``: the agent of one runner pod (the runner image's entrypoint).

The local agent's pass (:func:`runs_fleet_agent.cli.run_job`: report, run ``run.sh``
once under its runtime ceiling with SIGTERM forwarded, report) with Kubernetes around it:

- A cold-started runner (a Job's pod) finds its config mounted at ``/etc/runs-fleet``
  (the runner's ConfigMap and Secret, see :mod:`runs_fleet_k8s.config_files`).
- A warm-pool pod starts before any job exists, and pods of one Deployment share one
  template, so nothing can be mounted for it: it asks the orchestrator
  (``$RUNS_FLEET_CONFIG_URL``, ``GET /api/agent/config``) with its projected service
  account token, which the orchestrator checks with a TokenReview, until a job's config
  comes back.

Reports go to the config's ``report_url`` with its report token, as in local mode. The
agent exits 0 once the runner ran, whatever the job's result (that is in the report and
the log), so the Job completes and a sidecar is stopped; 78 for a missing or unreadable
config and 75 when none came in time, which leave the Job failed for an operator to see.
A pool pod waits after its job until the orchestrator removes it (the container would
otherwise be restarted by its Deployment-given restart policy). Nothing here logs the JIT
config, the report token or the service account token.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from email.message import Message
from pathlib import Path

from runs_fleet_agent.cli import (
    EXIT_BAD_CONFIG,
    EXIT_NO_CONFIG_YET,
    add_run_arguments,
    configure_logging,
    handling_stop_signals,
    http_reporter,
    run_job,
    setup_values,
)
from runs_fleet_agent.supervise import StopRequest, signal_exit_code
from runs_fleet_core.converters import loads, make_config_converter
from runs_fleet_core.domain.runner import RunnerConfig

CONFIG_DIR_VAR = "RUNS_FLEET_CONFIG_DIR"
CONFIG_URL_VAR = "RUNS_FLEET_CONFIG_URL"
TOKEN_FILE_VAR = "RUNS_FLEET_TOKEN_FILE"  # noqa: S105 (a variable name)
DEFAULT_CONFIG_DIR = "/etc/runs-fleet"
DEFAULT_TOKEN_FILE = "/var/run/secrets/runs-fleet/token"  # noqa: S105 (a path)
DEFAULT_AFTER_JOB_WAIT_S = 600.0
MAX_REFUSALS = 5
"""Refused requests (401/403/404) in a row before a pool pod gives up on its config."""
_log = logging.getLogger("runs_fleet_agent.k8s")


class ConfigRefused(Exception):
    """The orchestrator will not serve this pod a config (not a passing failure)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the agent's options to ``parser``."""
    add_run_arguments(parser)
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=Path(os.environ.get(CONFIG_DIR_VAR) or DEFAULT_CONFIG_DIR),
        help=f"where the runner's config is mounted (default: ${CONFIG_DIR_VAR} or "
        f"{DEFAULT_CONFIG_DIR})",
    )
    parser.add_argument(
        "--config-url",
        default=os.environ.get(CONFIG_URL_VAR) or None,
        help="fetch the config from this orchestrator URL instead (warm-pool pods; "
        f"default: ${CONFIG_URL_VAR})",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=Path(os.environ.get(TOKEN_FILE_VAR) or DEFAULT_TOKEN_FILE),
        help="the projected service account token presented to --config-url",
    )
    parser.add_argument(
        "--wait-for-config",
        type=float,
        metavar="SECONDS",
        help="give up (exit 75) when no config came within SECONDS (default: a pool pod "
        "waits as long as it runs; a mounted config must be there at once)",
    )
    parser.add_argument(
        "--after-job-wait",
        type=float,
        default=DEFAULT_AFTER_JOB_WAIT_S,
        metavar="SECONDS",
        help="a pool pod waits this long after its job for the orchestrator to remove it",
    )
    parser.add_argument("--poll-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--request-timeout", type=float, default=10.0, help=argparse.SUPPRESS)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with :func:`add_arguments`'s options and :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="runs-fleet k8s agent", description="Run this pod's one GitHub Actions job."
    )
    add_arguments(parser)
    return main(parser.parse_args(argv))


def main(args: argparse.Namespace) -> int:
    """Get the config, run the job, exit (see the module docstring)."""
    configure_logging()
    stop = StopRequest()
    with handling_stop_signals(stop):
        found = fetch_config(args, stop) if args.config_url else read_mounted(args.config_dir)
        if isinstance(found, int):
            return found
        code = run_job(
            found,
            runner_dir=args.runner_dir,
            max_runtime_s=args.max_runtime,
            grace_s=args.grace,
            stop=stop,
            reporter=http_reporter(found),
            setup=setup_values(args),
        )
        if code >= 128 and stop.signum is not None:
            return code
        if args.config_url:
            _linger(args.after_job_wait, stop)
    return 0


def read_mounted(config_dir: Path) -> RunnerConfig | int:
    """The config mounted in ``config_dir``, or exit code 78 (after saying why)."""
    from runs_fleet_k8s.config_files import ConfigFilesError, read_dir

    try:
        config = read_dir(config_dir)
    except ConfigFilesError as exc:
        _log.error("%s", exc)
        return EXIT_BAD_CONFIG
    _log.info("found the config of job %s in %s", config.job_id, config_dir)
    return config


def fetch_config(args: argparse.Namespace, stop: StopRequest) -> RunnerConfig | int:
    """Ask ``args.config_url`` until it serves this pod's config: the config, or the exit
    code (75 none in time, 78 refused, 128 + signal when stopped)."""
    wait_s = args.wait_for_config if args.wait_for_config is not None else float("inf")
    deadline = time.monotonic() + wait_s
    refusals = 0
    _log.info("waiting for a job: asking %s for this pod's config", args.config_url)
    while True:
        try:
            config, retry_after = request_config(
                args.config_url, args.token_file, timeout_s=args.request_timeout
            )
            refusals = 0
        except ConfigRefused as exc:
            refusals += 1
            _log.warning(
                "the orchestrator refused a config (%d/%d): %s", refusals, MAX_REFUSALS, exc
            )
            if refusals >= MAX_REFUSALS:
                return EXIT_BAD_CONFIG
            config, retry_after = None, args.poll_interval
        except (OSError, ValueError) as exc:
            _log.warning("cannot ask for the config yet: %s", exc)
            config, retry_after = None, args.poll_interval
        if config is not None:
            _log.info("got the config of job %s", config.job_id)
            return config
        if stop.signum is not None:
            _log.info("stopped while waiting for a job")
            return signal_exit_code(stop.signum)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _log.error("no config came within %gs", wait_s)
            return EXIT_NO_CONFIG_YET
        stop.sleep(min(max(retry_after, args.poll_interval), remaining))


def request_config(
    url: str, token_file: Path, *, timeout_s: float
) -> tuple[RunnerConfig | None, float]:
    """One request: ``(config, 0)``, or ``(None, seconds to wait)`` when there is no job
    yet. Raises ``ConfigRefused`` on 401/403/404 and ``OSError`` when the orchestrator
    cannot be reached. The token is read anew each time (the kubelet rotates it)."""
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigRefused(f"no service account token at {token_file}: {exc.strerror}") from None
    if not url.startswith(("http://", "https://")):
        raise ConfigRefused(f"the config URL must be http:// or https://, not {url!r}")
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout_s) as response:
            if response.status == 204:
                return None, _retry_after(response.headers)
            body = response.read()
    except urllib.error.HTTPError as exc:
        reason = _error_text(exc)
        if exc.code in (401, 403, 404):
            raise ConfigRefused(f"HTTP {exc.code}: {reason}") from None
        return None, _retry_after(exc.headers)
    try:
        return loads(make_config_converter(), body, RunnerConfig), 0.0
    except ValueError:
        raise ValueError("the orchestrator answered with something that is not a config") from None


def _retry_after(headers: Message | None) -> float:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return str(exc.reason)
    return str(payload.get("error", exc.reason)) if isinstance(payload, dict) else str(exc.reason)


def _linger(seconds: float, stop: StopRequest) -> None:
    """Wait for the orchestrator to remove this pool pod (its job is over); a restart of
    the container would only ask again for a config that is gone."""
    _log.info("job done: waiting up to %gs for this pod to be removed", seconds)
    stop.sleep(seconds)
