"""The ``prometheus`` metrics sink, read back through Prometheus' own exposition parser.

What counts is what a Prometheus server would scrape: names with the ``runs_fleet_``
prefix, values, labels (escaped), metric types; and that the core's use cases, run
with this sink, never use one metric with two sets of label names.
"""

from __future__ import annotations

import threading

import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runs_fleet_core.domain.messages import WorkflowJobAction
from runs_fleet_core.plugins import PluginManager
from runs_fleet_core.plugins.registry import AdapterContext
from runs_fleet_core.ports import Metrics
from runs_fleet_core.settings import Settings
from runs_fleet_core.testing.memory import ManualClock
from runs_fleet_prometheus.metrics import PrometheusMetrics
from tests.unit.conftest import event, new_world


def _samples(metrics: PrometheusMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.render()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _types(metrics: PrometheusMetrics) -> dict[str, str]:
    body, _ = metrics.render()
    return {family.name: family.type for family in text_string_to_metric_families(body.decode())}


def test_it_implements_the_metrics_port() -> None:
    assert isinstance(PrometheusMetrics(), Metrics)


def test_the_installed_plugin_offers_the_sink_as_prometheus() -> None:
    registry = PluginManager().adapters()
    assert "prometheus" in registry.metrics.names()
    context = AdapterContext(
        settings=Settings(values={}), clock=ManualClock(), metrics=PrometheusMetrics()
    )
    assert isinstance(registry.metrics.get("prometheus")(context), PrometheusMetrics)


def test_counters_add_up_per_label_set() -> None:
    metrics = PrometheusMetrics()
    metrics.increment("jobs_queued", labels={"backend": "ec2"})
    metrics.increment("jobs_queued", labels={"backend": "ec2"})
    metrics.increment("jobs_queued", 3, labels={"backend": "k8s"})
    samples = _samples(metrics)
    assert samples[("runs_fleet_jobs_queued_total", (("backend", "ec2"),))] == 2
    assert samples[("runs_fleet_jobs_queued_total", (("backend", "k8s"),))] == 3
    assert _types(metrics)["runs_fleet_jobs_queued"] == "counter"


def test_a_counter_without_labels() -> None:
    metrics = PrometheusMetrics()
    metrics.increment("webhooks_duplicate")
    metrics.increment("webhooks_duplicate", 0.5)
    assert _samples(metrics)[("runs_fleet_webhooks_duplicate_total", ())] == 1.5


def test_gauges_keep_the_last_value() -> None:
    metrics = PrometheusMetrics()
    metrics.gauge("jobs_stuck", 4)
    metrics.gauge("jobs_stuck", 1)
    metrics.gauge("pool_idle_running", 2, labels={"pool": "ci", "backend": "ec2"})
    samples = _samples(metrics)
    assert samples[("runs_fleet_jobs_stuck", ())] == 1
    assert samples[("runs_fleet_pool_idle_running", (("backend", "ec2"), ("pool", "ci")))] == 2
    assert _types(metrics)["runs_fleet_jobs_stuck"] == "gauge"


def test_histograms_count_sum_and_bucket_observations() -> None:
    metrics = PrometheusMetrics(buckets=(1.0, 10.0, 100.0))
    for value in (0.5, 5.0, 50.0, 500.0):
        metrics.observe("job_start_seconds", value)
    samples = _samples(metrics)
    assert samples[("runs_fleet_job_start_seconds_count", ())] == 4
    assert samples[("runs_fleet_job_start_seconds_sum", ())] == 555.5
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in samples.items()
        if name == "runs_fleet_job_start_seconds_bucket"
    }
    assert buckets == {"1.0": 1, "10.0": 2, "100.0": 3, "+Inf": 4}
    assert _types(metrics)["runs_fleet_job_start_seconds"] == "histogram"


def test_label_values_are_escaped_and_read_back_exactly() -> None:
    metrics = PrometheusMetrics()
    odd = 'a "quoted"\\ value\nwith a newline'
    metrics.increment("jobs_rejected", labels={"repository": odd})
    assert _samples(metrics)[("runs_fleet_jobs_rejected_total", (("repository", odd),))] == 1


