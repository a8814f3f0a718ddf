"""The Valkey plugin against a real valkey-server: both contracts, plus what only Valkey has.

The contract suites prove the adapters keep the ports' promises; the tests after them
pin down the Valkey mechanics those promises rest on: a dead consumer's entries being
taken over by another process, the stream staying bounded, dead letters keeping their
reason, secondary indexes never drifting from the records, and the plugin being found
and configured like any third-party one.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar, cast

import pytest
import redis

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.job import ALLOWED_TRANSITIONS, Job, JobStatus
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.errors import AdapterError, ConfigError, ConflictError
from runs_fleet_core.plugins import AdapterContext, PluginManager
from runs_fleet_core.settings import Settings
from runs_fleet_core.testing.contracts import (
    Advance,
    JobOutboxContract,
    QueueContract,
    StateStoreContract,
)
from runs_fleet_core.testing.contracts.queue import SendRaw, job_message
from runs_fleet_core.testing.contracts.state import make_job
from runs_fleet_core.testing.memory import ManualClock, RecordingMetrics
from runs_fleet_valkey.queue import ValkeyQueue
from runs_fleet_valkey.state import ValkeyStateStore
from tests.contract.valkey_server import ValkeyTestServer, running_valkey_server

VISIBILITY_S = 1.0  # short for speed, long enough for a loaded machine
POOLS = ("default", "gpu", None)


@pytest.fixture(scope="module")
def valkey_test_server() -> Iterator[ValkeyTestServer]:
    """One real server for the module; fails (never skips) when it cannot start."""
    with running_valkey_server() as server:
        yield server


@pytest.fixture
def url(valkey_test_server: ValkeyTestServer) -> str:
    """The server's URL, with an empty database for each test."""
    with redis.Redis.from_url(valkey_test_server.url) as client:
        client.flushdb()
    return valkey_test_server.url


