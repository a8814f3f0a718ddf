"""Fixtures shared by the contract runs: a manual clock for the in-memory adapters."""

from __future__ import annotations

import pytest

from runs_fleet_core.testing.memory import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    """A fresh clock at 2026-01-05T09:00:00Z that only moves when a test moves it."""
    return ManualClock()
