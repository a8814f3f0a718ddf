"""Bodies of the simulated GitHub's REST answers, shaped as GitHub's REST API
description says (``integration``, ``installation``, ``runner``, tokens, rate limits,
errors); the tests validate each against the operation's response schema.
"""

from __future__ import annotations

from runs_fleet_github_simulator.payloads import JSON, WEB_URL, account_json, node_id, timestamp
from runs_fleet_github_simulator.records import App, Installation, Runner

DOCS_URL = "https://docs.github.com/rest"
PERMISSIONS = {
    "actions": "read",
    "administration": "write",
    "metadata": "read",
    "organization_self_hosted_runners": "write",
}
"""What the simulated App may do: the permissions runs-fleet's App needs."""
EVENTS = ["workflow_job"]
READ_ONLY_LABELS = ("self-hosted", "Linux", "X64")
"""Labels GitHub gives every self-hosted Linux x64 runner besides the custom ones."""


def error_json(status: int, message: str) -> JSON:
    """GitHub's ``basic-error`` body."""
    return {"message": message, "documentation_url": DOCS_URL, "status": str(status)}


def validation_error_json(message: str, errors: list[str]) -> JSON:
    """GitHub's ``validation-error-simple`` body (a 422)."""
    return {"message": message, "documentation_url": DOCS_URL, "errors": errors}


def integration_json(app: App, api_url: str, installations: int) -> JSON:
    """``GET /app``: the authenticated App."""
    return {
        "id": app.app_id,
        "slug": app.slug,
        "node_id": node_id("Integration", app.app_id),
        "client_id": app.client_id,
        "owner": account_json(app.owner, api_url),
        "name": app.name,
        "description": "A GitHub App simulated for runs-fleet tests",
        "external_url": "https://example.com/runs-fleet",
        "html_url": f"{WEB_URL}/apps/{app.slug}",
        "created_at": timestamp(app.created_at),
        "updated_at": timestamp(app.created_at),
        "permissions": dict(PERMISSIONS),
        "events": list(EVENTS),
        "installations_count": installations,
    }


def installation_json(installation: Installation, app: App, api_url: str) -> JSON:
    """An ``installation``: the App on one account, all its repositories."""
    number = installation.installation_id
    account = installation.account
    settings = "organizations/" + account.login if account.type != "User" else "users"
    created = timestamp(installation.created_at)
    return {
        "id": number,
        "account": account_json(account, api_url),
        "repository_selection": "all",
        "access_tokens_url": f"{api_url}/app/installations/{number}/access_tokens",
        "repositories_url": f"{api_url}/installation/repositories",
        "html_url": f"{WEB_URL}/{settings}/settings/installations/{number}",
        "app_id": app.app_id,
        "client_id": app.client_id,
        "target_id": account.id,
        "target_type": account.type,
        "permissions": dict(PERMISSIONS),
        "events": list(EVENTS),
        "created_at": created,
        "updated_at": created,
        "single_file_name": None,
        "has_multiple_single_files": False,
        "single_file_paths": [],
        "app_slug": app.slug,
        "suspended_by": None,
        "suspended_at": None,
    }


def installation_token_json(token: str, expires_at: float) -> JSON:
    """``POST /app/installations/{id}/access_tokens``: a token for all repositories."""
    return {
        "token": token,
        "expires_at": timestamp(expires_at),
        "permissions": dict(PERMISSIONS),
        "repository_selection": "all",
    }


def registration_token_json(token: str, expires_at: float) -> JSON:
    """``POST .../actions/runners/registration-token``."""
    return {"token": token, "expires_at": timestamp(expires_at)}


def runner_labels(runner: Runner) -> list[str]:
    """Every label of ``runner``: GitHub's read-only ones, then its custom ones."""
    custom = [label for label in runner.labels if label not in READ_ONLY_LABELS]
    return [*READ_ONLY_LABELS, *custom]


def runner_json(runner: Runner) -> JSON:
    """A ``runner`` (self-hosted runner) as the REST API lists it."""
    labels = [
        {
            "id": index + 1,
            "name": name,
            "type": "read-only" if name in READ_ONLY_LABELS else "custom",
        }
        for index, name in enumerate(runner_labels(runner))
    ]
    connected = runner.status == "online" or runner.busy
    return {
        "id": runner.runner_id,
        "runner_group_id": runner.runner_group_id,
        "name": runner.name,
        "os": "Linux" if connected else "unknown",
        "status": runner.status,
        "busy": runner.busy,
        "labels": labels,
        "ephemeral": True,
        "version": "2.330.0" if connected else None,
    }


def rate_limit_json(limit: int, used: int, reset: int) -> JSON:
    """``GET /rate_limit``: the core budget of the caller, generous fixed others."""
    core = {"limit": limit, "used": used, "remaining": max(limit - used, 0), "reset": reset}

    def other(size: int) -> JSON:
        return {"limit": size, "used": 0, "remaining": size, "reset": reset}

    return {
        "resources": {
            "core": core,
            "search": other(30),
            "graphql": other(5000),
            "actions_runner_registration": other(10000),
        },
        "rate": core,
    }
