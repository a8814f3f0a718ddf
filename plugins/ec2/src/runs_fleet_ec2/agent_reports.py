"""How an EC2 runner's agent reports to the orchestrator through its SQS queue.

The agent's job pass (:mod:`runs_fleet_ec2.agent`) only needs something that sends a
report and says whether it went; in EC2 mode that is a message on the queue the config
names (``report_queue_url``), read on the other side by :mod:`runs_fleet_ec2.events`.
Kept apart from the agent so the wire format has one home: the body is the
``AgentReport`` as JSON (the core's message converter), the string attributes are
``kind=agent-report`` and ``token=<report_token>``; on a FIFO queue the group is the job
id and the deduplication id ``<runner name>-<event>``, so a report sent twice is
delivered once. The token never reaches the log, even inside an AWS error message.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.converters import dumps, make_message_converter
from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.messages import AgentEvent, AgentReport
from runs_fleet_core.errors import AdapterError

REPORT_KIND = "agent-report"
"""The `kind` message attribute of an agent report; the orchestrator's feed reads it."""
_log = logging.getLogger("runs_fleet_agent.ec2")


class QueueReporter:
    """Sends the reports of one runner as messages to the orchestrator's SQS queue.

    The token goes as a message attribute, so the orchestrator can check it before it
    reads the body. Retries are botocore's (standard mode: throttling, HTTP 5xx and lost
    connections, with exponential backoff and jitter), so they are not layered twice.
    """

    def __init__(
        self, caller: AwsCaller, queue_url: str, token: str, *, job_id: JobId, runner_name: str
    ) -> None:
        self._caller = caller
        self._queue_url = queue_url
        self._token = token
        self._job_id = job_id
        self._runner_name = runner_name
        self._converter = make_message_converter()
        if not token:
            _log.warning("the config has no report_token: the orchestrator will refuse the reports")

    def send(
        self, event: AgentEvent, *, exit_code: int | None = None, detail: str | None = None
    ) -> bool:
        """Send one report; ``True`` once SQS took it, ``False`` (logged) otherwise."""
        report = AgentReport(
            job_id=self._job_id,
            runner_name=self._runner_name,
            event=event,
            at=datetime.now(UTC),
            exit_code=exit_code,
            detail=detail,
        )
        try:
            # The agent is a synchronous program: each call runs to its end on its own loop.
            asyncio.run(self._caller.call("sqs", "send_message", **self._message(report)))
        except AdapterError as exc:
            problem = str(exc).replace(self._token, "***") if self._token else str(exc)
            _log.error("could not deliver the %r report: %s", event.value, problem)
            return False
        _log.info("delivered the %r report", event.value)
        return True

    def _message(self, report: AgentReport) -> dict[str, Any]:
        attributes = {"kind": {"DataType": "String", "StringValue": REPORT_KIND}}
        if self._token:
            attributes["token"] = {"DataType": "String", "StringValue": self._token}
        params: dict[str, Any] = {
            "QueueUrl": self._queue_url,
            "MessageBody": dumps(self._converter, report),
            "MessageAttributes": attributes,
        }
        if self._queue_url.endswith(".fifo"):
            params["MessageGroupId"] = str(report.job_id)
            params["MessageDeduplicationId"] = f"{report.runner_name}-{report.event.value}"
        return params
