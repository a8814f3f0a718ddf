"""Tokens with which an agent proves it is the runner launched for a job.

The orchestrator never hands its own secret to a runner: it derives one token per job
and runner name (HMAC-SHA256 keyed with a server-side secret) and puts it in the runner
config. A report for another job, or from another runner, does not verify.
"""

from __future__ import annotations

import hashlib
import hmac

from runs_fleet_core.domain.ids import JobId


def report_token(secret: str, job_id: JobId, runner_name: str) -> str:
    """The token the runner ``runner_name`` of ``job_id`` reports with (hex)."""
    message = f"agent-report:{job_id}:{runner_name}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_report_token(secret: str, job_id: JobId, runner_name: str, token: str) -> bool:
    """Whether ``token`` is the report token of that job and runner (constant time)."""
    return hmac.compare_digest(report_token(secret, job_id, runner_name), token)