def test_label_order_does_not_matter() -> None:
    metrics = PrometheusMetrics()
    metrics.increment("pool_reconcile_errors", labels={"pool": "ci", "reason": "x"})
    metrics.increment("pool_reconcile_errors", labels={"reason": "x", "pool": "ci"})
    key = ("runs_fleet_pool_reconcile_errors_total", (("pool", "ci"), ("reason", "x")))
    assert _samples(metrics)[key] == 2


def test_other_label_names_later_are_a_clear_error() -> None:
    metrics = PrometheusMetrics()
    metrics.increment("runners_launched", labels={"backend": "ec2"})
    with pytest.raises(ValueError, match=r"'runners_launched'.*\(backend\).*\(pool\)"):
        metrics.increment("runners_launched", labels={"pool": "ci"})
    with pytest.raises(ValueError, match=r"\(backend\).*\(none\)"):
        metrics.increment("runners_launched")
    assert _samples(metrics)[("runs_fleet_runners_launched_total", (("backend", "ec2"),))] == 1


def test_one_name_cannot_be_two_kinds_of_metric() -> None:
    metrics = PrometheusMetrics()
    metrics.gauge("jobs_stuck", 1)
    with pytest.raises(ValueError, match="'jobs_stuck' is a gauge; it cannot be used as a counter"):
        metrics.increment("jobs_stuck")
    with pytest.raises(ValueError, match="as a histogram"):
        metrics.observe("jobs_stuck", 1)


@pytest.mark.parametrize("name", ["Jobs", "jobs-queued", "runs_fleet_jobs", "", "1st", "a b"])
def test_names_must_be_snake_case_without_the_prefix(name: str) -> None:
    with pytest.raises(ValueError, match="snake_case without the runs_fleet_ prefix"):
        PrometheusMetrics().increment(name)


def test_a_counter_never_goes_down() -> None:
    with pytest.raises(ValueError, match="cannot be incremented by -1"):
        PrometheusMetrics().increment("jobs_queued", -1)


def test_each_sink_has_its_own_registry() -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()
    first.increment("jobs_queued")
    second.gauge("jobs_queued", 5)  # no clash: separate registries
    assert ("runs_fleet_jobs_queued_total", ()) in _samples(first)
    assert ("runs_fleet_jobs_queued_total", ()) not in _samples(second)


def test_render_gives_the_text_format_content_type() -> None:
    body, content_type = PrometheusMetrics().render()
    assert content_type.startswith("text/plain; version=")
    assert "charset=utf-8" in content_type
    assert isinstance(body, bytes)


def test_increments_from_many_threads_all_count() -> None:
    metrics = PrometheusMetrics()

    def work(thread: int) -> None:
        for i in range(500):
            metrics.increment(f"t{i % 5}", labels={"thread": str(thread % 2)})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(v for (name, _), v in _samples(metrics).items() if name.endswith("_total"))
    assert total == 8 * 500


async def test_the_use_cases_use_one_label_set_per_metric() -> None:
    """A whole job life (queued, rejected, duplicate, dispatched, started, finished)
    with this sink: any inconsistent metric call would raise here."""
    world = new_world()
    metrics = PrometheusMetrics()
    world = attrs.evolve(world, metrics=metrics)  # type: ignore[arg-type]  # any Metrics will do
    intake, completion = world.intake(), world.completion()
    await intake.take(event(1))
    await intake.take(event(1))
    await intake.take(event(2, "runs-fleet=42/cpu=banana"))
    await intake.take(event(3, "runs-fleet=42/pool=ci"))
    await world.dispatch_all()
    name = "runs-fleet-1-1"
    await completion.job_started(event(1, action=WorkflowJobAction.IN_PROGRESS, runner_name=name))
    await completion.job_finished(
        event(1, action=WorkflowJobAction.COMPLETED, conclusion="success")
    )
    await world.housekeeper().run()
    samples = _samples(metrics)
    assert samples[("runs_fleet_jobs_queued_total", (("backend", "memory"),))] == 2
    assert samples[("runs_fleet_webhooks_duplicate_total", ())] == 1
    assert samples[("runs_fleet_runners_launched_total", (("backend", "memory"),))] == 2
    assert samples[("runs_fleet_jobs_completed_total", ())] == 1
    assert samples[("runs_fleet_job_start_seconds_count", ())] == 1
