"""Kubernetes mode's benchmark: Kubernetes API calls per job, against the project's fake
API server (``tests/kube_api``), with a real Valkey for the queue.

Everything runs in this process as the server runs it (``build_services`` in
``RUNS_FLEET_MODE=k8s``, ConfigMap state, Secret configs), with the GitHub client replaced
by the in-memory fake so that only Kubernetes requests are counted. The fake server
counts every request it answers; the controllers' own writes (the Job controller making
the pod, the Deployment refilling) are not requests and are not counted, as they are not
on a real cluster's API budget of runs-fleet either.

Calls per job are what the API server's priority-and-fairness limits see: intake
(record), dispatch (claim, config, launch, record), then completion (``in_progress`` and
``completed`` webhooks: records, config removal), for a cold start and for a job that an
idle warm-pool pod takes. The baseline is the least a cold start can cost: one create of
each object it needs (Job, Secret, ConfigMap) and one job record write per status change.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fake API server lives with the tests

from runs_fleet_core.domain.ids import JobId  # noqa: E402
from runs_fleet_core.domain.messages import WorkflowJobAction, WorkflowJobEvent  # noqa: E402
from runs_fleet_core.domain.pool import PoolConfig  # noqa: E402
from runs_fleet_core.testing.memory import RecordingMetrics  # noqa: E402
from runs_fleet_core.usecases.pools import reconcile_pools  # noqa: E402
from runs_fleet_server.bootstrap import Services, build_services  # noqa: E402
from tests.contract.valkey_server import running_valkey_server  # noqa: E402
from tests.kube_api.fixtures import write_kubeconfig  # noqa: E402
from tests.kube_api.server import FakeKubeServer  # noqa: E402

REPOSITORY = "octo-org/bench"
LABEL = "runs-fleet=7/cpu=2/arch=arm64"
WARM_LABEL = "runs-fleet=7/cpu=2/arch=arm64/pool=warm"
NAMESPACE = "runs-fleet"


def _event(job_id: int, label: str, action: WorkflowJobAction, runner: str | None = None) -> Any:
    return WorkflowJobEvent(
        action=action,
        job_id=JobId(job_id),
        run_id=7,
        run_attempt=1,
        repository=REPOSITORY,
        labels=(label,),
        delivery_id=f"delivery-{job_id}-{action.value}",
        runner_name=runner,
        conclusion="success" if action is WorkflowJobAction.COMPLETED else None,
    )


def _requests(server: FakeKubeServer) -> collections.Counter[str]:
    counted: collections.Counter[str] = collections.Counter()
    for request in server.requests:
        counted[f"{request.verb} {request.resource}"] += 1
    return counted


async def _one_job(
    services: Services, server: FakeKubeServer, job_id: int, label: str
) -> tuple[list[collections.Counter[str]], str]:
    """API requests of intake, dispatch and completion of one job; the dispatch outcome."""
    phases = []
    before = _requests(server)
    await services.intake.take(_event(job_id, label, WorkflowJobAction.QUEUED))
    after_intake = _requests(server)
    [delivery] = await services.adapters.queue.receive(1, 5)
    outcome = await services.dispatcher.handle(delivery)
    after_dispatch = _requests(server)
    record = await services.adapters.state.get_job(JobId(job_id))
    assert record is not None and record.runner_name is not None
    completion = services.completion
    await completion.job_started(
        _event(job_id, label, WorkflowJobAction.IN_PROGRESS, record.runner_name)
    )
    await completion.job_finished(
        _event(job_id, label, WorkflowJobAction.COMPLETED, record.runner_name)
    )
    after = _requests(server)
    phases = [after_intake - before, after_dispatch - after_intake, after - after_dispatch]
    return phases, str(outcome)


async def _pool_ready(services: Services, server: FakeKubeServer) -> None:
    """The pool loop makes the warm pool's Deployment; its pod is then marked running."""
    adapters = services.adapters
    await adapters.state.put_pool(
        PoolConfig(name="warm", label=WARM_LABEL, desired_running=1, backend="k8s")
    )
    server.on_pod_created = lambda pod: server.set_pod_phase(
        pod["metadata"]["namespace"], pod["metadata"]["name"], "Running"
    )
    await reconcile_pools(
        state=adapters.state,
        pool_providers=adapters.pool_providers,
        default_backend="k8s",
        clock=adapters.clock,
        metrics=RecordingMetrics(),
    )


async def _measure(env: dict[str, str], server: FakeKubeServer) -> None:
    services = build_services(env)
    try:
        cold, cold_outcome = await _one_job(services, server, 1, LABEL)
        await _pool_ready(services, server)
        warm, warm_outcome = await _one_job(services, server, 2, WARM_LABEL)
    finally:
        await services.aclose()
    print(f"{'measure':<46} {'requests':>8}  by verb and resource")
    print("-" * 100)
    for kind, phases, outcome in (
        ("cold start", cold, cold_outcome),
        ("warm pool", warm, warm_outcome),
    ):
        for phase, counted in zip(
            ("intake", f"dispatch ({outcome})", "completion"), phases, strict=True
        ):
            detail = ", ".join(f"{op} {n}" for op, n in sorted(counted.items()))
            print(f"{kind + ', ' + phase:<46} {sum(counted.values()):>8}  {detail}")
        total = sum(sum(c.values()) for c in phases)
        print(f"{kind + ', per job in all':<46} {total:>8}")
    floor = 3 + 6  # Job, Secret, ConfigMap creates; 6 record writes (queued .. completed)
    total_cold = sum(sum(c.values()) for c in cold)
    print(
        f"\ncold start: {total_cold} requests per job, {total_cold / floor:.1f}x the least a "
        f"cold start can cost ({floor}: one create per object and one record write per "
        "status change). The fake API server answers at once: no latency is measured here."
    )


def main() -> int:
    server = FakeKubeServer()
    server.start()
    try:
        with running_valkey_server() as valkey:
            server.reset()
            kubeconfig = write_kubeconfig(
                Path(os.environ.get("TMPDIR", "/tmp")) / f"runs-fleet-bench-kube-{os.getpid()}",
                server.url,
                server.admin_token,
                NAMESPACE,
            )
            server.create(
                "serviceaccounts", {"metadata": {"name": "runs-fleet-runner"}}, namespace=NAMESPACE
            )
            base = {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")}
            env = base | {
                "RUNS_FLEET_MODE": "k8s",
                "RUNS_FLEET_KUBECONFIG": str(kubeconfig),
                "RUNS_FLEET_KUBE_NAMESPACE": NAMESPACE,
                "RUNS_FLEET_KUBE_RUNNER_IMAGE": "ghcr.io/example/runner:1",
                "RUNS_FLEET_VALKEY_URL": valkey.url,
                "RUNS_FLEET_GITHUB_ADAPTER": "memory",
                "RUNS_FLEET_METRICS_ADAPTER": "memory",
                "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": "bench",
                "RUNS_FLEET_GITHUB_APP_ID": "1",
                "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY": "unused by the in-memory GitHub",
                "RUNS_FLEET_PUBLIC_URL": "http://127.0.0.1:9",
            }
            print("Kubernetes mode against the fake API server: API requests per job\n", flush=True)
            try:
                asyncio.run(_measure(env, server))
            finally:
                kubeconfig.unlink(missing_ok=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
