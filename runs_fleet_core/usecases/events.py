"""Runner events: spot warnings, vanished runners and agent reports that reach us
through a backend's feed (:mod:`runs_fleet_core.ports.events`) rather than over HTTP.

What each event does to a job:

* **interruption** of a runner that holds a job: the job is requeued once, on demand,
  with its labels and spec (as an agent's ``interrupted`` report does; see
  :meth:`Completion.agent_reported`).
* **gone** (the runner stopped or vanished): a job whose runner never started
  (``claimed``/``launching``) is requeued the same way. A job that was running is left
  to GitHub: its ``completed`` webhook ends it, and an agent that terminates its own
  instance right after a job must not make that job look lost.
* either, for a runner GitHub had given the job to: runs-fleet cannot hand that job to
  another runner; the job records that its runner was lost, which decides whether
  GitHub's ``failure`` is re-run (:meth:`Completion.runner_lost`). An agent that
  reported its runner's exit first rules this out, so a self-terminating instance
  never makes its job look lost.
* **report**: an agent's report, accepted only with the token of that job and runner.

An event that names no job we track is ignored (a warm-pool instance being stopped, a
runner of a job that already ended). Handling is idempotent, so an event delivered
twice changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Mapping

import attrs

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.messages import AgentEvent, AgentReport
from runs_fleet_core.errors import AdapterError
from runs_fleet_core.ports import Clock, Metrics, StateStore
from runs_fleet_core.ports.events import RunnerEvent, RunnerEventKind, RunnerEvents
from runs_fleet_core.usecases.completion import Completion, CompletionOutcome

_log = logging.getLogger(__name__)

HOLDING = (JobStatus.CLAIMED, JobStatus.LAUNCHING, JobStatus.RUNNING)
NOT_STARTED = frozenset({JobStatus.CLAIMED, JobStatus.LAUNCHING})
MAX_RECEIVE_BACKOFF_S = 30.0


class EventOutcome(enum.StrEnum):
    HANDLED = "handled"
    IGNORED = "ignored"
    REJECTED = "rejected"


@attrs.define(kw_only=True)
class RunnerEventHandler:
    """Turns runner events into job changes. ``verify_token(report, token)`` says
    whether ``token`` is the report token of that report's job and runner."""

    state: StateStore
    completion: Completion
    clock: Clock
    metrics: Metrics
    verify_token: Callable[[AgentReport, str], bool]

    async def handle(self, backend: str, event: RunnerEvent) -> EventOutcome:
        """Apply ``event`` (from ``backend``'s feed) and count it."""
        outcome = await self._apply(event)
        self.metrics.increment(
            "runner_events",
            labels={"backend": backend, "kind": event.kind.value, "outcome": outcome.value},
        )
        return outcome

    async def _apply(self, event: RunnerEvent) -> EventOutcome:
        if event.kind is RunnerEventKind.REPORT:
            report = event.report
            if report is None or not self.verify_token(report, event.token):
                _log.warning("agent report through the backend refused: bad or missing token")
                return EventOutcome.REJECTED
            result = await self.completion.agent_reported(report)
            return _outcome(result)
        if event.runner_id is None:
            return EventOutcome.IGNORED
        job = await self._job_holding(event.runner_id)
        if job is None:
            return EventOutcome.IGNORED
        why = event.detail or f"runner {event.runner_id} {event.kind.value}"
        if job.taken_by_its_runner and job.runner_name is not None:
            _log.info("job %s: its runner %s vanished while running it: %s", job.job_id,
                      event.runner_id, why)  # fmt: skip
            return _outcome(await self.completion.runner_lost(job.job_id, job.runner_name, why))
        if event.kind is RunnerEventKind.GONE and job.status not in NOT_STARTED:
            return EventOutcome.IGNORED
        report = AgentReport(
            job_id=job.job_id,
            runner_name=job.runner_name or "",
            event=AgentEvent.INTERRUPTED,
            at=self.clock.now(),
            detail=why,
        )
        _log.info("job %s: runner %s %s; %s", job.job_id, event.runner_id, event.kind.value, why)
        return _outcome(await self.completion.agent_reported(report))

    async def _job_holding(self, runner_id: RunnerId) -> Job | None:
        """The unfinished job whose runner is ``runner_id``, if any."""
        for status in HOLDING:
            for job in await self.state.list_jobs(status=status):
                if job.runner_id == runner_id:
                    return job
        return None


def _outcome(result: CompletionOutcome) -> EventOutcome:
    if result in (CompletionOutcome.UNKNOWN_JOB, CompletionOutcome.UNCHANGED):
        return EventOutcome.IGNORED
    return EventOutcome.HANDLED


async def run_runner_events(
    *,
    feeds: Mapping[str, RunnerEvents],
    handler: RunnerEventHandler,
    stop: asyncio.Event,
    wait_s: float = 1.0,
) -> None:
    """Read every feed until ``stop`` is set. An event is acked after it was handled;
    one whose handling fails stays unacked, so its feed delivers it again."""
    await asyncio.gather(
        *(_drain(backend, feed, handler, stop, wait_s) for backend, feed in feeds.items())
    )


async def _drain(
    backend: str,
    feed: RunnerEvents,
    handler: RunnerEventHandler,
    stop: asyncio.Event,
    wait_s: float,
) -> None:
    backoff = 0.0
    while not stop.is_set():
        try:
            events = await feed.receive(10, wait_s)
        except AdapterError as exc:
            backoff = min(max(backoff * 2, 1.0), MAX_RECEIVE_BACKOFF_S)
            _log.warning(
                "%s runner events: receive failed (%s); again in %.0fs", backend, exc, backoff
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            continue
        backoff = 0.0
        for event in events:
            try:
                await handler.handle(backend, event)
                await feed.ack(event)
            except AdapterError as exc:
                _log.warning("%s runner event %s not handled yet: %s", backend, event.kind, exc)
