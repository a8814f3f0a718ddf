"""A plugin whose SDK is not installed."""

import runs_fleet_no_such_sdk  # noqa: F401
