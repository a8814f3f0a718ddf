"""Where runners are registered: in each repository, or in its organization.

Repository runners (the default) serve one repository and always join the Default
runner group. Organization runners serve every repository of the organization that
their runner group allows, which is what lets an organization admin fence runs-fleet
runners into a named group; they need the App's "Self-hosted runners" organization
permission, and the repository's owner must be an organization (a user account has no
organization runners).

A runner group is named by the operator and resolved to its id through
``GET /orgs/{org}/actions/runner-groups`` once per organization; the answer is cached
for the life of the process (groups are renamed rarely, and a stale id surfaces as a
404 on the next JIT request, which drops the cache entry).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

import attrs
import httpx

from runs_fleet_core.errors import GitHubError

SCOPE_SETTING = "RUNS_FLEET_RUNNER_SCOPE"
GROUP_SETTING = "RUNS_FLEET_RUNNER_GROUP"
REGISTRATION_SETTING = "RUNS_FLEET_RUNNER_REGISTRATION"
GITHUB_API_URL = "https://api.github.com"
DEFAULT_GROUP_ID = 1
PER_PAGE = 100
Call = Callable[..., Awaitable[httpx.Response]]


class Scope(enum.Enum):
    """Where JIT runners are registered."""

    REPO = "repo"
    ORG = "org"


def split_repository(repository: str) -> tuple[str, str]:
    """``(owner, name)`` of ``owner/name``; ``GitHubError`` for anything else."""
    owner, _, name = repository.partition("/")
    if not owner or not name or "/" in name:
        raise GitHubError(f"{repository!r} is not a repository (owner/name)", retryable=False)
    return owner, name


def runners_path(scope: Scope, repository: str) -> str:
    """The ``.../actions/runners`` collection ``repository``'s runners live in."""
    owner, name = split_repository(repository)
    if scope is Scope.ORG:
        return f"/orgs/{quote(owner, safe='')}/actions/runners"
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}/actions/runners"


def no_jit_configs(scope: Scope, api_url: str, repository: str) -> GitHubError:
    """What a 404 on generate-jitconfig means for ``repository`` and what to do about
    it. A GitHub Enterprise Server without JIT runner configs answers 404 too: the way
    out there is registration tokens."""
    fallback = (
        "; if this GitHub has no just-in-time runner configs (an older GitHub Enterprise "
        f"Server), set {REGISTRATION_SETTING}=token"
    )
    owner = split_repository(repository)[0]
    if scope is Scope.ORG:
        on_ghes = api_url.rstrip("/") != GITHUB_API_URL
        return GitHubError(
            f"GitHub has no organization runners for {owner} (404): with "
            f"{SCOPE_SETTING}=org the repository's owner must be an organization, the "
            "App needs its self-hosted runners permission, and the runner group "
            f"({GROUP_SETTING} or RUNS_FLEET_GITHUB_RUNNER_GROUP_ID) must exist there"
            + (fallback if on_ghes else ""),
            retryable=False,
        )
    return GitHubError(
        f"GitHub has no JIT runner configs for {repository} (404): check the repository's "
        f"name, that the App's installation on {owner} includes it (installation settings "
        "→ Repository access) and that the App has Repository permissions → "
        "Administration: read and write" + fallback,
        retryable=False,
    )


def web_url(api_url: str) -> str:
    """The web address of the GitHub whose REST API is at ``api_url``: github.com for
    ``https://api.github.com``, ``https://HOST`` for GitHub Enterprise Server's
    ``https://HOST/api/v3``, ``https://SUBDOMAIN.ghe.com`` for ``api.SUBDOMAIN.ghe.com``,
    and ``api_url`` itself for anything else (a simulator serves both at one address)."""
    base = api_url.rstrip("/")
    parts = urlsplit(base)
    host = parts.hostname or ""
    if base == GITHUB_API_URL:
        return "https://github.com"
    if parts.path.endswith("/api/v3"):
        return base.removesuffix("/api/v3")
    if host.startswith("api.") and host.endswith(".ghe.com"):
        return base.replace("//api.", "//", 1)
    return base


def registration_url(scope: Scope, api_url: str, repository: str) -> str:
    """Where a runner of ``repository`` registers with ``config.sh --url``: the
    repository's web URL, or (organization scope) its organization's."""
    owner, name = split_repository(repository)
    site = web_url(api_url)
    if scope is Scope.ORG:
        return f"{site}/{quote(owner, safe='')}"
    return f"{site}/{quote(owner, safe='')}/{quote(name, safe='')}"


@attrs.frozen(kw_only=True)
class GroupChoice:
    """The runner group JIT runners join: by ``name`` (resolved per organization) or
    by ``group_id``."""

    group_id: int = DEFAULT_GROUP_ID
    name: str | None = None


class RunnerGroups:
    """Runner group ids by organization, looked up once and shared by all callers.

    ``call(owner, method, path, params=...)`` sends one authenticated request for
    ``owner``'s installation.
    """

    def __init__(self, choice: GroupChoice, call: Call) -> None:
        self.choice = choice
        self._call = call
        self._ids: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def group_id(self, org: str) -> int:
        """The id of the chosen group in ``org``."""
        if self.choice.name is None:
            return self.choice.group_id
        key = org.lower()
        if key in self._ids:
            return self._ids[key]
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._ids:
                self._ids[key] = await self._lookup(org, self.choice.name)
            return self._ids[key]

    def forget(self, org: str) -> None:
        """Drop the cached id of ``org`` (GitHub no longer knows it)."""
        self._ids.pop(org.lower(), None)

    async def _lookup(self, org: str, name: str) -> int:
        path = f"/orgs/{quote(org, safe='')}/actions/runner-groups"
        seen: list[str] = []
        page = 1
        while True:
            params = {"per_page": PER_PAGE, "page": page}
            response = await self._call(org, "GET", path, params=params)
            if response.status_code in (403, 404):
                raise GitHubError(
                    f"cannot list the runner groups of {org} ({response.status_code}): "
                    f"{GROUP_SETTING} needs {SCOPE_SETTING}=org, an organization, and an "
                    "App allowed to manage its self-hosted runners",
                    retryable=False,
                )
            if response.status_code != 200:
                raise GitHubError(
                    f"GitHub GET {path} answered {response.status_code}",
                    retryable=response.status_code >= 500,
                )
            groups, total = _groups(response, path)
            for group_id, group_name in groups:
                if group_name == name:
                    return group_id
                seen.append(group_name)
            if not groups or len(seen) >= total:
                break
            page += 1
        known = ", ".join(sorted(seen)) or "none"
        raise GitHubError(
            f"{org} has no runner group named {name!r} (it has: {known}): create it or "
            f"fix {GROUP_SETTING}",
            retryable=False,
        )


def _groups(response: httpx.Response, path: str) -> tuple[list[tuple[int, str]], int]:
    try:
        data: Any = response.json()
        groups = [(int(g["id"]), str(g["name"])) for g in data["runner_groups"]]
        return groups, int(data["total_count"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise GitHubError(f"GitHub GET {path}: unexpected answer", retryable=True) from None