@pytest.fixture
def raw(url: str) -> Iterator[redis.Redis]:
    """A plain client for looking at the keys behind the adapters."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        yield client


def _queue(url: str, **options: Any) -> ValkeyQueue:
    """A queue with a short visibility timeout and, unless asked, no renewal of held
    deliveries (the contract's "not acked in time, delivered again")."""
    options = {
        "max_attempts": 3,
        "visibility_timeout_s": VISIBILITY_S,
        "max_hold_s": VISIBILITY_S,
        **options,
    }
    return ValkeyQueue.from_url(url, **options)


def _entries(raw: redis.Redis, stream: str) -> list[tuple[str, dict[str, str]]]:
    return cast("list[tuple[str, dict[str, str]]]", raw.xrange(stream))


class TestValkeyQueue(QueueContract):
    visibility_timeout_s: ClassVar[float] = VISIBILITY_S

    @pytest.fixture
    async def queue(self, url: str) -> AsyncIterator[ValkeyQueue]:
        queue = _queue(url, max_attempts=self.max_attempts)
        yield queue
        await queue.aclose()

    @pytest.fixture
    def advance(self) -> Advance:
        return asyncio.sleep

    @pytest.fixture
    def send_raw(self, queue: ValkeyQueue, raw: redis.Redis) -> SendRaw:
        async def send_raw(payload: str) -> None:
            await queue.receive(1, 0)  # creates the group, so the entry is new to it
            raw.xadd(queue.name, {"payload": payload, "dedup": "raw:1", "attempts": "0"})

        return send_raw

    async def test_two_concurrent_receivers_never_get_the_same_message(  # type: ignore[override]
        self, url: str
    ) -> None:
        # the contract's test, with a visibility timeout that a loaded machine does not
        # outlast between two concurrent receives
        queue = _queue(url, visibility_timeout_s=30, max_hold_s=30)
        try:
            await super().test_two_concurrent_receivers_never_get_the_same_message(queue)
        finally:
            await queue.aclose()

    async def test_a_dead_consumers_message_is_taken_over_by_another_instance(
        self, url: str, raw: redis.Redis
    ) -> None:
        crashed, survivor = _queue(url), _queue(url)
        assert crashed.consumer != survivor.consumer
        await crashed.send(job_message(1))
        lost = await self.receive_one(crashed)
        await crashed.aclose()  # never acked: the entry stays in its pending list
        try:
            assert list(await survivor.receive(10, 0)) == []
            await asyncio.sleep(VISIBILITY_S * 1.5)
            taken = await self.receive_one(survivor)
            assert (taken.message, taken.attempt) == (lost.message, 2)
            pending = raw.xpending_range(survivor.name, survivor.group, "-", "+", 10)
            assert [p["consumer"] for p in pending] == [survivor.consumer]
            await survivor.ack(taken)
            assert raw.xlen(survivor.name) == 0
        finally:
            await survivor.aclose()

    async def test_a_live_holder_keeps_its_delivery_past_the_visibility_timeout(
        self, url: str, raw: redis.Redis
    ) -> None:
        holder, other = _queue(url, max_hold_s=60), _queue(url)
        try:
            await holder.send(job_message(1))
            held = await self.receive_one(holder)
            await asyncio.sleep(VISIBILITY_S * 2.5)  # renewed every third of it meanwhile
            assert list(await other.receive(10, 0)) == []
            pending = raw.xpending_range(holder.name, holder.group, "-", "+", 10)
            assert [(p["consumer"], p["times_delivered"]) for p in pending] == [
                (holder.consumer, 1)
            ]
            await holder.ack(held)
            assert raw.xlen(holder.name) == 0
        finally:
            await holder.aclose()
            await other.aclose()

    async def test_a_delivery_held_past_the_maximum_hold_is_let_go(
        self, url: str, raw: redis.Redis
    ) -> None:
        holder = _queue(url, max_hold_s=VISIBILITY_S * 1.5)
        other = _queue(url)
        try:
            await holder.send(job_message(1))
            await self.receive_one(holder)
            await asyncio.sleep(VISIBILITY_S * 2.5)
            taken = await self.receive_one(other)
            assert (taken.message, taken.attempt) == (job_message(1), 2)
        finally:
            await holder.aclose()
            await other.aclose()

    async def test_a_renewal_never_takes_back_a_delivery_another_consumer_took_over(
        self, url: str, raw: redis.Redis
    ) -> None:
        holder, other = _queue(url, max_hold_s=60), _queue(url)
        try:
            await holder.send(job_message(1))
            await self.receive_one(holder)
            await holder._holds.aclose()  # the holder hangs: no renewal comes
            await asyncio.sleep(VISIBILITY_S * 1.5)
            taken = await self.receive_one(other)
            holder._holds.hold(taken.receipt.split("/")[0], 1)  # its old receipt's counter
            assert await holder._holds.renew() == 0
            pending = raw.xpending_range(holder.name, holder.group, "-", "+", 10)
            assert [p["consumer"] for p in pending] == [other.consumer]
        finally:
            await holder.aclose()
            await other.aclose()

    async def test_closing_an_idle_instance_leaves_the_consumer_group(
        self, queue: ValkeyQueue, url: str, raw: redis.Redis
    ) -> None:
        other = _queue(url)
        await other.receive(1, 0)
        await other.aclose()
        await queue.receive(1, 0)
        consumers = raw.xinfo_consumers(queue.name, queue.group)
        assert [c["name"] for c in consumers] == [queue.consumer]

    async def test_the_stream_stays_bounded_by_max_length(self, url: str, raw: redis.Redis) -> None:
        queue = _queue(url, max_length=50)
        try:
            for job_id in range(1, 601):
                await queue.send(job_message(job_id))
        finally:
            await queue.aclose()
        # "MAXLEN ~" trims whole radix-tree nodes (100 entries by default)
        assert 50 <= raw.xlen(queue.name) <= 150

    async def test_acked_entries_leave_the_stream_and_free_their_dedup_id(
        self, queue: ValkeyQueue, raw: redis.Redis
    ) -> None:
        await queue.send(job_message(1))
        await queue.ack(await self.receive_one(queue))
        assert raw.xlen(queue.name) == 0
        assert raw.exists(f"{queue.name}:dedup:1:1") == 0
        await queue.send(job_message(2))
        assert raw.pttl(f"{queue.name}:dedup:2:1") > 0  # a safety net, not the mechanism

    async def test_the_dead_letter_stream_holds_reason_and_attempts(
        self, queue: ValkeyQueue, raw: redis.Redis
    ) -> None:
        await queue.send(job_message(1))
        await queue.send(job_message(2))
        first, second = sorted(await self.receive_all(queue, 2), key=lambda d: d.message.job_id)
        await queue.dead_letter(first, "label cpu=0 is invalid")
        await queue.retry(second, delay_s=0)
        for _ in range(self.max_attempts - 1):
            await queue.retry(await self.receive_one(queue), delay_s=0)
        entries = _entries(raw, queue.dead_letter_stream)
        assert [(f["reason"], f["attempts"], f["dedup"]) for _, f in entries] == [
            ("label cpu=0 is invalid", "1", "1:1"),
            ("exceeded 3 attempts", "3", "2:1"),
        ]
        assert raw.xlen(queue.name) == 0
        assert raw.zcard(f"{queue.name}:delayed") == 0
        assert raw.keys(f"{queue.name}:dedup:*") == []

    async def test_a_dead_letter_is_not_redriven_by_receiving(
        self, queue: ValkeyQueue, raw: redis.Redis
    ) -> None:
        await queue.send(job_message(1))
        await queue.dead_letter(await self.receive_one(queue), "poison")
        await asyncio.sleep(VISIBILITY_S * 1.5)
        assert list(await queue.receive(10, 0)) == []
        assert raw.xlen(queue.dead_letter_stream) == 1

    async def test_an_unreadable_entry_is_dead_lettered_instead_of_delivered(
        self, url: str, raw: redis.Redis
    ) -> None:
        # a visibility timeout no slow machine outlasts: only dead-lettering is tested
        queue = _queue(url, visibility_timeout_s=60)
        try:
            await queue.receive(1, 0)  # creates the group
            raw.xadd(queue.name, {"payload": "{not json", "dedup": "x:1", "attempts": "0"})
            await queue.send(job_message(1))
            assert [d.message for d in await self.receive_all(queue, 1)] == [job_message(1)]
            ((_, fields),) = _entries(raw, queue.dead_letter_stream)
            assert fields["reason"].startswith("unreadable message")
            assert [d.message for d in await queue.dead_letters()] == [None]
        finally:
            await queue.aclose()

    @pytest.mark.parametrize(
        "fields",
        [{"note": "no payload, dedup or attempts"}, {"payload": "{}", "attempts": "many"}],
        ids=["no-fields", "bad-attempts"],
    )
    async def test_an_entry_missing_its_fields_is_dead_lettered_and_the_queue_keeps_working(
        self, queue: ValkeyQueue, raw: redis.Redis, fields: dict[str, str]
    ) -> None:
        """Such an entry used to fail the receive script on every call, for every
        consumer: one foreign entry stopped the whole queue."""
        await queue.receive(1, 0)
        raw.xadd(queue.name, fields)
        await queue.send(job_message(1))
        assert [d.message for d in await self.receive_all(queue, 1)] == [job_message(1)]
        (dead,) = await queue.dead_letters()
        assert dead.message is None and dead.reason.startswith("unreadable message")
        assert dead.attempts == 1
        assert raw.xlen(queue.name) == 1  # only the delivered message, pending its ack
        assert list(await queue.purge([dead.id])) == [dead.id]
        assert raw.xlen(queue.dead_letter_stream) == 0

    async def test_a_redriven_dead_letter_is_a_new_entry_with_no_attempts_and_a_live_dedup_key(
        self, queue: ValkeyQueue, raw: redis.Redis
    ) -> None:
        await queue.send(job_message(1))
        await queue.dead_letter(await self.receive_one(queue), "poison")
        assert raw.exists(f"{queue.name}:dedup:1:1") == 0
        (dead,) = await queue.dead_letters()
        assert dead.dead_lettered_at is not None
        assert abs(dead.dead_lettered_at.timestamp() * 1000 - int(dead.id.split("-")[0])) < 1
        assert (await queue.redrive([dead.id])).moved == (dead.id,)
        ((entry_id, fields),) = _entries(raw, queue.name)
        assert entry_id != dead.id and (fields["attempts"], fields["dedup"]) == ("0", "1:1")
        assert raw.exists(f"{queue.name}:dedup:1:1") == 1
        assert raw.xlen(queue.dead_letter_stream) == 0

    async def test_redriving_a_message_that_was_queued_again_meanwhile_queues_it_once(
        self, queue: ValkeyQueue, raw: redis.Redis
    ) -> None:
        await queue.send(job_message(1))
        await queue.dead_letter(await self.receive_one(queue), "poison")
        await queue.send(job_message(1))  # e.g. housekeeping sent the job again
        (dead,) = await queue.dead_letters()
        assert (await queue.redrive([dead.id])).moved == (dead.id,)
        assert raw.xlen(queue.name) == 1 and raw.xlen(queue.dead_letter_stream) == 0
        assert [d.message for d in await self.receive_all(queue, 1)] == [job_message(1)]

    async def test_ids_that_are_not_stream_ids_are_unknown_not_errors(
        self, queue: ValkeyQueue
    ) -> None:
        odd = ["", "-", "+", "123", "1-2-3", "../x", "9" * 30 + "-0", "9" * 20 + "-0"]
        assert (await queue.redrive(odd)).not_found == tuple(dict.fromkeys(odd))
        assert list(await queue.purge(odd)) == []

    async def test_a_deleted_stream_gets_its_group_back(
        self, queue: ValkeyQueue, raw: redis.Redis
    ) -> None:
        await queue.receive(1, 0)
        raw.delete(queue.name)
        await queue.send(job_message(1))
        assert (await self.receive_one(queue)).message == job_message(1)

    async def test_a_receipt_from_elsewhere_is_refused(self, queue: ValkeyQueue) -> None:
        await queue.send(job_message(1))
        delivery = await self.receive_one(queue)
        forged = type(delivery)(message=delivery.message, receipt="nonsense", attempt=1)
        with pytest.raises(ValueError):
            await queue.ack(forged)


class TestValkeyJobOutbox(JobOutboxContract):
    @pytest.fixture
    async def state_store(self, url: str) -> AsyncIterator[ValkeyStateStore]:
        store = ValkeyStateStore.from_url(url)
        yield store
        await store.aclose()

    @pytest.fixture
    async def queue(self, url: str) -> AsyncIterator[ValkeyQueue]:
        queue = _queue(url)
        yield queue
        await queue.aclose()

    async def test_a_queue_in_another_database_is_not_sent_to(
        self, state_store: ValkeyStateStore, url: str
    ) -> None:
        other = _queue(url.rsplit("/", 1)[0] + "/7")
        try:
            assert not state_store.sends_to(other)
        finally:
            await other.aclose()

    async def test_the_outbox_message_keeps_the_queue_dedup_rule(
        self, state_store: ValkeyStateStore, queue: ValkeyQueue, clock: ManualClock
    ) -> None:
        """A job sent through the outbox is live in the queue: a plain resend of its
        message (say, from housekeeping) is dropped as a duplicate."""
        job = make_job(11, clock.now())
        message = JobMessage.for_job(job, enqueued_at=clock.now())
        assert await state_store.create_job_and_send(job, message, queue) is not None
        await queue.send(message)
        deliveries = await queue.receive(10, 0.5)
        assert [d.message.job_id for d in deliveries] == [job.job_id]

    async def test_a_burst_of_concurrent_webhooks_is_pipelined_and_each_caller_gets_its_answer(
        self, state_store: ValkeyStateStore, queue: ValkeyQueue, clock: ManualClock, raw: Any
    ) -> None:
        """Calls made in one loop turn go out as one pipeline; every job is recorded and
        queued once, and each duplicate (in the same burst) is told it lost."""
        jobs = [make_job(100 + n, clock.now()) for n in range(60)]
        calls = [(job, JobMessage.for_job(job, enqueued_at=clock.now())) for job in jobs]
        calls += calls[:10]  # the same jobs again, in the same burst
        raw.config_resetstat()
        results = await asyncio.gather(
            *(state_store.create_job_and_send(j, m, queue) for j, m in calls)
        )
        created = [r.job_id for r in results if r is not None]
        assert sorted(created) == sorted(job.job_id for job in jobs)
        assert results[60:] == [None] * 10
        assert raw.xlen(queue.name) == 60
        calls_made = int(raw.info("commandstats")["cmdstat_evalsha"]["calls"])
        assert calls_made == 70
        clients_used = int(raw.info("stats")["total_connections_received"])
        assert clients_used < 10  # a pipeline, not one connection per caller

    async def test_pipelined_calls_survive_the_server_losing_its_scripts(
        self, state_store: ValkeyStateStore, queue: ValkeyQueue, clock: ManualClock, raw: Any
    ) -> None:
        """After a restart the server has no cached scripts: a pipelined call that meets
        NOSCRIPT is sent again with its script, not failed."""
        warm = make_job(1, clock.now())
        await state_store.create_job_and_send(
            warm, JobMessage.for_job(warm, enqueued_at=clock.now()), queue
        )
        raw.script_flush()
        jobs = [make_job(200 + n, clock.now()) for n in range(5)]
        results = await asyncio.gather(
            *(
                state_store.create_job_and_send(
                    j, JobMessage.for_job(j, enqueued_at=clock.now()), queue
                )
                for j in jobs
            )
        )
        assert all(r is not None for r in results)
        assert raw.xlen(queue.name) == 6


class TestValkeyStateStore(StateStoreContract):
    @pytest.fixture
    async def state_store(self, url: str) -> AsyncIterator[ValkeyStateStore]:
        store = ValkeyStateStore.from_url(url)
        yield store
        await store.aclose()

    @staticmethod
    async def random_history(
        store: ValkeyStateStore, clock: ManualClock, rng: random.Random
    ) -> dict[int, Job]:
        """25 jobs through 200 random legal transitions (pools changing too), with
        stale writes mixed in; the jobs as they should now be stored."""
        jobs: dict[int, Job] = {}
        for job_id in range(1, 26):
            job = make_job(job_id, clock.now(), pool=rng.choice(POOLS))
            jobs[job_id] = await store.put_job(job, expect_version=None)
        for _ in range(200):
            job = jobs[rng.choice(list(jobs))]
            if not ALLOWED_TRANSITIONS[job.status]:
                continue
            status = rng.choice(sorted(ALLOWED_TRANSITIONS[job.status]))
            moved = job.transition(status, at=clock.advance(1), pool=rng.choice(POOLS))
            if rng.random() < 0.2:  # a stale writer must change nothing
                with pytest.raises(ConflictError):
                    await store.put_job(moved, expect_version=job.version - 1)
                continue
            jobs[job.job_id] = await store.put_job(moved, expect_version=job.version)
        return jobs

    @pytest.mark.parametrize("seed", [1, 2, 3])
    async def test_indexes_match_the_records_after_random_transitions(
        self, state_store: ValkeyStateStore, clock: ManualClock, raw: redis.Redis, seed: int
    ) -> None:
        jobs = await self.random_history(state_store, clock, random.Random(seed))
        scanned = [await state_store.get_job(JobId(job_id)) for job_id in sorted(jobs)]
        assert scanned == [jobs[job_id] for job_id in sorted(jobs)]
        assert list(await state_store.list_jobs()) == scanned
        for status in JobStatus:
            having = {str(job.job_id) for job in jobs.values() if job.status is status}
            assert raw.smembers(f"runs-fleet:jobs-by-status:{status.value}") == having
        for name in ("default", "gpu"):
            having = {str(job.job_id) for job in jobs.values() if job.pool == name}
            assert raw.smembers(f"runs-fleet:jobs-by-pool:{name}") == having
        for status in JobStatus:
            for pool in (*POOLS, "nowhere"):
                listed = await state_store.list_jobs(status=status, pool=pool)
                assert list(listed) == [
                    job
                    for job in scanned
                    if job and job.status is status and (pool is None or job.pool == pool)
                ]
        used_pools = sorted({job.pool for job in jobs.values() if job.pool})
        pool_keys = [f"runs-fleet:jobs-by-pool:{pool}" for pool in used_pools]
        assert sorted(raw.keys("runs-fleet:jobs-by-pool:*")) == pool_keys

    async def test_a_job_without_a_pool_is_in_no_pool_index(
        self, state_store: ValkeyStateStore, clock: ManualClock, raw: redis.Redis
    ) -> None:
        for job_id, pool in ((1, None), (2, "")):
            await state_store.put_job(make_job(job_id, clock.now(), pool=pool), expect_version=None)
        assert raw.keys("runs-fleet:jobs-by-pool:*") == []
        assert list(await state_store.list_jobs(pool="")) == []
        assert sorted(raw.hkeys("runs-fleet:job:1")) == ["data", "status", "version"]

    async def test_fencing_tokens_keep_growing_across_releases(
        self, state_store: ValkeyStateStore, clock: ManualClock
    ) -> None:
        tokens = []
        for owner in ("a", "b", "a", "c"):
            lease = await state_store.acquire_lease("pool-loop", owner, 30, clock.advance(1))
            assert lease is not None
            tokens.append(lease.token)
            await state_store.release_lease(lease)
        assert tokens == sorted(set(tokens))

    async def test_stores_with_different_prefixes_do_not_see_each_other(
        self, state_store: ValkeyStateStore, url: str, clock: ManualClock
    ) -> None:
        other = ValkeyStateStore.from_url(url, prefix="other")
        try:
            await other.put_job(make_job(1, clock.now()), expect_version=None)
            assert list(await state_store.list_jobs()) == []
            assert await state_store.get_job(JobId(1)) is None
        finally:
            await other.aclose()


def _context(**values: object) -> AdapterContext:
    settings = Settings(values={"RUNS_FLEET_MODE": "k8s", **values})
    return AdapterContext(settings=settings, clock=ManualClock(), metrics=RecordingMetrics())


def test_the_plugin_is_discovered_through_its_entry_point() -> None:
    manager = PluginManager()
    assert "valkey" in manager.adapters().queues.names()
    assert "valkey" in manager.adapters().state_stores.names()
    assert {"RUNS_FLEET_VALKEY_QUEUE_NAME", "RUNS_FLEET_VALKEY_KEY_PREFIX"} <= set(
        manager.settings().all()
    )
    (status,) = [s for s in manager.statuses() if s.name == "valkey"]
    assert (status.distribution, status.available) == ("runs-fleet-valkey", True)


@pytest.mark.parametrize("kind", ["queues", "state_stores"])
def test_a_factory_without_a_url_names_the_setting(kind: str) -> None:
    factory = getattr(PluginManager().adapters(), kind).get("valkey")
    with pytest.raises(ConfigError, match="RUNS_FLEET_VALKEY_URL is not set"):
        factory(_context())


async def test_the_factories_honour_the_plugin_settings(url: str, raw: redis.Redis) -> None:
    adapters = PluginManager().adapters()
    context = _context(
        RUNS_FLEET_VALKEY_URL=url.replace("redis://", "valkey://"),
        RUNS_FLEET_VALKEY_QUEUE_NAME="ci:jobs",
        RUNS_FLEET_VALKEY_KEY_PREFIX="ci",
        RUNS_FLEET_MAX_ATTEMPTS=5,
    )
    queue = adapters.queues.get("valkey")(context)
    state = adapters.state_stores.get("valkey")(context)
    assert isinstance(queue, ValkeyQueue)
    assert isinstance(state, ValkeyStateStore)
    try:
        assert queue.max_attempts == 5
        await queue.send(job_message(1))
        await state.put_job(make_job(1, ManualClock().now()), expect_version=None)
        assert raw.xlen("ci:jobs") == 1
        assert raw.exists("ci:job:1") == 1
    finally:
        await queue.aclose()
        await state.aclose()


async def test_an_unreachable_server_is_a_retryable_adapter_error() -> None:
    queue = ValkeyQueue.from_url("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(AdapterError) as caught:
            await queue.send(job_message(1))
        assert caught.value.retryable is True
    finally:
        await queue.aclose()


def test_loading_the_plugin_does_not_import_the_client() -> None:
    code = "import sys, runs_fleet_valkey.plugin; print('redis' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
