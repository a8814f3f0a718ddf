"""Workflow runs in the simulated GitHub behave as GitHub's do: run listings and job
listings shaped as the REST API description says, with GitHub's run states, filters,
pagination and conditional requests; re-runs only of completed runs, in a new attempt;
and a runner that is lost while it runs a job fails that job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from runs_fleet_github_simulator import GitHubSimulator, Job, Runner, SimulatorServer
from runs_fleet_github_simulator.simulator import RUN_STILL_RUNNING
from tests.integration.github_sim_fixture import (
    ORG_REPO,
    USER_REPO,
    WebhookReceiver,
    check_rest_answer,
    check_webhook,
)

pytest_plugins = ["tests.integration.github_sim_fixture"]

LABELS = ["runs-fleet=88/cpu=2"]
RUNS = f"/repos/{ORG_REPO}/actions/runs"


def _jobs_path(run_id: int) -> str:
    return f"{RUNS}/{run_id}/jobs"


def _rerun_path(job_id: int) -> str:
    return f"/repos/{ORG_REPO}/actions/jobs/{job_id}/rerun"


def _token(sim: GitHubSimulator, owner: str = "octo-org") -> dict[str, str]:
    installation = next(i for i in sim.installations.values() if i.account.login == owner)
    return {"Authorization": f"token {sim.issue_token(installation.installation_id).value}"}


@pytest.fixture
async def api(github_server: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the simulator holding a token of octo-org's installation."""
    headers = _token(github_server.sim)
    async with httpx.AsyncClient(base_url=github_server.url, headers=headers) as client:
        yield client


@pytest.fixture
def sim_with_webhooks(
    github_sim: GitHubSimulator, webhook_receiver: WebhookReceiver
) -> GitHubSimulator:
    github_sim.webhook_url = webhook_receiver.url
    return github_sim


async def _start_oldest(sim: GitHubSimulator) -> Runner:
    """A new runner that has taken the oldest queued job."""
    runner = sim.register_jit_runner(ORG_REPO, name=f"r{sim.next_id()}", labels=LABELS)
    assert await sim.acquire(runner, wait_s=0) is not None
    return runner


async def _finish_oldest(sim: GitHubSimulator, conclusion: str) -> Job:
    """Run the oldest queued job to ``conclusion``."""
    return await sim.complete(await _start_oldest(sim), conclusion)


async def _queue_run(sim: GitHubSimulator, jobs: int = 1) -> int:
    """Queue a run of ``jobs`` jobs; its id."""
    run_id = sim.next_id()
    for n in range(jobs):
        await sim.queue_job(ORG_REPO, LABELS, run_id=run_id, name=f"job-{n}")
    return run_id


async def _run(api: httpx.AsyncClient, run_id: int) -> dict[str, Any]:
    runs = (await api.get(RUNS, params={"per_page": 100})).json()["workflow_runs"]
    found: dict[str, Any] = next(run for run in runs if run["id"] == run_id)
    return found


async def _job_ids(api: httpx.AsyncClient, run_id: int, which: str) -> list[int]:
    jobs = (await api.get(_jobs_path(run_id), params={"filter": which})).json()["jobs"]
    return [job["id"] for job in jobs]


# --- answers against the REST API description ----------------------------------------


async def test_every_workflow_run_answer_matches_the_rest_api_description(
    github_sim: GitHubSimulator, api: httpx.AsyncClient
) -> None:
    job_id = await github_sim.queue_job(ORG_REPO, LABELS)
    run_id = github_sim.jobs[job_id].run_id

    listed = await api.get(RUNS)
    answers = [
        listed,
        await api.get(RUNS, headers={"If-None-Match": listed.headers["ETag"]}),
        await api.get(_jobs_path(run_id)),
        await api.get(_jobs_path(1)),
        await api.post(_rerun_path(job_id)),
    ]
    await _finish_oldest(github_sim, "failure")
    answers += [await api.post(_rerun_path(job_id)), await api.get(_jobs_path(run_id))]

    covered = {check_rest_answer(answer) for answer in answers}
    assert len(covered) == 3, sorted(covered)
    assert [a.status_code for a in answers] == [200, 304, 200, 404, 403, 201, 200]
    assert answers[4].json()["message"] == RUN_STILL_RUNNING
    assert answers[5].json() == {}


