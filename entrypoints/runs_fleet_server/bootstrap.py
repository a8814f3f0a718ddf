"""The server's composition root: settings, plugins, adapters and use cases, wired once.

Everything the server and its worker need is built here from an explicit environment
mapping, so tests build the same services with their own environment. Configuration
problems are collected and raised together as one ``ConfigError``: the operator fixes
them all in one go instead of one per restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping
from datetime import datetime

import attrs

from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.messages import AgentReport
from runs_fleet_core.domain.runner import RegistrationMode
from runs_fleet_core.domain.tokens import report_token, verify_report_token
from runs_fleet_core.errors import AdapterError, ConfigError
from runs_fleet_core.plugins import PluginManager
from runs_fleet_core.plugins.manager import DISABLE_VAR
from runs_fleet_core.ports import SystemClock
from runs_fleet_core.ports.github import GitHubAccessCheck
from runs_fleet_core.settings import Settings
from runs_fleet_core.usecases.completion import Completion
from runs_fleet_core.usecases.dispatch import Dispatcher
from runs_fleet_core.usecases.events import RunnerEventHandler
from runs_fleet_core.usecases.intake import Intake
from runs_fleet_core.usecases.leadership import Leadership
from runs_fleet_core.wiring import Adapters, build_adapters, inspect_deployment, label_defaults
from runs_fleet_scheduler.scheduler import build_leadership, completion_for, replica_name

_log = logging.getLogger(__name__)
GITHUB_CHECK_TIMEOUT_S = 60.0
GITHUB_CHECK_REPOSITORIES = 10
WAITING_STATUSES = (JobStatus.QUEUED, JobStatus.REQUEUED, JobStatus.CLAIMED, JobStatus.LAUNCHING)

WEBHOOK_SECRET = "RUNS_FLEET_GITHUB_WEBHOOK_SECRET"  # noqa: S105 (a setting name)
REPORTS_PATH = "/api/agent/reports"
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def plugin_manager(env: Mapping[str, str]) -> PluginManager:
    """A plugin manager honouring ``RUNS_FLEET_DISABLE_PLUGINS`` (not loaded yet)."""
    disabled = [name.strip() for name in env.get(DISABLE_VAR, "").split(",") if name.strip()]
    return PluginManager(disabled=disabled)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a pair; ``ValueError`` if malformed."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080 or [::]:8080)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def base_url(host: str, port: int) -> str:
    """``http://host:port`` for an address this server listens on; a wildcard address
    becomes the loopback one (only runners on this host can use a default URL)."""
    host = _WILDCARDS.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@attrs.define(kw_only=True)
class AgentEndpoint:
    """Where runners send their reports, and the token each one reports with.

    ``public_url`` is the configured URL; without one, the address the server listens on
    is used (``bind`` updates it once the real port is known, e.g. for port 0).
    """

    secret: str = attrs.field(repr=False)
    public_url: str | None
    fallback_url: str
    report_queue_url: str | None = None
    """Where runners report through a queue instead of over HTTP (EC2 mode)."""

    def bind(self, host: str, port: int) -> None:
        """Record the address the server really listens on."""
        self.fallback_url = base_url(host, port)

    @property
    def reports_url(self) -> str:
        """The URL of ``POST /api/agent/reports`` as runners reach it."""
        return (self.public_url or self.fallback_url).rstrip("/") + REPORTS_PATH

    def runner_settings(self, job: Job, runner_name: str) -> Mapping[str, str]:
        """The agent settings stored in the (secret) runner config of ``runner_name``."""
        settings = {
            "report_url": self.reports_url,
            "report_token": report_token(self.secret, job.job_id, runner_name),
        }
        if self.report_queue_url:
            settings["report_queue_url"] = self.report_queue_url
        return settings

    def verify(self, report: AgentReport, token: str) -> bool:
        """Whether ``token`` is the report token of ``report``'s job and runner."""
        return token.isascii() and verify_report_token(
            self.secret, report.job_id, report.runner_name, token
        )


