"""Fuzzing ``POST /webhook`` in process: whatever arrives, the answer is one of the
documented ones, nothing unsigned has any effect, and a 202 means the job is recorded
and queued exactly once.

The real app of the memory mode is called in process as an ASGI server calls it, on one
event loop, one app for every example (building the services loads every plugin, far
too slow per example). Exceptions are not turned into 500s: they reach the test, so any
exception fails the example. Each example comes from its own client address, so the
limit on badly signed requests per source stays on and never turns a 401 into a 429.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from starlette.types import ASGIApp

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.testing.memory import MemoryQueue, RecordingMetrics
from runs_fleet_core.webhooks import SIGNATURE_HEADER
from runs_fleet_server.app import create_app
from runs_fleet_server.bootstrap import Services, build_services
from tests.fuzz.asgi_client import post
from tests.fuzz.webhook_strategies import SECRET, Delivery, deliveries

EXAMPLES = 10_000
DOCUMENTED = {200, 202, 400, 413, 422}
_OWN_COUNTERS = {"webhooks_received"}
"""The only counters a refused delivery may move: the endpoint's own."""


@attrs.frozen
class Answer:
    """What one delivery did: the response, the job ids it queued, the job its answer
    names (as stored afterwards) and whether anything else changed."""

    status: int
    body: Any
    queued: list[int]
    job: Job | None
    untouched: bool


def _job_id_in(body: bytes) -> int | None:
    try:
        job_id = json.loads(body)["workflow_job"]["id"]
    except (ValueError, RecursionError, LookupError, TypeError):
        return None
    return job_id if type(job_id) is int and job_id > 0 else None


class InProcessServer:
    """The memory mode's app on one event loop. ``queued_jobs`` holds every job a 202
    "queued" answer took in, to tell a redelivery from a new job."""

    def __init__(self, services: Services, runner: asyncio.Runner):
        self.services = services
        self.app: ASGIApp = create_app(services)
        self.runner = runner
        self.queued_jobs: set[int] = set()
        self._addresses = (f"2001:db8::{n:x}" for n in itertools.count(1))

    def __repr__(self) -> str:
        return f"InProcessServer(memory mode, {len(self.queued_jobs)} jobs queued so far)"

    def send(self, delivery: Delivery) -> Answer:
        return self.runner.run(self._send(delivery))

    async def _send(self, delivery: Delivery) -> Answer:
        state = self.services.adapters.state
        metrics = self.services.adapters.metrics
        assert isinstance(metrics, RecordingMetrics)
        named = _job_id_in(delivery.body)
        before = (await state.get_job(JobId(named)) if named else None, _counters(metrics))
        headers = delivery.headers_for(SECRET)
        source = (next(self._addresses), 443)
        response = await post(self.app, "/webhook", delivery.body, headers, client=source)
        body = json.loads(response.body)
        queued = await self._drain()
        job_id = body.get("job_id") if isinstance(body, dict) else None
        job = await state.get_job(JobId(job_id)) if isinstance(job_id, int) else None
        after = (await state.get_job(JobId(named)) if named else None, _counters(metrics))
        return Answer(response.status, body, queued, job, untouched=before == after)

    async def _drain(self) -> list[int]:
        """Take every queued message out (nothing dispatches here): their job ids."""
        queue = self.services.adapters.queue
        assert isinstance(queue, MemoryQueue)
        taken = await queue.receive(max_messages=100, wait_s=0)
        for delivery in taken:
            await queue.ack(delivery)
        return [delivery.message.job_id for delivery in taken]


def _counters(metrics: RecordingMetrics) -> dict[Any, float]:
    return {key: value for key, value in metrics.counters.items() if key[0] not in _OWN_COUNTERS}


@pytest.fixture(scope="module")
def server() -> Iterator[InProcessServer]:
    services = build_services(
        {"RUNS_FLEET_MODE": "memory", "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": SECRET}
    )
    with asyncio.Runner() as runner:
        yield InProcessServer(services, runner)
        runner.run(services.aclose())


def _check_signed(server: InProcessServer, answer: Answer) -> None:
    assert answer.status in DOCUMENTED, answer
    outcome = answer.body.get("outcome")
    if answer.status >= 400:
        assert isinstance(answer.body["error"], str) and answer.body["error"], answer
    if answer.status == 202:
        assert answer.job is not None, "a 202 names a job that is in the state store"
        if outcome == "queued":
            assert answer.job.job_id not in server.queued_jobs, "queued twice"
            server.queued_jobs.add(answer.job.job_id)
        else:
            assert outcome == "duplicate", answer
            assert answer.job.job_id in server.queued_jobs, "a 202 for a job never queued"
    expected = [answer.job.job_id] if outcome == "queued" and answer.job else []
    assert answer.queued == expected, answer
    if answer.status == 422:
        assert answer.job is not None and answer.job.status is JobStatus.REJECTED, answer
        assert answer.job.reason == answer.body["error"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(delivery=deliveries)
def test_any_delivery_gets_a_documented_answer_and_unsigned_ones_change_nothing(
    server: InProcessServer, delivery: Delivery
) -> None:
    answer = server.send(delivery)
    assert answer.status < 500, answer
    if delivery.oversized:
        assert answer.status == 413, answer
        assert answer.queued == [] and answer.untouched
    elif not delivery.signed:
        assert answer.status == 401, answer
        assert SIGNATURE_HEADER in answer.body["error"]
        assert answer.queued == [] and answer.untouched, "an unsigned delivery had an effect"
    else:
        _check_signed(server, answer)
