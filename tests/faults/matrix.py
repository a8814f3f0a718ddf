"""Running one mode of the fault matrix as a test (see the test modules)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.burst import COLUMNS, Burst, Outcome, summary, table
from tests.faults.modes import Deployment

SEED = int(os.environ.get("RUNS_FLEET_FAULTS_SEED", "20261123"))
"""The seed of the faults' randomness (``RUNS_FLEET_FAULTS_SEED`` picks another)."""


def run_mode(deployment: Deployment, workdir: Path, request: pytest.FixtureRequest) -> Outcome:
    """Run the burst, hand its row to the terminal summary, and assert all zeros."""
    burst = Burst(deployment, workdir, SEED)
    try:
        burst.start()
        outcome = burst.run()
    finally:
        (workdir / "replicas.log").write_text(burst.describe())
        burst.close()
    request.node.user_properties.append(("fault_matrix", (outcome.row(), outcome.note())))
    print(f"\nfault matrix, seed {SEED}\n{table([outcome.row()], [outcome.note()])}")
    if deployment.pool_sizes:  # the pool part cannot pass for want of warm jobs
        assert outcome.details["warm"] > 0, f"no job was served by a warm runner: {outcome.note()}"
    bad = {c: outcome.counts[c] for c in COLUMNS if outcome.counts[c]}
    assert not bad, (
        f"{deployment.mode}: {bad} ({summary(outcome.details)}); the replicas' logs are in "
        f"{workdir} (seed {SEED})"
    )
    return outcome
