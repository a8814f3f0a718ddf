"""A per-source limit on webhook requests whose signature is missing or wrong.

``POST /webhook`` is open to the internet. A badly signed request costs the server
little, but each one is worth a warning (a wrong webhook secret looks just like this),
and a flood of them would bury that warning. So past ``limit`` badly signed requests
from one client address within ``window_s`` seconds, its further badly signed requests
are answered 429 with ``Retry-After`` and not logged one by one; one line says the
address is limited. A correctly signed request is never counted nor limited: GitHub may
reach the server through the same load-balancer address as an attacker.

At most ``max_sources`` addresses are tracked; the one that sent its last bad request
longest ago is forgotten first, so a spray of addresses cannot grow the memory.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import datetime

import attrs

from runs_fleet_core.ports import Clock

LIMIT_SETTING = "RUNS_FLEET_WEBHOOK_BAD_SIGNATURE_LIMIT"
WINDOW_SETTING = "RUNS_FLEET_WEBHOOK_BAD_SIGNATURE_WINDOW_S"
MAX_SOURCES = 10_000


@attrs.define
class _Window:
    started: datetime
    count: int = 0


@attrs.frozen(kw_only=True)
class Verdict:
    """What to do with one badly signed request: ``count`` is the source's badly signed
    requests in its current window (this one included); when ``limited``, answer 429
    with ``Retry-After: retry_after_s``, and ``first`` says this is the first such answer
    of the window (the one to log)."""

    count: int
    limited: bool = False
    first: bool = False
    retry_after_s: int = 0


@attrs.define(kw_only=True)
class BadSignatureLimit:
    """Counts badly signed requests per source in fixed windows that start at a
    source's first badly signed request. ``limit`` 0 turns the limit off."""

    limit: int
    window_s: float
    clock: Clock
    max_sources: int = MAX_SOURCES
    _windows: OrderedDict[str, _Window] = attrs.field(init=False, factory=OrderedDict)

    def count(self, source: str) -> Verdict:
        """Count one badly signed request from ``source`` and say whether to refuse it
        with 429 instead of 401."""
        if self.limit <= 0:
            return Verdict(count=0)
        now = self.clock.now()
        window = self._windows.pop(source, None)
        if window is None or not 0 <= (now - window.started).total_seconds() < self.window_s:
            window = _Window(started=now)
        window.count += 1
        self._windows[source] = window
        while len(self._windows) > self.max_sources:
            self._windows.popitem(last=False)
        if window.count <= self.limit:
            return Verdict(count=window.count)
        left = self.window_s - (now - window.started).total_seconds()
        return Verdict(
            count=window.count,
            limited=True,
            first=window.count == self.limit + 1,
            retry_after_s=max(1, math.ceil(left)),
        )

    @property
    def tracked(self) -> int:
        """How many sources are counted now (at most ``max_sources``)."""
        return len(self._windows)