@attrs.define(kw_only=True, eq=False)
class Services:
    """Everything one server (or worker) process uses, built once by
    :func:`build_services`."""

    settings: Settings
    adapters: Adapters
    intake: Intake
    dispatcher: Dispatcher
    completion: Completion
    runner_events: RunnerEventHandler
    agent: AgentEndpoint
    webhook_secret: str = attrs.field(repr=False)
    admin_token: str | None = attrs.field(repr=False)
    listen: tuple[str, int]
    worker_concurrency: int
    shutdown_delay_s: float
    scheduler_interval_s: float = 60.0
    worker_wait_s: float = 1.0
    """How long one receive waits for a message: the worker notices a stop within it."""
    address: tuple[str, int] | None = None
    """The address the server listens on, once it does (set by ``serve``)."""
    draining: bool = False
    """Set when shutdown begins: ``/ready`` answers 503 from then on."""
    _closed: bool = False
    _github_check: asyncio.Task[None] | None = None

    async def astart(self) -> None:
        """Start what adapters run in the background: a metrics sink that pushes
        (CloudWatch) starts pushing, with the backend gauges refreshed before each push."""
        from runs_fleet_server.gauges import refresh_gauges

        metrics = self.adapters.metrics
        add_refresher = getattr(metrics, "add_refresher", None)
        if callable(add_refresher):
            add_refresher(functools.partial(refresh_gauges, self.adapters))
        start = getattr(metrics, "start", None)
        if callable(start):
            await start()
        self._github_check = asyncio.create_task(self._check_github(), name="github-check")

    async def _check_github(self) -> None:
        """Say at start-up, in the log, what keeps the GitHub App from working (a wrong
        id or key, a wrong API URL, an App installed nowhere) and what keeps it from
        serving the repositories of the jobs waiting for a runner (no installation on
        the owner, a repository outside it, a suspended installation, a missing
        permission): the server keeps serving, since webhooks are recorded and queued
        without GitHub and GitHub may just be unreachable now."""
        github = self.adapters.github
        if not isinstance(github, GitHubAccessCheck):
            return
        try:
            async with asyncio.timeout(GITHUB_CHECK_TIMEOUT_S):
                repositories = await self._waiting_repositories()
        except (TimeoutError, AdapterError) as exc:  # the App itself is still worth checking
            _log.warning("could not list the jobs waiting for a runner: %s", exc)
            repositories = []
        try:
            async with asyncio.timeout(GITHUB_CHECK_TIMEOUT_S):
                problems = await github.access_problems(repositories)
        except (TimeoutError, AdapterError) as exc:
            _log.warning("could not check the GitHub App's settings at start-up: %s", exc)
            return
        for problem in problems:
            _log.error("GitHub App not usable: %s", problem)

    async def _waiting_repositories(self) -> list[str]:
        """The repositories of the jobs waiting for a runner (the
        ``GITHUB_CHECK_REPOSITORIES`` with the newest jobs, by name): a restarted server
        says at once whether GitHub lets it serve them."""
        latest: dict[str, tuple[datetime, str]] = {}
        for status in WAITING_STATUSES:
            for job in await self.adapters.state.list_jobs(status=status):
                key = job.repository.lower()
                if key not in latest or job.created_at > latest[key][0]:
                    latest[key] = (job.created_at, job.repository)
        newest = sorted(latest.values(), reverse=True)[:GITHUB_CHECK_REPOSITORIES]
        return sorted(repository for _, repository in newest)

    async def aclose(self) -> None:
        """Close every adapter that has an ``aclose`` (each once; idempotent). A failing
        close is logged and the others are still closed."""
        if self._closed:
            return
        self._closed = True
        if self._github_check is not None:
            self._github_check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._github_check
        adapters = self.adapters
        candidates = [
            *adapters.providers.values(),
            *adapters.pool_providers.values(),
            adapters.queue,
            adapters.state,
            adapters.configs,
            adapters.github,
            adapters.metrics,
        ]
        seen: set[int] = set()
        for adapter in candidates:
            close = getattr(adapter, "aclose", None)
            if id(adapter) in seen or not callable(close):
                continue
            seen.add(id(adapter))
            try:
                await close()
            except Exception:
                _log.exception("closing %s failed", type(adapter).__name__)


def build_services(env: Mapping[str, str]) -> Services:
    """Read the settings from ``env``, load the plugins, build the adapters and wire the
    use cases. Raises ``ConfigError`` listing every problem at once."""
    plugins = plugin_manager(env)
    settings, problems = inspect_deployment(env, plugins)
    problems += server_problems(settings, problems)
    if problems:
        raise ConfigError(problems)
    for warning in settings.warnings:
        _log.warning("%s", warning)
    adapters = build_adapters(settings, plugins.adapters(), SystemClock())
    listen = parse_listen(settings["RUNS_FLEET_LISTEN"])
    secret = str(settings[WEBHOOK_SECRET])
    agent = AgentEndpoint(
        secret=secret,
        public_url=settings.get("RUNS_FLEET_PUBLIC_URL"),
        fallback_url=base_url(*listen),
        report_queue_url=settings.get("RUNS_FLEET_TERMINATION_QUEUE_URL") or None,
    )
    completion = completion_for(
        adapters,
        rerun_lost_jobs=settings["RUNS_FLEET_RERUN_LOST_JOBS"],
        max_attempts=settings["RUNS_FLEET_MAX_ATTEMPTS"],
    )
    return Services(
        settings=settings,
        adapters=adapters,
        intake=_intake(settings, adapters),
        dispatcher=_dispatcher(settings, adapters, agent),
        completion=completion,
        runner_events=RunnerEventHandler(
            state=adapters.state,
            completion=completion,
            clock=adapters.clock,
            metrics=adapters.metrics,
            verify_token=agent.verify,
        ),
        agent=agent,
        webhook_secret=secret,
        admin_token=settings.get("RUNS_FLEET_ADMIN_TOKEN") or None,
        listen=listen,
        worker_concurrency=settings["RUNS_FLEET_WORKER_CONCURRENCY"],
        shutdown_delay_s=settings["RUNS_FLEET_SHUTDOWN_DELAY_S"],
        scheduler_interval_s=settings["RUNS_FLEET_SCHEDULER_INTERVAL_S"],
    )


