"""Shared AWS plumbing of the runs-fleet AWS plugins (``runs_fleet_sqs``, ``runs_fleet_ec2``)."""
