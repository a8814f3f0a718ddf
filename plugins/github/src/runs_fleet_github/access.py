"""Whether the GitHub App client is set up right, in words that name what to fix.

A wrong App id, a key of another App, an App installed nowhere or not on a repository's
owner, a repository outside the installation, a suspended installation, a missing
permission, or a GitHub Enterprise Server URL without ``/api/v3`` all look alike from
afar: every call fails. This asks GitHub the few questions that tell them apart, the App
itself first (``GET /app`` with the App's JWT, which also counts its installations),
then each repository (its installation and a token of it, and its runners, which need
the runner permission), and answers with one problem per cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from runs_fleet_core.errors import GitHubError
from runs_fleet_github.scope import SCOPE_SETTING, Scope, runners_path, split_repository
from runs_fleet_github.transport import github_message

if TYPE_CHECKING:
    from runs_fleet_github.client import GitHubAppClient

APP_ID = "RUNS_FLEET_GITHUB_APP_ID"
PRIVATE_KEY = "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY"
API_URL = "RUNS_FLEET_GITHUB_API_URL"


async def access_problems(client: GitHubAppClient, repositories: Sequence[str]) -> list[str]:
    """The problems :class:`~runs_fleet_core.ports.github.GitHubAccessCheck` reports."""
    problem = await _app_problem(client)
    if problem is not None:
        return [problem]
    problems = []
    for repository in repositories:
        problem = await _repository_problem(client, repository)
        if problem is not None:
            problems.append(problem)
    return problems


async def _app_problem(client: GitHubAppClient) -> str | None:
    api, auth = client.api, client.auth
    try:
        response = await api.request("GET", "/app", credential=auth.app_jwt())
    except GitHubError as exc:
        return f"cannot reach GitHub at {API_URL}={api.base_url}: {exc}"
    try:
        body = response.json()
    except ValueError:
        body = None
    github_spoke = isinstance(body, dict) and "message" in body
    if response.status_code in (401, 403) or (response.status_code == 404 and github_spoke):
        return (
            f"GitHub refused the credentials of App {auth.app_id} "
            f"({github_message(response)}): check {APP_ID} (the App's numeric id, on its "
            f"settings page) and {PRIVATE_KEY} or {PRIVATE_KEY}_FILE (a private key of that "
            "same App that was not deleted), and that this host's clock is right"
        )
    if response.status_code != 200 or not isinstance(body, dict) or not body.get("id"):
        return (
            f"{API_URL}={api.base_url} does not answer like GitHub's REST API "
            f"({response.status_code} to GET /app): use https://api.github.com, or "
            "https://HOST/api/v3 for GitHub Enterprise Server"
        )
    if int(body["id"]) != auth.app_id:
        return f"GitHub says this key belongs to App {body['id']}, not {APP_ID}={auth.app_id}"
    if body.get("installations_count") == 0:
        return (
            f"GitHub App {auth.app_id} is not installed on any organization or user: install "
            "it on the owners of the repositories runs-fleet serves (the App's settings → "
            f"Install App), or check that {APP_ID} names the App that is installed"
        )
    return None


async def _repository_problem(client: GitHubAppClient, repository: str) -> str | None:
    try:
        owner = split_repository(repository)[0]
        await client.auth.token(owner)  # the installation on the owner, and its token
        path = runners_path(client.scope, repository)
        response = await client.owner_call(owner, "GET", path, params={"per_page": 1})
    except GitHubError as exc:
        return f"{repository}: {exc}"
    status = response.status_code
    if status == 200:
        return None
    said = github_message(response)
    if status == 404 and client.scope is Scope.ORG:
        return (
            f"{repository}: GitHub has no organization runners for {owner} ({said}): with "
            f"{SCOPE_SETTING}=org the owner must be an organization"
        )
    if status == 404:
        return (
            f"{repository}: GitHub does not show this repository to the App ({said}): check "
            f"the name, and that the App's installation on {owner} includes it (installation "
            "settings → Repository access)"
        )
    if status == 403:
        needed = (
            "Organization permissions → Self-hosted runners: read and write"
            if client.scope is Scope.ORG
            else "Repository permissions → Administration: read and write"
        )
        return (
            f"{repository}: the App may not manage its runners ({said}): give the App "
            f"{needed}, then accept the new permissions on the installation"
        )
    return f"{repository}: GitHub answered {said} when listing its runners"