# --- run states, filters and pages -------------------------------------------------------


async def test_a_run_is_queued_while_all_its_jobs_are_queued(
    github_sim: GitHubSimulator, api: httpx.AsyncClient
) -> None:
    run_id = await _queue_run(github_sim, jobs=2)

    run = await _run(api, run_id)

    assert (run["status"], run["conclusion"], run["run_attempt"]) == ("queued", None, 1)
    assert run["name"] == "CI" and run["head_branch"] == "main"


@pytest.mark.parametrize("first_job", ["started", "completed"])
async def test_a_run_is_in_progress_while_some_but_not_all_of_its_jobs_ran(
    github_sim: GitHubSimulator, api: httpx.AsyncClient, first_job: str
) -> None:
    run_id = await _queue_run(github_sim, jobs=2)
    runner = await _start_oldest(github_sim)
    if first_job == "completed":
        await github_sim.complete(runner, "success")

    run = await _run(api, run_id)

    assert (run["status"], run["conclusion"]) == ("in_progress", None)


@pytest.mark.parametrize(
    ("conclusions", "expected"),
    [
        (("success", "success"), "success"),
        (("cancelled", "success"), "cancelled"),
        (("cancelled", "failure"), "failure"),
    ],
)
async def test_a_completed_run_concludes_failure_before_cancelled_before_success(
    github_sim: GitHubSimulator,
    api: httpx.AsyncClient,
    conclusions: tuple[str, str],
    expected: str,
) -> None:
    run_id = await _queue_run(github_sim, jobs=2)
    for conclusion in conclusions:
        await _finish_oldest(github_sim, conclusion)

    run = await _run(api, run_id)

    assert (run["status"], run["conclusion"]) == ("completed", expected)


async def test_the_status_filter_keeps_runs_in_that_state_or_with_that_conclusion(
    github_sim: GitHubSimulator, api: httpx.AsyncClient
) -> None:
    failed, succeeded, running, queued = [await _queue_run(github_sim) for _ in range(4)]
    await _finish_oldest(github_sim, "failure")
    await _finish_oldest(github_sim, "success")
    await _start_oldest(github_sim)

    async def ids(status: str) -> list[int]:
        answer = await api.get(RUNS, params={"status": status})
        check_rest_answer(answer)
        return [run["id"] for run in answer.json()["workflow_runs"]]

    assert await ids("queued") == [queued]
    assert await ids("in_progress") == [running]
    assert await ids("completed") == [succeeded, failed]
    assert await ids("failure") == [failed]
    assert await ids("success") == [succeeded]
    assert await ids("waiting") == []
    assert (await api.get(RUNS, params={"status": "finished"})).status_code == 422


async def test_runs_are_listed_newest_first_in_pages_with_link_headers(
    github_sim: GitHubSimulator, api: httpx.AsyncClient
) -> None:
    run_ids = [await _queue_run(github_sim) for _ in range(5)]

    answer = await api.get(RUNS, params={"per_page": 2, "page": 2})

    body = answer.json()
    assert body["total_count"] == 5
    assert [run["id"] for run in body["workflow_runs"]] == [run_ids[2], run_ids[1]]
    assert [run["run_number"] for run in body["workflow_runs"]] == [3, 2]
    assert 'page=3>; rel="next"' in answer.headers["link"]
    assert 'page=1>; rel="prev"' in answer.headers["link"]


async def test_jobs_of_an_unknown_run_are_not_found(
    github_sim: GitHubSimulator, api: httpx.AsyncClient
) -> None:
    elsewhere = await github_sim.queue_job(USER_REPO, LABELS)

    unknown = await api.get(_jobs_path(999_999))
    other_repo = await api.get(_jobs_path(github_sim.jobs[elsewhere].run_id))

    assert (unknown.status_code, other_repo.status_code) == (404, 404)
    assert unknown.json()["message"] == "Not Found"


