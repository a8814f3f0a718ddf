"""A world of in-memory adapters and the use cases wired to them."""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.labels import LabelDefaults
from runs_fleet_core.domain.messages import WorkflowJobAction, WorkflowJobEvent
from runs_fleet_core.testing.memory import (
    FakeGitHub,
    ManualClock,
    MemoryConfigStore,
    MemoryPoolProvider,
    MemoryProvider,
    MemoryQueue,
    MemoryStateStore,
    RecordingMetrics,
)
from runs_fleet_core.usecases.completion import Completion
from runs_fleet_core.usecases.dispatch import Dispatcher
from runs_fleet_core.usecases.housekeeping import Housekeeper
from runs_fleet_core.usecases.intake import Intake

REPO = "octo-org/widgets"
_deliveries = itertools.count(1)


def event(
    job_id: int,
    label: str = "runs-fleet=42/cpu=2",
    *,
    action: WorkflowJobAction = WorkflowJobAction.QUEUED,
    runner_name: str | None = None,
    conclusion: str | None = None,
) -> WorkflowJobEvent:
    return WorkflowJobEvent(
        action=action,
        job_id=JobId(job_id),
        run_id=42,
        run_attempt=1,
        repository=REPO,
        labels=(label, "linux"),
        delivery_id=f"d-{next(_deliveries)}",
        runner_name=runner_name,
        conclusion=conclusion,
    )


class SeparateQueue:
    """The world's queue behind a type the memory state store does not send to."""

    def __init__(self, queue: MemoryQueue) -> None:
        self._queue = queue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


@attrs.define
class World:
    clock: ManualClock
    state: MemoryStateStore
    queue: MemoryQueue
    configs: MemoryConfigStore
    github: FakeGitHub
    provider: MemoryProvider
    pools: MemoryPoolProvider
    metrics: RecordingMetrics

    def intake(self, backends: tuple[str, ...] = ("memory",), *, outbox: bool = True) -> Intake:
        """Intake on this world; ``outbox=False`` makes the queue look like another
        backend's, so intake records and sends in separate steps."""
        return Intake(
            state=self.state,
            queue=self.queue if outbox else SeparateQueue(self.queue),
            clock=self.clock,
            metrics=self.metrics,
            labels=LabelDefaults(backends=frozenset({"ec2", "k8s", "local", "memory"})),
            backends=backends,
            default_backend="memory",
        )

    def dispatcher(self, owner: str = "worker-1", **kwargs: object) -> Dispatcher:
        return Dispatcher(
            state=self.state,
            queue=self.queue,
            configs=self.configs,
            github=self.github,
            providers={"memory": self.provider},
            pool_providers={"memory": self.pools},
            clock=self.clock,
            metrics=self.metrics,
            owner=owner,
            default_backend="memory",
            claim_ttl_s=60,
            **kwargs,
        )  # type: ignore[arg-type]

    def completion(self, rerun_lost_jobs: int = 0) -> Completion:
        return Completion(
            state=self.state,
            configs=self.configs,
            queue=self.queue,
            clock=self.clock,
            metrics=self.metrics,
            github=self.github,
            rerun_lost_jobs=rerun_lost_jobs,
        )

    def housekeeper(self) -> Housekeeper:
        return Housekeeper(
            state=self.state,
            queue=self.queue,
            configs=self.configs,
            providers={"memory": self.provider},
            clock=self.clock,
            metrics=self.metrics,
            github=self.github,
        )

    async def dispatch_all(self, owner: str = "worker-1") -> list[str]:
        """Receive and handle until the queue has nothing visible."""
        outcomes = []
        dispatcher = self.dispatcher(owner)
        while deliveries := await self.queue.receive(10, 0):
            for delivery in deliveries:
                outcomes.append(str(await dispatcher.handle(delivery)))
        return outcomes


@pytest.fixture
def world() -> World:
    return new_world()


def new_world() -> World:
    clock = ManualClock()
    return World(
        clock=clock,
        state=MemoryStateStore(),
        queue=MemoryQueue(clock, max_attempts=3, visibility_timeout_s=30),
        configs=MemoryConfigStore(),
        github=FakeGitHub(),
        provider=MemoryProvider(clock),
        pools=MemoryPoolProvider(clock),
        metrics=RecordingMetrics(),
    )
