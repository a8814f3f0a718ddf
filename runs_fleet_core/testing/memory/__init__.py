"""In-memory adapters for every port: fakes for unit tests and the "memory" mode.

They are real implementations with the semantics of the production adapters (and pass
the same contract suites in :mod:`runs_fleet_core.testing.contracts`), so a test that
passes against them tests the use case, not a stub.
"""

from runs_fleet_core.testing.memory.compute import MemoryPoolProvider, MemoryProvider
from runs_fleet_core.testing.memory.configs import MemoryConfigStore
from runs_fleet_core.testing.memory.events import MemoryRunnerEvents
from runs_fleet_core.testing.memory.github import FakeGitHub
from runs_fleet_core.testing.memory.observe import ManualClock, RecordingMetrics
from runs_fleet_core.testing.memory.queue import MemoryQueue
from runs_fleet_core.testing.memory.state import MemoryStateStore

__all__ = [
    "FakeGitHub",
    "ManualClock",
    "MemoryConfigStore",
    "MemoryPoolProvider",
    "MemoryProvider",
    "MemoryQueue",
    "MemoryRunnerEvents",
    "MemoryStateStore",
    "RecordingMetrics",
]
