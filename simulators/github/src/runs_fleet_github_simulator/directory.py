"""Who is who in the simulated GitHub: Apps, accounts, installations, repositories,
installation tokens and rate-limit budgets.

This is the identity half of :class:`~runs_fleet_github_simulator.GitHubSimulator`;
the Actions half (runners, jobs, webhooks) builds on it.
"""

from __future__ import annotations

import itertools
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from runs_fleet_github_simulator.records import (
    ORGANIZATION,
    USER,
    Account,
    App,
    Installation,
    Repository,
    Token,
)

RATE_WINDOW_S = 3600


def load_public_key(pem: str | bytes) -> RSAPublicKey:
    """An App's RSA public key from PEM (``ValueError`` if it is not one)."""
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("a GitHub App key must be an RSA key")
    return key


@dataclass
class RateBudget:
    """The core rate limit of one caller (an installation, or an App's JWT)."""

    limit: int
    used: int
    reset: int

    @property
    def remaining(self) -> int:
        """Calls left in this window."""
        return max(self.limit - self.used, 0)

    def headers(self) -> dict[str, str]:
        """GitHub's ``X-RateLimit-*`` headers for this budget."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
            "X-RateLimit-Used": str(self.used),
            "X-RateLimit-Resource": "core",
        }


class Directory:
    """Apps, accounts, installations, repositories and tokens of the simulated GitHub.

    ``clock`` returns seconds since the epoch; inject one to move time in tests.
    """

    def __init__(
        self,
        *,
        token_ttl_s: float = 3600.0,
        rate_limit: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.token_ttl_s = token_ttl_s
        self.rate_limit = rate_limit
        self.apps: dict[int, App] = {}
        self.accounts: dict[str, Account] = {}
        self.installations: dict[int, Installation] = {}
        self.repositories: dict[str, Repository] = {}
        self.tokens: dict[str, Token] = {}
        self.registration_tokens: dict[str, Token] = {}
        self._budgets: dict[str, RateBudget] = {}
        self._ids = itertools.count(1001)

    def next_id(self) -> int:
        """A fresh id (unique across every kind of object)."""
        return next(self._ids)

    def account(self, login: str, account_type: str = ORGANIZATION) -> Account:
        """The account ``login`` (logins are case-insensitive), created if new."""
        if account_type not in (ORGANIZATION, USER):
            raise ValueError(f"account type must be {ORGANIZATION} or {USER}")
        found = self.accounts.get(login.lower())
        if found is None:
            found = Account(login=login, id=self.next_id(), type=account_type)
            self.accounts[login.lower()] = found
        return found

    def add_app(
        self, app_id: int, public_key_pem: str | bytes, *, slug: str = "runs-fleet-sim"
    ) -> App:
        """Register a GitHub App whose JWTs are verified with ``public_key_pem``."""
        owner = self.account(f"{slug}-owner")
        app = App(
            app_id=app_id,
            slug=slug,
            name=slug.replace("-", " ").title(),
            client_id=f"Iv1.{secrets.token_hex(8)}",
            public_key=load_public_key(public_key_pem),
            owner=owner,
            created_at=self.clock(),
        )
        self.apps[app_id] = app
        return app

    def install(
        self, owner: str, *, owner_type: str = ORGANIZATION, app_id: int | None = None
    ) -> Installation:
        """Install an App (the first one by default) on ``owner``; idempotent."""
        app = self.apps[app_id] if app_id is not None else next(iter(self.apps.values()))
        account = self.account(owner, owner_type)
        found = self.installation_for(account.login, app.app_id)
        if found is not None:
            return found
        installation = Installation(
            installation_id=self.next_id(),
            app_id=app.app_id,
            account=account,
            created_at=self.clock(),
        )
        self.installations[installation.installation_id] = installation
        return installation

    def installation_for(self, owner: str, app_id: int) -> Installation | None:
        """The installation of App ``app_id`` on ``owner``, if any."""
        for installation in self.installations.values():
            if installation.app_id == app_id and installation.account.login.lower() == (
                owner.lower()
            ):
                return installation
        return None

    def add_repository(
        self,
        full_name: str,
        *,
        owner_type: str = ORGANIZATION,
        installed: bool = True,
        private: bool = False,
    ) -> Repository:
        """Create ``owner/name`` (idempotent) and, unless ``installed=False``, install
        the App on its owner."""
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"repository must be owner/name, got {full_name!r}")
        repo = self.repositories.get(full_name.lower())
        if repo is None:
            repo = Repository(
                repo_id=self.next_id(),
                owner=self.account(owner, owner_type),
                name=name,
                created_at=self.clock(),
                private=private,
            )
            self.repositories[full_name.lower()] = repo
        if installed and self.apps:
            self.install(repo.owner.login, owner_type=repo.owner.type)
        return repo

    def repository(self, full_name: str) -> Repository | None:
        """The repository ``owner/name`` (case-insensitive), if it exists."""
        return self.repositories.get(full_name.lower())

    def issue_token(self, installation_id: int) -> Token:
        """A new installation access token, valid for ``token_ttl_s``."""
        value = "ghs_" + "".join(
            secrets.choice(string.ascii_letters + string.digits) for _ in range(36)
        )
        token = Token(value, installation_id, self.clock() + self.token_ttl_s)
        self.tokens[value] = token
        return token

    def issue_registration_token(self, installation_id: int, scope: str = "") -> Token:
        """A runner registration token for ``scope`` (a repository ``owner/name`` or an
        organization), valid for one hour."""
        alphabet = string.ascii_uppercase + string.digits
        value = "".join(secrets.choice(alphabet) for _ in range(29))
        token = Token(value, installation_id, self.clock() + 3600, scope)
        self.registration_tokens[value] = token
        return token

    def installation_of_token(self, value: str) -> Installation | None:
        """The installation a live token belongs to (None: unknown or expired)."""
        token = self.tokens.get(value)
        if token is None or token.expires_at <= self.clock():
            return None
        return self.installations.get(token.installation_id)

    def budget(self, caller: str) -> RateBudget:
        """The caller's current rate budget (a fresh one each hour)."""
        now = int(self.clock())
        found = self._budgets.get(caller)
        if found is None or found.reset <= now:
            found = RateBudget(limit=self.rate_limit, used=0, reset=now + RATE_WINDOW_S)
            self._budgets[caller] = found
        return found
