"""``POST /api/agent/reports``: a runner's agent tells how its one job goes.

A report is believed only with the token the orchestrator derived for that job and
runner name and put in the runner's (secret) config, so a runner cannot report for
another job. Answers: 202 taken (also when it changed nothing: reports repeat), 400 a
body that is not a report, 401 a missing or wrong token, 404 a job runs-fleet does not
know, 503 the state store is unavailable (the agent retries).
"""

from __future__ import annotations

import logging

import attrs
import cattrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runs_fleet_core.converters import loads, make_message_converter
from runs_fleet_core.domain.messages import AgentReport
from runs_fleet_core.domain.tokens import verify_report_token
from runs_fleet_core.usecases.completion import CompletionOutcome
from runs_fleet_server.bootstrap import Services
from runs_fleet_server.common import UNAVAILABLE, BodyTooLarge, bearer_token, error, read_body

_log = logging.getLogger(__name__)

BODY_LIMIT = 64 * 1024


@attrs.define
class AgentReportsEndpoint:
    """The ``POST /api/agent/reports`` handler, bound to the process's services."""

    services: Services
    converter: cattrs.Converter = attrs.field(factory=make_message_converter, init=False)

    async def handle(self, request: Request) -> Response:
        """Verify one report and hand it to :class:`Completion`."""
        token = bearer_token(request)
        if token is None:
            return error(401, "an 'Authorization: Bearer <report token>' header is required")
        try:
            body = await read_body(request, BODY_LIMIT)
            report = loads(self.converter, body, AgentReport)
        except BodyTooLarge:
            return error(413, f"a report is at most {BODY_LIMIT} bytes")
        except (ValueError, RecursionError) as exc:
            return error(400, f"not an agent report: {str(exc)[:300]}")
        secret = self.services.webhook_secret
        if not token.isascii() or not verify_report_token(
            secret, report.job_id, report.runner_name, token
        ):
            return error(401, f"the token is not the report token of job {report.job_id}")
        try:
            outcome = await self.services.completion.agent_reported(report)
        except UNAVAILABLE as exc:
            _log.warning("report for job %s not recorded: %s", report.job_id, exc)
            return error(503, "the report could not be recorded now; send it again later")
        if outcome is CompletionOutcome.UNKNOWN_JOB:
            return error(404, f"job {report.job_id} is not known to runs-fleet")
        _log.info("agent report: job %s %s -> %s", report.job_id, report.event, outcome)
        return JSONResponse({"outcome": outcome.value, "job_id": report.job_id}, status_code=202)
