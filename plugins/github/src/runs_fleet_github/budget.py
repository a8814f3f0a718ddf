"""Spending GitHub's API budget deliberately instead of discovering it through errors.

Two limits matter at scale. Runner registrations (JIT configs, registration tokens)
are content-creating calls that GitHub caps per minute; a burst of hundreds of queued
jobs would hit that secondary limit and get 403s. :class:`TokenBucket` keeps them under
a configured rate: a caller beyond it waits its turn (first come, first served) rather
than failing, so a burst becomes a short queue. The core budget of each installation
(5,000 calls an hour on github.com) is tracked from the ``X-RateLimit-*`` headers of
every answer by :class:`RateLedger`; when an installation has nothing left, calls for
it wait for the reset (or fail as retryable if the reset is too far away) instead of
spending a request on a certain 403.

Both publish what they see as metrics: ``github_rate_remaining`` (gauge, labelled by
the installation's account login: one series per organization or user served, never
per token or per call) and ``github_throttled_calls`` (counter, labelled by the reason
a call had to wait: ``jit_rate``, ``rate_exhausted``, ``secondary``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import attrs

from runs_fleet_core.errors import GitHubError
from runs_fleet_core.ports import Clock, Metrics

Sleep = Callable[[float], Awaitable[None]]
THROTTLED = "github_throttled_calls"
REMAINING = "github_rate_remaining"


class NoMetrics:
    """A metrics sink that drops everything (a client built without one)."""

    def increment(
        self, name: str, value: float = 1.0, labels: Mapping[str, str] | None = None
    ) -> None:
        """Drop a counter increment."""

    def gauge(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Drop a gauge value."""

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Drop an observation."""


class TokenBucket:
    """At most ``per_minute`` acquisitions a minute on average, ``burst`` at once.

    The bucket starts full. :meth:`acquire` takes one token, sleeping first if there
    is none; waiting callers are served in arrival order (one lock, held only while
    sleeping for the next token, never across a network call). Time comes from
    ``clock`` and waiting from ``sleep`` so tests can run a long queue instantly.
    """

    def __init__(
        self,
        *,
        per_minute: float,
        clock: Clock,
        sleep: Sleep,
        burst: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate_per_s = per_minute / 60.0
        self.burst = burst if burst is not None else max(1, int(per_minute // 6))
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock = clock
        self._sleep = sleep
        self._metrics = metrics or NoMetrics()
        self._tokens = float(self.burst)
        self._updated = self._now()
        self._lock = asyncio.Lock()
        self.waited = 0

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _refill(self) -> None:
        now = self._now()
        elapsed = max(now - self._updated, 0.0)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
        self._updated = now

    async def acquire(self) -> None:
        """Take one token, waiting for it if the bucket is empty."""
        async with self._lock:
            self._refill()
            if self._tokens < 1.0:
                self.waited += 1
                self._metrics.increment(THROTTLED, labels={"reason": "jit_rate"})
            while self._tokens < 1.0:
                await self._sleep((1.0 - self._tokens) / self.rate_per_s)
                self._refill()
            self._tokens -= 1.0


@attrs.define
class _Budget:
    remaining: int
    reset: float


class RateLedger:
    """What GitHub last said about each installation's core budget, by owner login.

    ``max_wait_s``: the longest a call waits for an exhausted budget to reset; a
    longer wait fails the call at once with a retryable ``GitHubError``, so the job's
    queue retries later instead of a worker sleeping for most of an hour.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        sleep: Sleep,
        max_wait_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        self._metrics = metrics or NoMetrics()
        self._budgets: dict[str, _Budget] = {}

    def remaining(self, owner: str) -> int | None:
        """Calls left for ``owner``'s installation as GitHub last said (None: unknown)."""
        budget = self._budgets.get(owner.lower())
        return budget.remaining if budget is not None else None

    def note(self, owner: str, headers: Mapping[str, str]) -> None:
        """Record the ``X-RateLimit-Remaining``/``Reset`` of an answer for ``owner``."""
        try:
            remaining = int(headers["x-ratelimit-remaining"])
            reset = float(headers["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return
        self._budgets[owner.lower()] = _Budget(remaining, reset)
        self._metrics.gauge(REMAINING, float(remaining), labels={"owner": owner.lower()})

    async def wait_for_budget(self, owner: str) -> None:
        """Return when ``owner``'s installation may call GitHub: at once unless its
        budget is known to be spent, else after its reset."""
        budget = self._budgets.get(owner.lower())
        if budget is None or budget.remaining > 0:
            return
        wait = budget.reset - self._clock.now().timestamp() + 1.0
        if wait <= 0:
            return
        self._metrics.increment(THROTTLED, labels={"reason": "rate_exhausted"})
        if wait > self._max_wait_s:
            raise GitHubError(
                f"the GitHub API budget of {owner} is spent for {wait:.0f} s more; try again later",
                retryable=True,
            )
        await self._sleep(wait)
        budget.remaining = max(budget.remaining, 1)
