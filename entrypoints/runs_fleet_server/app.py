"""The server's ASGI app: routes bound to one process's services.

``create_app`` is all an ASGI server needs; tests call it with services built from
their own environment. Handlers live in one module per concern (webhook, agent
reports, jobs and pools APIs, probes) and get the services at construction, never
from globals.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from runs_fleet_server.agent import AgentReportsEndpoint
from runs_fleet_server.agent_config import CONFIG_PATH, AgentConfigEndpoint
from runs_fleet_server.bootstrap import REPORTS_PATH, Services
from runs_fleet_server.dead_letters import DeadLettersApi
from runs_fleet_server.jobs import JobsApi
from runs_fleet_server.pools_api import PoolsApi
from runs_fleet_server.probes import Probes
from runs_fleet_server.webhook import WebhookEndpoint


def create_app(services: Services) -> Starlette:
    """The Starlette app serving ``services``: webhook, agent reports, probes, jobs,
    pools and dead-letters APIs."""
    probes = Probes(services)
    jobs = JobsApi(services)
    pools = PoolsApi(services)
    dead = DeadLettersApi(services)
    routes = [
        Route("/webhook", WebhookEndpoint(services).handle, methods=["POST"]),
        Route(REPORTS_PATH, AgentReportsEndpoint(services).handle, methods=["POST"]),
        Route(CONFIG_PATH, AgentConfigEndpoint(services).handle, methods=["GET"]),
        Route("/health", probes.health, methods=["GET"]),
        Route("/ready", probes.ready, methods=["GET"]),
        Route("/metrics", probes.metrics, methods=["GET"]),
        Route("/api/jobs", jobs.list_jobs, methods=["GET"]),
        Route("/api/jobs/{job_id:int}", jobs.get_job, methods=["GET"]),
        Route("/api/pools", pools.list_pools, methods=["GET"]),
        Route("/api/pools/{name}", pools.get_pool, methods=["GET"]),
        Route("/api/pools/{name}", pools.put_pool, methods=["PUT"]),
        Route("/api/pools/{name}", pools.delete_pool, methods=["DELETE"]),
        Route("/api/dead-letters", dead.list_dead_letters, methods=["GET"]),
        Route("/api/dead-letters/redrive", dead.redrive, methods=["POST"]),
        Route("/api/dead-letters/{dead_letter_id}", dead.purge, methods=["DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.services = services
    return app
