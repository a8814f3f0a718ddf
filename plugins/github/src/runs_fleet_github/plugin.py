"""Hook implementations of the ``github`` plugin: the GitHub App client.

This module is what the ``runs_fleet`` entry point names. It imports neither httpx nor
PyJWT: they load when a deployment actually builds the client. The factory reads the
core's ``RUNS_FLEET_GITHUB_*`` settings and refuses, naming the setting, a missing App
id or a missing or unreadable private key (never printing the key).
"""

from __future__ import annotations

from runs_fleet_core.errors import ConfigError
from runs_fleet_core.plugins import AdapterContext, AdapterRegistry, SettingsRegistry, hookimpl
from runs_fleet_core.ports import GitHub
from runs_fleet_core.settings import Kind, Setting

NAME = "github"
APP_ID = "RUNS_FLEET_GITHUB_APP_ID"
PRIVATE_KEY = "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY"
API_URL = "RUNS_FLEET_GITHUB_API_URL"
TIMEOUT = "RUNS_FLEET_GITHUB_TIMEOUT_S"
RUNNER_GROUP = "RUNS_FLEET_GITHUB_RUNNER_GROUP_ID"

SETTINGS = (
    Setting(
        name=TIMEOUT,
        help="seconds each GitHub API call may take before it is retried",
        kind=Kind.FLOAT,
        default=10.0,
        minimum=0.1,
    ),
    Setting(
        name=RUNNER_GROUP,
        help="id of the runner group JIT runners join (1 is the Default group)",
        kind=Kind.INT,
        default=1,
        minimum=1,
    ),
)


def _required(context: AdapterContext) -> tuple[int, str]:
    """The App id and private key text; ``ConfigError`` listing what is missing."""
    settings = context.settings
    app_id, key = settings.get(APP_ID), settings.get(PRIVATE_KEY)
    problems = []
    if not app_id:
        problems.append(
            f"{APP_ID} is not set: the github client authenticates as a GitHub App; "
            "set it to the App's numeric id (App settings → About → App ID)"
        )
    if not key:
        problems.append(
            f"{PRIVATE_KEY} is not set: the github client signs its requests with the "
            f"GitHub App's private key; set it (PEM, or base64 of it) or name a file "
            f"holding it with {PRIVATE_KEY}_FILE"
        )
    if problems:
        raise ConfigError(problems)
    return int(app_id), str(key)


def _github(context: AdapterContext) -> GitHub:
    from runs_fleet_github.client import DEFAULT_API_URL, GitHubAppClient

    app_id, key = _required(context)
    settings = context.settings
    return GitHubAppClient(
        app_id=app_id,
        private_key=key,
        api_url=settings.get(API_URL, DEFAULT_API_URL),
        timeout_s=settings.get(TIMEOUT, 10.0),
        runner_group_id=settings.get(RUNNER_GROUP, 1),
        clock=context.clock,
    )


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    """Offer the GitHub App client as ``github``."""
    registry.add_github(NAME, _github)


@hookimpl
def runs_fleet_register_settings(registry: SettingsRegistry) -> None:
    """Declare the client's settings besides the core's ``RUNS_FLEET_GITHUB_*`` ones."""
    for setting in SETTINGS:
        registry.add(setting)
