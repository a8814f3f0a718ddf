"""The Metrics port on CloudWatch, beside Prometheus.

EC2 deployments graph and alarm in CloudWatch, next to the rest of their AWS account,
while the server keeps serving ``/metrics``. :class:`CloudWatchMetrics` therefore wraps
the Prometheus sink, hands it every call unchanged, and also sends the same calls to
CloudWatch with ``PutMetricData``.

Metric calls come from hot paths (a webhook, a dispatch) and must never wait for AWS, so
a call only updates an in-memory aggregate under a lock; a background task sends it every
``RUNS_FLEET_CLOUDWATCH_INTERVAL_S``. Per series (name and sorted labels):

- counters add up over the interval and are sent as one value, unit ``Count``;
- gauges keep their last value and are sent at every flush, as Prometheus exports a
  gauge at every scrape (event-driven gauges such as ``worker_in_flight`` stay on the
  graph while nothing changes);
- observations are sent as ``Values``/``Counts`` while they have at most 150 distinct
  values in the interval (CloudWatch's limit per datum; it computes percentiles from
  these), and past that as exact ``StatisticValues`` (count, sum, minimum, maximum).

In CloudWatch a metric is named as the port names it (``jobs_queued``, where Prometheus
shows ``runs_fleet_jobs_queued_total``): the namespace already says whose it is. Units
follow the name: ``*_seconds`` is ``Seconds``, ``*_bytes`` ``Bytes``, ``*_percent``
``Percent``, other counters ``Count``, the rest ``None``. The aggregate, the units and
CloudWatch's limits on data live in :mod:`runs_fleet_ec2.cloudwatch_data`; this module
decides when data go to AWS and what happens when they cannot.

A flush that fails is logged with the AWS error code and its data kept, with their
original timestamps, for the next flush, up to ``max_pending`` data (the oldest go
first, counted as ``cloudwatch_data_dropped``); data CloudWatch refuses as invalid are
dropped, since sending them again cannot succeed. No failure ever reaches a caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

from runs_fleet_aws.calls import AwsCaller, error_code
from runs_fleet_core.errors import ConfigError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports import Clock, Metrics, SystemClock
from runs_fleet_core.settings import Kind, Setting
from runs_fleet_ec2.cloudwatch_data import (
    EMPTY_VALUE,
    MAX_CALL_BYTES,
    MAX_DATA_PER_CALL,
    MAX_DIMENSIONS,
    MAX_DISTINCT_VALUES,
    MAX_MAGNITUDE,
    MAX_NAME_CHARS,
    MAX_VALUE_CHARS,
    Aggregate,
    Datum,
    Labels,
    MetricKind,
    SeriesKey,
    batch_length,
    dimensions,
    namespace_problem,
    unit,
)

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_NAMESPACE",
    "EMPTY_VALUE",
    "ENABLED",
    "INTERVAL",
    "MAX_AGE",
    "MAX_CALL_BYTES",
    "MAX_DATA_PER_CALL",
    "MAX_DIMENSIONS",
    "MAX_DISTINCT_VALUES",
    "MAX_MAGNITUDE",
    "MAX_NAME_CHARS",
    "MAX_VALUE_CHARS",
    "NAMESPACE",
    "REJECTED_CODES",
    "SETTINGS",
    "CloudWatchMetrics",
    "Datum",
    "Labels",
    "MetricKind",
    "Refresher",
    "SeriesKey",
    "batch_length",
    "dimensions",
    "from_context",
    "namespace_problem",
]

_log = logging.getLogger(__name__)

ENABLED = "RUNS_FLEET_CLOUDWATCH_ENABLED"
NAMESPACE = "RUNS_FLEET_CLOUDWATCH_NAMESPACE"
INTERVAL = "RUNS_FLEET_CLOUDWATCH_INTERVAL_S"
DEFAULT_NAMESPACE = "RunsFleet"
DEFAULT_INTERVAL_S = 60.0
DEFAULT_MAX_PENDING = 10_000
"""Data kept across failed flushes: ten full PutMetricData calls."""

MAX_AGE = timedelta(days=14) - timedelta(hours=1)
"""CloudWatch refuses data older than two weeks; an hour of margin for the send."""
REJECTED_CODES = frozenset(
    {"InvalidParameterValue", "InvalidParameterCombination", "MissingParameter"}
)
"""Error codes that mean "these data are invalid": resending them cannot succeed."""

SETTINGS: tuple[Setting, ...] = (
    Setting(
        name=ENABLED,
        help="Send metrics to CloudWatch (PutMetricData) besides serving them on /metrics; "
        "false keeps Prometheus only",
        kind=Kind.BOOL,
        default=True,
    ),
    Setting(
        name=NAMESPACE,
        help="CloudWatch namespace of the metrics (ASCII, at most 255 characters, not "
        "starting with 'AWS/' or ':')",
        default=DEFAULT_NAMESPACE,
    ),
    Setting(
        name=INTERVAL,
        help="Seconds between two sends of the aggregated metrics to CloudWatch; CloudWatch "
        "keeps one-minute resolution, and each send is billed as PutMetricData requests",
        kind=Kind.FLOAT,
        default=DEFAULT_INTERVAL_S,
        minimum=1.0,
    ),
)

Refresher = Callable[[], Awaitable[None]]


class CloudWatchMetrics:
    """The :class:`~runs_fleet_core.ports.Metrics` port, sent to CloudWatch ``namespace``
    every ``interval_s`` and handed to ``inner`` (the Prometheus sink) as it comes.

    :meth:`start` starts the background sends; :meth:`aclose` stops them and sends what
    is left. With ``enabled`` false only ``inner`` sees the calls and AWS is never
    called. ``owns_caller``: :meth:`aclose` closes ``caller`` after the last send.
    """

    def __init__(
        self,
        caller: AwsCaller,
        *,
        inner: Metrics | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        interval_s: float = DEFAULT_INTERVAL_S,
        enabled: bool = True,
        clock: Clock | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        owns_caller: bool = False,
    ) -> None:
        if problem := namespace_problem(namespace):
            raise ValueError(f"CloudWatch namespace {namespace!r} {problem}")
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.namespace = namespace
        self.interval_s = interval_s
        self.enabled = enabled
        self._caller = caller
        self._inner = inner
        self._clock = clock or SystemClock()
        self._max_pending = max_pending
        self._owns_caller = owns_caller
        self._aggregate = Aggregate()
        self._pending: list[Datum] = []
        self._refreshers: list[Refresher] = []
        self._cut_names: set[str] = set()
        self._flushing = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- the port (hot paths: no I/O) ----------------------------------------------------

    def increment(
        self, name: str, value: float = 1.0, labels: Mapping[str, str] | None = None
    ) -> None:
        """Add ``value`` (not negative) to the counter ``name``."""
        if value < 0:
            raise ValueError(f"counter {name!r} cannot be incremented by {value}")
        if self._inner is not None:
            self._inner.increment(name, value, labels)
        if self.enabled:
            self._aggregate.add("counter", name, value, labels)

    def gauge(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set the gauge ``name`` to ``value``."""
        if self._inner is not None:
            self._inner.gauge(name, value, labels)
        if self.enabled:
            self._aggregate.add("gauge", name, value, labels)

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Record one observation of ``name``."""
        if self._inner is not None:
            self._inner.observe(name, value, labels)
        if self.enabled:
            self._aggregate.add("histogram", name, value, labels)

    @property
    def render(self) -> Callable[[], tuple[bytes, str]] | None:
        """The inner sink's exposition (what ``/metrics`` serves), ``None`` without one."""
        render = getattr(self._inner, "render", None)
        return render if callable(render) else None

    @property
    def pending(self) -> int:
        """Data kept from failed sends, waiting for the next flush."""
        return len(self._pending)

    def add_refresher(self, refresh: Refresher) -> None:
        """Run ``refresh`` before each flush, e.g. to set gauges that are otherwise only
        computed when Prometheus scrapes; its failures are logged and skipped."""
        self._refreshers.append(refresh)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start flushing every ``interval_s`` (idempotent; nothing when disabled)."""
        if self.enabled and self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="cloudwatch-metrics")

    async def aclose(self) -> None:
        """Stop the background flushes, send what is left, close the inner sink and,
        if owned, the caller (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
        close = getattr(self._inner, "aclose", None)
        if callable(close):
            await close()
        if self._owns_caller:
            self._caller.close()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                await self.flush()

    # -- sending -------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Send what was aggregated and what earlier flushes kept; ``True`` when nothing
        is left to send. Never raises: failures are logged and the data kept."""
        if not self.enabled:
            return True
        async with self._flushing:
            for refresh in self._refreshers:
                try:
                    await refresh()
                except Exception as exc:
                    _log.warning("metrics refresh before a CloudWatch flush failed: %s", exc)
            now = self._clock.now()
            try:
                fresh = await self._caller.run("CloudWatch metrics snapshot", self._collect, now)
            except Exception as exc:
                _log.warning("CloudWatch metrics not collected: %s: %s", type(exc).__name__, exc)
                return False
            self._pending.extend(fresh)
            self._drop_expired(now)
            return await self._send_pending()

    def _collect(self, timestamp: datetime) -> list[Datum]:
        """The aggregate so far as MetricData, stamped ``timestamp`` (in the pool)."""
        snapshot = self._aggregate.take()
        series: list[tuple[SeriesKey, MetricKind, Datum]] = [
            *((key, "counter", {"Value": v}) for key, v in snapshot.counters.items()),
            *((key, "gauge", {"Value": v}) for key, v in snapshot.gauges.items()),
            *((key, "histogram", d.fields()) for key, d in snapshot.distributions.items()),
        ]
        data = []
        for (name, labels), kind, fields in series:
            if len(labels) > MAX_DIMENSIONS and name not in self._cut_names:
                self._cut_names.add(name)
                _log.warning(
                    "metric %s has %d labels; CloudWatch keeps the first %d by name",
                    name,
                    len(labels),
                    MAX_DIMENSIONS,
                )
            datum: Datum = {"MetricName": name, "Timestamp": timestamp, "Unit": unit(kind, name)}
            if labels:
                datum["Dimensions"] = dimensions(labels)
            data.append(datum | fields)
        return data

    async def _send_pending(self) -> bool:
        from botocore.exceptions import ParamValidationError  # loaded with the client

        while self._pending:
            batch = self._pending[: batch_length(self._pending)]
            try:
                await self._caller.call(
                    "cloudwatch", "put_metric_data", Namespace=self.namespace, MetricData=batch
                )
            except Exception as exc:
                cause = exc.__cause__ or exc
                code = error_code(cause)
                if code in REJECTED_CODES or isinstance(cause, ParamValidationError):
                    del self._pending[: len(batch)]
                    self._dropped(len(batch), "rejected", exc)
                    continue
                self.increment("cloudwatch_send_errors", labels={"code": code or "none"})
                _log.warning(
                    "CloudWatch metrics not sent, %d data kept for the next flush: %s",
                    len(self._pending),
                    exc,
                )
                self._trim()
                return False
            del self._pending[: len(batch)]
        return True

    def _trim(self) -> None:
        excess = len(self._pending) - self._max_pending
        if excess > 0:
            del self._pending[:excess]
            self._dropped(excess, "backlog", None)

    def _drop_expired(self, now: datetime) -> None:
        oldest = now - MAX_AGE
        kept = [datum for datum in self._pending if datum["Timestamp"] >= oldest]
        if expired := len(self._pending) - len(kept):
            self._pending = kept
            self._dropped(expired, "expired", None)

    def _dropped(self, count: int, reason: str, exc: Exception | None) -> None:
        """Log and count ``count`` data that will never be sent."""
        detail = f": {exc}" if exc is not None else ""
        _log.error("%d CloudWatch metric data dropped (%s)%s", count, reason, detail)
        self.increment("cloudwatch_data_dropped", float(count), labels={"reason": reason})


def from_context(
    context: AdapterContext,
    caller: AwsCaller,
    inner: Metrics | None,
    *,
    owns_caller: bool = False,
) -> CloudWatchMetrics:
    """The sink the settings describe, handing every call to ``inner`` too. Raises
    ``ConfigError`` when the namespace is one CloudWatch would refuse."""
    settings = context.settings
    namespace = str(settings.get(NAMESPACE, DEFAULT_NAMESPACE))
    if problem := namespace_problem(namespace):
        raise ConfigError([f"{NAMESPACE}={namespace!r} {problem}"])
    return CloudWatchMetrics(
        caller,
        inner=inner,
        namespace=namespace,
        interval_s=float(settings.get(INTERVAL, DEFAULT_INTERVAL_S)),
        enabled=bool(settings.get(ENABLED, True)),
        clock=context.clock,
        owns_caller=owns_caller,
    )
