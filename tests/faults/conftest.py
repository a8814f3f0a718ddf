"""The fault matrix's table, printed once at the end of the run with every mode's row
(each mode runs as a test of its own, possibly in another pytest worker)."""

from __future__ import annotations

from typing import Any

from tests.faults.burst import table
from tests.faults.matrix import SEED


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
        terminalreporter.write_sep("=", f"fault matrix (seed {SEED})")
        terminalreporter.write_line(table(rows, notes))
