"""Telling the orchestrator that the job started and how it ended.

Reports are the agent's side of "busy comes from our own state": the orchestrator learns
from them that a runner took its job and when it let go. A report is an ``AgentReport``
posted as JSON with the runner's report token as a bearer token. Delivery is best
effort with a bound: a timeout per attempt and a few retries with backoff; a report
that cannot be delivered is logged and never changes the job's exit code (the
orchestrator also hears from GitHub's webhooks and reconciles).
"""

from __future__ import annotations

import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime

from runs_fleet_core.converters import dumps, make_message_converter
from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.messages import AgentEvent, AgentReport

_log = logging.getLogger("runs_fleet_agent")
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class Reporter:
    """Posts reports for one runner of one job to ``url``.

    ``attempts``: tries per report; ``backoff_s``: the first wait between tries, doubled
    each time (with jitter); ``timeout_s``: per request. ``url`` must be http(s).
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        job_id: JobId,
        runner_name: str,
        attempts: int = 4,
        backoff_s: float = 1.0,
        timeout_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError("the report URL must start with http:// or https://")
        self._url = url
        self._token = token
        self._job_id = job_id
        self._runner_name = runner_name
        self._attempts = max(1, attempts)
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._converter = make_message_converter()
        self._jitter = random.SystemRandom()

    def send(
        self, event: AgentEvent, *, exit_code: int | None = None, detail: str | None = None
    ) -> bool:
        """Post one report; ``True`` once the orchestrator accepted it, ``False`` (after
        logging why) when it could not be delivered."""
        report = AgentReport(
            job_id=self._job_id,
            runner_name=self._runner_name,
            event=event,
            at=datetime.now(UTC),
            exit_code=exit_code,
            detail=detail,
        )
        body = dumps(self._converter, report).encode()
        for attempt in range(1, self._attempts + 1):
            problem, retry = self._post(body)
            if problem is None:
                _log.info("delivered the %r report", event.value)
                return True
            if not retry or attempt == self._attempts:
                _log.error(
                    "could not deliver the %r report (%d attempts): %s",
                    event.value,
                    attempt,
                    problem,
                )
                return False
            delay = self._backoff_s * 2 ** (attempt - 1) * self._jitter.uniform(0.5, 1.0)
            _log.warning(
                "the %r report was not delivered (%s); retrying in %.1fs",
                event.value,
                problem,
                delay,
            )
            self._sleep(delay)
        return False

    def _post(self, body: bytes) -> tuple[str | None, bool]:
        """One attempt: ``(None, _)`` on success, else ``(problem, retryable)``."""
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
            self._url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self._token}",
                "User-Agent": "runs-fleet-agent",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            return f"the orchestrator answered HTTP {exc.code}", exc.code in _RETRY_STATUSES
        except urllib.error.URLError as exc:
            return f"cannot reach the orchestrator: {_reason(exc.reason)}", True
        except (TimeoutError, OSError) as exc:
            return f"cannot reach the orchestrator: {_reason(exc)}", True
        return None, False


def _reason(reason: object) -> str:
    """A short reason for a failed request, without any request content."""
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    if isinstance(reason, TimeoutError):
        return "timed out"
    return type(reason).__name__ if not isinstance(reason, str) else reason
