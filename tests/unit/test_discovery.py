"""Discovery: jobs GitHub holds queued whose ``queued`` webhook never reached runs-fleet."""

from __future__ import annotations

from datetime import timedelta

import attrs

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.job import JobStatus
from runs_fleet_core.errors import GitHubError, NotFoundError
from runs_fleet_core.ports.github import QueuedJob
from runs_fleet_core.usecases.discovery import Discovery

from .conftest import REPO, World, event

LABEL = "runs-fleet=42/cpu=2"


def _discovery(world: World, **options: object) -> Discovery:
    return Discovery(
        state=world.state,
        github=world.github,
        intake=world.intake(),
        clock=world.clock,
        metrics=world.metrics,
        after_s=60,
        **options,  # type: ignore[arg-type]
    )


def _queued(job_id: int, *labels: str, age_s: float, world: World, repo: str = REPO) -> QueuedJob:
    return QueuedJob(
        job_id=JobId(job_id),
        run_id=42,
        run_attempt=1,
        repository=repo,
        labels=labels or (LABEL, "linux"),
        created_at=world.clock.now() - timedelta(seconds=age_s),
    )


async def _served(world: World) -> None:
    """A first job of REPO reached runs-fleet the normal way."""
    await world.intake().take(event(1, LABEL))


async def test_a_job_whose_queued_webhook_never_came_is_queued(world: World) -> None:
    await _served(world)
    world.github.queued[REPO] = [_queued(7, age_s=90, world=world)]
    report = await _discovery(world).discover()
    assert report.repositories == (REPO,) and report.discovered == (7,)
    job = await world.state.get_job(JobId(7))
    assert job is not None and job.status is JobStatus.QUEUED
    assert job.delivery_id == "discovered-7" and job.spec is not None and job.spec.cpu_min == 2
    assert world.metrics.count("jobs_discovered", outcome="queued") == 1
    await world.dispatch_all()
    job = await world.state.get_job(JobId(7))
    assert job is not None and job.status is JobStatus.LAUNCHING


async def test_known_young_and_foreign_jobs_are_left_alone(world: World) -> None:
    await _served(world)
    world.github.queued[REPO] = [
        _queued(1, age_s=900, world=world),  # runs-fleet has it already
        _queued(8, age_s=10, world=world),  # its webhook may still be on its way
        _queued(9, "self-hosted", "linux", age_s=900, world=world),  # not a runs-fleet job
    ]
    report = await _discovery(world).discover()
    assert report.discovered == ()
    assert await world.state.get_job(JobId(8)) is None
    assert await world.state.get_job(JobId(9)) is None


async def test_a_discovered_job_with_a_bad_label_is_rejected_with_its_reason(world: World) -> None:
    await _served(world)
    world.github.queued[REPO] = [_queued(7, "runs-fleet=42/cpu=0", age_s=90, world=world)]
    await _discovery(world).discover()
    job = await world.state.get_job(JobId(7))
    assert job is not None and job.status is JobStatus.REJECTED
    assert job.reason is not None and "cpu" in job.reason


async def test_a_second_pass_queues_nothing_twice(world: World) -> None:
    await _served(world)
    world.github.queued[REPO] = [_queued(7, age_s=90, world=world)]
    discovery = _discovery(world)
    await discovery.discover()
    await discovery.discover()
    assert world.queue.pending_count() == 2  # job 1 and job 7, once each


async def test_only_repositories_served_recently_are_asked(world: World) -> None:
    await _served(world)
    discovery = _discovery(world, window_s=3600)
    assert (await discovery.discover()).repositories == (REPO,)
    world.clock.advance(2 * 3600)
    job = await world.state.get_job(JobId(1))
    assert job is not None
    assert (await discovery.discover()).repositories == ()


async def test_a_failing_repository_does_not_stop_the_pass(world: World) -> None:
    for n, repo in enumerate((REPO, "octo-org/other")):
        await world.intake().take(attrs.evolve(event(n + 1, LABEL), repository=repo))
    world.github.queued[REPO] = [_queued(7, age_s=90, world=world)]
    discovery = _discovery(world)  # asks octo-org/other first: it fails
    world.github.fail_next.append(GitHubError("503 Service Unavailable", retryable=True))
    report = await discovery.discover()
    assert report.repositories == (REPO,) and report.discovered == (7,)
    assert world.metrics.count("discovery_errors") == 1
    world.github.fail_next.append(NotFoundError("the repository is gone"))
    assert (await discovery.discover()).repositories == (REPO,)


async def test_at_most_max_per_pass_repositories_are_asked_least_recently_asked_first(
    world: World,
) -> None:
    for n in range(3):
        repo_event = attrs.evolve(event(n + 1, LABEL), repository=f"octo-org/r{n}")
        await world.intake().take(repo_event)
    discovery = _discovery(world, max_per_pass=2)
    first = (await discovery.discover()).repositories
    second = (await discovery.discover()).repositories
    assert len(first) == 2 and len(second) == 2
    assert set(first) | set(second) == {"octo-org/r0", "octo-org/r1", "octo-org/r2"}


async def test_a_repository_whose_only_job_ended_between_two_passes_is_still_asked(
    world: World,
) -> None:
    discovery = _discovery(world)
    assert (await discovery.discover()).repositories == ()  # nothing recorded yet
    await _served(world)
    job = await world.state.get_job(JobId(1))
    assert job is not None
    await world.state.put_job(
        job.transition(JobStatus.CANCELLED, at=world.clock.now()), expect_version=job.version
    )
    world.clock.advance(1)
    assert (await discovery.discover()).repositories == (REPO,)
