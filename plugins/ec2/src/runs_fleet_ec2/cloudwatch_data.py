"""Metric calls as CloudWatch data: the in-memory aggregate and what PutMetricData accepts.

:class:`~runs_fleet_ec2.cloudwatch.CloudWatchMetrics` is about *when* data go to AWS
(a background flush, retries, a bounded backlog). What it sends is decided here, with
no I/O, so the hot paths that call the port only ever touch this module:

- :class:`Aggregate` folds each call into its series (name and sorted labels) under a
  lock: counters add up, gauges keep their last value, observations become a
  :class:`Distribution`, sent as ``Values``/``Counts`` while they have at most 150
  distinct values in the interval and past that as exact ``StatisticValues``;
- CloudWatch's limits, and how labels become dimensions it accepts (:func:`dimensions`)
  rather than data it refuses;
- the unit a metric's name implies (:func:`unit`) and how many data fit one request
  (:func:`batch_length`).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

MAX_DATA_PER_CALL = 1000
MAX_CALL_BYTES = 900_000
"""Estimated request size per call, below PutMetricData's 1 MB."""
MAX_DIMENSIONS = 30
MAX_NAME_CHARS = 255
MAX_VALUE_CHARS = 1024
MAX_DISTINCT_VALUES = 150
MAX_MAGNITUDE = 2.0**360
EMPTY_VALUE = "(empty)"

MetricKind = Literal["counter", "gauge", "histogram"]
Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]
Datum = dict[str, Any]

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
_UNITS = (("_seconds", "Seconds"), ("_bytes", "Bytes"), ("_percent", "Percent"))
_CONTROL = dict.fromkeys((*range(32), 127), "?")


def namespace_problem(namespace: str) -> str | None:
    """Why CloudWatch would refuse ``namespace``, or ``None``."""
    if not namespace.strip():
        return "must not be empty"
    if len(namespace) > MAX_NAME_CHARS:
        return f"has {len(namespace)} characters, CloudWatch allows {MAX_NAME_CHARS}"
    if not namespace.isascii() or namespace != namespace.translate(_CONTROL):
        return "must be ASCII without control characters"
    if namespace.startswith((":", "AWS/")):
        return "must not start with ':' or 'AWS/' (reserved for AWS services)"
    return None


def dimensions(labels: Labels) -> list[dict[str, str]]:
    """The CloudWatch dimensions of sorted ``labels``, made acceptable to PutMetricData.

    CloudWatch allows 30 dimensions per metric, names of 1-255 and values of 1-1024
    ASCII characters. Rather than lose the datum, beyond 30 labels the first 30 by
    name are kept; non-ASCII and control characters become ``?``; a longer name or
    value is cut to the limit; an empty or blank one becomes ``(empty)`` (the core
    labels the default backend ``""``), so the dimension set of a metric never varies.
    """
    return [
        {"Name": _text(name, MAX_NAME_CHARS), "Value": _text(value, MAX_VALUE_CHARS)}
        for name, value in labels[:MAX_DIMENSIONS]
    ]


def _text(text: str, limit: int) -> str:
    clean = str(text).encode("ascii", "replace").decode("ascii").translate(_CONTROL)
    return clean[:limit] if clean.strip() else EMPTY_VALUE


def unit(kind: MetricKind, name: str) -> str:
    """The CloudWatch unit of metric ``name``: ``*_seconds`` is ``Seconds``, ``*_bytes``
    ``Bytes``, ``*_percent`` ``Percent``, other counters ``Count``, the rest ``None``."""
    for suffix, found in _UNITS:
        if name.endswith(suffix):
            return found
    return "Count" if kind == "counter" else "None"


def _sendable(value: float) -> bool:
    """CloudWatch refuses NaN, infinities and magnitudes beyond 2**360."""
    return math.isfinite(value) and abs(value) <= MAX_MAGNITUDE


