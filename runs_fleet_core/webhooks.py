"""Reading GitHub webhooks: signature check and the ``workflow_job`` fields we act on.

The webhook endpoint is the one door of runs-fleet that anyone on the internet can
knock on, so everything here is pure and total: a signature check that never raises and
compares in constant time, and a parser that turns any body (valid, truncated, hostile)
into either a :class:`WorkflowJobEvent`, ``None`` (an action runs-fleet does not act on),
or a :class:`WebhookPayloadError` whose message says what is wrong, which the server
answers with 400. Nothing here does I/O, so it is tested exhaustively without a server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.messages import WorkflowJobAction, WorkflowJobEvent
from runs_fleet_core.errors import RunsFleetError

SIGNATURE_HEADER = "X-Hub-Signature-256"
SIGNATURE_PREFIX = "sha256="
ACTED_ON = frozenset(
    {WorkflowJobAction.QUEUED, WorkflowJobAction.IN_PROGRESS, WorkflowJobAction.COMPLETED}
)
"""The ``workflow_job`` actions runs-fleet acts on; ``waiting`` and any action GitHub
adds later are acknowledged and ignored."""

_SHOWN = 40


class WebhookPayloadError(RunsFleetError):
    """A webhook body that is not the ``workflow_job`` payload GitHub documents."""


def signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``: ``sha256=<hex>``."""
    digest = hmac.new(_secret_bytes(secret), body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def _secret_bytes(secret: str) -> bytes:
    """The secret's bytes; undecodable bytes read from the environment (which Python
    keeps as surrogate escapes) come back as they were."""
    try:
        return secret.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return secret.encode("utf-8", "surrogatepass")


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the HMAC-SHA256 signature of ``body`` under ``secret``.

    Constant-time comparison; never raises. An empty secret verifies nothing (an
    unconfigured server must not accept unsigned webhooks).
    """
    if not secret or not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    expected = signature(secret, body).encode()
    given = header.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(expected, given)


def load_payload(body: bytes) -> Mapping[str, Any]:
    """The JSON object in ``body``; :class:`WebhookPayloadError` for anything else."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise WebhookPayloadError(f"the body is not valid JSON: {_reason(exc)}") from None
    if not isinstance(payload, dict):
        raise WebhookPayloadError(
            f"the body must be a JSON object, got a JSON {_json_type(payload)}"
        )
    return payload


def parse_workflow_job(payload: Mapping[str, Any], *, delivery_id: str) -> WorkflowJobEvent | None:
    """The event of a ``workflow_job`` webhook, or ``None`` for an action that
    runs-fleet does not act on (see :data:`ACTED_ON`).

    Raises :class:`WebhookPayloadError` naming the first field that is missing or of the
    wrong type. ``delivery_id`` is the ``X-GitHub-Delivery`` header ("" when absent).
    """
    if not isinstance(payload, Mapping):
        raise WebhookPayloadError(f"the payload must be an object, got {type(payload).__name__}")
    action = payload.get("action")
    if not isinstance(action, str):
        raise WebhookPayloadError(f"'action' must be a string, got {_show(action)}")
    if action not in {a.value for a in ACTED_ON}:
        return None
    job = _object(payload, "workflow_job", "")
    repository = _object(payload, "repository", "")
    full_name = _string(repository, "full_name", "repository.")
    if full_name.count("/") != 1 or "" in full_name.split("/"):
        raise WebhookPayloadError(
            f"'repository.full_name' must look like owner/name, got {_show(full_name)}"
        )
    return WorkflowJobEvent(
        action=WorkflowJobAction(action),
        job_id=JobId(_positive(job, "id")),
        run_id=_positive(job, "run_id"),
        run_attempt=_positive(job, "run_attempt", default=1),
        repository=full_name,
        labels=_labels(job),
        delivery_id=delivery_id,
        runner_name=_optional_string(job, "runner_name", "workflow_job."),
        conclusion=_optional_string(job, "conclusion", "workflow_job."),
        installation_id=_installation(payload),
    )


def _object(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if not isinstance(value, Mapping):
        raise WebhookPayloadError(f"'{path}{key}' must be an object, got {_show(value)}")
    return value


def _string(parent: Mapping[str, Any], key: str, path: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise WebhookPayloadError(f"'{path}{key}' must be a non-empty string, got {_show(value)}")
    return value


def _optional_string(parent: Mapping[str, Any], key: str, path: str) -> str | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, str):
        raise WebhookPayloadError(f"'{path}{key}' must be a string or null, got {_show(value)}")
    return value


def _positive(job: Mapping[str, Any], key: str, *, default: int | None = None) -> int:
    value = job.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WebhookPayloadError(
            f"'workflow_job.{key}' must be a positive integer, got {_show(value)}"
        )
    return value


def _labels(job: Mapping[str, Any]) -> tuple[str, ...]:
    labels = job.get("labels")
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise WebhookPayloadError(
            f"'workflow_job.labels' must be a list of strings, got {_show(labels)}"
        )
    return tuple(labels)


def _installation(payload: Mapping[str, Any]) -> int | None:
    installation = payload.get("installation")
    if installation is None:
        return None
    if not isinstance(installation, Mapping):
        raise WebhookPayloadError(
            f"'installation' must be an object or absent, got {_show(installation)}"
        )
    value = installation.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise WebhookPayloadError(f"'installation.id' must be an integer, got {_show(value)}")
    return value


def _json_type(value: object) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    """A short description of an unexpected value (never the whole of a large one)."""
    if value is None:
        return "null or nothing"
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)[:80]
