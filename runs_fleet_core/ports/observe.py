"""Small ports for time and metrics, injected so the core never reads a global clock."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The real clock (the only place in the core that reads the system time)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@runtime_checkable
class Metrics(Protocol):
    """Counters, gauges and histograms. Label values must never carry secrets; names
    are ``snake_case`` without a prefix (sinks add ``runs_fleet_``)."""

    def increment(
        self, name: str, value: float = 1.0, labels: Mapping[str, str] | None = None
    ) -> None: ...

    def gauge(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None: ...

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None: ...
