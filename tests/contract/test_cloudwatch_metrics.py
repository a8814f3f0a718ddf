"""The ``cloudwatch`` metrics sink against a moto server, read back through CloudWatch's API.

What counts is what an operator sees in CloudWatch after a flush: the namespace, metric
names, dimensions, units and statistics; that a flush respects PutMetricData's limits;
that failures keep the data for the next flush without ever reaching the code that
reports a metric; and that the wrapped Prometheus sink still sees every call.

moto accepts what real CloudWatch refuses (more than 1000 data per call, more than 150
values per datum, non-ASCII dimensions, infinities, timestamps older than two weeks),
matches dimensions in ``GetMetricStatistics`` as a subset rather than exactly, and
computes no percentiles. So the limits are checked on the requests the client sends
(``sent``), exact dimension sets through ``ListMetrics``, and AWS errors (access denied,
invalid data) come from botocore's ``Stubber`` on the sink's own client.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.errors import ConfigError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports import Metrics
from runs_fleet_core.settings import load_settings
from runs_fleet_core.testing.memory import ManualClock, RecordingMetrics
from runs_fleet_ec2 import cloudwatch
from runs_fleet_ec2.cloudwatch import (
    MAX_DATA_PER_CALL,
    MAX_DIMENSIONS,
    MAX_DISTINCT_VALUES,
    MAX_VALUE_CHARS,
    CloudWatchMetrics,
)
from runs_fleet_prometheus.metrics import PrometheusMetrics
from tests.moto_server import MotoServer

NAMESPACE = "RunsFleetTest"
Datum = dict[str, Any]


@pytest.fixture
def api_calls() -> RecordingMetrics:
    """Where the caller counts its AWS API calls."""
    return RecordingMetrics()


@pytest.fixture
def caller(aws: MotoServer, api_calls: RecordingMetrics) -> Iterator[AwsCaller]:
    caller = AwsCaller(metrics=api_calls)
    yield caller
    caller.close()


@pytest.fixture
def sent(caller: AwsCaller) -> list[list[Datum]]:
    """The MetricData of every PutMetricData request the caller's client makes."""
    requests: list[list[Datum]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        requests.append(list(params["MetricData"]))

    events = caller.client("cloudwatch").meta.events
    events.register("provide-client-params.cloudwatch.PutMetricData", record)
    return requests


@pytest.fixture
def inner() -> RecordingMetrics:
    """The sink wrapped by the CloudWatch one (Prometheus in a deployment)."""
    return RecordingMetrics()


@pytest.fixture
async def sink(
    caller: AwsCaller, inner: RecordingMetrics, clock: ManualClock
) -> AsyncIterator[CloudWatchMetrics]:
    sink = CloudWatchMetrics(caller, inner=inner, namespace=NAMESPACE, clock=clock)
    yield sink
    await sink.aclose()


@pytest.fixture
def cw(aws: MotoServer) -> Any:
    """A client of the test's own, for reading back (its calls are not counted)."""
    return boto3.client("cloudwatch")


def _metrics(cw: Any, name: str | None = None) -> list[dict[str, Any]]:
    """Every metric of the namespace (``name`` only), via ListMetrics' pages."""
    params: dict[str, Any] = {"Namespace": NAMESPACE} | ({"MetricName": name} if name else {})
    pages = cw.get_paginator("list_metrics").paginate(**params)
    return [metric for page in pages for metric in page["Metrics"]]


def _stats(
    cw: Any, clock: ManualClock, name: str, dimensions: dict[str, str] | None = None
) -> dict[str, Any]:
    """All the data of ``name`` (with ``dimensions``) around the clock's time, as one
    datapoint; ``{}`` if there are none."""
    now = clock.now()
    answer = cw.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in (dimensions or {}).items()],
        StartTime=now - timedelta(days=20),
        EndTime=now + timedelta(minutes=30),
        Period=86400 * 30,
        Statistics=["SampleCount", "Sum", "Minimum", "Maximum"],
    )
    points = answer["Datapoints"]
    assert len(points) <= 1
    return dict(points[0]) if points else {}


def _dimension_sets(cw: Any, name: str) -> set[tuple[tuple[str, str], ...]]:
    return {
        tuple(sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])))
        for metric in _metrics(cw, name)
    }


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- what a flush sends ------------------------------------------------------------------


