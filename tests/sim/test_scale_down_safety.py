"""No busy runner is ever stopped or terminated: 1,000 random cycles of two replicas.

The simulation (:mod:`tests.sim.simulation`) runs the real use cases of two replicas
as concurrent tasks over one shared StateStore, with every adapter call preemptible,
pool sizes and schedules changing, and pool passes outliving their leader's lease. The
compute side checks, at the moment of every stop or terminate call, whether the runner
holds a job. It runs on the in-memory store (deterministic: the seed replays the run)
and on a real valkey-server, whose Lua scripts are what make the assignment atomic in
production. ``RUNS_FLEET_SIM_SEED`` picks another seed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from runs_fleet_valkey.state import ValkeyStateStore
from tests.contract.valkey_server import ValkeyTestServer, running_valkey_server
from tests.sim.recorder import ProbedMemoryStateStore, ValkeyProbe
from tests.sim.simulation import Simulation, Summary

SEED = int(os.environ.get("RUNS_FLEET_SIM_SEED", "20260105"))
CYCLES = 1_000


@pytest.fixture(scope="module")
def valkey_test_server() -> Iterator[ValkeyTestServer]:
    """One real server for the module; fails (never skips) when it cannot start."""
    with running_valkey_server() as server:
        yield server


@pytest.fixture
async def valkey_stores(
    valkey_test_server: ValkeyTestServer,
) -> AsyncIterator[list[ValkeyStateStore]]:
    """Three clients of one emptied database: the simulation's and one per replica."""
    url = valkey_test_server.url
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    stores = [ValkeyStateStore.from_url(url) for _ in range(3)]
    yield stores
    for store in stores:
        await store.aclose()


def _report(summary: Summary, backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print("\n" + summary.line(backend))


def _assert_safe_after_real_work(summary: Summary) -> None:
    assert summary.violations == (), "\n".join(summary.violations)
    assert summary.cycles == CYCLES
    assert summary.jobs_served >= 400
    assert summary.warm_claims >= 300
    assert summary.stopped >= 15
    assert summary.terminated >= 100
    assert summary.takeovers >= 20
    assert summary.overlapping_passes >= 5
    assert summary.fenced_passes >= 1


async def test_no_busy_runner_is_scaled_down_with_the_memory_store(
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = ProbedMemoryStateStore()
    simulation = Simulation(
        seed=SEED, state=state, probe=state, cycles=CYCLES, retention=state.expire_final_jobs
    )

    summary = await simulation.run()

    _report(summary, "memory", capsys)
    _assert_safe_after_real_work(summary)


async def test_no_busy_runner_is_scaled_down_with_the_valkey_store(
    valkey_test_server: ValkeyTestServer,
    valkey_stores: list[ValkeyStateStore],
    capsys: pytest.CaptureFixture[str],
) -> None:
    shared, *replicas = valkey_stores
    probe = ValkeyProbe(valkey_test_server.url)
    simulation = Simulation(
        seed=SEED, state=shared, probe=probe, cycles=CYCLES, replica_states=replicas
    )

    try:
        summary = await simulation.run()
    finally:
        probe.close()

    _report(summary, "valkey", capsys)
    _assert_safe_after_real_work(summary)
