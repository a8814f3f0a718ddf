"""Small HTTP helpers shared by the server's routes: bounded bodies, JSON errors, auth.

A request body is read in chunks and abandoned as soon as it passes its limit, so a
client cannot make the server buffer more than that; errors are JSON objects with an
``error`` sentence, never a traceback or a secret.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runs_fleet_core.errors import AdapterError, ConflictError

UNAVAILABLE = (AdapterError, ConflictError, OSError, asyncio.TimeoutError)
"""Failures of a backing service (queue, state store): answered with 503, retry later."""


_URL_USER_INFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@]*@")


def without_credentials(text: str) -> str:
    """``text`` with the user info of every URL in it (``user:password@``) replaced by
    ``***@``: a client library's error may quote the URL it was given, password and
    all, and such errors are logged."""
    return _URL_USER_INFO.sub(r"\1***@", text)


class BodyTooLarge(Exception):
    """The request body is larger than the route accepts."""


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or :class:`BodyTooLarge` as soon as it passes ``limit`` bytes
    (at once when ``Content-Length`` says so, without reading any of it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """``{"error": message, ...extra}`` with ``status``."""
    return JSONResponse({"error": message, **extra}, status_code=status)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (any text, never raising)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def is_loopback(request: Request) -> bool:
    """Whether the TCP peer is this host (127.0.0.0/8 or ::1)."""
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_denied(request: Request, admin_token: str | None, api: str) -> Response | None:
    """``None`` when ``request`` may use the admin API named ``api`` (e.g. "the jobs
    API"), else the answer to give: with ``admin_token`` set, 401 unless it comes as
    ``Authorization: Bearer <token>``; without one, 403 to every host but this one, so
    an unconfigured server publishes nothing."""
    if admin_token:
        given = bearer_token(request)
        if given is None or not same_secret(given, admin_token):
            return JSONResponse(
                {"error": "an 'Authorization: Bearer <admin token>' header is required"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None
    if not is_loopback(request):
        return error(403, f"{api} answers other hosts only when RUNS_FLEET_ADMIN_TOKEN is set")
    return None
