"""A clock that only moves when a test says so, and metrics that remember what was sent.

Time and metrics are ports so the core never reads a global clock or a global registry;
these two fakes are what unit tests and the "memory" mode inject instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

DEFAULT_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
"""Where a :class:`ManualClock` starts: a Monday morning, inside most pool schedules."""

_METRIC_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")

LabelKey = tuple[str, tuple[tuple[str, str], ...]]
"""A metric name with its labels, sorted: one time series."""


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"a clock needs a timezone-aware datetime, got naive {value}")
    return value.astimezone(UTC)


class ManualClock:
    """The :class:`~runs_fleet_core.ports.Clock` port, moved by hand.

    It starts at ``start`` (default 2026-01-05T09:00:00Z, a Monday) and stays there until
    :meth:`advance` or :meth:`set` moves it, so tests decide exactly when leases,
    visibility timeouts and idle timers expire.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = _aware_utc(start if start is not None else DEFAULT_START)

    def now(self) -> datetime:
        """The clock's current time, timezone-aware, in UTC."""
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds`` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError(f"time only moves forward; use set() to go back ({seconds} s)")
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, dt: datetime) -> None:
        """Jump to ``dt`` (timezone-aware), forwards or backwards."""
        self._now = _aware_utc(dt)

    def __repr__(self) -> str:
        return f"ManualClock({self._now.isoformat()})"


def _series(name: str, labels: Mapping[str, str] | None) -> LabelKey:
    if not _METRIC_NAME_RE.fullmatch(name) or name.startswith("runs_fleet_"):
        raise ValueError(f"metric name {name!r} must be snake_case without the runs_fleet_ prefix")
    return name, tuple(sorted((labels or {}).items()))


def _matches(key: LabelKey, name: str, labels: Mapping[str, str]) -> bool:
    key_name, key_labels = key
    return key_name == name and set(labels.items()) <= set(key_labels)


class RecordingMetrics:
    """The :class:`~runs_fleet_core.ports.Metrics` port, recording every call.

    ``counters`` and ``gauges`` map a series (name, sorted labels) to its value;
    ``observations`` to the list of observed values. Names are checked the way a real
    sink would need them (``snake_case``, no ``runs_fleet_`` prefix).
    """

    def __init__(self) -> None:
        self.counters: dict[LabelKey, float] = {}
        self.gauges: dict[LabelKey, float] = {}
        self.observations: dict[LabelKey, list[float]] = {}

    def increment(
        self, name: str, value: float = 1.0, labels: Mapping[str, str] | None = None
    ) -> None:
        """Add ``value`` to the counter ``name`` with ``labels``; counters never go down."""
        if value < 0:
            raise ValueError(f"counter {name!r} cannot be incremented by {value}")
        key = _series(name, labels)
        self.counters[key] = self.counters.get(key, 0.0) + value

    def gauge(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set the gauge ``name`` with ``labels`` to ``value``."""
        self.gauges[_series(name, labels)] = value

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Record one observation of the histogram ``name`` with ``labels``."""
        self.observations.setdefault(_series(name, labels), []).append(value)

    def count(self, name: str, /, **labels: str) -> float:
        """The sum of the counters ``name`` whose labels include ``labels``."""
        return sum(v for k, v in self.counters.items() if _matches(k, name, labels))

    def gauge_value(self, name: str, /, **labels: str) -> float | None:
        """The gauge ``name`` whose labels include ``labels`` (``None`` if never set;
        ``ValueError`` if several series match)."""
        found = [v for k, v in self.gauges.items() if _matches(k, name, labels)]
        if len(found) > 1:
            raise ValueError(f"{len(found)} gauges {name!r} match {labels}; name more labels")
        return found[0] if found else None

    def observed(self, name: str, /, **labels: str) -> list[float]:
        """Every value observed for ``name`` in series whose labels include ``labels``."""
        return [
            value
            for key, values in self.observations.items()
            if _matches(key, name, labels)
            for value in values
        ]