def server_problems(settings: Settings, found: list[str]) -> list[str]:
    """What the server needs beyond a valid deployment: a webhook secret in every mode,
    a well-formed listen address, and a public URL where runners run elsewhere."""
    problems = []
    if not settings.get(WEBHOOK_SECRET) and not any(WEBHOOK_SECRET in p for p in found):
        problems.append(
            f"{WEBHOOK_SECRET} is required by the server in every mode (memory included): "
            f"the secret GitHub signs webhooks with; use {WEBHOOK_SECRET}_FILE to read it "
            "from a file"
        )
    try:
        parse_listen(settings.get("RUNS_FLEET_LISTEN", ""))
    except ValueError as exc:
        problems.append(f"RUNS_FLEET_LISTEN: {exc}")
    public_url = settings.get("RUNS_FLEET_PUBLIC_URL")
    if public_url and not public_url.startswith(("http://", "https://")):
        problems.append(f"RUNS_FLEET_PUBLIC_URL must start with http:// or https:// ({public_url})")
    elif (
        not public_url
        and settings.mode in {"ec2", "k8s"}
        and not settings.get("RUNS_FLEET_TERMINATION_QUEUE_URL")
    ):
        problems.append(
            f"RUNS_FLEET_PUBLIC_URL is required when RUNS_FLEET_MODE={settings.mode}: "
            "runners on other machines send their reports to it (in EC2 mode, "
            "RUNS_FLEET_TERMINATION_QUEUE_URL may take its place)"
        )
    return problems


def _intake(settings: Settings, adapters: Adapters) -> Intake:
    return Intake(
        state=adapters.state,
        queue=adapters.queue,
        clock=adapters.clock,
        metrics=adapters.metrics,
        labels=label_defaults(settings),
        backends=adapters.wiring.backends,
        default_backend=adapters.wiring.default_backend,
    )


def _dispatcher(settings: Settings, adapters: Adapters, agent: AgentEndpoint) -> Dispatcher:
    return Dispatcher(
        state=adapters.state,
        queue=adapters.queue,
        configs=adapters.configs,
        github=adapters.github,
        providers=adapters.providers,
        pool_providers=adapters.pool_providers,
        clock=adapters.clock,
        metrics=adapters.metrics,
        owner=replica_name(),
        default_backend=adapters.wiring.default_backend,
        claim_ttl_s=settings["RUNS_FLEET_CLAIM_TTL_S"],
        max_attempts=settings["RUNS_FLEET_MAX_ATTEMPTS"],
        runner_settings=agent.runner_settings,
        ephemeral_pool_max_size=settings["RUNS_FLEET_EPHEMERAL_POOL_MAX_SIZE"],
        registration=RegistrationMode(settings["RUNS_FLEET_RUNNER_REGISTRATION"]),
    )


def leadership_for(services: Services) -> Leadership:
    """The leader's chores of a server or scheduler process, tuned by its settings."""
    settings = services.settings
    return build_leadership(
        services.adapters,
        completion=services.completion,
        intake=services.intake,
        ephemeral_idle_s=settings["RUNS_FLEET_EPHEMERAL_POOL_IDLE_S"],
        lease_s=settings["RUNS_FLEET_SCHEDULER_LEASE_S"],
        heal_after_s=settings["RUNS_FLEET_HEAL_AFTER_S"],
        relaunch_after_s=settings["RUNS_FLEET_RELAUNCH_AFTER_S"],
        discover_after_s=settings["RUNS_FLEET_DISCOVER_AFTER_S"],
        orphan_grace_s=settings["RUNS_FLEET_ORPHAN_GRACE_S"],
    )
