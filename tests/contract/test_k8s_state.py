"""The ConfigMap state store against the fake API server: the contract, plus Kubernetes.

The contract suite proves the port's promises (with two-item pages, so every listing
pages). The tests after it pin down the Kubernetes mechanics those promises rest on:
listings the API server narrows by label, races between replicas decided by
``resourceVersion``, conflicts decided again rather than overwritten, Leases as
Kubernetes' own leader election writes them, finished jobs expiring, and RBAC denials
that reach the caller in Kubernetes' words.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.errors import AdapterError, ConfigError, ConflictError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.settings import Settings
from runs_fleet_core.testing.contracts import StateStoreContract
from runs_fleet_core.testing.contracts.state import make_job
from runs_fleet_core.testing.memory import ManualClock, RecordingMetrics
from runs_fleet_k8s import state
from runs_fleet_k8s.client import KubeCaller
from runs_fleet_k8s.state import ConfigMapStateStore
from tests.kube_api.fixtures import KubeApi

PAGE = 2


def _caller(kube_api: KubeApi) -> KubeCaller:
    return KubeCaller(kube_api.api_client(), namespace=kube_api.namespace, timeout_s=5)


@pytest.fixture
def caller(kube_api: KubeApi) -> Iterator[KubeCaller]:
    caller = _caller(kube_api)
    yield caller
    caller.close()


@pytest.fixture(autouse=True)
def _bodies_are_valid(kube_api: KubeApi) -> Iterator[None]:
    """Every body the store sent passed ``kubernetes-validate --strict``."""
    yield
    assert kube_api.server.invalid_bodies == []


@pytest.fixture
def store(caller: KubeCaller, clock: ManualClock) -> ConfigMapStateStore:
    return ConfigMapStateStore(caller, clock=clock, page_size=PAGE)


class TestConfigMapStateStore(StateStoreContract):
    @pytest.fixture
    def state_store(self, store: ConfigMapStateStore) -> ConfigMapStateStore:
        return store


@pytest.fixture
def replica(kube_api: KubeApi, clock: ManualClock) -> Iterator[ConfigMapStateStore]:
    """A second store on the same namespace through its own client: another replica."""
    caller = _caller(kube_api)
    yield ConfigMapStateStore(caller, clock=clock, page_size=PAGE)
    caller.close()


def _config_map(kube_api: KubeApi, name: str) -> dict[str, Any]:
    obj = kube_api.server.get("configmaps", kube_api.namespace, name)
    assert obj is not None, f"no ConfigMap {name}"
    return obj


# -- job records -------------------------------------------------------------------------
async def test_a_job_is_one_config_map_labelled_for_its_listings(
    store: ConfigMapStateStore, kube_api: KubeApi, clock: ManualClock
) -> None:
    stored = await store.put_job(make_job(7, clock.now(), pool="gpu"), expect_version=None)
    obj = _config_map(kube_api, "runs-fleet-job-7")
    assert obj["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "runs-fleet",
        "runs-fleet.io/component": "job-record",
        "runs-fleet.io/job-id": "7",
        "runs-fleet.io/status": "queued",
        "runs-fleet.io/pool": "gpu",
    }
    assert json.loads(obj["data"]["job.json"])["version"] == stored.version


async def test_listing_jobs_asks_the_api_server_for_the_matching_ones_only(
    store: ConfigMapStateStore, kube_api: KubeApi, clock: ManualClock
) -> None:
    for job_id in range(1, 8):
        await store.put_job(make_job(job_id, clock.now()), expect_version=None)
    await store.assign_runner(RunnerId("runner-1"), JobId(1), clock.now())
    await store.put_pool(PoolConfig(name="default", desired_running=1))
    kube_api.server.create(
        "configmaps",
        {"metadata": {"name": "someone-elses"}, "data": {"job.json": "{}"}},
        kube_api.namespace,
    )
    queued = await store.get_job(JobId(3))
    assert queued is not None
    await store.put_job(
        queued.transition(JobStatus.CLAIMED, at=clock.advance(1)), expect_version=queued.version
    )
    before = len(kube_api.server.requests)
    claimed = await store.list_jobs(status=JobStatus.CLAIMED, pool="default")
    assert [job.job_id for job in claimed] == [3]
    # nine ConfigMaps in two-item pages would take five pages: one page means a selector
    assert [(r.verb, r.resource) for r in kube_api.server.requests[before:]] == [
        ("list", "configmaps")
    ]


async def test_a_pool_name_too_long_for_a_label_still_lists_its_jobs(
    store: ConfigMapStateStore, clock: ManualClock
) -> None:
    pool = "a-very-long-pool-name-" + "x" * 60
    await store.put_job(make_job(1, clock.now(), pool=pool), expect_version=None)
    await store.put_job(make_job(2, clock.now(), pool="other"), expect_version=None)
    assert [job.job_id for job in await store.list_jobs(pool=pool)] == [1]


async def test_two_replicas_replacing_from_one_version_get_exactly_one_winner(
    store: ConfigMapStateStore, replica: ConfigMapStateStore, clock: ManualClock
) -> None:
    created = await store.put_job(make_job(1, clock.now()), expect_version=None)
    at = clock.advance(1)
    results = await asyncio.gather(
        store.put_job(
            created.transition(JobStatus.CLAIMED, at=at, claim_owner="a"), expect_version=1
        ),
        replica.put_job(
            created.transition(JobStatus.CLAIMED, at=at, claim_owner="b"), expect_version=1
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Job)]
    losers = [r for r in results if isinstance(r, ConflictError)]
    assert (len(winners), len(losers)) == (1, 1)
    assert "at version 2, not 1" in str(losers[0])
    assert await replica.get_job(JobId(1)) == winners[0]


async def test_a_job_this_store_last_wrote_is_replaced_in_one_request(
    store: ConfigMapStateStore, kube_api: KubeApi, clock: ManualClock
) -> None:
    """The store remembers the resourceVersion of what it wrote or read, so the next
    conditional write skips the read: the API server's 409 is the check."""
    created = await store.put_job(make_job(1, clock.now()), expect_version=None)
    before = kube_api.server.request_count()
    claimed = await store.put_job(
        created.transition(JobStatus.CLAIMED, at=clock.advance(1), claim_owner="a"),
        expect_version=1,
    )
    assert kube_api.server.request_count() - before == 1
    assert kube_api.server.request_count(verb="update", resource="configmaps") >= 1
    assert (await store.get_job(JobId(1))) == claimed


