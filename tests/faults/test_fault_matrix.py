"""The fault matrix: each deployment mode, three replicas, 200 jobs, every fault at once.

For each mode, replicas are SIGKILLed right after each dispatch step and restarted,
every backend is cut and hung for a while, GitHub answers errors, Valkey crashes and
restarts from its AOF, and every webhook arrives 1-3 times in random order at random
replicas (see :mod:`tests.faults.harness`). Then the invariants of the design are
counted, and every count must be 0: no job lost, none with two runners, no runner with
two jobs, no message left looping, no busy runner stopped, nothing orphaned once
housekeeping has run. The table is printed (``pytest -s`` or ``nox -s faults`` shows it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.burst import COLUMNS, Burst, Outcome, summary, table
from tests.faults.modes import Deployment, Ec2Deployment, K8sDeployment, LocalDeployment
from tests.kube_api.fixtures import KubeApi
from tests.moto_server import MotoServer

SEED = int(os.environ.get("RUNS_FLEET_FAULTS_SEED", "20261123"))


def _run(deployment: Deployment, workdir: Path) -> Outcome:
    burst = Burst(deployment, workdir, SEED)
    try:
        burst.start()
        outcome = burst.run()
    finally:
        (workdir / "replicas.log").write_text(burst.describe())
        burst.close()
    print(f"\nfault matrix, seed {SEED}\n{table([outcome])}")
    bad = {c: outcome.counts[c] for c in COLUMNS if outcome.counts[c]}
    assert not bad, (
        f"{deployment.mode}: {bad} ({summary(outcome.details)}); the replicas' logs are in "
        f"{workdir}"
    )
    return outcome


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_local_mode_keeps_every_invariant_under_faults(workdir: Path) -> None:
    _run(LocalDeployment(workdir), workdir)


def test_ec2_mode_keeps_every_invariant_under_faults(workdir: Path, aws: MotoServer) -> None:
    _run(Ec2Deployment(workdir, aws, job_seconds=0.3), workdir)


def test_k8s_mode_keeps_every_invariant_under_faults(workdir: Path, kube_api: KubeApi) -> None:
    _run(K8sDeployment(workdir, kube_api, job_seconds=0.3), workdir)
