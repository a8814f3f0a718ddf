"""JSON shapes the simulated GitHub shares between webhooks and REST answers: accounts,
repositories, workflow jobs, and the ``workflow_job`` webhook payload itself.

Their keys are those of GitHub's own examples (octokit/webhooks and the REST API
description), so that what runs-fleet parses in tests is what it parses in production;
the tests validate every payload against GitHub's published schemas.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

from runs_fleet_github_simulator.records import ORGANIZATION, Account, Installation, Job, Repository

WEB_URL = "https://github.com"
"""Where ``html_url`` links point (the simulator serves no web pages)."""

JSON = dict[str, Any]


def timestamp(seconds: float | None) -> str | None:
    """``seconds`` since the epoch as GitHub writes times (``2024-05-01T12:00:00Z``)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_id(kind: str, number: int) -> str:
    """A GraphQL-style node id: opaque, stable for one object."""
    return base64.b64encode(f"{kind}{number}".encode()).decode()


def head_sha(job_id: int) -> str:
    """A stable, fake commit sha for a job's run."""
    return hashlib.sha1(str(job_id).encode(), usedforsecurity=False).hexdigest()


def account_json(account: Account, api_url: str) -> JSON:
    """A user or organization as ``simple-user`` (REST) / ``user`` (webhooks)."""
    user = f"{api_url}/users/{account.login}"
    kind = "orgs" if account.type == ORGANIZATION else "users"
    return {
        "login": account.login,
        "id": account.id,
        "node_id": node_id(account.type, account.id),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{account.id}?v=4",
        "gravatar_id": "",
        "url": f"{api_url}/{kind}/{account.login}",
        "html_url": f"{WEB_URL}/{account.login}",
        "followers_url": f"{user}/followers",
        "following_url": f"{user}/following{{/other_user}}",
        "gists_url": f"{user}/gists{{/gist_id}}",
        "starred_url": f"{user}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{user}/subscriptions",
        "organizations_url": f"{user}/orgs",
        "repos_url": f"{api_url}/{kind}/{account.login}/repos",
        "events_url": f"{api_url}/{kind}/{account.login}/events{{/privacy}}",
        "received_events_url": f"{user}/received_events",
        "type": account.type,
        "site_admin": False,
    }


def organization_json(account: Account, api_url: str) -> JSON:
    """An organization as webhooks show it (the ``organization`` key)."""
    org = f"{api_url}/orgs/{account.login}"
    return {
        "login": account.login,
        "id": account.id,
        "node_id": node_id(account.type, account.id),
        "url": org,
        "repos_url": f"{org}/repos",
        "events_url": f"{org}/events",
        "hooks_url": f"{org}/hooks",
        "issues_url": f"{org}/issues",
        "members_url": f"{org}/members{{/member}}",
        "public_members_url": f"{org}/public_members{{/member}}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{account.id}?v=4",
        "description": "",
    }


_REPO_LINKS = {
    "forks_url": "/forks",
    "keys_url": "/keys{/key_id}",
    "collaborators_url": "/collaborators{/collaborator}",
    "teams_url": "/teams",
    "hooks_url": "/hooks",
    "issue_events_url": "/issues/events{/number}",
    "events_url": "/events",
    "assignees_url": "/assignees{/user}",
    "branches_url": "/branches{/branch}",
    "tags_url": "/tags",
    "blobs_url": "/git/blobs{/sha}",
    "git_tags_url": "/git/tags{/sha}",
    "git_refs_url": "/git/refs{/sha}",
    "trees_url": "/git/trees{/sha}",
    "statuses_url": "/statuses/{sha}",
    "languages_url": "/languages",
    "stargazers_url": "/stargazers",
    "contributors_url": "/contributors",
    "subscribers_url": "/subscribers",
    "subscription_url": "/subscription",
    "commits_url": "/commits{/sha}",
    "git_commits_url": "/git/commits{/sha}",
    "comments_url": "/comments{/number}",
    "issue_comment_url": "/issues/comments{/number}",
    "contents_url": "/contents/{+path}",
    "compare_url": "/compare/{base}...{head}",
    "merges_url": "/merges",
    "archive_url": "/{archive_format}{/ref}",
    "downloads_url": "/downloads",
    "issues_url": "/issues{/number}",
    "pulls_url": "/pulls{/number}",
    "milestones_url": "/milestones{/number}",
    "notifications_url": "/notifications{?since,all,participating}",
    "labels_url": "/labels{/name}",
    "releases_url": "/releases{/id}",
    "deployments_url": "/deployments",
}