async def test_a_remembered_version_another_replica_moved_on_is_refused_not_overwritten(
    store: ConfigMapStateStore, replica: ConfigMapStateStore, clock: ManualClock
) -> None:
    created = await store.put_job(make_job(1, clock.now()), expect_version=None)
    seen = await replica.get_job(JobId(1))
    assert seen is not None
    moved = await replica.put_job(
        seen.transition(JobStatus.CLAIMED, at=clock.advance(1), claim_owner="b"),
        expect_version=1,
    )
    with pytest.raises(ConflictError, match="at version 2, not 1"):
        await store.put_job(
            created.transition(JobStatus.CLAIMED, at=clock.advance(1), claim_owner="a"),
            expect_version=1,
        )
    assert await store.get_job(JobId(1)) == moved


async def test_a_conflict_on_an_unchanged_job_is_decided_again_and_written(
    store: ConfigMapStateStore, kube_api: KubeApi, clock: ManualClock
) -> None:
    """A 409 for a change that left the job's version alone (someone labelled the
    ConfigMap by hand) is no conflict of the port's: the store reads and writes again."""
    created = await store.put_job(make_job(1, clock.now()), expect_version=None)
    kube_api.server.fail_next("update", "configmaps", status=409, times=2)
    claimed = created.transition(JobStatus.CLAIMED, at=clock.advance(1))
    stored = await store.put_job(claimed, expect_version=created.version)
    assert stored.version == 2
    assert await store.get_job(JobId(1)) == stored
    assert kube_api.server.request_count("update", "configmaps") == 3