def test_it_implements_the_metrics_port(caller: AwsCaller) -> None:
    assert isinstance(CloudWatchMetrics(caller), Metrics)


async def test_a_flush_sends_counters_gauges_and_observations(
    sink: CloudWatchMetrics, cw: Any, clock: ManualClock
) -> None:
    sink.increment("jobs_queued", labels={"backend": "ec2"})
    sink.increment("jobs_queued", 2, labels={"backend": "ec2"})
    sink.increment("jobs_queued", labels={"backend": "k8s"})
    sink.gauge("worker_in_flight", 5)
    sink.gauge("worker_in_flight", 3)
    for value in (0.5, 1.5, 1.5, 4.0):
        sink.observe("job_start_seconds", value, labels={"backend": "ec2"})

    assert await sink.flush()

    names = {metric["MetricName"] for metric in _metrics(cw)}
    assert names == {"jobs_queued", "worker_in_flight", "job_start_seconds"}
    assert _dimension_sets(cw, "jobs_queued") == {(("backend", "ec2"),), (("backend", "k8s"),)}
    assert _dimension_sets(cw, "worker_in_flight") == {()}
    ec2 = _stats(cw, clock, "jobs_queued", {"backend": "ec2"})
    assert (ec2["Sum"], ec2["Unit"]) == (3.0, "Count")
    assert _stats(cw, clock, "jobs_queued", {"backend": "k8s"})["Sum"] == 1.0
    gauge = _stats(cw, clock, "worker_in_flight")
    assert (gauge["SampleCount"], gauge["Maximum"], gauge["Unit"]) == (1.0, 3.0, "None")
    seconds = _stats(cw, clock, "job_start_seconds", {"backend": "ec2"})
    assert seconds == seconds | {
        "SampleCount": 4.0,
        "Sum": 7.5,
        "Minimum": 0.5,
        "Maximum": 4.0,
        "Unit": "Seconds",
    }


async def test_observations_go_as_values_and_counts_for_percentiles(
    sink: CloudWatchMetrics, sent: list[list[Datum]]
) -> None:
    for value in (0.5, 1.5, 1.5):
        sink.observe("webhook_seconds", value)
    await sink.flush()
    [[datum]] = sent
    assert dict(zip(datum["Values"], datum["Counts"], strict=True)) == {0.5: 1.0, 1.5: 2.0}
    assert "StatisticValues" not in datum


async def test_observations_with_too_many_distinct_values_go_as_exact_statistics(
    sink: CloudWatchMetrics, sent: list[list[Datum]], cw: Any, clock: ManualClock
) -> None:
    values = [float(i) for i in range(MAX_DISTINCT_VALUES + 50)]
    for value in values:
        sink.observe("webhook_seconds", value)
    await sink.flush()
    [[datum]] = sent
    assert "Values" not in datum
    assert datum["StatisticValues"] == {
        "SampleCount": float(len(values)),
        "Sum": sum(values),
        "Minimum": 0.0,
        "Maximum": values[-1],
    }
    assert _stats(cw, clock, "webhook_seconds")["SampleCount"] == len(values)


async def test_counters_start_again_after_a_flush_and_gauges_are_sent_again(
    sink: CloudWatchMetrics, sent: list[list[Datum]]
) -> None:
    sink.increment("jobs_queued", 4)
    sink.gauge("queue_depth", 7)
    await sink.flush()
    sink.increment("jobs_queued")
    await sink.flush()
    await sink.flush()
    values = [{d["MetricName"]: d["Value"] for d in request} for request in sent]
    assert values == [
        {"jobs_queued": 4.0, "queue_depth": 7.0},
        {"jobs_queued": 1.0, "queue_depth": 7.0},
        {"queue_depth": 7.0},
    ]


async def test_more_than_1000_series_are_split_over_several_calls(
    sink: CloudWatchMetrics,
    sent: list[list[Datum]],
    api_calls: RecordingMetrics,
    cw: Any,
) -> None:
    series = 2 * MAX_DATA_PER_CALL + 100
    for index in range(series):
        sink.increment("pool_hits", labels={"pool": f"pool-{index}"})
    assert await sink.flush()
    assert [len(request) for request in sent] == [1000, 1000, 100]
    assert api_calls.count("aws_api_calls", service="cloudwatch", operation="PutMetricData") == 3
    assert len(_metrics(cw, "pool_hits")) == series