_REPO_STATIC: JSON = {
    "homepage": None,
    "size": 0,
    "stargazers_count": 0,
    "watchers_count": 0,
    "language": None,
    "has_issues": True,
    "has_projects": True,
    "has_downloads": True,
    "has_wiki": True,
    "has_pages": False,
    "forks_count": 0,
    "mirror_url": None,
    "archived": False,
    "disabled": False,
    "open_issues_count": 0,
    "license": None,
    "forks": 0,
    "open_issues": 0,
    "watchers": 0,
    "default_branch": "main",
    "is_template": False,
    "topics": [],
    "web_commit_signoff_required": False,
    "custom_properties": {},
}
"""Repository fields the simulator never varies (no stars, no issues, no license)."""


def repository_json(repo: Repository, api_url: str) -> JSON:
    """A repository as ``workflow_job`` webhooks show it."""
    url = f"{api_url}/repos/{repo.full_name}"
    html = f"{WEB_URL}/{repo.full_name}"
    created = timestamp(repo.created_at)
    body: JSON = {
        "id": repo.repo_id,
        "node_id": node_id("Repository", repo.repo_id),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": account_json(repo.owner, api_url),
        "html_url": html,
        "description": None,
        "fork": False,
        "url": url,
    }
    body |= {key: url + suffix for key, suffix in _REPO_LINKS.items()}
    body |= {
        "created_at": created,
        "updated_at": created,
        "pushed_at": created,
        "git_url": f"git://github.com/{repo.full_name}.git",
        "ssh_url": f"git@github.com:{repo.full_name}.git",
        "clone_url": f"{html}.git",
        "svn_url": html,
    }
    body |= _REPO_STATIC
    body["visibility"] = "private" if repo.private else "public"
    return body


def _steps(job: Job) -> list[JSON]:
    """The job's steps: none while queued, "Set up job" running, then both finished."""
    if job.status == "queued" or job.started_at is None:
        return []
    setup = {
        "name": "Set up job",
        "status": "in_progress",
        "conclusion": None,
        "number": 1,
        "started_at": timestamp(job.started_at),
        "completed_at": None,
    }
    if job.status != "completed":
        return [setup]
    done = timestamp(job.completed_at)
    setup |= {"status": "completed", "conclusion": "success", "completed_at": done}
    work = {
        "name": "Run simulated job",
        "status": "completed",
        "conclusion": job.conclusion,
        "number": 2,
        "started_at": done,
        "completed_at": done,
    }
    return [setup, work]


def workflow_job_json(job: Job, api_url: str) -> JSON:
    """A job as ``GET .../actions/jobs/{id}`` and ``workflow_job`` webhooks show it."""
    repo_url = f"{api_url}/repos/{job.repository}"
    html = f"{WEB_URL}/{job.repository}"
    return {
        "id": job.job_id,
        "run_id": job.run_id,
        "run_url": f"{repo_url}/actions/runs/{job.run_id}",
        "run_attempt": job.run_attempt,
        "node_id": node_id("CheckRun", job.job_id),
        "head_sha": job.head_sha,
        "head_branch": job.head_branch,
        "url": f"{repo_url}/actions/jobs/{job.job_id}",
        "html_url": f"{html}/actions/runs/{job.run_id}/job/{job.job_id}",
        "status": job.status,
        "conclusion": job.conclusion,
        "started_at": timestamp(job.started_at or job.created_at),
        "created_at": timestamp(job.created_at),
        "completed_at": timestamp(job.completed_at),
        "name": job.name,
        "steps": _steps(job),
        "check_run_url": f"{repo_url}/check-runs/{job.job_id}",
        "labels": list(job.labels),
        "runner_id": job.runner_id,
        "runner_name": job.runner_name,
        "runner_group_id": job.runner_group_id,
        "runner_group_name": job.runner_group_name,
        "workflow_name": job.workflow_name,
    }


def workflow_job_webhook(
    action: str,
    job: Job,
    repo: Repository,
    installation: Installation | None,
    sender: Account,
    api_url: str,
) -> JSON:
    """The body of a ``workflow_job`` webhook: keys as in GitHub's ``queued`` example,
    plus ``organization`` when an organization owns the repository."""
    payload: JSON = {
        "action": action,
        "workflow_job": workflow_job_json(job, api_url),
        "repository": repository_json(repo, api_url),
        "sender": account_json(sender, api_url),
    }
    if repo.owner.type == ORGANIZATION:
        payload["organization"] = organization_json(repo.owner, api_url)
    if installation is not None:
        payload["installation"] = {
            "id": installation.installation_id,
            "node_id": node_id("Installation", installation.installation_id),
        }
    return payload
