"""What the simulated GitHub remembers: apps, accounts, installations, repositories,
tokens, runners, jobs, webhook deliveries and the REST calls it served.

Plain dataclasses that only :class:`~runs_fleet_github_simulator.GitHubSimulator`
mutates; tests read them to assert on the simulator's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

ORGANIZATION = "Organization"
USER = "User"


@dataclass
class Account:
    """A GitHub user or organization (``type`` is ``Organization`` or ``User``)."""

    login: str
    id: int
    type: str = ORGANIZATION


@dataclass
class App:
    """A GitHub App: JWTs it signs are checked with ``public_key``."""

    app_id: int
    slug: str
    name: str
    client_id: str
    public_key: RSAPublicKey
    owner: Account
    created_at: float


@dataclass
class Installation:
    """One App installed on one account (all its repositories)."""

    installation_id: int
    app_id: int
    account: Account
    created_at: float


@dataclass
class Repository:
    """A repository of ``owner``; ``full_name`` is ``owner/name``."""

    repo_id: int
    owner: Account
    name: str
    created_at: float
    private: bool = False

    @property
    def full_name(self) -> str:
        """``owner/name``."""
        return f"{self.owner.login}/{self.name}"


@dataclass
class Token:
    """An installation access token, or a runner registration token: ``scope`` is then
    the repository (``owner/name``) or organization its runners may register in."""

    value: str
    installation_id: int
    expires_at: float
    scope: str = ""


@dataclass
class TokenRegistration:
    """A runner that ``config.sh`` registered with a registration token: the token,
    the URL and the options it gave, the runner it became and when (the clock)."""

    token: str
    url: str
    name: str
    labels: list[str]
    runner_id: int
    at: float


@dataclass
class RunnerGroup:
    """An organization's runner group (id 1, "Default", exists in every one)."""

    group_id: int
    name: str
    org: str
    visibility: str = "all"
    default: bool = False


@dataclass
class Runner:
    """A self-hosted runner registered through a JIT config (or by ``config.sh`` with a
    registration token). ``secret`` is what its encoded JIT config (or ``.runner``
    file) carries to authenticate the simulated runner protocol. A
    repository runner has ``repository``; an organization runner has ``org`` (and
    ``repository`` empty) and takes jobs of any repository of that organization."""

    runner_id: int
    name: str
    repository: str
    labels: list[str]
    runner_group_id: int
    work_folder: str
    secret: str
    status: str = "offline"
    busy: bool = False
    job_id: int | None = None
    org: str | None = None


@dataclass
class Job:
    """A workflow job. ``planned_conclusion`` and ``duration_s`` are what a simulated
    runner reports when it runs the job (set by the test or demo). A ``held`` job is
    queued but given to no runner until released; ``offered_to`` names the one runner
    that may take it (GitHub's choice among the runners whose labels match)."""

    job_id: int
    run_id: int
    repository: str
    labels: list[str]
    name: str
    workflow_name: str
    head_branch: str
    head_sha: str
    created_at: float
    run_attempt: int = 1
    status: str = "queued"
    conclusion: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    runner_id: int | None = None
    runner_name: str | None = None
    runner_group_id: int | None = None
    runner_group_name: str | None = None
    planned_conclusion: str = "success"
    duration_s: float | None = None
    held: bool = False
    offered_to: str | None = None


@dataclass
class DeliveryAttempt:
    """One attempt to POST a delivery: the receiver's status, or why it failed."""

    at: float
    status_code: int | None
    error: str | None = None


@dataclass
class Delivery:
    """A webhook delivery: its id, event, the exact body and headers sent, and every
    attempt (a redelivery adds an attempt with the same id and body)."""

    delivery_id: str
    event: str
    action: str
    job_id: int | None
    body: bytes
    headers: dict[str, str]
    attempts: list[DeliveryAttempt] = field(default_factory=list)

    @property
    def status_code(self) -> int | None:
        """The receiver's status on the latest attempt (None: not sent or failed)."""
        return self.attempts[-1].status_code if self.attempts else None


@dataclass(frozen=True)
class Call:
    """One REST call the simulator served: method, path, query, JSON body, status,
    and ``at``, the simulator's clock when the call arrived (seconds since the epoch)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    at: float = 0.0


@dataclass
class Fault:
    """Answer the next ``remaining`` calls of ``path`` (and ``method`` if set) with
    ``status``, after ``delay_s``. ``retry_after`` sets ``Retry-After``; ``reset_in``
    answers as an exhausted rate limit (``X-RateLimit-Remaining: 0``, reset then).
    ``status=None`` only delays the call."""

    path: str
    status: int | None
    remaining: int = 1
    method: str | None = None
    retry_after: int | None = None
    reset_in: int | None = None
    delay_s: float = 0.0
