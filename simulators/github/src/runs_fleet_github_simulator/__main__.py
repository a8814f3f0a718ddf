"""``python -m runs_fleet_github_simulator``: see :mod:`runs_fleet_github_simulator.cli`."""

from runs_fleet_github_simulator.cli import run

run()
