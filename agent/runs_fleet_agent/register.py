"""Registering the runner with ``config.sh``, for where GitHub has no JIT runner configs.

The runner config then carries a registration token and the URL to register at instead
of a JIT config. The agent runs ``config.sh --unattended --ephemeral --disableupdate
--name … --labels … --work _work --url …`` with the token in its environment as
``ACTIONS_RUNNER_INPUT_TOKEN`` (the actions runner reads ``ACTIONS_RUNNER_INPUT_<NAME>``
for any of its inputs), never on its command line, which every process on the machine
can read; then ``run.sh`` without arguments runs one job and the ephemeral runner goes.

``config.sh`` writes the registration (``.runner``, ``.credentials``) into the runner
directory, so a directory serves one registered runner at a time: one that already holds
a registration is refused before anything runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from runs_fleet_agent.output import LineSink
from runs_fleet_agent.supervise import EXIT_TIMEOUT, Outcome, StopRequest, run_once
from runs_fleet_core.domain.messages import AgentEvent
from runs_fleet_core.domain.runner import RunnerConfig

TOKEN_VARIABLE = "ACTIONS_RUNNER_INPUT_TOKEN"  # noqa: S105 (a variable's name)
REGISTRATION_FILE = ".runner"
CONFIGURE_TIMEOUT_S = 300.0
WORK_FOLDER = "_work"
_log = logging.getLogger("runs_fleet_agent")


def cannot_register(config: RunnerConfig, runner_dir: Path) -> str | None:
    """Why ``config``'s runner cannot register in ``runner_dir`` (the config names no
    URL, or the directory holds a registration already), or ``None`` when it can."""
    if not config.registration_url:
        return "the runner config has a registration token but no URL to register at"
    if not (runner_dir / REGISTRATION_FILE).exists():
        return None
    return (
        f"the runner directory {runner_dir} already holds a registered runner "
        f"({REGISTRATION_FILE}): a directory serves one runner at a time, so give each "
        "runner its own directory, or remove the registration a runner left behind"
    )


def configure_command(config: RunnerConfig, runner_dir: Path) -> list[str]:
    """The ``config.sh`` command line that registers ``config``'s runner: everything
    but the token."""
    command = [str(runner_dir / "config.sh"), "--unattended", "--ephemeral", "--disableupdate"]
    command += ["--name", config.runner_name]
    if config.labels:
        command += ["--labels", ",".join(config.labels)]
    return [*command, "--work", WORK_FOLDER, "--url", config.registration_url or ""]


def configure_environment(config: RunnerConfig, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with the registration token as ``ACTIONS_RUNNER_INPUT_TOKEN``."""
    return {**base, TOKEN_VARIABLE: config.registration_token or ""}


def register(
    config: RunnerConfig,
    runner_dir: Path,
    *,
    grace_s: float,
    stop: StopRequest,
    output: LineSink | None = None,
    timeout_s: float = CONFIGURE_TIMEOUT_S,
) -> Outcome | None:
    """Run ``config.sh`` to register ``config``'s runner: ``None`` once it is
    registered, else how the agent ends (FAILED with ``config.sh``'s exit code, or
    INTERRUPTED when told to stop)."""
    _log.info(
        "registering runner %s at %s with config.sh", config.runner_name, config.registration_url
    )
    outcome = run_once(
        configure_command(config, runner_dir),
        max_runtime_s=timeout_s,
        grace_s=grace_s,
        stop=stop,
        output=output,
        env=configure_environment(config, os.environ),
    )
    if outcome.exit_code == 0:
        return None
    if outcome.event is not AgentEvent.FAILED:
        return outcome
    if outcome.exit_code == EXIT_TIMEOUT and stop.signum is None:
        detail = f"config.sh did not register the runner within {timeout_s:g}s and was stopped"
    else:
        detail = f"config.sh could not register the runner (exit code {outcome.exit_code})"
        if outcome.detail and outcome.detail.startswith("cannot start"):
            detail = f"config.sh could not be started: {outcome.detail}"
    return Outcome(outcome.exit_code, AgentEvent.FAILED, detail)