async def test_calls_stay_under_a_megabyte_with_long_dimensions(
    sink: CloudWatchMetrics, sent: list[list[Datum]], cw: Any
) -> None:
    long_labels = {f"label_{i:02}": "x" * MAX_VALUE_CHARS for i in range(MAX_DIMENSIONS - 1)}
    for index in range(60):
        sink.increment("big", labels=long_labels | {"index": str(index)})
    assert await sink.flush()
    assert len(sent) > 1
    assert sum(len(request) for request in sent) == 60
    assert len(_metrics(cw, "big")) == 60


async def test_labels_are_normalised_into_dimensions_cloudwatch_accepts(
    sink: CloudWatchMetrics, cw: Any
) -> None:
    labels = {f"l{i:02}": "v" for i in range(MAX_DIMENSIONS + 2)}
    sink.increment("many_labels", labels=labels)
    sink.increment(
        "odd_labels",
        labels={"backend": "", "blank": "  ", "long": "y" * 2000, "text": "café\n"},
    )
    assert await sink.flush()
    [dims] = _dimension_sets(cw, "many_labels")
    assert [name for name, _ in dims] == [f"l{i:02}" for i in range(MAX_DIMENSIONS)]
    assert _dimension_sets(cw, "odd_labels") == {
        (
            ("backend", "(empty)"),
            ("blank", "(empty)"),
            ("long", "y" * MAX_VALUE_CHARS),
            ("text", "caf??"),
        )
    }


async def test_values_cloudwatch_cannot_store_reach_only_the_inner_sink(
    sink: CloudWatchMetrics, inner: RecordingMetrics, sent: list[list[Datum]]
) -> None:
    sink.gauge("queue_depth", float("nan"))
    sink.observe("webhook_seconds", float("inf"))
    sink.gauge("worker_in_flight", 1)
    assert await sink.flush()
    assert [d["MetricName"] for request in sent for d in request] == ["worker_in_flight"]
    assert inner.gauge_value("worker_in_flight") == 1
    assert ("webhook_seconds", ()) in inner.observations


def test_misuse_is_refused_as_prometheus_refuses_it(caller: AwsCaller) -> None:
    sink = CloudWatchMetrics(caller)
    sink.increment("jobs_queued")
    with pytest.raises(ValueError, match="cannot be incremented"):
        sink.increment("jobs_queued", -1)
    with pytest.raises(ValueError, match="is a counter; it cannot be used as a gauge"):
        sink.gauge("jobs_queued", 1)
    with pytest.raises(ValueError, match="without the runs_fleet_ prefix"):
        sink.increment("runs_fleet_jobs_queued")
    with pytest.raises(ValueError, match="snake_case"):
        sink.observe("Webhook-Seconds", 1)


async def test_refreshers_set_their_gauges_before_each_flush(
    sink: CloudWatchMetrics, sent: list[list[Datum]], caplog: pytest.LogCaptureFixture
) -> None:
    depth = iter([4.0, 2.0])

    async def refresh_depth() -> None:
        sink.gauge("queue_depth", next(depth))

    async def broken() -> None:
        raise RuntimeError("queue unreachable")

    sink.add_refresher(broken)
    sink.add_refresher(refresh_depth)
    with caplog.at_level(logging.WARNING, logger=cloudwatch.__name__):
        await sink.flush()
        await sink.flush()
    assert [[d["Value"] for d in request] for request in sent] == [[4.0], [2.0]]
    assert "queue unreachable" in caplog.text


# -- the sink it wraps -------------------------------------------------------------------


async def test_the_inner_sink_receives_every_call(
    sink: CloudWatchMetrics, inner: RecordingMetrics
) -> None:
    sink.increment("jobs_queued", 2, labels={"backend": "ec2"})
    sink.gauge("queue_depth", 4)
    sink.observe("webhook_seconds", 0.25, labels={"event": "workflow_job"})
    assert inner.count("jobs_queued", backend="ec2") == 2
    assert inner.gauge_value("queue_depth") == 4
    assert inner.observations[("webhook_seconds", (("event", "workflow_job"),))] == [0.25]


