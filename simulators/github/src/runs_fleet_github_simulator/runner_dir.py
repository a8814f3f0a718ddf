"""Writes a simulated runner directory: what runs-fleet starts instead of GitHub's
actions runner when it talks to the simulator.

The directory holds ``run.sh`` (the entry point runs-fleet calls as
``run.sh --jitconfig <encoded>``, or without arguments once ``config.sh`` registered the
runner with a registration token), ``config.sh`` and ``sim_runner.py`` (a
standard-library-only copy of :mod:`runs_fleet_github_simulator.runner_agent`), run by
the Python that wrote it.
"""

from __future__ import annotations

import shlex
import sys
from importlib import resources
from pathlib import Path

RUN_SH = """#!/bin/sh
# A simulated GitHub Actions runner written by runs-fleet-github-simulator (not GitHub's).
# Usage: run.sh --jitconfig <encoded JIT config from the simulator>
#        run.sh (after config.sh)
exec {python} "$(dirname "$0")/sim_runner.py" --root "$(dirname "$0")" \\
    --job-seconds {job_seconds} --idle-timeout {idle_timeout} "$@"
"""

CONFIG_SH = """#!/bin/sh
# A simulated GitHub Actions runner written by runs-fleet-github-simulator (not GitHub's).
# Usage: config.sh --url URL --name NAME [--labels A,B] --ephemeral
#        (the registration token in ACTIONS_RUNNER_INPUT_TOKEN)
exec {python} "$(dirname "$0")/sim_runner.py" configure --root "$(dirname "$0")" "$@"
"""


def write_runner_dir(
    directory: str | Path,
    *,
    job_seconds: float = 0.2,
    idle_timeout_s: float = 600.0,
    python: str = sys.executable,
) -> Path:
    """Write ``run.sh``, ``config.sh`` and ``sim_runner.py`` into ``directory``
    (created if needed).

    ``job_seconds``: how long a job "runs" unless the job presets its own duration.
    ``idle_timeout_s``: how long the runner waits for a job before giving up (exit 3).
    Returns the path of ``run.sh``.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    agent = resources.files("runs_fleet_github_simulator").joinpath("runner_agent.py")
    (target / "sim_runner.py").write_text(agent.read_text())
    run_sh = target / "run.sh"
    run_sh.write_text(
        RUN_SH.format(
            python=shlex.quote(python),
            job_seconds=float(job_seconds),
            idle_timeout=float(idle_timeout_s),
        )
    )
    run_sh.chmod(0o755)
    config_sh = target / "config.sh"
    config_sh.write_text(CONFIG_SH.format(python=shlex.quote(python)))
    config_sh.chmod(0o755)
    return run_sh
