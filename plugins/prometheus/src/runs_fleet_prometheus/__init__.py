"""runs-fleet's Prometheus plugin: the ``prometheus`` metrics sink.

:class:`~runs_fleet_prometheus.metrics.PrometheusMetrics` implements the core's Metrics
port over a registry of its own (never prometheus_client's global one, so two sinks in
one process, or in one test session, never see each other's series) and renders the
exposition text the server answers ``GET /metrics`` with.
"""
