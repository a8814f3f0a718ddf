"""Printing results for people (aligned text) or programs (one JSON document)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import IO, Any


def emit_json(value: Any, out: IO[str] | None = None) -> None:
    (out or sys.stdout).write(json.dumps(value, indent=2, default=str) + "\n")


def emit_table(rows: Sequence[Sequence[str]], out: IO[str] | None = None) -> None:
    """Rows as left-aligned columns; the first row is the header."""
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
        (out or sys.stdout).write(line.rstrip() + "\n")
