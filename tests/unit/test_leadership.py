from __future__ import annotations

from typing import Any

import pytest

from runs_fleet_core.errors import AdapterError, ProviderError
from runs_fleet_core.testing.memory import ManualClock, MemoryStateStore, RecordingMetrics
from runs_fleet_core.usecases.leadership import Leadership


def _replica(
    state: MemoryStateStore,
    clock: ManualClock,
    owner: str,
    log: list[str],
    metrics: RecordingMetrics | None = None,
) -> Leadership:
    async def chore() -> None:
        log.append(owner)

    return Leadership(
        state=state,
        clock=clock,
        metrics=metrics or RecordingMetrics(),
        owner=owner,
        chores=[("record", chore)],
        ttl_s=60,
    )


async def test_only_one_of_three_replicas_runs_the_chores() -> None:
    state, clock, log = MemoryStateStore(), ManualClock(), []
    replicas = [_replica(state, clock, f"r{n}", log) for n in range(3)]
    for _ in range(5):
        for replica in replicas:
            await replica.tick()
        clock.advance(30)
    assert log == ["r0"] * 5


async def test_a_dead_leader_is_replaced_after_its_lease_expires() -> None:
    state, clock, log = MemoryStateStore(), ManualClock(), []
    first, second = _replica(state, clock, "a", log), _replica(state, clock, "b", log)
    assert await first.tick()
    assert not await second.tick()
    clock.advance(61)  # "a" died: no renewal
    assert await second.tick()
    assert log == ["a", "b"]
    assert second.lease is not None and first.lease is not None
    assert second.lease.token > first.lease.token


async def test_a_leader_that_lost_its_lease_stops_acting() -> None:
    state, clock, log = MemoryStateStore(), ManualClock(), []
    first, second = _replica(state, clock, "a", log), _replica(state, clock, "b", log)
    await first.tick()
    clock.advance(61)
    await second.tick()
    assert not await first.tick()
    assert log == ["a", "b"]


async def test_resigning_hands_over_at_once() -> None:
    state, clock, log = MemoryStateStore(), ManualClock(), []
    first, second = _replica(state, clock, "a", log), _replica(state, clock, "b", log)
    await first.tick()
    await first.resign()
    assert await second.tick()


async def test_a_failing_chore_is_counted_and_the_others_still_run() -> None:
    state, clock, metrics, log = MemoryStateStore(), ManualClock(), RecordingMetrics(), []

    async def failing() -> None:
        raise ProviderError("throttled")

    async def working() -> None:
        log.append("ran")

    leader = Leadership(
        state=state,
        clock=clock,
        metrics=metrics,
        owner="a",
        chores=[("pools", failing), ("housekeeping", working)],
    )
    assert await leader.tick()
    assert log == ["ran"]
    assert metrics.count("scheduler_chore_errors", chore="pools") == 1


class _Unreachable(MemoryStateStore):
    """A state store that stops answering lease calls when ``down`` is set."""

    down = False

    async def renew_lease(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise AdapterError("state store unreachable", retryable=True)
        return await super().renew_lease(*args, **kwargs)

    async def acquire_lease(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise AdapterError("state store unreachable", retryable=True)
        return await super().acquire_lease(*args, **kwargs)


async def test_an_unreachable_state_store_is_a_logged_round_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, clock, metrics, log = _Unreachable(), ManualClock(), RecordingMetrics(), []
    leader = _replica(state, clock, "a", log, metrics)
    assert await leader.tick()
    state.down = True
    clock.advance(10)
    assert await leader.tick()  # its lease is still valid: it keeps leading until expiry
    clock.advance(61)
    assert not await leader.tick()
    assert metrics.count("scheduler_lease_errors") == 2
    assert "scheduler lease runs-fleet-scheduler not taken or renewed" in caplog.text
    state.down = False
    assert await leader.tick()
