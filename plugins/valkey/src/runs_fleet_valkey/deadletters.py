"""The Valkey queue's dead letters: listing, redriving and purging the dead-letter stream.

A dead letter is an entry of ``<queue name>:dead`` (fields ``payload``, ``dedup``,
``reason``, ``attempts``); its entry id is its stable id and tells when it was written
(milliseconds of the server's clock). Entries stay until a person redrives or purges
them, so nothing here trims the stream.

Redriving a dead letter is one script (:data:`~runs_fleet_valkey.queue_scripts.REDRIVE`)
that adds the message to the job queue as a fresh entry (attempts from 0, dedup key set
again) and deletes the dead letter: no crash can leave it in both places or in neither.
Which entries are readable messages is decided here, in Python, with the converter the
queue delivers with; an unreadable one is never sent back (it would only be
dead-lettered again) and its content is never handed out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

import cattrs
from redis.asyncio import Redis

from runs_fleet_core.converters import loads
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.ports.queue import DeadLetter, Redriven
from runs_fleet_valkey import queue_scripts

__all__ = ["DeadLetterStream"]

PAGE = 500
"""Entries read per ``XRANGE`` and moved per redrive script call."""
_ENTRY_ID = re.compile(r"(\d{1,20})-(\d{1,20})")

Entry = tuple[str, dict[str, str]]


class DeadLetterStream:
    """The dead-letter stream ``dead`` of the job stream ``stream``.

    ``dedup_prefix``, ``max_length`` and ``dedup_ttl_ms`` are the queue's, so a redriven
    message is sent exactly as :meth:`~runs_fleet_valkey.queue.ValkeyQueue.send` would.
    """

    def __init__(
        self,
        client: Redis,
        *,
        stream: str,
        dead: str,
        dedup_prefix: str,
        max_length: int,
        dedup_ttl_ms: int,
        converter: cattrs.Converter,
    ) -> None:
        self._client = client
        self._keys = [stream, dead]
        self._dead = dead
        self._send_args: list[str | int] = [dedup_prefix, max_length, dedup_ttl_ms]
        self._converter = converter
        self._redrive = client.register_script(queue_scripts.REDRIVE)

    async def listing(self) -> list[DeadLetter]:
        """Every dead letter, oldest first (read in pages)."""
        return [self._letter(entry) for page in await self._pages() for entry in page]

    async def redrive(self, ids: Sequence[str] | None) -> Redriven:
        """Move ``ids`` (``None``: all) back to the job stream; see the module docstring."""
        if ids is None:
            pages, not_found = await self._pages(), []
        else:
            ids = list(dict.fromkeys(ids))
            found = await self._entries(ids)
            pages = [[found[i] for i in ids if i in found]]
            not_found = [i for i in ids if i not in found]
        moved: list[str] = []
        unreadable: list[str] = []
        for page in pages:
            pairs: list[str | int] = []
            for entry_id, fields in page:
                message = self._message(fields)
                if message is None:
                    unreadable.append(entry_id)
                else:
                    pairs += [entry_id, message.dedup_id]
            if pairs:
                done = set(await self._redrive(keys=self._keys, args=[*self._send_args, *pairs]))
                moved += [str(i) for i in pairs[::2] if i in done]
                not_found += [str(i) for i in pairs[::2] if i not in done]  # gone meanwhile
        return Redriven(
            moved=tuple(moved), not_found=tuple(not_found), unreadable=tuple(unreadable)
        )

    async def purge(self, ids: Sequence[str]) -> list[str]:
        """Delete the dead letters ``ids``; those that were there."""
        wanted = [i for i in dict.fromkeys(ids) if _is_entry_id(i)]
        if not wanted:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for entry_id in wanted:
                pipe.xdel(self._dead, entry_id)
            deleted = await pipe.execute()
        return [i for i, count in zip(wanted, deleted, strict=True) if count]

    async def _pages(self) -> list[list[Entry]]:
        pages: list[list[Entry]] = []
        start = "-"
        while True:
            page = cast("list[Entry]", await self._client.xrange(self._dead, start, "+", PAGE))
            pages.append(page)
            if len(page) < PAGE:
                return pages
            start = f"({page[-1][0]}"

    async def _entries(self, ids: Sequence[str]) -> dict[str, Entry]:
        """The entries of ``ids`` that exist (an id that is not an entry id is none)."""
        wanted = [i for i in dict.fromkeys(ids) if _is_entry_id(i)]
        if not wanted:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for entry_id in wanted:
                pipe.xrange(self._dead, entry_id, entry_id)
            replies = cast("list[list[Entry]]", await pipe.execute())
        return {i: entries[0] for i, entries in zip(wanted, replies, strict=True) if entries}

    def _message(self, fields: dict[str, str]) -> JobMessage | None:
        try:
            return loads(self._converter, fields.get("payload", ""), JobMessage)
        except ValueError:
            return None

    def _letter(self, entry: Entry) -> DeadLetter:
        entry_id, fields = entry
        attempts = fields.get("attempts", "")
        return DeadLetter(
            id=entry_id,
            message=self._message(fields),
            reason=fields.get("reason") or "no reason recorded",
            attempts=int(attempts) if attempts.isdigit() else 0,
            dead_lettered_at=datetime.fromtimestamp(int(entry_id.split("-")[0]) / 1000, UTC),
            size=len(fields.get("payload", "").encode()),
        )


def _is_entry_id(text: str) -> bool:
    """Whether ``text`` is a whole stream entry id (anything else names no dead letter,
    and the server would refuse it)."""
    match = _ENTRY_ID.fullmatch(text)
    return match is not None and all(int(part) < 2**64 for part in match.groups())
