"""The GitHub App client reading queued jobs and re-running jobs, against the simulated
GitHub served on 127.0.0.1: what discovery and the lost-runner policy rely on."""

from __future__ import annotations

import pytest

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.errors import GitHubError, NotFoundError
from runs_fleet_github.client import GitHubAppClient
from runs_fleet_github_simulator import GitHubSimulator
from tests.integration.github_sim_fixture import ORG_REPO, USER_REPO

pytest_plugins = ["tests.integration.github_sim_fixture"]

LABELS = ["runs-fleet=77/cpu=2", "linux"]
RUNS = f"/repos/{ORG_REPO}/actions/runs"


async def test_queued_jobs_come_from_queued_and_in_progress_runs(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    done = await github_sim.queue_job(ORG_REPO, LABELS, run_id=500)
    waiting = await github_sim.queue_job(ORG_REPO, LABELS, run_id=500, name="test")
    await github_sim.cancel_job(done)  # run 500 is now in progress, with one job queued
    alone = await github_sim.queue_job(ORG_REPO, ["self-hosted"], run_id=600)
    await github_sim.queue_job(USER_REPO, LABELS)  # another repository

    queued = await github_client.list_queued_jobs(ORG_REPO)

    assert [(j.job_id, j.run_id, j.run_attempt) for j in queued] == [
        (waiting, 500, 1),
        (alone, 600, 1),
    ]
    first = queued[0]
    assert first.repository == ORG_REPO and first.labels == tuple(LABELS)
    assert first.created_at is not None and first.created_at.tzinfo is not None


async def test_asking_again_about_a_quiet_repository_costs_no_rate_budget(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    job = await github_sim.queue_job(ORG_REPO, LABELS)
    await github_client.list_queued_jobs(ORG_REPO)
    served = len(github_sim.calls())
    remaining = github_client.ledger.remaining("octo-org")

    again = await github_client.list_queued_jobs(ORG_REPO)

    assert [j.job_id for j in again] == [job]
    second_round = github_sim.calls()[served:]
    assert second_round and {c.status for c in second_round} == {304}
    assert github_client.ledger.remaining("octo-org") == remaining

    newer = await github_sim.queue_job(ORG_REPO, LABELS)
    assert [j.job_id for j in await github_client.list_queued_jobs(ORG_REPO)] == [job, newer]


async def test_a_finished_job_is_rerun_as_a_new_job(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    job = await github_sim.queue_job(ORG_REPO, LABELS)
    with pytest.raises(GitHubError, match="must have finished") as caught:
        await github_client.rerun_job(ORG_REPO, JobId(job))
    assert caught.value.retryable is False

    await github_sim.cancel_job(job)
    await github_client.rerun_job(ORG_REPO, JobId(job))

    [(old, new)] = github_sim.reruns
    assert old == job and new != job
    [again] = await github_client.list_queued_jobs(ORG_REPO)
    assert (again.job_id, again.run_attempt, again.labels) == (new, 2, tuple(LABELS))


async def test_rerunning_an_unknown_job_is_not_found(github_client: GitHubAppClient) -> None:
    with pytest.raises(NotFoundError):
        await github_client.rerun_job(ORG_REPO, JobId(987654))


async def test_an_unknown_repository_is_not_found(github_client: GitHubAppClient) -> None:
    with pytest.raises(NotFoundError):
        await github_client.list_queued_jobs("octo-org/no-such-repository")
