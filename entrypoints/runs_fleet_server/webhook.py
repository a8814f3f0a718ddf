"""``POST /webhook``: GitHub's ``workflow_job`` events in, durable job messages out.

GitHub gives a webhook about ten seconds and does not redeliver on its own, so the
answer is 2xx only once the job is durably queued (or durably rejected, or recorded as
started/finished); a queue or state store failure answers 503 so the delivery shows as
failed in GitHub and can be redelivered, and intake is idempotent, so a redelivery
queues the job once. The order of checks is fixed: size (413), signature (401), then
content (400), so nothing unsigned is ever parsed. The body is never logged.

Status codes: 202 queued or duplicate (the same answer for every delivery of one job:
a retried delivery looks like the first), 422 a label runs-fleet cannot honour (with
the reason, again for each redelivery), 200 everything acknowledged without queueing
(ping, other events and actions, jobs without a ``runs-fleet=`` label, started/finished
jobs), 401 a missing or wrong signature, and 429 (with ``Retry-After``) for a client
address that sent too many of those (see :mod:`runs_fleet_server.limits`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runs_fleet_core.domain.labels import MARKER
from runs_fleet_core.domain.messages import WorkflowJobAction, WorkflowJobEvent
from runs_fleet_core.ports import Clock
from runs_fleet_core.usecases.intake import IntakeOutcome
from runs_fleet_core.webhooks import (
    SIGNATURE_HEADER,
    WebhookPayloadError,
    load_payload,
    parse_workflow_job,
    verify_signature,
)
from runs_fleet_server.bootstrap import Services
from runs_fleet_server.common import UNAVAILABLE, BodyTooLarge, error, read_body
from runs_fleet_server.limits import LIMIT_SETTING, WINDOW_SETTING, BadSignatureLimit

_log = logging.getLogger(__name__)

BODY_LIMIT = 1024 * 1024
"""GitHub caps webhook payloads at 25 MB, but a workflow_job event is a few KiB."""
TIMEOUT_S = 8.0
"""Time allowed to record a job: GitHub gives up on a webhook after 10 s."""
_JOB = "workflow_job"
_KINDS = frozenset({_JOB, "ping"})
_FORM = "application/x-www-form-urlencoded"
_INTAKE_STATUS = {
    IntakeOutcome.QUEUED: 202,
    IntakeOutcome.DUPLICATE: 202,
    IntakeOutcome.REJECTED: 422,
    IntakeOutcome.IGNORED: 200,
}

Answer = tuple[str, str, Response]
"""(event kind, outcome) for the metrics, and the response."""


@attrs.define
class WebhookEndpoint:
    """The ``POST /webhook`` handler, bound to the process's services. ``clock`` times
    the limit on badly signed requests (default: the services' clock)."""

    services: Services
    clock: Clock | None = None
    _bad_signatures: BadSignatureLimit = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        settings = self.services.settings
        self._bad_signatures = BadSignatureLimit(
            limit=settings[LIMIT_SETTING],
            window_s=settings[WINDOW_SETTING],
            clock=self.clock or self.services.adapters.clock,
        )

    async def handle(self, request: Request) -> Response:
        """Check, parse and act on one delivery; count it by event kind and outcome."""
        started = time.perf_counter()
        kind, outcome, response = await self._answer(request)
        metrics = self.services.adapters.metrics
        metrics.increment("webhooks_received", labels={"event": kind, "outcome": outcome})
        metrics.observe("webhook_seconds", time.perf_counter() - started)
        return response

    async def _answer(self, request: Request) -> Answer:
        try:
            body = await read_body(request, BODY_LIMIT)
        except BodyTooLarge:
            return "unknown", "too_large", error(413, f"the body is over {BODY_LIMIT} bytes")
        header = request.headers.get(SIGNATURE_HEADER)
        if not verify_signature(self.services.webhook_secret, body, header):
            return self._refuse(request, header)
        event = request.headers.get("x-github-event", "")
        if not event:
            return "unknown", "malformed", error(400, "the X-GitHub-Event header is missing")
        kind = event if event in _KINDS else "other"
        delivery = request.headers.get("x-github-delivery", "")
        try:
            payload = load_payload(body)
            parsed = parse_workflow_job(payload, delivery_id=delivery) if kind == _JOB else None
        except WebhookPayloadError as exc:
            message = f"malformed {kind} webhook: {exc}"
            if request.headers.get("content-type", "").startswith(_FORM):
                message += "; set the webhook's content type to application/json in GitHub"
            return kind, "malformed", error(400, message)
        if kind == "ping":
            return kind, "pong", JSONResponse({"outcome": "pong"})
        if parsed is None:
            return kind, "ignored", JSONResponse({"outcome": "ignored"})
        return await self._act(parsed)

    def _refuse(self, request: Request, header: str | None) -> Answer:
        """The answer to a request whose signature is missing or wrong: 401, or 429
        once its source sent too many (logged once per window, not per request)."""
        source = request.client.host if request.client else "unknown"
        verdict = self._bad_signatures.count(source)
        if verdict.limited:
            if verdict.first:
                _log.warning(
                    "webhook requests from %s: %d with a missing or wrong %s header within "
                    "%g s; its badly signed requests get 429 until the window ends",
                    source,
                    verdict.count,
                    SIGNATURE_HEADER,
                    self._bad_signatures.window_s,
                )
            message = (
                f"too many requests with a missing or wrong {SIGNATURE_HEADER} header "
                f"from this address; retry in {verdict.retry_after_s} s"
            )
            response = error(429, message)
            response.headers["Retry-After"] = str(verdict.retry_after_s)
            return "unknown", "rate_limited", response
        why = "is missing" if header is None else "does not match the body"
        delivery = request.headers.get("x-github-delivery", "")[:64]
        _log.warning(
            "webhook delivery %r from %s refused: the %s header %s (is the webhook secret "
            "the same in GitHub and in runs-fleet?)",
            delivery,
            source,
            SIGNATURE_HEADER,
            why,
        )
        return "unknown", "bad_signature", error(401, f"the {SIGNATURE_HEADER} header {why}")

    async def _act(self, event: WorkflowJobEvent) -> Answer:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                outcome, status, extra = await self._dispatch(event)
        except UNAVAILABLE as exc:
            _log.warning(
                "webhook delivery %s (job %s, %s) not recorded: %s",
                event.delivery_id,
                event.job_id,
                event.action,
                exc or type(exc).__name__,
            )
            message = f"job {event.job_id} could not be recorded now; redeliver the webhook"
            return _JOB, "unavailable", error(503, message, job_id=event.job_id)
        except Exception:
            _log.exception("webhook delivery %s (job %s) failed", event.delivery_id, event.job_id)
            return _JOB, "error", error(500, "internal error; redeliver the webhook later")
        _log.info(
            "webhook delivery %s: job %s %s -> %s",
            event.delivery_id,
            event.job_id,
            event.action,
            outcome,
        )
        body = {"outcome": outcome, "job_id": event.job_id, **extra}
        return _JOB, outcome, JSONResponse(body, status_code=status)

    async def _dispatch(self, event: WorkflowJobEvent) -> tuple[str, int, dict[str, Any]]:
        """Hand the event to its use case: (outcome, HTTP status, extra body fields)."""
        if event.action is WorkflowJobAction.QUEUED:
            result = await self.services.intake.take(event)
            outcome = result.outcome
            extra = {"error": result.reason} if outcome is IntakeOutcome.REJECTED else {}
            return outcome.value, _INTAKE_STATUS[outcome], extra
        if not any(label.strip().lower().startswith(MARKER) for label in event.labels):
            return "ignored", 200, {}
        completion = self.services.completion
        if event.action is WorkflowJobAction.IN_PROGRESS:
            return (await completion.job_started(event)).value, 200, {}
        return (await completion.job_finished(event)).value, 200, {}
