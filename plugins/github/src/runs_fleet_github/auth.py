"""Authenticating as a GitHub App: the App's JWT, the installation that owns a
repository, and that installation's access token, each fetched once and shared.

Installation tokens live an hour and the core API budget is 5,000 calls an hour per
installation, so a token is reused until five minutes before it expires. All tasks of
a client share one cache; when many ask at once for a missing or stale token, one asks
GitHub and the others wait for its answer (one lock per owner).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import attrs
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from runs_fleet_core.errors import GitHubError
from runs_fleet_core.ports import Clock
from runs_fleet_github.transport import Api, github_message

log = logging.getLogger("runs_fleet_github")

JWT_BACKDATE_S = 60
JWT_LIFETIME_S = 540
REFRESH_MARGIN = timedelta(minutes=5)


@attrs.frozen(repr=False)
class _Token:
    value: str
    expires_at: datetime

    def __repr__(self) -> str:
        return f"_Token(value='***', expires_at={self.expires_at.isoformat()})"


class AppAuth:
    """Credentials of one GitHub App (``app_id`` and its RSA ``key``) at ``api``."""

    def __init__(self, *, app_id: int, key: RSAPrivateKey, api: Api, clock: Clock) -> None:
        self.app_id = app_id
        self._key = key
        self._api = api
        self._clock = clock
        self._installations: dict[str, int] = {}
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"AppAuth(app_id={self.app_id}, key='***')"

    def app_jwt(self) -> str:
        """A fresh App JWT: RS256, issued a minute ago, valid nine minutes from now."""
        now = int(self._clock.now().timestamp())
        claims = {"iat": now - JWT_BACKDATE_S, "exp": now + JWT_LIFETIME_S, "iss": str(self.app_id)}
        return jwt.encode(claims, self._key, algorithm="RS256")

    async def token(self, owner: str) -> str:
        """A valid installation token for the account ``owner`` (cached, shared)."""
        key = owner.lower()
        cached = self._tokens.get(key)
        if cached is not None and self._fresh(cached):
            return cached.value
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._tokens.get(key)
            if cached is None or not self._fresh(cached):
                cached = await self._new_token(owner)
                self._tokens[key] = cached
            return cached.value

    def forget_token(self, owner: str, value: str) -> None:
        """Drop ``value`` from the cache (GitHub refused it: revoked or expired)."""
        cached = self._tokens.get(owner.lower())
        if cached is not None and cached.value == value:
            del self._tokens[owner.lower()]

    def _fresh(self, token: _Token) -> bool:
        return self._clock.now() < token.expires_at - REFRESH_MARGIN

    async def _new_token(self, owner: str) -> _Token:
        installation_id = await self._installation_id(owner)
        path = f"/app/installations/{installation_id}/access_tokens"
        response = await self._api.request("POST", path, credential=self.app_jwt())
        if response.status_code == 404:
            self._installations.pop(owner.lower(), None)
            raise GitHubError(
                f"GitHub App {self.app_id}: installation {installation_id} on {owner} is "
                "gone (uninstalled?); it will be looked up again",
                retryable=True,
            )
        said = github_message(response)
        if response.status_code == 403 and "rate limit" not in said.lower():
            raise GitHubError(
                f"GitHub App {self.app_id} may not have a token of its installation on "
                f"{owner} ({said}): the installation is suspended; unsuspend it in "
                f"{owner}'s settings → GitHub Apps → the App → Configure",
                retryable=False,
            )
        self._check(response, path, expected=201)
        try:
            data = response.json()
            value = str(data["token"])
            expires_at = datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00"))
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
        except (ValueError, KeyError, TypeError):
            raise GitHubError(f"GitHub POST {path}: unexpected answer", retryable=True) from None
        log.info("GitHub App %s: new token for %s until %s", self.app_id, owner, expires_at)
        return _Token(value, expires_at)

    async def _installation_id(self, owner: str) -> int:
        key = owner.lower()
        if key in self._installations:
            return self._installations[key]
        for kind in ("orgs", "users"):
            path = f"/{kind}/{quote(owner, safe='')}/installation"
            response = await self._api.request("GET", path, credential=self.app_jwt())
            if response.status_code == 404:
                continue
            self._check(response, path, expected=200)
            try:
                found = int(response.json()["id"])
            except (ValueError, KeyError, TypeError):
                raise GitHubError(f"GitHub GET {path}: unexpected answer", retryable=True) from None
            self._installations[key] = found
            return found
        raise GitHubError(
            f"GitHub App {self.app_id} is not installed on {owner}: install it on the "
            f"organization or user that owns the repository (the App's settings → Install "
            f"App → {owner}), or check that RUNS_FLEET_GITHUB_APP_ID names the App installed "
            "there",
            retryable=False,
        )

    def _check(self, response: httpx.Response, path: str, *, expected: int) -> None:
        if response.status_code == expected:
            return
        if response.status_code == 401:
            raise GitHubError(
                f"GitHub refused the App's JWT on {path} ({github_message(response)}): check "
                "RUNS_FLEET_GITHUB_APP_ID, RUNS_FLEET_GITHUB_APP_PRIVATE_KEY (or the file "
                "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE names) and this host's clock",
                retryable=False,
            )
        raise GitHubError(
            f"GitHub {path} answered {github_message(response)}",
            retryable=False,
        )
