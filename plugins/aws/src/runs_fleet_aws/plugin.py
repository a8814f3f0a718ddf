"""Hook implementations of the ``aws`` plugin: the settings every AWS adapter reads.

Region and credentials come from boto3's usual chain (``AWS_REGION``, ``AWS_PROFILE``,
instance profile, IRSA …) and the endpoint from ``AWS_ENDPOINT_URL`` (LocalStack, moto);
runs-fleet adds only the call deadline.
"""

from __future__ import annotations

from runs_fleet_core.plugins import SettingsRegistry, hookimpl
from runs_fleet_core.settings import Kind, Setting

TIMEOUT = "RUNS_FLEET_AWS_TIMEOUT_S"

SETTINGS = (
    Setting(
        name=TIMEOUT,
        help="seconds one AWS API call may take (retries with backoff come on top, "
        "within twice this)",
        kind=Kind.FLOAT,
        default=30.0,
        minimum=1,
    ),
)


@hookimpl
def runs_fleet_register_settings(registry: SettingsRegistry) -> None:
    """Declare the settings shared by the AWS adapters."""
    for setting in SETTINGS:
        registry.add(setting)
