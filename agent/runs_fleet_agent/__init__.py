"""The runs-fleet agent: the process that turns one runner config into one job run.

It runs next to the GitHub Actions runner (a local process, an EC2 instance, a pod),
reads the config of its one job, runs the runner once, tells the orchestrator when it
started and how it ended, and exits. It depends only on the standard library and
``runs_fleet_core`` so that it installs anywhere a runner can run.

Run it as ``python -m runs_fleet_agent --config-file PATH`` (see :func:`main`).
"""

from runs_fleet_agent.cli import main

__all__ = ["main"]