async def test_a_job_that_keeps_conflicting_is_refused_as_retryable_without_a_write(
    store: ConfigMapStateStore, kube_api: KubeApi, clock: ManualClock
) -> None:
    created = await store.put_job(make_job(1, clock.now()), expect_version=None)
    kube_api.server.fail_next("update", "configmaps", status=409, times=100)
    claimed = created.transition(JobStatus.CLAIMED, at=clock.advance(1))
    with pytest.raises(AdapterError, match="kept changing") as raised:
        await store.put_job(claimed, expect_version=created.version)
    assert raised.value.retryable
    assert await store.get_job(JobId(1)) == created


async def test_a_write_resent_after_its_answer_was_lost_is_a_success(
    store: ConfigMapStateStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resend meets the write it repeats; its write id tells it apart from a rival's."""
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=1))
    created = await store.put_job(make_job(1, clock.now()), expect_version=None)
    assert await store.put_job(make_job(1, clock.now()), expect_version=None) == created
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=2))
    claimed = created.transition(JobStatus.CLAIMED, at=clock.advance(1))
    stored = await store.put_job(claimed, expect_version=1)
    assert await store.put_job(claimed, expect_version=1) == stored
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=3))
    with pytest.raises(ConflictError):
        await store.put_job(claimed, expect_version=1)


async def test_a_config_map_that_holds_no_job_is_named_in_the_error(
    store: ConfigMapStateStore, kube_api: KubeApi
) -> None:
    kube_api.server.create(
        "configmaps",
        {"metadata": {"name": "runs-fleet-job-9"}, "data": {"job.json": "not json"}},
        kube_api.namespace,
    )
    with pytest.raises(AdapterError, match="ConfigMap runs-fleet-job-9 in namespace runs-fleet"):
        await store.get_job(JobId(9))


# -- retention ---------------------------------------------------------------------------
async def _finished(store: ConfigMapStateStore, job_id: int, clock: ManualClock) -> Job:
    created = await store.put_job(make_job(job_id, clock.now()), expect_version=None)
    done = created.transition(JobStatus.COMPLETED, at=clock.now())
    return await store.put_job(done, expect_version=created.version)


async def test_a_finished_job_is_labelled_with_the_day_it_may_go(
    kube_api: KubeApi, caller: KubeCaller, clock: ManualClock
) -> None:
    store = ConfigMapStateStore(caller, job_retention_days=7)
    await _finished(store, 1, clock)  # 2026-01-05 + 7 days
    labels = _config_map(kube_api, "runs-fleet-job-1")["metadata"]["labels"]
    assert labels["runs-fleet.io/expires-on"] == "2026-01-12"
    await store.put_job(make_job(2, clock.now()), expect_version=None)
    assert (
        "runs-fleet.io/expires-on"
        not in _config_map(kube_api, "runs-fleet-job-2")["metadata"]["labels"]
    )


async def test_purging_deletes_finished_jobs_past_their_day_only(
    kube_api: KubeApi, caller: KubeCaller, clock: ManualClock
) -> None:
    store = ConfigMapStateStore(caller, job_retention_days=7, page_size=PAGE)
    for job_id in (1, 2, 3):
        await _finished(store, job_id, clock)
    await store.put_job(make_job(4, clock.now()), expect_version=None)  # never finishes
    clock.advance(86400)
    await _finished(store, 5, clock)  # a day younger
    # jobs 1-3 may go after 2026-01-12, job 5 after 2026-01-13
    assert await store.purge_expired_jobs(datetime(2026, 1, 12, 23, 59, tzinfo=UTC)) == 0
    assert await store.purge_expired_jobs(datetime(2026, 1, 13, 0, 0, tzinfo=UTC)) == 3
    assert sorted(job.job_id for job in await store.list_jobs()) == [4, 5]


