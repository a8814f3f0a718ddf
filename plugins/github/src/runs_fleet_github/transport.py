"""One HTTP call to GitHub, with a timeout, bounded retries and respect for throttling.

GitHub answers 5xx when it is having a bad moment, and 403/429 with ``Retry-After``
(secondary limits) or with ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset``
(the primary limit). Those are retried here: throttling waits as long as GitHub asks
(up to ``max_wait_s``; asking for longer fails the call at once as retryable, so the
job's queue retries later instead of a dispatcher sleeping), everything else waits an
exponential, jittered, capped backoff. Whatever is still failing after
``max_attempts`` becomes ``GitHubError(retryable=True)``. Other answers go back to the
caller, which knows what a 404 or a 409 means for its operation.

Nothing here ever logs or raises headers or bodies: they carry tokens and JIT configs.
"""

from __future__ import annotations

import email.utils
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import httpx

from runs_fleet_core.errors import GitHubError
from runs_fleet_core.ports import Clock, Metrics

log = logging.getLogger("runs_fleet_github")

API_VERSION = "2022-11-28"
USER_AGENT = "runs-fleet/0.1.0"
MAX_MESSAGE_CHARS = 200
Sleep = Callable[[float], Awaitable[None]]


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How hard to try: ``max_attempts`` per call, backoff ``base_s`` doubling up to
    ``cap_s`` (jittered), and at most ``max_wait_s`` for a throttling wait."""

    max_attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    base_s: float = 0.5
    cap_s: float = 8.0
    max_wait_s: float = 60.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The pause after failed attempt ``attempt`` (1-based): equal jitter."""
        ceiling = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


def throttle_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds GitHub asks the caller to wait, from ``Retry-After`` or an exhausted
    ``X-RateLimit-*``; None when the answer is not a throttle."""
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(float(retry_after), 0.0)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - now, 0.0)
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
        try:
            return max(float(headers["x-ratelimit-reset"]) - now, 0.0) + 1.0
        except ValueError:
            return None
    return None


def github_message(response: httpx.Response) -> str:
    """GitHub's own ``message`` from an error answer, shortened; never the raw body."""
    try:
        message = response.json().get("message", "")
    except (ValueError, AttributeError):
        message = ""
    text = " ".join(str(message).split())[:MAX_MESSAGE_CHARS]
    return f"{response.status_code} {text}".strip()


def expect_status(response: httpx.Response, method: str, path: str, status: int) -> None:
    """Raise the right ``GitHubError`` unless ``response`` has ``status``: retryable for
    a timeout or a server error, final for anything else."""
    if response.status_code == status:
        return
    raise GitHubError(
        f"GitHub {method} {path} answered {github_message(response)}",
        retryable=response.status_code in (408, 425) or response.status_code >= 500,
    )


class Api:
    """GitHub's REST API at ``base_url`` over one ``httpx.AsyncClient``."""

    def __init__(
        self,
        *,
        base_url: str,
        clock: Clock,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        sleep: Sleep,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.base_url = base_url.rstrip("/")
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            transport=transport,
            headers={
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": USER_AGENT,
            },
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _pause(self, response: httpx.Response | None, attempt: int) -> tuple[float, str] | None:
        """How long to wait before retrying, and why; None if the answer is final."""
        if response is None:
            return self.retry.backoff(attempt, self._rng), "no answer"
        status = response.status_code
        if status in (403, 429):
            wait = throttle_wait(response.headers, self._clock.now().timestamp())
            if wait is not None:
                return wait, f"throttled ({status})"
            return (self.retry.backoff(attempt, self._rng), "429") if status == 429 else None
        if status >= 500:
            return self.retry.backoff(attempt, self._rng), str(status)
        return None

    def _count_throttle(self, response: httpx.Response) -> None:
        """Count a throttled answer: ``secondary`` when GitHub said ``Retry-After``,
        ``rate_exhausted`` when the primary budget ran out."""
        if self._metrics is None:
            return
        reason = "secondary" if "retry-after" in response.headers else "rate_exhausted"
        self._metrics.increment("github_throttled_calls", labels={"reason": reason})

    async def request(
        self,
        method: str,
        path: str,
        *,
        credential: str,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send ``method path`` authenticated with ``credential`` (a JWT or token),
        with ``headers`` besides, retrying as the module says; the first final answer,
        whatever its status."""
        headers = {**(headers or {}), "Authorization": f"Bearer {credential}"}
        for attempt in range(1, self.retry.max_attempts + 1):
            response: httpx.Response | None = None
            try:
                response = await self._client.request(
                    method, path, headers=headers, json=json, params=params
                )
                detail = ""
            except httpx.TransportError as exc:
                detail = type(exc).__name__
            pause = self._pause(response, attempt)
            if pause is None and response is not None:
                return response
            wait, why = pause or (0.0, "")
            if response is not None and why.startswith("throttled"):
                self._count_throttle(response)
            reason = f"{why}: {detail}" if detail else why
            if attempt == self.retry.max_attempts:
                raise GitHubError(
                    f"GitHub {method} {path} still failing after {attempt} attempts ({reason})",
                    retryable=True,
                )
            if wait > self.retry.max_wait_s:
                raise GitHubError(
                    f"GitHub {method} {path} is throttled for {wait:.0f} s more; try again later",
                    retryable=True,
                )
            log.warning(
                "GitHub %s %s: %s; retry %d/%d in %.2f s",
                method, path, reason, attempt, self.retry.max_attempts - 1, wait,
            )  # fmt: skip
            await self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover
