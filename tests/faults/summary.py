"""The fault matrix's table, printed once at the end of a run with every mode's row.

A pytest plugin loaded by the root ``conftest.py``: each mode runs as a test of its own,
possibly in another pytest-xdist worker, and hands its row over as a user property of
its report, which reaches the controller that prints the summary (a conftest file in
``tests/faults`` would not be loaded there when the whole suite runs).
"""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows: list[str] = []
    notes: list[str] = []
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for name, value in getattr(report, "user_properties", []):
                if name == "fault_matrix":
                    rows.append(value[0])
                    notes.append(value[1])
    if rows:
        from tests.faults.burst import table
        from tests.faults.matrix import SEED

        terminalreporter.write_sep("=", f"fault matrix (seed {SEED})")
        terminalreporter.write_line(table(rows, notes))
