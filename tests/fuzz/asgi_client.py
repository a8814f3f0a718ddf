"""Calling an ASGI app directly, as an ASGI server does: one request in, the status and
body out. The fuzz targets send 10,000 requests per run; a general client such as
httpx's ``ASGITransport`` costs more per request than the app itself. An exception the
app raises propagates to the caller (nothing turns it into a 500)."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from starlette.types import ASGIApp, Message


@attrs.frozen
class Response:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), or ``None``."""
        wanted = name.lower().encode()
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == wanted), None)


async def post(
    app: ASGIApp,
    path: str,
    body: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    client: tuple[str, int],
) -> Response:
    """``POST path`` with ``body`` and ``headers`` (plus ``Host`` and ``Content-Length``,
    as every HTTP/1.1 client sends them) from ``client``."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"runs-fleet"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": client,
        "server": ("runs-fleet", 80),
    }
    incoming: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    started: list[Message] = []
    chunks: list[bytes] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.append(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    assert len(started) == 1, f"the app started {len(started)} responses"
    return Response(
        status=started[0]["status"],
        headers=tuple(started[0].get("headers", ())),
        body=b"".join(chunks),
    )
