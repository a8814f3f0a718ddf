"""``/api/dead-letters``: the job messages runs-fleet gave up on, and sending them back.

A message is dead-lettered after ``RUNS_FLEET_MAX_ATTEMPTS`` failed deliveries, or at
once when the queue cannot read it. Once the cause is fixed (capacity is back, a
backend is configured) an operator redrives it: it goes back to the job queue as a
fresh message with all its attempts, and the worker dispatches it like any other.
An entry that holds no job message can only be purged.

The answers name each dead letter by its queue id and the job it asks a runner for,
never with the stored payload: an unreadable entry is described by its size alone.
Same access rule as the jobs API: ``Authorization: Bearer <RUNS_FLEET_ADMIN_TOKEN>``,
or loopback clients only when no token is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runs_fleet_core.errors import ConfigError
from runs_fleet_core.ports.queue import DeadLetter
from runs_fleet_server.bootstrap import Services
from runs_fleet_server.common import UNAVAILABLE, BodyTooLarge, admin_denied, error, read_body

_log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_IDS = 1000
MAX_BODY = 64 * 1024
LIST_TIMEOUT_S = 10.0
"""Below the CLI's own 15 s: a slow listing is answered with 503, not a client timeout."""
BODY_SHAPE = 'send {"ids": ["<id>", ...]} or {"all": true}'


class _BadRequest(Exception):
    pass


@attrs.define
class DeadLettersApi:
    """The dead-letters API handlers, bound to the process's services."""

    services: Services

    async def list_dead_letters(self, request: Request) -> Response:
        """Dead letters oldest first, ``limit`` per page; ``cursor`` = the previous
        page's ``next_cursor`` (a position: a redrive between pages shifts the rest)."""
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            limit = _whole(request.query_params.get("limit"), "limit", DEFAULT_LIMIT)
            cursor = _whole(request.query_params.get("cursor"), "cursor", 0)
            if not 1 <= limit <= MAX_LIMIT:
                raise _BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
        except _BadRequest as exc:
            return error(400, str(exc))
        try:
            async with asyncio.timeout(LIST_TIMEOUT_S):
                letters = await self.services.adapters.queue.dead_letters()
        except ConfigError as exc:
            return error(503, str(exc))
        except UNAVAILABLE:
            return error(503, "the job queue is unavailable; try again later")
        page = letters[cursor : cursor + limit]
        more = cursor + limit < len(letters)
        return JSONResponse(
            {
                "dead_letters": [summary(letter) for letter in page],
                "total": len(letters),
                "next_cursor": str(cursor + limit) if more else None,
            }
        )

    async def redrive(self, request: Request) -> Response:
        """Send the dead letters the body names back to the job queue."""
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            ids = _redrive_ids(await read_body(request, MAX_BODY))
        except BodyTooLarge:
            return error(413, f"the body is larger than {MAX_BODY} bytes; {BODY_SHAPE}")
        except _BadRequest as exc:
            return error(400, str(exc))
        try:
            result = await self.services.adapters.queue.redrive(ids)
        except ConfigError as exc:
            return error(503, str(exc))
        except UNAVAILABLE:
            return error(503, "the job queue is unavailable; nothing or part was redriven")
        if result.moved:
            _log.info("redriven %d dead letter(s): %s", len(result.moved), ", ".join(result.moved))
        return JSONResponse(
            {
                "moved": len(result.moved),
                "moved_ids": list(result.moved),
                "not_found": list(result.not_found),
                "unreadable": list(result.unreadable),
            }
        )

    async def purge(self, request: Request) -> Response:
        """Delete one dead letter for good; 404 when there is none with that id."""
        if (denied := self._denied(request)) is not None:
            return denied
        dead_id = str(request.path_params["dead_letter_id"])
        try:
            purged = await self.services.adapters.queue.purge([dead_id])
        except ConfigError as exc:
            return error(503, str(exc))
        except UNAVAILABLE:
            return error(503, "the job queue is unavailable; try again later")
        if dead_id not in purged:
            return error(404, f"there is no dead letter {dead_id!r}; list them for their ids")
        _log.info("purged dead letter %s", dead_id)
        return JSONResponse({"purged": dead_id})

    def _denied(self, request: Request) -> Response | None:
        return admin_denied(request, self.services.admin_token, "the dead-letters API")


def summary(letter: DeadLetter) -> dict[str, Any]:
    """What the API shows of one dead letter: its ids, never its stored payload."""
    message = letter.message
    at = letter.dead_lettered_at
    return {
        "id": letter.id,
        "job_id": None if message is None else int(message.job_id),
        "run_id": None if message is None else str(message.run_id),
        "repository": None if message is None else message.repository,
        "job_attempt": None if message is None else message.attempt,
        "attempts": letter.attempts,
        "reason": letter.reason,
        "dead_lettered_at": None if at is None else at.isoformat(),
        "readable": message is not None,
        "size": letter.size,
    }


def _redrive_ids(body: bytes) -> Sequence[str] | None:
    """The ids a redrive body names; ``None`` for ``{"all": true}``."""
    try:
        parsed = json.loads(body) if body.strip() else None
    except ValueError:
        raise _BadRequest(f"the body is not JSON; {BODY_SHAPE}") from None
    if not isinstance(parsed, dict):
        raise _BadRequest(f"the body must be a JSON object; {BODY_SHAPE}")
    unknown = sorted(set(parsed) - {"ids", "all"})
    if unknown:
        raise _BadRequest(f"unknown field(s) {', '.join(unknown)}; {BODY_SHAPE}")
    if ("ids" in parsed) == ("all" in parsed):
        raise _BadRequest(f"give either ids or all, not both nor neither; {BODY_SHAPE}")
    if "all" in parsed:
        if parsed["all"] is not True:
            raise _BadRequest(f'"all" must be true; {BODY_SHAPE}')
        return None
    ids = parsed["ids"]
    if not isinstance(ids, list) or not ids:
        raise _BadRequest(f'"ids" must be a non-empty list of dead-letter ids; {BODY_SHAPE}')
    if not all(isinstance(i, str) and i.strip() for i in ids):
        raise _BadRequest(f'every id in "ids" must be a non-empty string; {BODY_SHAPE}')
    if len(ids) > MAX_IDS:
        raise _BadRequest(f'at most {MAX_IDS} ids at once; use {{"all": true}} for more')
    return [str(i).strip() for i in ids]


def _whole(text: str | None, name: str, default: int) -> int:
    if not text:
        return default
    if not text.isdigit() or len(text) > 9:
        raise _BadRequest(f"{name} must be a whole number")
    return int(text)
