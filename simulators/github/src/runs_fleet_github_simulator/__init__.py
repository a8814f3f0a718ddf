"""A simulated GitHub for testing runs-fleet: this is a simulator, not GitHub.

It serves the subset of GitHub's REST API that runs-fleet calls (App JWT and
installation-token authentication, JIT runner configs, runners, jobs, workflow runs and
re-runs, rate limits, conditional requests),
sends signed ``workflow_job`` webhooks, and plays the other side of simulated runners
(``run.sh --jitconfig``) through its own ``/_simulator/`` endpoints. Tests use it
in-process::

    keys = generate_app_key()
    sim = GitHubSimulator(app_public_key=keys.public_pem, webhook_url=..., webhook_secret=...)
    sim.add_repository("octo-org/octo-repo")
    async with SimulatorServer(sim) as server:
        ...  # point a client at server.url; await sim.queue_job("octo-org/octo-repo", [...])

and demos run it as ``python -m runs_fleet_github_simulator`` (see ``--help``).
"""

from runs_fleet_github_simulator.keys import AppKeyPair, generate_app_key
from runs_fleet_github_simulator.records import Call, Delivery, Fault, Job, Runner
from runs_fleet_github_simulator.runner_dir import write_runner_dir
from runs_fleet_github_simulator.server import SimulatorServer, build_app
from runs_fleet_github_simulator.simulator import ApiError, GitHubSimulator
from runs_fleet_github_simulator.webhooks import sign

__all__ = [
    "ApiError",
    "AppKeyPair",
    "Call",
    "Delivery",
    "Fault",
    "GitHubSimulator",
    "Job",
    "Runner",
    "SimulatorServer",
    "build_app",
    "generate_app_key",
    "sign",
    "write_runner_dir",
]
