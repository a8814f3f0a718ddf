"""``python -m runs_fleet_cli`` runs the CLI."""

from runs_fleet_cli.app import run

run()
