"""The demo's jobs, and what runs-fleet is expected to do with each."""

from __future__ import annotations

from dataclasses import dataclass

REPOSITORY = "octo-org/demo"
RUN_ID = 4242


@dataclass(frozen=True)
class DemoJob:
    """One job the simulated GitHub queues: its name, ``runs-on`` label and result."""

    name: str
    label: str
    conclusion: str = "success"
    expected: str = "completed"

    @property
    def runs_on(self) -> str:
        return self.label.format(run=RUN_ID)


JOBS = (
    DemoJob("build", "runs-fleet={run}/cpu=2"),
    DemoJob("test-arm64", "runs-fleet={run}/runner=4cpu-linux-arm64"),
    DemoJob("release", "runs-fleet={run}/cpu=2+4/ram=8/spot=false/disk=80"),
    DemoJob("lint", "runs-fleet={run}/cpu=1/family=c7g+m7g", conclusion="failure"),
    DemoJob("typo", "runs-fleet={run}/cpu=lots", expected="rejected"),
)
DUPLICATE_OF = 0
"""The sixth webhook re-delivers the first job's ``queued`` webhook, same delivery id."""

PHASES = {
    "queued": "queued: webhook verified and durably enqueued",
    "claimed": "claimed by a dispatch worker",
    "launching": "runner {runner} started (JIT config stored)",
    "running": "in progress on {runner}",
    "completed": "completed ({reason})",
    "failed": "failed ({reason})",
    "rejected": "rejected: {reason}",
    "cancelled": "cancelled",
    "requeued": "requeued ({reason})",
}
