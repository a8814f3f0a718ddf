"""Failures as the API server reports them: ``Status`` objects with Kubernetes' reasons,
codes and message wording.

Adapters put these messages in front of operators (``KubeApiError`` carries them into job
records), and some code branches on the reason (``AlreadyExists`` means "someone else made
it", ``Conflict`` means "re-read and retry"), so the fake answers in exactly the words a
real cluster uses rather than in its own.
"""

from __future__ import annotations

from typing import Any

from tests.kube_api.resources import ResourceType

Obj = dict[str, Any]


class ApiError(Exception):
    """A request that the API server answers with a failure ``Status``."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: Obj | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> Obj:
        """The ``Status`` body of the response."""
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rt: ResourceType, name: str, *, kind: str | None = None) -> Obj:
    details: Obj = {"name": name, "kind": kind or rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{rt.qualified} "{name}" not found', details=_details(rt, name)
    )


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', details=_details(rt, name)
    )


def conflict(rt: ResourceType, name: str, why: str | None = None) -> ApiError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        details=_details(rt, name),
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """``causes`` are ``(field, problem)`` pairs, reported as Kubernetes lists them."""
    texts = [f"{field}: {problem}" if field else problem for field, problem in causes]
    listed = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = _details(rt, name, kind=rt.kind)
    details["causes"] = [
        {"reason": "FieldValueInvalid", "message": problem, "field": field}
        for field, problem in causes
    ]
    return ApiError(
        422, "Invalid", f'{rt.kind_qualified} "{name}" is invalid: {listed}', details=details
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def unsupported_media_type(content_type: str, supported: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types "
        f'include: {", ".join(supported)} (got "{content_type}")',
    )


def forbidden(
    rt: ResourceType, verb: str, resource: str, user: str, namespace: str | None, name: str | None
) -> ApiError:
    """The RBAC denial, worded as the authorizer words it."""
    subject = f'{rt.qualified} "{name}"' if name else rt.qualified
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
        f'in API group "{rt.group}" {scope}'
    )
    return ApiError(403, "Forbidden", message, details=_details(rt, name or ""))


def success(rt: ResourceType, name: str, uid: str) -> Obj:
    """The ``Status`` a delete answers with for kinds that do not return the object."""
    details = _details(rt, name)
    details["uid"] = uid
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }
