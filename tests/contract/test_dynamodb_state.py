"""The DynamoDB state store against a moto server: the contract, plus what only DynamoDB has.

The contract suite proves the port's promises (with two-item pages, so every listing
pages). The tests after it pin down the DynamoDB mechanics those promises rest on:
races between separate clients decided by condition expressions, a write that botocore
resent after losing its answer, listings that query an index instead of scanning,
finished jobs expiring by TTL, and tables created once with the shape the store needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.errors import AdapterError, ConfigError, ConflictError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.settings import Settings
from runs_fleet_core.testing.contracts import StateStoreContract
from runs_fleet_core.testing.contracts.state import make_job
from runs_fleet_core.testing.memory import ManualClock, RecordingMetrics
from runs_fleet_ec2 import dynamodb
from runs_fleet_ec2.dynamodb import DynamoDBStateStore
from runs_fleet_ec2.tables import JOBS, LOCKS, ensure_table
from tests.moto_server import MotoServer

PAGE = 2


@pytest.fixture
def metrics(aws_metrics: RecordingMetrics) -> RecordingMetrics:
    return aws_metrics


@pytest.fixture
def caller(aws_caller: AwsCaller) -> AwsCaller:
    return aws_caller


@pytest.fixture
async def store(caller: AwsCaller) -> DynamoDBStateStore:
    """A store on freshly created tables, with two-item pages."""
    store = DynamoDBStateStore(caller, page_size=PAGE)
    await store.ensure_tables()
    return store


@pytest.fixture
def replica(aws: MotoServer) -> Iterator[DynamoDBStateStore]:
    """A second store on the same tables through its own client: another replica."""
    caller = AwsCaller()
    yield DynamoDBStateStore(caller, page_size=PAGE)
    caller.close()


class TestDynamoDBStateStore(StateStoreContract):
    @pytest.fixture
    def state_store(self, store: DynamoDBStateStore) -> DynamoDBStateStore:
        return store


def _raw_item(caller: AwsCaller, table: str, **key: dict[str, str]) -> dict[str, Any]:
    item: dict[str, Any] = caller.client("dynamodb").get_item(TableName=table, Key=key)["Item"]
    return item


def _resend_first(caller: AwsCaller, operation: str) -> list[int]:
    """Make botocore send the first successful ``operation`` request a second time, as
    it does when an answer is lost on the way back; returns the list it counts into."""
    resent: list[int] = []

    def once(response: tuple[Any, Any] | None = None, **_: Any) -> int | None:
        if not resent and response is not None and response[0].status_code == 200:
            resent.append(1)
            return 0  # retry at once
        return None

    caller.client("dynamodb").meta.events.register(f"needs-retry.dynamodb.{operation}", once)
    return resent


# -- races between replicas ----------------------------------------------------------


async def test_of_two_replicas_creating_the_same_jobs_exactly_one_wins_each(
    store: DynamoDBStateStore, replica: DynamoDBStateStore, clock: ManualClock
) -> None:
    jobs = [make_job(n, clock.now()) for n in range(1, 11)]
    results = await asyncio.gather(
        *(s.put_job(job, expect_version=None) for job in jobs for s in (store, replica)),
        return_exceptions=True,
    )
    for n, pair in enumerate(zip(results[::2], results[1::2], strict=True), start=1):
        winners = [r for r in pair if isinstance(r, Job)]
        assert len(winners) == 1, pair
        assert [type(r) for r in pair if not isinstance(r, Job)] == [ConflictError]
        assert await store.get_job(JobId(n)) == winners[0]


async def test_of_two_replicas_assigning_the_same_runners_exactly_one_wins_each(
    store: DynamoDBStateStore, replica: DynamoDBStateStore, clock: ManualClock
) -> None:
    runners = [RunnerId(f"i-{n:017x}") for n in range(10)]
    results = await asyncio.gather(
        *(
            s.assign_runner(runner, JobId(job), clock.now())
            for runner in runners
            for s, job in ((store, 1), (replica, 2))
        )
    )
    for runner, pair in zip(runners, zip(results[::2], results[1::2], strict=True), strict=True):
        assert sorted(pair) == [False, True]
        assignment = await store.get_assignment(runner)
        assert assignment is not None
        assert assignment.job_id == (1 if pair[0] else 2)


async def test_a_create_resent_after_its_answer_was_lost_still_wins(
    store: DynamoDBStateStore, caller: AwsCaller, clock: ManualClock
) -> None:
    resent = _resend_first(caller, "PutItem")
    created = await store.put_job(make_job(1, clock.now()), expect_version=None)
    assert resent == [1]
    assert await store.get_job(JobId(1)) == created
    with pytest.raises(ConflictError, match="job 1 already exists"):
        await store.put_job(make_job(1, clock.now()), expect_version=None)


async def test_an_assignment_resent_after_its_answer_was_lost_still_wins(
    store: DynamoDBStateStore, caller: AwsCaller, clock: ManualClock
) -> None:
    resent = _resend_first(caller, "PutItem")
    assert await store.assign_runner(RunnerId("i-1"), JobId(1), clock.now()) is True
    assert resent == [1]
    assert await store.assign_runner(RunnerId("i-1"), JobId(1), clock.now()) is False


async def test_a_lease_acquisition_resent_after_its_answer_was_lost_keeps_its_token(
    store: DynamoDBStateStore, caller: AwsCaller, clock: ManualClock
) -> None:
    resent = _resend_first(caller, "PutItem")
    lease = await store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
    assert resent == [1]
    assert lease is not None
    assert lease.token == 1
    assert await store.acquire_lease("pool-loop", "replica-b", 30, clock.now()) is None


async def test_a_stale_replace_names_the_stored_version(
    store: DynamoDBStateStore, clock: ManualClock
) -> None:
    created = await store.put_job(make_job(1, clock.now()), expect_version=None)
    claimed = created.transition(JobStatus.CLAIMED, at=clock.advance(1))
    await store.put_job(claimed, expect_version=created.version)
    with pytest.raises(ConflictError, match="job 1 is at version 2, not 1"):
        await store.put_job(claimed, expect_version=created.version)


# -- listings --------------------------------------------------------------------------


async def _seed(store: DynamoDBStateStore, clock: ManualClock, count: int) -> list[Job]:
    jobs = []
    for n in range(1, count + 1):
        job = await store.put_job(make_job(n, clock.now()), expect_version=None)
        if n % 2 == 0:
            moved = job.transition(JobStatus.CLAIMED, at=clock.advance(1))
            job = await store.put_job(moved, expect_version=job.version)
        jobs.append(job)
    return jobs


@pytest.mark.parametrize(
    ("status", "pool"),
    [(JobStatus.QUEUED, None), (None, "default"), (JobStatus.CLAIMED, "default")],
)
async def test_listing_by_status_or_pool_queries_an_index_and_never_scans(
    store: DynamoDBStateStore,
    metrics: RecordingMetrics,
    clock: ManualClock,
    status: JobStatus | None,
    pool: str | None,
) -> None:
    jobs = await _seed(store, clock, 9)
    before = metrics.count("aws_api_calls", operation="Query")
    listed = await store.list_jobs(status=status, pool=pool)
    expected = [j for j in jobs if status is None or j.status is status]
    assert list(listed) == expected
    assert metrics.count("aws_api_calls", operation="Scan") == 0
    pages = metrics.count("aws_api_calls", operation="Query") - before
    assert pages >= len(expected) / PAGE  # every page was followed


async def test_listing_every_job_scans_every_page(
    store: DynamoDBStateStore, metrics: RecordingMetrics, clock: ManualClock
) -> None:
    jobs = await _seed(store, clock, 7)
    assert list(await store.list_jobs()) == jobs
    assert metrics.count("aws_api_calls", operation="Scan") >= 4


async def test_assignments_are_listed_over_many_pages_without_a_scan(
    store: DynamoDBStateStore, metrics: RecordingMetrics, clock: ManualClock
) -> None:
    for n in range(7):
        await store.assign_runner(RunnerId(f"runner-{n}"), JobId(n), clock.now())
    listed = await store.list_assignments()
    assert [(a.runner_id, a.job_id) for a in listed] == [(f"runner-{n}", n) for n in range(7)]
    assert metrics.count("aws_api_calls", operation="Query") >= 4
    assert metrics.count("aws_api_calls", operation="Scan") == 0


async def test_a_job_that_changes_pool_and_status_drops_out_of_its_old_listings(
    store: DynamoDBStateStore, clock: ManualClock
) -> None:
    job = await store.put_job(make_job(1, clock.now(), pool="gpu"), expect_version=None)
    moved = job.transition(JobStatus.CLAIMED, at=clock.advance(1), pool=None)
    await store.put_job(moved, expect_version=job.version)
    assert list(await store.list_jobs(pool="gpu")) == []
    assert list(await store.list_jobs(status=JobStatus.QUEUED)) == []
    assert [j.job_id for j in await store.list_jobs(status=JobStatus.CLAIMED)] == [1]


# -- TTL of finished jobs ---------------------------------------------------------------


async def test_a_finished_job_expires_after_the_retention_period(
    caller: AwsCaller, clock: ManualClock
) -> None:
    store = DynamoDBStateStore(caller, job_retention_days=7)
    await store.ensure_tables()
    job = await store.put_job(make_job(1, clock.now()), expect_version=None)
    assert "expire_at" not in _raw_item(caller, JOBS.default_name, job_id={"N": "1"})
    finished_at = clock.advance(600)
    done = job.transition(JobStatus.COMPLETED, at=finished_at)
    await store.put_job(done, expect_version=job.version)
    item = _raw_item(caller, JOBS.default_name, job_id={"N": "1"})
    assert int(item["expire_at"]["N"]) == int((finished_at + timedelta(days=7)).timestamp())
    ttl = caller.client("dynamodb").describe_time_to_live(TableName=JOBS.default_name)
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expire_at",
    }


# -- leases --------------------------------------------------------------------------------


async def test_fencing_tokens_keep_growing_across_releases_and_expiries(
    store: DynamoDBStateStore, caller: AwsCaller, clock: ManualClock
) -> None:
    tokens = []
    for owner, release in (("a", True), ("b", False), ("a", True), ("c", False), ("c", True)):
        lease = await store.acquire_lease("pool-loop", owner, 30, clock.advance(31))
        assert lease is not None
        tokens.append(lease.token)
        if release:
            await store.release_lease(lease)
    assert tokens == [1, 2, 3, 4, 5]
    key = {"kind": {"S": "lease"}, "name": {"S": "pool-loop"}}
    item = _raw_item(caller, LOCKS.default_name, **key)
    assert (item["token"], "owner" in item) == ({"N": "5"}, False)


# -- tables --------------------------------------------------------------------------------


async def test_ensuring_the_tables_again_keeps_them_and_their_items(
    store: DynamoDBStateStore, clock: ManualClock
) -> None:
    created = await store.put_job(make_job(1, clock.now()), expect_version=None)
    await store.ensure_tables()
    assert await store.get_job(JobId(1)) == created


async def test_the_jobs_table_has_the_documented_shape(
    store: DynamoDBStateStore, caller: AwsCaller
) -> None:
    table = caller.client("dynamodb").describe_table(TableName=JOBS.default_name)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert indexes["by-status"]["KeySchema"] == [
        {"AttributeName": "status", "KeyType": "HASH"},
        {"AttributeName": "job_id", "KeyType": "RANGE"},
    ]
    assert indexes["by-pool"]["Projection"] == {"ProjectionType": "ALL"}


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ([("job_id", "S", "HASH")], r"has the key job_id \(S, HASH\)"),
        ([("id", "N", "HASH")], r"has the key id \(N, HASH\)"),
    ],
)
async def test_an_existing_table_with_another_key_is_refused(
    caller: AwsCaller, key: list[tuple[str, str, str]], problem: str
) -> None:
    caller.client("dynamodb").create_table(
        TableName="ci-jobs",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": n, "KeyType": k} for n, _, k in key],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t, _ in key],
    )
    with pytest.raises(ConfigError, match=problem) as caught:
        await ensure_table(caller, JOBS, "ci-jobs")
    assert "needs job_id (N, HASH)" in str(caught.value)
    assert "RUNS_FLEET_JOBS_TABLE" in str(caught.value)


async def test_an_existing_table_without_an_index_is_refused(caller: AwsCaller) -> None:
    params = JOBS.create_table_params("ci-jobs")
    params["GlobalSecondaryIndexes"] = params["GlobalSecondaryIndexes"][:1]
    params["AttributeDefinitions"] = [
        a for a in params["AttributeDefinitions"] if a["AttributeName"] in {"job_id", "status"}
    ]
    caller.client("dynamodb").create_table(**params)
    with pytest.raises(ConfigError, match="has no global secondary index 'by-pool'"):
        await ensure_table(caller, JOBS, "ci-jobs")


async def test_a_missing_table_is_an_adapter_error_with_the_aws_code(
    caller: AwsCaller,
) -> None:
    store = DynamoDBStateStore(caller, jobs_table="nowhere")
    with pytest.raises(AdapterError, match="ResourceNotFoundException") as caught:
        await store.get_job(JobId(1))
    assert caught.value.retryable is False


# -- settings ----------------------------------------------------------------------------


def _context(**values: object) -> AdapterContext:
    settings = Settings(values={"RUNS_FLEET_MODE": "ec2", **values})
    return AdapterContext(settings=settings, clock=ManualClock(), metrics=RecordingMetrics())


def test_the_settings_name_the_tables_and_retention() -> None:
    defaults = {s.name: s.default for s in dynamodb.SETTINGS}
    assert defaults == {
        "RUNS_FLEET_JOBS_TABLE": "runs-fleet-jobs",
        "RUNS_FLEET_POOLS_TABLE": "runs-fleet-pools",
        "RUNS_FLEET_LOCKS_TABLE": "runs-fleet-locks",
        "RUNS_FLEET_JOB_RETENTION_DAYS": 30,
    }


async def test_the_factory_uses_the_configured_tables(
    caller: AwsCaller, clock: ManualClock
) -> None:
    context = _context(
        RUNS_FLEET_JOBS_TABLE="ci-jobs",
        RUNS_FLEET_POOLS_TABLE="ci-pools",
        RUNS_FLEET_LOCKS_TABLE="ci-locks",
        RUNS_FLEET_JOB_RETENTION_DAYS=3,
    )
    store = dynamodb.from_context(context, caller)
    await store.ensure_tables()
    job = await store.put_job(make_job(1, clock.now()), expect_version=None)
    cancelled = job.transition(JobStatus.CANCELLED, at=clock.now())
    await store.put_job(cancelled, expect_version=job.version)
    item = _raw_item(caller, "ci-jobs", job_id={"N": "1"})
    assert int(item["expire_at"]["N"]) == int((clock.now() + timedelta(days=3)).timestamp())
    tables = caller.client("dynamodb").list_tables()["TableNames"]
    assert sorted(tables) == ["ci-jobs", "ci-locks", "ci-pools"]