# --- conditional requests -------------------------------------------------------------


async def test_an_unchanged_listing_is_not_modified_and_costs_no_rate_limit(
    github_sim: GitHubSimulator, api: httpx.AsyncClient
) -> None:
    await _queue_run(github_sim)
    first = await api.get(RUNS)
    used = (await api.get("/rate_limit")).json()["resources"]["core"]["used"]

    again = await api.get(RUNS, headers={"If-None-Match": first.headers["ETag"]})

    assert first.headers["ETag"].startswith('W/"')
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["X-RateLimit-Used"] == str(used)
    assert (await api.get("/rate_limit")).json()["resources"]["core"]["used"] == used
    assert github_sim.calls("GET", RUNS)[-1].status == 304


async def test_a_changed_listing_answers_in_full_with_a_new_etag(
    github_sim: GitHubSimulator, api: httpx.AsyncClient
) -> None:
    await _queue_run(github_sim)
    first = await api.get(RUNS)
    await _queue_run(github_sim)

    again = await api.get(RUNS, headers={"If-None-Match": first.headers["ETag"]})

    assert again.status_code == 200
    assert again.headers["ETag"] != first.headers["ETag"]
    assert again.json()["total_count"] == 2


async def test_an_unchanged_job_listing_is_not_modified(
    github_sim: GitHubSimulator, api: httpx.AsyncClient
) -> None:
    run_id = await _queue_run(github_sim)
    first = await api.get(_jobs_path(run_id))

    again = await api.get(_jobs_path(run_id), headers={"If-None-Match": first.headers["ETag"]})

    assert again.status_code == 304


# --- re-runs --------------------------------------------------------------------------


async def test_a_job_cannot_be_rerun_while_its_run_has_a_job_not_completed(
    github_sim: GitHubSimulator, api: httpx.AsyncClient
) -> None:
    await _queue_run(github_sim, jobs=2)
    first, second = sorted(github_sim.jobs)

    while_queued = await api.post(_rerun_path(first))
    runner = await _start_oldest(github_sim)
    while_running = await api.post(_rerun_path(first))
    await github_sim.complete(runner, "failure")
    while_the_other_is_queued = await api.post(_rerun_path(first))

    statuses = [a.status_code for a in (while_queued, while_running, while_the_other_is_queued)]
    assert statuses == [403, 403, 403]
    assert while_running.json()["message"] == RUN_STILL_RUNNING
    assert github_sim.reruns == [] and github_sim.jobs[second].status == "queued"


async def test_rerunning_a_completed_job_queues_a_new_job_in_the_next_attempt(
    sim_with_webhooks: GitHubSimulator,
    webhook_receiver: WebhookReceiver,
    api: httpx.AsyncClient,
) -> None:
    old_id = await sim_with_webhooks.queue_job(ORG_REPO, LABELS, name="test")
    old = await _finish_oldest(sim_with_webhooks, "failure")

    answer = await api.post(_rerun_path(old_id))

    assert answer.status_code == 201
    [(rerun, new_id)] = sim_with_webhooks.reruns
    new = sim_with_webhooks.jobs[new_id]
    assert rerun == old_id != new_id
    assert (new.run_id, new.run_attempt, new.status) == (old.run_id, 2, "queued")
    assert (new.name, new.labels, new.head_sha) == ("test", LABELS, old.head_sha)
    queued = check_webhook((await webhook_receiver.wait_for(4))[3])
    assert queued["action"] == "queued"
    assert (queued["workflow_job"]["id"], queued["workflow_job"]["run_attempt"]) == (new_id, 2)


async def test_the_control_api_lists_reruns(
    github_server: SimulatorServer, github_sim: GitHubSimulator
) -> None:
    old_id = await github_sim.queue_job(ORG_REPO, LABELS)
    await _finish_oldest(github_sim, "failure")
    new_id = await github_sim.rerun_job(old_id)

    async with httpx.AsyncClient(base_url=github_server.url) as raw:
        listed = (await raw.get("/_simulator/reruns")).json()

    assert listed == [{"job_id": old_id, "new_job_id": new_id}]