async def test_writing_a_finished_job_purges_now_and_then(
    kube_api: KubeApi, caller: KubeCaller, clock: ManualClock
) -> None:
    store = ConfigMapStateStore(caller, clock=clock, job_retention_days=1)
    await _finished(store, 1, clock)
    clock.advance(3 * 86400)
    await _finished(store, 2, clock)
    assert await store.get_job(JobId(1)) is None
    lists = kube_api.server.request_count("list", "configmaps")
    clock.advance(599)
    await _finished(store, 3, clock)  # the last purge is recent
    assert kube_api.server.request_count("list", "configmaps") == lists
    clock.advance(1)
    await _finished(store, 4, clock)
    assert kube_api.server.request_count("list", "configmaps") == lists + 1


async def test_a_failed_purge_does_not_fail_the_job_write(
    kube_api: KubeApi, caller: KubeCaller, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = ConfigMapStateStore(caller, clock=clock)
    kube_api.server.forbid("list", "configmaps")
    finished = await _finished(store, 1, clock)
    assert finished.status is JobStatus.COMPLETED
    assert "could not delete expired job records" in caplog.text


def test_a_retention_out_of_range_names_the_setting(caller: KubeCaller) -> None:
    context = AdapterContext(
        settings=Settings(values={state.RETENTION_SETTING: 400}),
        clock=ManualClock(),
        metrics=RecordingMetrics(),
    )
    with pytest.raises(ConfigError, match="RUNS_FLEET_KUBE_JOB_RETENTION_DAYS"):
        state.from_context(context, caller)


# -- runner assignments --------------------------------------------------------------------
async def test_an_assignment_is_a_config_map_created_only_if_absent(
    store: ConfigMapStateStore, kube_api: KubeApi, clock: ManualClock
) -> None:
    assert await store.assign_runner(RunnerId("Pod_A.1"), JobId(5), clock.now())
    [obj] = kube_api.server.objects("configmaps", kube_api.namespace)
    assert obj["metadata"]["name"].startswith("runs-fleet-assign-pod-a-1-")
    assert obj["metadata"]["labels"]["runs-fleet.io/component"] == "assignment"
    assert obj["metadata"]["labels"]["runs-fleet.io/job-id"] == "5"
    assert not await store.assign_runner(RunnerId("Pod_A.1"), JobId(6), clock.now())
    assert [a.runner_id for a in await store.list_assignments()] == ["Pod_A.1"]


async def test_a_release_that_meets_a_change_decides_again(
    store: ConfigMapStateStore, kube_api: KubeApi, clock: ManualClock
) -> None:
    await store.assign_runner(RunnerId("runner-1"), JobId(1), clock.now())
    kube_api.server.fail_next("delete", "configmaps", status=409)
    await store.release_runner(RunnerId("runner-1"), JobId(1))
    assert await store.get_assignment(RunnerId("runner-1")) is None
    assert kube_api.server.request_count("delete", "configmaps") == 2


# -- leases ------------------------------------------------------------------------------
def _lease(kube_api: KubeApi, name: str) -> dict[str, Any]:
    obj = kube_api.server.get("leases", kube_api.namespace, name)
    assert obj is not None, f"no Lease {name}"
    return obj


async def test_a_lease_is_a_kubernetes_lease_with_micro_times(
    store: ConfigMapStateStore, kube_api: KubeApi, clock: ManualClock
) -> None:
    await store.acquire_lease("pool-loop", "replica-a", 29.5, clock.now())
    spec = _lease(kube_api, "runs-fleet-pool-loop")["spec"]
    assert spec == {
        "holderIdentity": "replica-a",
        "leaseDurationSeconds": 30,
        "acquireTime": "2026-01-05T09:00:00.000000Z",
        "renewTime": "2026-01-05T09:00:00.000000Z",
        "leaseTransitions": 1,
    }


async def test_a_takeover_by_another_replica_after_expiry_fences_with_a_larger_token(
    store: ConfigMapStateStore,
    replica: ConfigMapStateStore,
    kube_api: KubeApi,
    clock: ManualClock,
) -> None:
    old = await store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
    assert await replica.acquire_lease("pool-loop", "replica-b", 30, clock.advance(29)) is None
    new = await replica.acquire_lease("pool-loop", "replica-b", 30, clock.advance(1.5))
    assert old is not None
    assert new is not None
    assert new.token > old.token
    assert await store.renew_lease(old, 30, clock.now()) is None
    spec = _lease(kube_api, "runs-fleet-pool-loop")["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("replica-b", new.token)
    assert spec["acquireTime"] == "2026-01-05T09:00:30.500000Z"


async def test_a_renewal_keeps_the_acquire_time_and_moves_the_renew_time(
    store: ConfigMapStateStore, kube_api: KubeApi, clock: ManualClock
) -> None:
    lease = await store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
    assert lease is not None
    await store.renew_lease(lease, 30, clock.advance(20))
    spec = _lease(kube_api, "runs-fleet-pool-loop")["spec"]
    assert spec["acquireTime"] == "2026-01-05T09:00:00.000000Z"
    assert spec["renewTime"] == "2026-01-05T09:00:20.000000Z"
    assert spec["leaseTransitions"] == lease.token


async def test_a_released_lease_keeps_its_token_for_the_next_holder(
    store: ConfigMapStateStore, kube_api: KubeApi, clock: ManualClock
) -> None:
    lease = await store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
    assert lease is not None
    await store.release_lease(lease)
    spec = _lease(kube_api, "runs-fleet-pool-loop")["spec"]
    assert spec == {"leaseTransitions": lease.token}


async def test_a_lease_write_that_meets_a_change_decides_again(
    store: ConfigMapStateStore, kube_api: KubeApi, clock: ManualClock
) -> None:
    first = await store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
    kube_api.server.fail_next("update", "leases", status=409)
    again = await store.acquire_lease("pool-loop", "replica-a", 30, clock.advance(5))
    assert first is not None
    assert again is not None
    assert again.token == first.token
    assert kube_api.server.request_count("update", "leases") == 2


async def test_a_lease_needs_a_positive_ttl(
    store: ConfigMapStateStore, kube_api: KubeApi, clock: ManualClock
) -> None:
    with pytest.raises(ValueError, match="positive"):
        await store.acquire_lease("pool-loop", "replica-a", 0, clock.now())
    assert kube_api.server.requests == []


# -- pools and permissions -------------------------------------------------------------------
async def test_a_pool_config_is_a_labelled_config_map(
    store: ConfigMapStateStore, kube_api: KubeApi
) -> None:
    await store.put_pool(PoolConfig(name="gpu", desired_running=2))
    labels = _config_map(kube_api, "runs-fleet-pool-gpu")["metadata"]["labels"]
    assert labels["runs-fleet.io/component"] == "pool-config"
    assert labels["runs-fleet.io/pool"] == "gpu"


async def _list_jobs(store: ConfigMapStateStore, clock: ManualClock) -> object:
    return await store.list_jobs()


async def _create_job(store: ConfigMapStateStore, clock: ManualClock) -> object:
    return await store.put_job(make_job(1, clock.now()), expect_version=None)


async def _renew_lease(store: ConfigMapStateStore, clock: ManualClock) -> object:
    return await store.acquire_lease("pool-loop", "replica-a", 30, clock.advance(1))


@pytest.mark.parametrize(
    ("verb", "resource", "operation"),
    [
        ("list", "configmaps", _list_jobs),
        ("create", "configmaps", _create_job),
        ("update", "leases", _renew_lease),
    ],
)
async def test_an_rbac_denial_names_kubernetes_reason_and_is_not_retried(
    store: ConfigMapStateStore,
    kube_api: KubeApi,
    clock: ManualClock,
    verb: str,
    resource: str,
    operation: Callable[[ConfigMapStateStore, ManualClock], Awaitable[object]],
) -> None:
    await store.acquire_lease("pool-loop", "replica-a", 30, clock.now())
    kube_api.server.forbid(verb, resource)
    attempts = kube_api.server.request_count(verb, resource)
    with pytest.raises(AdapterError, match=f"403 Forbidden: {resource}.* is forbidden") as raised:
        await operation(store, clock)
    assert not raised.value.retryable
    assert "service account" in str(raised.value)
    assert kube_api.server.request_count(verb, resource) == attempts + 1
