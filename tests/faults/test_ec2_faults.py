"""The fault matrix, EC2 mode: three replicas, 200 jobs, every fault at once.

Replicas are SIGKILLed right after each dispatch step and restarted, every backend is
cut and hung for a while, GitHub answers errors, and every webhook arrives 1-3 times
in random order at random replicas (see :mod:`tests.faults.harness`). Then the
invariants are counted, and every count must be 0. ``nox -s faults`` runs the three
modes and prints their table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.burst import JOB_SECONDS
from tests.faults.matrix import run_mode
from tests.faults.modes import Ec2Deployment
from tests.moto_server import MotoServer


def test_ec2_mode_keeps_every_invariant_under_faults(
    tmp_path: Path, aws: MotoServer, request: pytest.FixtureRequest
) -> None:
    run_mode(Ec2Deployment(tmp_path, aws, job_seconds=JOB_SECONDS), tmp_path, request)
