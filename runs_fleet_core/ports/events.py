"""Runner events: what a backend says about runners outside the job's own flow.

A cloud warns that it will reclaim a spot instance, an instance stops or disappears
under a job, a runner's agent reports through a queue instead of over HTTP. A backend
that has such a feed offers it as a :class:`RunnerEvents` adapter for its backend name;
the worker reads every feed the deployment has and hands each event to
:mod:`runs_fleet_core.usecases.events`. Delivery is at least once: an event is acked
only after it was handled, and handling one twice changes nothing the second time.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.messages import AgentReport


class RunnerEventKind(enum.StrEnum):
    INTERRUPTION = "interruption"
    """The backend is about to take the runner away (a spot interruption warning)."""
    GONE = "gone"
    """The runner stopped or vanished (an instance stopped or terminated)."""
    REPORT = "report"
    """The runner's agent reported on its job (``report`` and ``token`` are set)."""


@attrs.frozen(kw_only=True)
class RunnerEvent:
    """One event. ``runner_id`` is the backend's id of the runner (an instance id);
    ``detail`` says what happened in words; ``receipt`` is the feed's handle for
    :meth:`RunnerEvents.ack`. ``token`` is never logged."""

    kind: RunnerEventKind
    receipt: str
    detail: str = ""
    runner_id: RunnerId | None = None
    report: AgentReport | None = None
    token: str = attrs.field(default="", repr=False)


@runtime_checkable
class RunnerEvents(Protocol):
    """A feed of runner events for one backend."""

    async def receive(self, max_events: int, wait_s: float) -> Sequence[RunnerEvent]:
        """Up to ``max_events`` events, waiting at most ``wait_s`` for the first.
        Events the feed cannot read are dropped by the feed (logged and counted),
        never returned half-understood."""
        ...

    async def ack(self, event: RunnerEvent) -> None:
        """Forget the event for good (it was handled). Acking twice is not an error."""
        ...