async def test_metrics_keeps_serving_the_prometheus_exposition(caller: AwsCaller) -> None:
    prometheus = PrometheusMetrics()
    sink = CloudWatchMetrics(caller, inner=prometheus, namespace=NAMESPACE)
    sink.increment("jobs_queued", labels={"backend": "ec2"})
    assert sink.render is not None
    body, content_type = sink.render()
    assert b'runs_fleet_jobs_queued_total{backend="ec2"} 1.0' in body
    assert content_type.startswith("text/plain")
    assert CloudWatchMetrics(caller).render is None


# -- failures ----------------------------------------------------------------------------


async def test_a_failed_flush_keeps_the_data_and_the_next_one_sends_it(
    sink: CloudWatchMetrics,
    caller: AwsCaller,
    cw: Any,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink.increment("jobs_queued", 3)
    with Stubber(caller.client("cloudwatch")) as stubber:
        stubber.add_client_error(
            "put_metric_data",
            service_error_code="AccessDenied",
            service_message="not authorized to perform cloudwatch:PutMetricData",
            http_status_code=403,
        )
        with caplog.at_level(logging.WARNING, logger=cloudwatch.__name__):
            assert not await sink.flush()
    assert "AccessDenied" in caplog.text
    assert sink.pending == 1
    assert _metrics(cw) == []

    sink.increment("jobs_queued", 2)
    assert await sink.flush()
    assert sink.pending == 0
    points = _stats(cw, clock, "jobs_queued")
    assert (points["Sum"], points["SampleCount"]) == (5.0, 2.0)
    assert _stats(cw, clock, "cloudwatch_send_errors", {"code": "AccessDenied"})["Sum"] == 1


async def test_an_unreachable_endpoint_never_reaches_the_caller(
    aws: MotoServer, inner: RecordingMetrics
) -> None:
    caller = AwsCaller(endpoint_url=f"http://127.0.0.1:{_closed_port()}", max_attempts=1)
    sink = CloudWatchMetrics(caller, inner=inner, namespace=NAMESPACE, owns_caller=True)
    sink.increment("jobs_queued")
    sink.gauge("queue_depth", 1)
    assert not await sink.flush()
    assert sink.pending == 2
    sink.increment("jobs_queued")
    await sink.aclose()
    assert inner.count("cloudwatch_send_errors", code="none") == 2


async def test_data_kept_after_failures_are_bounded_oldest_first(
    aws: MotoServer, inner: RecordingMetrics
) -> None:
    caller = AwsCaller(endpoint_url=f"http://127.0.0.1:{_closed_port()}", max_attempts=1)
    sink = CloudWatchMetrics(
        caller, inner=inner, namespace=NAMESPACE, max_pending=5, owns_caller=True
    )
    try:
        for index in range(8):
            sink.increment("pool_hits", labels={"pool": f"p{index}"})
        await sink.flush()
        assert sink.pending == 5
        assert inner.count("cloudwatch_data_dropped", reason="backlog") == 3
        await sink.flush()
        assert sink.pending == 5
    finally:
        await sink.aclose()


async def test_data_cloudwatch_refuses_are_dropped_not_kept(
    sink: CloudWatchMetrics, caller: AwsCaller, inner: RecordingMetrics, cw: Any
) -> None:
    sink.increment("jobs_queued")
    with Stubber(caller.client("cloudwatch")) as stubber:
        stubber.add_client_error(
            "put_metric_data", service_error_code="InvalidParameterValue", http_status_code=400
        )
        assert await sink.flush()
    assert sink.pending == 0
    assert inner.count("cloudwatch_data_dropped", reason="rejected") == 1


async def test_kept_data_older_than_cloudwatch_accepts_are_dropped(
    sink: CloudWatchMetrics, caller: AwsCaller, inner: RecordingMetrics, clock: ManualClock
) -> None:
    sink.increment("jobs_queued")
    with Stubber(caller.client("cloudwatch")) as stubber:
        stubber.add_client_error("put_metric_data", service_error_code="AccessDenied")
        await sink.flush()
    clock.advance(timedelta(days=15).total_seconds())
    assert await sink.flush()
    assert sink.pending == 0
    assert inner.count("cloudwatch_data_dropped", reason="expired") == 1


# -- off, lifecycle, concurrency ---------------------------------------------------------


async def test_a_disabled_sink_never_calls_aws(
    caller: AwsCaller, api_calls: RecordingMetrics, inner: RecordingMetrics, cw: Any
) -> None:
    sink = CloudWatchMetrics(caller, inner=inner, namespace=NAMESPACE, enabled=False)
    await sink.start()
    sink.increment("jobs_queued")
    sink.gauge("queue_depth", 2)
    sink.observe("webhook_seconds", 0.1)
    assert await sink.flush()
    await sink.aclose()
    assert api_calls.counters == {}
    assert _metrics(cw) == []
    assert inner.count("jobs_queued") == 1


async def test_started_it_flushes_in_the_background(
    caller: AwsCaller, sent: list[list[Datum]]
) -> None:
    loop = asyncio.get_running_loop()
    first = asyncio.Event()
    events = caller.client("cloudwatch").meta.events
    events.register(
        "after-call.cloudwatch.PutMetricData", lambda **_: loop.call_soon_threadsafe(first.set)
    )
    sink = CloudWatchMetrics(caller, namespace=NAMESPACE, interval_s=0.05)
    await sink.start()
    try:
        sink.increment("jobs_queued")
        await asyncio.wait_for(first.wait(), timeout=5)
        assert [d["MetricName"] for d in sent[0]] == ["jobs_queued"]
    finally:
        await sink.aclose()


async def test_aclose_sends_what_is_left_and_stops_the_flushes(
    caller: AwsCaller, sent: list[list[Datum]], api_calls: RecordingMetrics
) -> None:
    sink = CloudWatchMetrics(caller, namespace=NAMESPACE, interval_s=3600)
    await sink.start()
    sink.increment("jobs_failed")
    await sink.aclose()
    await sink.aclose()
    assert [[d["MetricName"] for d in request] for request in sent] == [["jobs_failed"]]
    sink.increment("jobs_failed")
    await asyncio.sleep(0.05)
    assert len(sent) == 1


async def test_aggregation_loses_nothing_while_flushes_run_beside_other_threads(
    sink: CloudWatchMetrics, cw: Any, clock: ManualClock
) -> None:
    stop = threading.Event()
    reported = [0] * 4

    def report(index: int) -> None:
        while not stop.is_set():
            sink.increment("jobs_queued")
            reported[index] += 1

    workers = [threading.Thread(target=report, args=(i,)) for i in range(len(reported))]
    for worker in workers:
        worker.start()
    try:
        for _ in range(5):
            assert await sink.flush()
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert await sink.flush()
    points = _stats(cw, clock, "jobs_queued")
    assert points["SampleCount"] >= 5
    assert points["Sum"] == sum(reported)


# -- settings ----------------------------------------------------------------------------


def test_from_context_reads_the_settings(caller: AwsCaller, inner: RecordingMetrics) -> None:
    definitions = {setting.name: setting for setting in cloudwatch.SETTINGS}
    env = {
        "RUNS_FLEET_CLOUDWATCH_ENABLED": "false",
        "RUNS_FLEET_CLOUDWATCH_NAMESPACE": "Team/RunsFleet",
        "RUNS_FLEET_CLOUDWATCH_INTERVAL_S": "30",
    }
    context = AdapterContext(
        settings=load_settings(env, definitions), clock=ManualClock(), metrics=RecordingMetrics()
    )
    sink = cloudwatch.from_context(context, caller, inner)
    assert (sink.enabled, sink.namespace, sink.interval_s) == (False, "Team/RunsFleet", 30.0)
    defaults = AdapterContext(
        settings=load_settings({}, definitions), clock=ManualClock(), metrics=RecordingMetrics()
    )
    sink = cloudwatch.from_context(defaults, caller, None)
    assert (sink.enabled, sink.namespace, sink.interval_s) == (True, "RunsFleet", 60.0)


@pytest.mark.parametrize("namespace", ["AWS/EC2", ":x", "Runs\u00e9Fleet", " ", "n" * 256])
def test_a_namespace_cloudwatch_refuses_is_a_config_error(
    caller: AwsCaller, namespace: str
) -> None:
    definitions = {setting.name: setting for setting in cloudwatch.SETTINGS}
    settings = load_settings({"RUNS_FLEET_CLOUDWATCH_NAMESPACE": namespace}, definitions)
    context = AdapterContext(settings=settings, clock=ManualClock(), metrics=RecordingMetrics())
    with pytest.raises(ConfigError, match="RUNS_FLEET_CLOUDWATCH_NAMESPACE"):
        cloudwatch.from_context(context, caller, None)
