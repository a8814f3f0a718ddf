"""Following the demo's jobs through runs-fleet's jobs API, and printing what happens."""

from __future__ import annotations

import sys
import time
import urllib.error
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from runs_fleet_cli.demo.processes import http_json
from runs_fleet_cli.demo.scenario import PHASES, DemoJob

FINAL = {"completed", "failed", "rejected", "cancelled"}


@dataclass
class Tracked:
    """A demo job and what was printed of its timeline so far."""

    job: DemoJob
    job_id: int
    shown: int = 0
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.record.get("status", "?"))

    def at(self, status: str) -> datetime | None:
        for entry in self.record.get("timeline", []):
            if entry["status"] == status:
                return datetime.fromisoformat(entry["at"])
        return None


class Timeline:
    """Prints every new phase of every job, in milliseconds since ``started``."""

    def __init__(self, api: str, started: datetime, out: TextIO = sys.stdout) -> None:
        self.api, self.started, self.out = api, started, out
        self.pending: list[tuple[datetime, str]] = []

    def note(self, at: datetime, text: str) -> None:
        """Print ``text`` at its place in time with the next batch of phases."""
        self.pending.append((at, text))

    def flush(self) -> None:
        for at, text in sorted(self.pending, key=lambda item: item[0]):
            millis = (at - self.started).total_seconds() * 1000
            self.out.write(f"  {millis:>7.0f} ms  {text}\n")
        self.pending.clear()
        self.out.flush()

    def refresh(self, tracked: Tracked) -> None:
        try:
            tracked.record = http_json("GET", f"{self.api}/api/jobs/{tracked.job_id}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # 404: the webhook has not reached runs-fleet yet
                raise
            return
        entries = tracked.record.get("timeline", [])
        for entry in entries[tracked.shown :]:
            phase = PHASES.get(entry["status"], entry["status"]).format(
                runner=tracked.record.get("runner_name") or "?",
                reason=(entry.get("reason") or "").removeprefix("conclusion: "),
            )
            label = f"#{tracked.job_id} {tracked.job.name}"
            self.note(datetime.fromisoformat(entry["at"]), f"{label:<18} {phase}")
        tracked.shown = len(entries)

    def follow(self, jobs: list[Tracked], timeout_s: float) -> bool:
        """Print phases until every job is final; ``False`` on time-out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for tracked in jobs:
                self.refresh(tracked)
            self.flush()
            if all(t.status in FINAL for t in jobs):
                return True
            time.sleep(0.05)
        return False
