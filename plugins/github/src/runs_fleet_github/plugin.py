"""Hook implementations of the ``github`` plugin: the GitHub App client.

This module is what the ``runs_fleet`` entry point names. It imports neither httpx nor
PyJWT: they load when a deployment actually builds the client. The factory reads the
core's ``RUNS_FLEET_GITHUB_*`` settings and refuses, naming the setting, a missing App
id or a missing or unreadable private key (never printing the key), a GitHub
Enterprise Server URL without its ``/api/v3`` path, and runner-group settings that
contradict the runner scope.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from runs_fleet_core.errors import ConfigError
from runs_fleet_core.plugins import AdapterContext, AdapterRegistry, SettingsRegistry, hookimpl
from runs_fleet_core.ports import GitHub
from runs_fleet_core.settings import Kind, Setting, Settings

NAME = "github"
APP_ID = "RUNS_FLEET_GITHUB_APP_ID"
PRIVATE_KEY = "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY"
API_URL = "RUNS_FLEET_GITHUB_API_URL"
TIMEOUT = "RUNS_FLEET_GITHUB_TIMEOUT_S"
RUNNER_GROUP = "RUNS_FLEET_GITHUB_RUNNER_GROUP_ID"
RUNNER_SCOPE = "RUNS_FLEET_RUNNER_SCOPE"
RUNNER_GROUP_NAME = "RUNS_FLEET_RUNNER_GROUP"
JIT_PER_MINUTE = "RUNS_FLEET_GITHUB_JIT_PER_MINUTE"
DEFAULT_JIT_PER_MINUTE = 60.0
DEFAULT_API_URL = "https://api.github.com"

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
        help="id of the runner group JIT runners join (1 is the Default group); "
        "RUNS_FLEET_RUNNER_GROUP names one instead",
        kind=Kind.INT,
        default=1,
        minimum=1,
    ),
    Setting(
        name=RUNNER_SCOPE,
        help="where runners are registered: repo (each repository's own runners) or org "
        "(organization runners; every owner must be an organization and the App needs "
        "the organization self-hosted runners permission)",
        choices=("repo", "org"),
        default="repo",
    ),
    Setting(
        name=RUNNER_GROUP_NAME,
        help="name of the organization runner group JIT runners join, looked up once per "
        "organization (needs RUNS_FLEET_RUNNER_SCOPE=org; unset: "
        "RUNS_FLEET_GITHUB_RUNNER_GROUP_ID)",
    ),
    Setting(
        name=JIT_PER_MINUTE,
        help="most runner registrations (JIT configs, registration tokens) this process "
        "asks GitHub for per minute; more wait their turn instead of failing. The default "
        "stays under GitHub's secondary limit of 80 content-creating requests a minute; "
        "with several server replicas, divide it among them",
        kind=Kind.FLOAT,
        default=DEFAULT_JIT_PER_MINUTE,
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


def check_api_url(url: str) -> str | None:
    """Why ``url`` cannot be GitHub's API base URL, or None. GitHub Enterprise Server
    serves its REST API under ``/api/v3``; without it every call answers an HTML page
    or a 404 that would otherwise be blamed on the App."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{API_URL}={url!r} is not an http(s) URL"
    host = parts.hostname.lower()
    cloud = host == "api.github.com" or (host.startswith("api.") and host.endswith(".ghe.com"))
    if parts.scheme == "https" and not cloud and not parts.path.rstrip("/").endswith("/api/v3"):
        return (
            f"{API_URL}={url!r} looks like a GitHub Enterprise Server without its API path: "
            f"use {parts.scheme}://{parts.netloc}/api/v3"
        )
    return None


def setting_problems(settings: Settings) -> list[str]:
    """Every contradiction among the client's settings that no single setting's own
    check can see (the API URL's path, the runner scope against the runner group),
    each naming the setting to fix; ``config check`` and start-up report the same."""
    problems = []
    if (problem := check_api_url(str(settings.get(API_URL, DEFAULT_API_URL)))) is not None:
        problems.append(problem)
    scope = str(settings.get(RUNNER_SCOPE, "repo"))
    name = settings.get(RUNNER_GROUP_NAME)
    if name is not None and not str(name).strip():
        problems.append(f"{RUNNER_GROUP_NAME} is empty: name a runner group or unset it")
    elif name is not None and scope != "org":
        problems.append(
            f"{RUNNER_GROUP_NAME}={name!r} needs {RUNNER_SCOPE}=org: repository runners "
            "always join the Default group"
        )
    if name is not None and int(settings.get(RUNNER_GROUP, 1)) != 1:
        problems.append(
            f"{RUNNER_GROUP_NAME} and {RUNNER_GROUP} are both set: keep one (the name is "
            "looked up in each organization, the id is used as is)"
        )
    return problems


def _github(context: AdapterContext) -> GitHub:
    from runs_fleet_github.client import GitHubAppClient
    from runs_fleet_github.scope import GroupChoice, Scope

    app_id, key = _required(context)
    settings = context.settings
    if problems := setting_problems(settings):
        raise ConfigError(problems)
    name = settings.get(RUNNER_GROUP_NAME)
    return GitHubAppClient(
        app_id=app_id,
        private_key=key,
        api_url=str(settings.get(API_URL, DEFAULT_API_URL)),
        timeout_s=settings.get(TIMEOUT, 10.0),
        scope=Scope(str(settings.get(RUNNER_SCOPE, "repo"))),
        runner_group=GroupChoice(
            group_id=int(settings.get(RUNNER_GROUP, 1)),
            name=str(name).strip() if name is not None else None,
        ),
        jit_per_minute=float(settings.get(JIT_PER_MINUTE, DEFAULT_JIT_PER_MINUTE)),
        metrics=context.metrics,
        clock=context.clock,
    )


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    """Offer the GitHub App client as ``github``."""
    registry.add_github(NAME, _github)


@hookimpl
def runs_fleet_register_settings(registry: SettingsRegistry) -> None:
    """Declare the client's settings besides the core's ``RUNS_FLEET_GITHUB_*`` ones,
    and the check of how they fit together."""
    for setting in SETTINGS:
        registry.add(setting)
    registry.add_check(setting_problems)
