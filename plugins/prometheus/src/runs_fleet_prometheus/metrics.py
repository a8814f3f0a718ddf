"""The Metrics port over prometheus_client, with metrics made on first use.

The core names a metric when it first reports it (``increment("jobs_queued", labels=
{"backend": "ec2"})``); this sink creates the matching Prometheus counter, gauge or
histogram then, as ``runs_fleet_<name>``, and fixes its label names. Prometheus needs
one set of label names per metric, so a later call with other label names, or a name
reused as another kind of metric, is a ``ValueError`` that says which call differs
(a programming error that the use cases' tests catch), never a silently split series.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from typing import Literal

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "runs_fleet_"
Kind = Literal["counter", "gauge", "histogram"]
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
"""Seconds, from a webhook's few milliseconds to a runner's start-up of minutes."""

_Metric = Counter | Gauge | Histogram


@attrs.frozen
class _Entry:
    kind: Kind
    label_names: tuple[str, ...]
    metric: _Metric


class PrometheusMetrics:
    """The :class:`~runs_fleet_core.ports.Metrics` port, exported for Prometheus.

    Every instance has its own :class:`CollectorRegistry` (``registry``); histograms use
    ``buckets``. Safe to call from several threads.
    """

    def __init__(self, *, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._buckets = tuple(buckets)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def increment(
        self, name: str, value: float = 1.0, labels: Mapping[str, str] | None = None
    ) -> None:
        """Add ``value`` (not negative) to the counter ``runs_fleet_<name>_total``."""
        if value < 0:
            raise ValueError(f"counter {name!r} cannot be incremented by {value}")
        metric = self._series("counter", name, labels)
        assert isinstance(metric, Counter)
        metric.inc(value)

    def gauge(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set the gauge ``runs_fleet_<name>`` to ``value``."""
        metric = self._series("gauge", name, labels)
        assert isinstance(metric, Gauge)
        metric.set(value)

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Record ``value`` in the histogram ``runs_fleet_<name>``."""
        metric = self._series("histogram", name, labels)
        assert isinstance(metric, Histogram)
        metric.observe(value)

    def render(self) -> tuple[bytes, str]:
        """The exposition text of every metric so far, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _series(self, kind: Kind, name: str, labels: Mapping[str, str] | None) -> _Metric:
        """The child of metric ``name`` for ``labels``, creating the metric if new."""
        labels = labels or {}
        names = tuple(sorted(labels))
        entry = self._entry(kind, name, names)
        if not names:
            return entry.metric
        return entry.metric.labels(**{key: str(labels[key]) for key in names})

    def _entry(self, kind: Kind, name: str, names: tuple[str, ...]) -> _Entry:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = _Entry(kind, names, self._create(kind, name, names))
        if entry.kind != kind:
            raise ValueError(
                f"metric {name!r} is a {entry.kind}; it cannot be used as a {kind} too: "
                "give the new metric a name of its own"
            )
        if entry.label_names != names:
            raise ValueError(
                f"metric {name!r} was first used with the label names "
                f"({', '.join(entry.label_names) or 'none'}) and now with "
                f"({', '.join(names) or 'none'}): every call must use the same label names"
            )
        return entry

    def _create(self, kind: Kind, name: str, names: tuple[str, ...]) -> _Metric:
        if not _NAME_RE.fullmatch(name) or name.startswith(PREFIX):
            raise ValueError(
                f"metric name {name!r} must be snake_case without the {PREFIX} prefix "
                "(the sink adds it)"
            )
        full = PREFIX + name
        help_text = f"runs-fleet {kind} {name}"
        if kind == "counter":
            return Counter(full, help_text, names, registry=self.registry)
        if kind == "gauge":
            return Gauge(full, help_text, names, registry=self.registry)
        return Histogram(full, help_text, names, registry=self.registry, buckets=self._buckets)
