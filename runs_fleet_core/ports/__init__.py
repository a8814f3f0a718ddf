"""The core's contracts with the outside world, as ``typing.Protocol`` classes.

Adapters (in plugins) implement them; use cases receive them as arguments. Each port
has a contract suite in :mod:`runs_fleet_core.testing.contracts` that every adapter of
it must pass.
"""

from runs_fleet_core.ports.compute import PoolProvider, Provider
from runs_fleet_core.ports.configs import ConfigStore
from runs_fleet_core.ports.events import RunnerEvent, RunnerEventKind, RunnerEvents
from runs_fleet_core.ports.github import (
    GitHub,
    GitHubRunner,
    JitConfig,
    JobStatusReport,
    QueuedJob,
    RunnerRegistration,
)
from runs_fleet_core.ports.identity import RunnerIdentity
from runs_fleet_core.ports.observe import Clock, Metrics, SystemClock
from runs_fleet_core.ports.queue import DeadLetter, Delivery, Queue
from runs_fleet_core.ports.state import JobOutbox, StateStore

__all__ = [
    "Clock",
    "ConfigStore",
    "DeadLetter",
    "Delivery",
    "GitHub",
    "GitHubRunner",
    "JitConfig",
    "JobOutbox",
    "JobStatusReport",
    "QueuedJob",
    "Metrics",
    "PoolProvider",
    "Provider",
    "Queue",
    "RunnerEvent",
    "RunnerEventKind",
    "RunnerEvents",
    "RunnerIdentity",
    "RunnerRegistration",
    "StateStore",
    "SystemClock",
]
