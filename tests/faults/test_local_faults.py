"""The fault matrix, local mode: three replicas, 200 jobs, every fault at once.

Replicas are SIGKILLed right after each dispatch step and restarted, every backend is
cut and hung for a while, GitHub answers errors, Valkey crashes and
restarts from its AOF, and every webhook arrives 1-3 times
in random order at random replicas (see :mod:`tests.faults.harness`). Then the
invariants are counted, and every count must be 0. ``nox -s faults`` runs the three
modes and prints their table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.matrix import run_mode
from tests.faults.modes import LocalDeployment


def test_local_mode_keeps_every_invariant_under_faults(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_mode(LocalDeployment(tmp_path), tmp_path, request)
