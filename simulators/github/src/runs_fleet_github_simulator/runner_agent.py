"""A simulated GitHub Actions runner (not GitHub's runner), for runs-fleet's tests and demo.

:func:`runs_fleet_github_simulator.write_runner_dir` copies this file next to a
``run.sh`` that starts it with ``--jitconfig <encoded>``, just as runs-fleet starts the
real runner. It uses only the standard library, so the directory works with any
Python 3.11+. It decodes the simulator's JIT config (base64 JSON with the runner id,
secret and simulator URL), asks the simulator for a job, "runs" it by sleeping, and
reports the conclusion the test preset for that job.

Exit codes: 0 the job succeeded, 1 it failed, 2 the simulator could not be reached or
refused the runner, 3 no job came within ``--idle-timeout``, 143 SIGTERM/SIGINT.
On SIGTERM while running a job the job is completed as ``cancelled`` (like a runner
whose job is cancelled); while waiting, the runner disconnects (GitHub then shows it
offline, still registered).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

EXIT_SUCCESS, EXIT_FAILURE, EXIT_ERROR, EXIT_IDLE, EXIT_SIGNAL = 0, 1, 2, 3, 143
POLL_S = 10.0
CONNECT_RETRIES = 20
TOKEN_VARIABLE = "ACTIONS_RUNNER_INPUT_TOKEN"  # noqa: S105 (a variable's name)
REGISTRATION_FILE = ".runner"


class Terminated(Exception):
    """Raised by the signal handler to unwind whatever the runner is doing."""


class Refused(Exception):
    """The simulator refused the runner (unknown runner or bad secret)."""


def _on_signal(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _say(config: dict[str, Any], message: str) -> None:
    print(f"sim-runner {config.get('runner_name', '?')}: {message}", flush=True)


def _post(config: dict[str, Any], action: str, body: dict[str, Any], timeout: float) -> Any:
    """POST to the simulator's runner protocol; the JSON answer (None for 204)."""
    payload = {"runner_id": config["runner_id"], "secret": config["secret"], **body}
    request = urllib.request.Request(  # noqa: S310 - main() allows http(s) URLs only
        f"{config['url']}/_simulator/runners/{action}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    for attempt in range(CONNECT_RETRIES):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                text = response.read()
                return json.loads(text) if response.status == 200 and text else None
        except urllib.error.HTTPError as exc:
            if exc.code in (400, 404, 409, 422):
                raise Refused(f"{action}: HTTP {exc.code}") from None
            error: Exception = exc
        except OSError as exc:
            error = exc
        if attempt + 1 < CONNECT_RETRIES:
            time.sleep(0.25)
    raise OSError(f"{action}: the simulator is unreachable ({error})")


def _wait_for_job(config: dict[str, Any], idle_timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + idle_timeout
    while (left := deadline - time.monotonic()) > 0:
        wait = min(POLL_S, left)
        answer = _post(config, "acquire", {"wait_s": wait}, timeout=wait + 10)
        if answer is not None:
            job: dict[str, Any] = answer["job"]
            return job
    return None


def _run(config: dict[str, Any], job_seconds: float, idle_timeout: float) -> int:
    job = None
    try:
        job = _wait_for_job(config, idle_timeout)
        if job is None:
            _post(config, "disconnect", {}, timeout=10)
            _say(config, f"no job within {idle_timeout:g}s")
            return EXIT_IDLE
        _say(config, f"running job {job['job_id']} ({job['name']})")
        duration = job.get("duration_s")
        time.sleep(job_seconds if duration is None else float(duration))
        conclusion = str(job.get("conclusion") or "success")
        _post(config, "complete", {"conclusion": conclusion}, timeout=10)
        _say(config, f"job {job['job_id']} finished: {conclusion}")
        return EXIT_SUCCESS if conclusion == "success" else EXIT_FAILURE
    except Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        action, body = ("complete", {"conclusion": "cancelled"}) if job else ("disconnect", {})
        with contextlib.suppress(OSError, Refused):
            _post(config, action, body, timeout=5)
        _say(config, "terminated")
        return EXIT_SIGNAL


def _register(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a registration to the simulator serving ``url``; its ``config`` answer."""
    parts = urllib.parse.urlsplit(url)
    request = urllib.request.Request(  # noqa: S310 - configure() allows http(s) URLs only
        f"{parts.scheme}://{parts.netloc}/_simulator/runner-registrations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    for attempt in range(CONNECT_RETRIES):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                config: dict[str, Any] = json.loads(response.read())["config"]
                return config
        except urllib.error.HTTPError as exc:
            raise Refused(f"registration refused: HTTP {exc.code}") from None
        except OSError as exc:
            error = exc
        if attempt + 1 < CONNECT_RETRIES:
            time.sleep(0.25)
    raise OSError(f"the simulator is unreachable ({error})")


def configure(argv: list[str]) -> int:
    """``config.sh``: register the runner and write ``.runner``; see the module docstring."""
    parser = argparse.ArgumentParser(description="Configure a simulated GitHub Actions runner.")
    parser.add_argument("--root", type=Path, required=True, help="the runner directory")
    parser.add_argument("--url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--labels", default="")
    parser.add_argument("--ephemeral", action="store_true")
    args, _unknown = parser.parse_known_args(argv)
    token = os.environ.get(TOKEN_VARIABLE, "")
    target = args.root / REGISTRATION_FILE
    problem = None
    if not token:
        problem = f"no registration token: set {TOKEN_VARIABLE}"
    elif not str(args.url).startswith(("http://", "https://")):
        problem = "the URL must be http(s)"
    elif target.exists():
        problem = f"the runner in {args.root} is configured already ({REGISTRATION_FILE})"
    if problem is not None:
        print(f"sim-runner config: {problem}", file=sys.stderr)
        return EXIT_ERROR
    body = {
        "token": token,
        "url": args.url,
        "name": args.name,
        "labels": [label for label in args.labels.split(",") if label],
        "ephemeral": args.ephemeral,
    }
    try:
        config = _register(args.url, body)
    except (OSError, Refused) as exc:
        print(f"sim-runner config: {exc}", file=sys.stderr)
        return EXIT_ERROR
    config["ephemeral"] = args.ephemeral
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle)
    print(f"sim-runner config: runner {args.name} registered at {args.url}", flush=True)
    return EXIT_SUCCESS


def _load(args: argparse.Namespace) -> dict[str, Any]:
    """The runner's config: the decoded ``--jitconfig``, else ``.runner`` in ``--root``."""
    if args.jitconfig is not None:
        config: dict[str, Any] = json.loads(base64.b64decode(args.jitconfig))
    elif args.root is not None and (args.root / REGISTRATION_FILE).is_file():
        config = json.loads((args.root / REGISTRATION_FILE).read_text())
    else:
        raise ValueError("no --jitconfig, and the runner is not configured")
    if not isinstance(config["runner_id"], int) or not isinstance(config["secret"], str):
        raise ValueError("runner_id and secret are required")
    if not str(config["url"]).startswith(("http://", "https://")):
        raise ValueError("the simulator URL must be http(s)")
    return config


def main(argv: list[str] | None = None) -> int:
    """Run one simulated job (or, first argument ``configure``, register the runner);
    see the module docstring for exit codes."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["configure"]:
        return configure(argv[1:])
    parser = argparse.ArgumentParser(description="A simulated GitHub Actions runner.")
    parser.add_argument("--jitconfig", help="the encoded JIT config (else: .runner)")
    parser.add_argument("--root", type=Path, help="the runner directory")
    parser.add_argument("--job-seconds", type=float, default=0.2)
    parser.add_argument("--idle-timeout", type=float, default=600.0)
    args, _unknown = parser.parse_known_args(argv)
    try:
        config = _load(args)
    except (ValueError, KeyError, TypeError, OSError):
        print("sim-runner: the runner config is not one the simulator made", file=sys.stderr)
        return EXIT_ERROR
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        return _run(config, args.job_seconds, args.idle_timeout)
    except (OSError, Refused) as exc:
        print(f"sim-runner: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if args.jitconfig is None and config.get("ephemeral"):
            (args.root / REGISTRATION_FILE).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
