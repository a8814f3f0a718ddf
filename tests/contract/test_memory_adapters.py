"""The in-memory adapters against the contract suites, plus their test-only helpers.

If a fake passes the same contract as the production adapters, unit tests that use it
test the use cases and not a stub that drifted.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runs_fleet_core.domain.ids import JobId, RunId, RunnerId
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import GitHubError, NotFoundError, ProviderError
from runs_fleet_core.ports import (
    Clock,
    ConfigStore,
    GitHub,
    JobStatusReport,
    Metrics,
    PoolProvider,
    Provider,
    Queue,
    StateStore,
)
from runs_fleet_core.testing.contracts import (
    Advance,
    ConfigStoreContract,
    JobOutboxContract,
    PoolProviderContract,
    ProviderContract,
    QueueContract,
    StateStoreContract,
)
from runs_fleet_core.testing.contracts.queue import SendRaw, job_message
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


class TestMemoryQueue(QueueContract):
    @pytest.fixture
    def queue(self, clock: ManualClock) -> MemoryQueue:
        return MemoryQueue(
            clock, max_attempts=self.max_attempts, visibility_timeout_s=self.visibility_timeout_s
        )

    @pytest.fixture
    def advance(self, clock: ManualClock) -> Advance:
        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        return advance

    @pytest.fixture
    def send_raw(self, queue: MemoryQueue) -> SendRaw:
        async def send_raw(payload: str) -> None:
            queue.send_raw_nowait(payload)

        return send_raw

    async def test_pending_count_covers_queued_and_in_flight_messages(
        self, queue: MemoryQueue
    ) -> None:
        for job_id in (1, 2):
            await queue.send(job_message(job_id))
        delivery = await self.receive_one(queue)
        assert queue.pending_count() == 2
        await queue.ack(delivery)
        assert queue.pending_count() == 1

    async def test_redrive_requeues_dead_letters_with_fresh_attempts(
        self, queue: MemoryQueue
    ) -> None:
        await queue.send(job_message(1))
        await queue.dead_letter(await self.receive_one(queue), "poison")
        assert len((await queue.redrive()).moved) == 1
        assert list(await queue.dead_letters()) == []
        assert (await self.receive_one(queue)).attempt == 1
        assert (await queue.redrive()).moved == ()

    async def test_a_message_that_cannot_be_serialized_is_refused(self, queue: MemoryQueue) -> None:
        spec = RunnerSpec(run_id=RunId("1"), label="x", labels=(object(),))  # type: ignore[arg-type]
        bad = JobMessage(job_id=JobId(1), run_id=RunId("1"), repository="o/r", spec=spec)
        with pytest.raises(TypeError):
            await queue.send(bad)
        assert queue.pending_count() == 0

    async def test_the_dead_letter_reason_names_the_attempt_limit(
        self, queue: MemoryQueue, advance: Advance
    ) -> None:
        await queue.send(job_message(1))
        for _ in range(self.max_attempts):
            await self.receive_one(queue)
            await self.expire_visibility(advance)
        await queue.receive(1, 0)
        assert [d.reason for d in await queue.dead_letters()] == ["exceeded 3 attempts"]


class TestMemoryStateStore(StateStoreContract):
    @pytest.fixture
    def state_store(self) -> MemoryStateStore:
        return MemoryStateStore()


class TestMemoryJobOutbox(JobOutboxContract):
    @pytest.fixture
    def state_store(self) -> MemoryStateStore:
        return MemoryStateStore()

    @pytest.fixture
    def queue(self, clock: ManualClock) -> MemoryQueue:
        return MemoryQueue(clock=clock)


class TestMemoryConfigStore(ConfigStoreContract):
    @pytest.fixture
    def config_store(self) -> MemoryConfigStore:
        return MemoryConfigStore()


class TestMemoryProvider(ProviderContract):
    @pytest.fixture
    def provider(self, clock: ManualClock) -> MemoryProvider:
        return MemoryProvider(clock)

    async def test_created_counts_each_runner_once(
        self, provider: MemoryProvider, runner_spec: RunnerSpec
    ) -> None:
        for job_id in (1, 1, 2):
            await self.create(provider, runner_spec, job_id)
        assert [r.runner_id for r in provider.created] == ["mem-1", "mem-2"]

    async def test_an_injected_failure_is_raised_before_anything_happens(
        self, provider: MemoryProvider, runner_spec: RunnerSpec
    ) -> None:
        provider.fail_next.append(ProviderError("capacity", retryable=True))
        with pytest.raises(ProviderError):
            await self.create(provider, runner_spec, 1)
        assert provider.created == []
        await self.create(provider, runner_spec, 1)
        assert len(provider.created) == 1

    async def test_listed_runners_carry_the_pool_of_their_spec(
        self, provider: MemoryProvider, runner_spec: RunnerSpec
    ) -> None:
        await self.create(provider, runner_spec, 1)
        assert [s.pool for s in await provider.list_runners()] == [runner_spec.pool]


class TestMemoryPoolProvider(PoolProviderContract):
    @pytest.fixture
    def pool_provider(self, clock: ManualClock) -> MemoryPoolProvider:
        return MemoryPoolProvider(clock)

    async def test_calls_are_logged_and_unknown_ids_raise_not_found(
        self, pool_provider: MemoryPoolProvider, pool_config: PoolConfig
    ) -> None:
        (runner,) = await pool_provider.create_pool_runners(pool_config, 1)
        await pool_provider.stop_runners([runner])
        await pool_provider.terminate_runners([runner])
        with pytest.raises(NotFoundError):
            await pool_provider.start_runners([runner])
        with pytest.raises(NotFoundError):
            await pool_provider.stop_runners([RunnerId("mem-pool-99")])
        assert pool_provider.calls == [
            ("stop", (runner,)),
            ("terminate", (runner,)),
            ("start", (runner,)),
            ("stop", ("mem-pool-99",)),
        ]

    async def test_a_started_runner_is_idle_from_its_start(
        self, pool_provider: MemoryPoolProvider, pool_config: PoolConfig, clock: ManualClock
    ) -> None:
        (runner,) = await pool_provider.create_pool_runners(pool_config, 1, stopped=True)
        started_at = clock.advance(120)
        await pool_provider.start_runners([runner])
        (listed,) = await pool_provider.list_pool_runners(pool_config.name)
        assert listed.idle_since == started_at


class TestFakeGitHub:
    async def test_a_jit_config_registers_an_idle_runner_under_its_name(self) -> None:
        github = FakeGitHub()
        jit = await github.create_jit_config("o/r", runner_name="rf-1-1", labels=["a"])
        (runner,) = await github.list_runners("o/r")
        assert (runner.runner_id, runner.name, runner.busy) == (jit.runner_id, "rf-1-1", False)
        assert jit.encoded not in repr(jit)

    async def test_asking_again_for_an_idle_name_replaces_the_runner(self) -> None:
        github = FakeGitHub()
        first = await github.create_jit_config("o/r", runner_name="rf-1-1", labels=[])
        second = await github.create_jit_config("o/r", runner_name="rf-1-1", labels=[])
        assert [r.runner_id for r in await github.list_runners("o/r")] == [second.runner_id]
        assert (second.runner_id, second.encoded) != (first.runner_id, first.encoded)

    async def test_a_busy_runner_is_not_replaced(self) -> None:
        github = FakeGitHub()
        jit = await github.create_jit_config("o/r", runner_name="rf-1-1", labels=[])
        github.set_runner_state("o/r", jit.runner_id, busy=True)
        with pytest.raises(GitHubError):
            await github.create_jit_config("o/r", runner_name="rf-1-1", labels=[])

    async def test_runners_are_deleted_once_and_deleting_again_is_fine(self) -> None:
        github = FakeGitHub()
        jit = await github.create_jit_config("o/r", runner_name="rf-1-1", labels=[])
        await github.delete_runner("o/r", jit.runner_id)
        await github.delete_runner("o/r", jit.runner_id)
        assert list(await github.list_runners("o/r")) == []

    async def test_jobs_are_reported_as_set_and_unknown_ones_are_not_found(self) -> None:
        github = FakeGitHub()
        report = JobStatusReport(job_id=JobId(5), status="completed", conclusion="success")
        github.jobs[JobId(5)] = report
        assert await github.get_job("o/r", JobId(5)) == report
        with pytest.raises(NotFoundError):
            await github.get_job("o/r", JobId(6))

    async def test_injected_failures_and_registration_tokens(self) -> None:
        github = FakeGitHub()
        github.fail_next.append(GitHubError("rate limited", retryable=True))
        with pytest.raises(GitHubError):
            await github.registration_token("o/r")
        first, second = [await github.registration_token("o/r") for _ in range(2)]
        assert first.token != second.token
        assert first.url == "https://github.com/o/r"
        assert first.token not in repr(first)
        assert github.registrations == ["o/r", "o/r"]


class TestManualClockAndMetrics:
    def test_the_clock_starts_on_a_monday_morning_and_moves_only_when_told(self) -> None:
        clock = ManualClock()
        assert clock.now() == datetime(2026, 1, 5, 9, tzinfo=UTC)
        assert clock.now().weekday() == 0
        clock.advance(90)
        assert clock.now() == datetime(2026, 1, 5, 9, 1, 30, tzinfo=UTC)
        clock.set(datetime(2026, 1, 1, tzinfo=UTC))
        assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)

    def test_the_clock_refuses_naive_times_and_going_backwards_by_advance(self) -> None:
        with pytest.raises(ValueError):
            ManualClock(datetime(2026, 1, 1))
        with pytest.raises(ValueError):
            ManualClock().advance(-1)

    def test_counters_are_summed_over_series_that_include_the_labels(self) -> None:
        metrics = RecordingMetrics()
        metrics.increment("jobs_total", labels={"status": "queued", "pool": "a"})
        metrics.increment("jobs_total", 2, labels={"status": "queued", "pool": "b"})
        metrics.increment("jobs_total", labels={"status": "rejected"})
        assert metrics.count("jobs_total") == 4
        assert metrics.count("jobs_total", status="queued") == 3
        assert metrics.count("jobs_total", status="queued", pool="b") == 2
        assert metrics.count("other_total") == 0

    def test_gauges_and_observations_are_recorded(self) -> None:
        metrics = RecordingMetrics()
        metrics.gauge("pool_idle", 3, labels={"pool": "a"})
        metrics.gauge("pool_idle", 1, labels={"pool": "a"})
        metrics.observe("dispatch_seconds", 0.5)
        metrics.observe("dispatch_seconds", 1.5)
        assert metrics.gauge_value("pool_idle", pool="a") == 1
        assert metrics.observed("dispatch_seconds") == [0.5, 1.5]

    def test_metric_names_must_be_snake_case_without_prefix(self) -> None:
        metrics = RecordingMetrics()
        for bad in ("runs_fleet_jobs_total", "Jobs", "jobs-total"):
            with pytest.raises(ValueError):
                metrics.increment(bad)


def test_every_memory_adapter_satisfies_its_port() -> None:
    clock = ManualClock()
    assert isinstance(clock, Clock)
    assert isinstance(MemoryQueue(clock), Queue)
    assert isinstance(MemoryStateStore(), StateStore)
    assert isinstance(MemoryConfigStore(), ConfigStore)
    assert isinstance(MemoryProvider(clock), Provider)
    assert isinstance(MemoryPoolProvider(clock), PoolProvider)
    assert isinstance(FakeGitHub(), GitHub)
    assert isinstance(RecordingMetrics(), Metrics)


async def test_a_config_that_cannot_be_serialized_is_refused() -> None:
    store = MemoryConfigStore()
    settings: dict[str, object] = {"k": object()}
    config = RunnerConfig(
        runner_name="r",
        job_id=JobId(1),
        repository="o/r",
        jit_config="x",
        settings=settings,  # type: ignore[arg-type]
    )
    with pytest.raises(TypeError):
        await store.put(RunnerId("r"), config)
    assert list(await store.list_ids()) == []