def _size(datum: Datum) -> int:
    """A generous estimate of ``datum``'s share of a request, in bytes (the query
    protocol, which older botocore uses, spells out and URL-encodes every field)."""
    size = 150 + 3 * len(datum["MetricName"])
    for dimension in datum.get("Dimensions", ()):
        size += 100 + 3 * (len(dimension["Name"]) + len(dimension["Value"]))
    return size + 80 * len(datum.get("Values", ()))


def batch_length(data: Sequence[Datum]) -> int:
    """How many of the first ``data`` fit one PutMetricData call (at least one)."""
    size = 0
    for index, datum in enumerate(data[:MAX_DATA_PER_CALL]):
        size += _size(datum)
        if size > MAX_CALL_BYTES and index > 0:
            return index
    return min(len(data), MAX_DATA_PER_CALL)


@attrs.define
class Distribution:
    """The observations of one series in one interval."""

    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    values: dict[float, int] | None = attrs.field(factory=dict)
    """Occurrences per distinct value; ``None`` once there were too many to send."""

    def add(self, value: float) -> None:
        """Count one observation of ``value``."""
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        if self.values is None:
            return
        if value in self.values:
            self.values[value] += 1
        elif len(self.values) < MAX_DISTINCT_VALUES:
            self.values[value] = 1
        else:
            self.values = None

    def fields(self) -> Datum:
        """The datum fields that carry these observations: every distinct value with
        its count while they fit, else the exact statistics."""
        if self.values is not None:
            return {"Values": list(self.values), "Counts": [float(n) for n in self.values.values()]}
        return {
            "StatisticValues": {
                "SampleCount": float(self.count),
                "Sum": self.total,
                "Minimum": self.low,
                "Maximum": self.high,
            }
        }


@attrs.frozen
class Snapshot:
    """What :meth:`Aggregate.take` handed over: one interval's series by kind."""

    counters: dict[SeriesKey, float]
    gauges: dict[SeriesKey, float]
    distributions: dict[SeriesKey, Distribution]


class Aggregate:
    """What the metric calls reported since the last snapshot.

    Calls come from the event loop and from the AWS thread pool (the callers count their
    own API calls); one lock makes each call land wholly before or after a snapshot.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kinds: dict[str, MetricKind] = {}
        self._counters: dict[SeriesKey, float] = {}
        self._gauges: dict[SeriesKey, float] = {}
        self._distributions: dict[SeriesKey, Distribution] = {}

    def add(
        self, kind: MetricKind, name: str, value: float, labels: Mapping[str, str] | None
    ) -> None:
        """Fold one call into its series. ``ValueError`` for a name that is not snake_case
        without the ``runs_fleet_`` prefix, is longer than CloudWatch allows, or is already
        used for another kind; values CloudWatch would refuse (NaN, infinities, huge
        magnitudes) are left out."""
        self._check(kind, name)
        if not _sendable(value):
            return
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())) if labels else ())
        with self._lock:
            if kind == "counter":
                self._counters[key] = self._counters.get(key, 0.0) + value
            elif kind == "gauge":
                self._gauges[key] = value
            else:
                self._distributions.setdefault(key, Distribution()).add(value)

    def take(self) -> Snapshot:
        """Everything so far; counters and observations start again from nothing."""
        with self._lock:
            counters, self._counters = self._counters, {}
            distributions, self._distributions = self._distributions, {}
            gauges = dict(self._gauges)
        return Snapshot(counters, gauges, distributions)

    def _check(self, kind: MetricKind, name: str) -> None:
        known = self._kinds.get(name)
        if known is None:
            if not _NAME_RE.fullmatch(name) or name.startswith("runs_fleet_"):
                raise ValueError(
                    f"metric name {name!r} must be snake_case without the runs_fleet_ prefix"
                )
            if len(name) > MAX_NAME_CHARS:
                raise ValueError(f"metric name {name!r} is longer than {MAX_NAME_CHARS}")
            with self._lock:
                known = self._kinds.setdefault(name, kind)
        if known != kind:
            raise ValueError(
                f"metric {name!r} is a {known}; it cannot be used as a {kind} too: "
                "give the new metric a name of its own"
            )