async def test_a_rerun_run_is_queued_in_its_next_attempt_and_lists_its_latest_jobs(
    github_sim: GitHubSimulator, api: httpx.AsyncClient
) -> None:
    run_id = await _queue_run(github_sim, jobs=2)
    failed = await _finish_oldest(github_sim, "failure")
    passed = await _finish_oldest(github_sim, "success")

    new_id = await github_sim.rerun_job(failed.job_id)

    run = await _run(api, run_id)
    assert (run["status"], run["run_attempt"]) == ("queued", 2)
    assert run["previous_attempt_url"].endswith(f"/actions/runs/{run_id}/attempts/1")
    assert await _job_ids(api, run_id, "latest") == [passed.job_id, new_id]
    assert await _job_ids(api, run_id, "all") == [failed.job_id, passed.job_id, new_id]


async def test_a_rerun_run_concludes_from_the_latest_execution_of_each_job(
    github_sim: GitHubSimulator, api: httpx.AsyncClient
) -> None:
    run_id = await _queue_run(github_sim)
    failed = await _finish_oldest(github_sim, "failure")
    await github_sim.rerun_job(failed.job_id)

    await _finish_oldest(github_sim, "success")

    run = await _run(api, run_id)
    assert (run["status"], run["conclusion"], run["run_attempt"]) == ("completed", "success", 2)


async def test_rerunning_a_replaced_job_reruns_its_latest_execution(
    github_sim: GitHubSimulator, api: httpx.AsyncClient
) -> None:
    run_id = await _queue_run(github_sim)
    first = await _finish_oldest(github_sim, "failure")
    second = await github_sim.rerun_job(first.job_id)
    await _finish_oldest(github_sim, "failure")

    third = await github_sim.rerun_job(first.job_id)

    assert github_sim.reruns == [(first.job_id, second), (second, third)]
    assert github_sim.jobs[third].run_attempt == 3
    assert await _job_ids(api, run_id, "latest") == [third]


# --- lost runners ---------------------------------------------------------------------


async def test_a_lost_busy_runner_fails_its_job_and_is_removed(
    sim_with_webhooks: GitHubSimulator,
    webhook_receiver: WebhookReceiver,
    github_server: SimulatorServer,
) -> None:
    job_id = await sim_with_webhooks.queue_job(ORG_REPO, LABELS, duration_s=60)
    runner = await _start_oldest(sim_with_webhooks)

    async with httpx.AsyncClient(base_url=github_server.url) as raw:
        lost = await raw.post(f"/_simulator/runners/{runner.runner_id}/lost")

    assert lost.status_code == 200
    assert (lost.json()["id"], lost.json()["conclusion"]) == (job_id, "failure")
    payloads = [check_webhook(w) for w in await webhook_receiver.wait_for(3)]
    assert [p["action"] for p in payloads] == ["queued", "in_progress", "completed"]
    completed = payloads[2]["workflow_job"]
    assert (completed["id"], completed["conclusion"]) == (job_id, "failure")
    assert completed["runner_id"] == runner.runner_id
    assert runner.runner_id not in sim_with_webhooks.runners
    assert sim_with_webhooks.jobs[job_id].status == "completed"


async def test_a_lost_idle_runner_goes_offline(
    github_server: SimulatorServer, github_sim: GitHubSimulator
) -> None:
    runner = github_sim.register_jit_runner(ORG_REPO, name="idle", labels=LABELS)
    runner.status = "online"

    async with httpx.AsyncClient(base_url=github_server.url) as raw:
        lost = await raw.post(f"/_simulator/runners/{runner.runner_id}/lost")
        unknown = await raw.post("/_simulator/runners/1/lost")

    assert (lost.status_code, unknown.status_code) == (204, 404)
    assert github_sim.runners[runner.runner_id].status == "offline"
