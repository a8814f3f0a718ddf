"""Hook implementations of the ``prometheus`` plugin.

This module is what the ``runs_fleet`` entry point names; it imports nothing heavy, so
prometheus_client is loaded only when a deployment actually uses this sink.
"""

from __future__ import annotations

from runs_fleet_core.plugins import AdapterContext, AdapterRegistry, hookimpl
from runs_fleet_core.ports import Metrics

NAME = "prometheus"


def _metrics(context: AdapterContext) -> Metrics:
    from runs_fleet_prometheus.metrics import PrometheusMetrics

    return PrometheusMetrics()


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    """Offer the Prometheus metrics sink as ``prometheus``."""
    registry.add_metrics(NAME, _metrics)
