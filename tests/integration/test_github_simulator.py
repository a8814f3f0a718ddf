"""The simulated GitHub says what GitHub says: every REST answer matches GitHub's REST
API description, every webhook matches GitHub's webhook schemas and carries a valid
signature, and the simulated runner's ``run.sh`` plays a job through from start to end.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from runs_fleet_core.domain.ids import JobId
from runs_fleet_github.client import GitHubAppClient
from runs_fleet_github_simulator import (
    AppKeyPair,
    GitHubSimulator,
    SimulatorServer,
    write_runner_dir,
)
from tests.integration.github_sim_fixture import (
    APP_ID,
    FIXTURES,
    ORG_REPO,
    TEST_RETRY,
    USER_REPO,
    ShiftableClock,
    WebhookReceiver,
    check_rest_answer,
    check_webhook,
)

pytest_plugins = ["tests.integration.github_sim_fixture"]

LABELS = ["runs-fleet=77/cpu=2"]


# --- REST answers against the REST API description ---------------------------------


class RecordingTransport(httpx.AsyncHTTPTransport):
    """A real HTTP transport that keeps every answer (with its body) it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[httpx.Response] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        await response.aread()
        response.request = request
        self.answers.append(response)
        return response


def _app_jwt(keys: AppKeyPair, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iat": now - 60, "exp": now + 540, "iss": str(APP_ID)} | claims
    return jwt.encode(payload, keys.private_pem, algorithm="RS256")


async def _drive_every_operation(
    server: SimulatorServer, keys: AppKeyPair, transport: RecordingTransport
) -> None:
    """Call each simulated operation, in success and in error."""
    sim = server.sim
    async with GitHubAppClient(
        app_id=APP_ID,
        private_key=keys.private_pem,
        api_url=server.url,
        retry=TEST_RETRY,
        transport=transport,
    ) as client:
        jit = await client.create_jit_config(ORG_REPO, runner_name="r1", labels=LABELS)
        await client.create_jit_config(ORG_REPO, runner_name="r1", labels=LABELS)
        await client.registration_token(USER_REPO)
        await client.list_runners(ORG_REPO)
        await client.delete_runner(ORG_REPO, jit.runner_id)
        job_id = await sim.queue_job(ORG_REPO, LABELS)
        await client.get_job(ORG_REPO, JobId(job_id))
    app = {"Authorization": f"Bearer {_app_jwt(keys)}"}
    token = {"Authorization": f"token {sim.issue_token(next(iter(sim.installations))).value}"}
    async with httpx.AsyncClient(base_url=server.url, transport=transport) as raw:
        for path, headers in [
            ("/app", app),
            (f"/repos/{ORG_REPO}/installation", app),
            ("/repos/nobody/nothing/installation", app),
            ("/users/octocat/installation", app),
            ("/orgs/octocat/installation", app),
            ("/rate_limit", token),
            (f"/repos/{ORG_REPO}/actions/runners", {}),
            (f"/repos/{ORG_REPO}/actions/runners?per_page=1&page=1", token),
            (f"/repos/{ORG_REPO}/actions/jobs/{job_id}", token),
            (f"/repos/{ORG_REPO}/actions/jobs/1", token),
        ]:
            await raw.get(path, headers=headers)
        await raw.post("/app/installations/1/access_tokens", headers=app)
        await raw.post(f"/repos/{ORG_REPO}/actions/runners/generate-jitconfig", headers=token)
        await raw.delete(f"/repos/{ORG_REPO}/actions/runners/1", headers=token)


async def test_every_rest_answer_matches_the_rest_api_description(
    github_server: SimulatorServer, app_keys: AppKeyPair
) -> None:
    github_server.sim.register_jit_runner(ORG_REPO, name="another", labels=LABELS)
    transport = RecordingTransport()

    await _drive_every_operation(github_server, app_keys, transport)

    covered = {check_rest_answer(answer) for answer in transport.answers}
    statuses = {answer.status_code for answer in transport.answers}
    assert len(covered) == 11, sorted(covered)
    assert statuses == {200, 201, 204, 401, 404, 409, 422}


async def test_every_org_runner_answer_matches_the_rest_api_description(
    github_server: SimulatorServer, github_sim: GitHubSimulator
) -> None:
    group = github_sim.add_runner_group("octo-org", "runs-fleet")
    busy = github_sim.register_org_jit_runner("octo-org", name="busy", labels=LABELS)
    busy.busy = True
    transport = RecordingTransport()
    org = next(i for i in github_sim.installations.values() if i.account.login == "octo-org")
    user = next(i for i in github_sim.installations.values() if i.account.login == "octocat")
    token = {"Authorization": f"token {github_sim.issue_token(org.installation_id).value}"}
    stranger = {"Authorization": f"token {github_sim.issue_token(user.installation_id).value}"}
    runners = "/orgs/octo-org/actions/runners"
    jit = {"name": "o1", "runner_group_id": group.group_id, "labels": LABELS}

    async with httpx.AsyncClient(base_url=github_server.url, transport=transport) as raw:
        created = await raw.post(f"{runners}/generate-jitconfig", headers=token, json=jit)
        await raw.post(f"{runners}/generate-jitconfig", headers=token, json=jit)
        await raw.post(f"{runners}/generate-jitconfig", headers=token, json={"name": "x"})
        await raw.post(
            f"{runners}/generate-jitconfig", headers=token, json=jit | {"runner_group_id": 999}
        )
        await raw.post(f"{runners}/registration-token", headers=token)
        await raw.get(runners, headers=token, params={"per_page": 1})
        await raw.get(f"{runners}/{busy.runner_id}", headers=token)
        await raw.get("/orgs/octo-org/actions/runner-groups", headers=token)
        await raw.get("/orgs/octocat/actions/runner-groups", headers=stranger)
        await raw.delete(f"{runners}/{busy.runner_id}", headers=token)
        await raw.delete(f"{runners}/{created.json()['runner']['id']}", headers=token)
        await raw.get(f"{runners}/{created.json()['runner']['id']}", headers=token)

    covered = {check_rest_answer(answer) for answer in transport.answers}
    statuses = [answer.status_code for answer in transport.answers]
    assert len(covered) == 6, sorted(covered)
    assert statuses == [201, 409, 422, 404, 201, 200, 200, 200, 404, 422, 204, 404]
    groups = transport.answers[7].json()["runner_groups"]
    assert [(g["id"], g["name"], g["default"]) for g in groups] == [
        (1, "Default", True),
        (group.group_id, "runs-fleet", False),
    ]
    assert 'rel="next"' in transport.answers[5].headers["link"]


async def test_the_control_api_creates_runner_groups_and_times_calls(
    github_server: SimulatorServer, github_sim: GitHubSimulator
) -> None:
    async with httpx.AsyncClient(base_url=github_server.url) as raw:
        made = await raw.post("/_simulator/runner-groups", json={"org": "octo-org", "name": "ci"})
        refused = await raw.post("/_simulator/runner-groups", json={"org": "octocat", "name": "ci"})
        await raw.get("/rate_limit")
        calls = (await raw.get("/_simulator/calls")).json()

    assert made.status_code == 201
    assert [g.name for g in github_sim.runner_groups_of("octo-org")] == ["Default", "ci"]
    assert made.json()["id"] == github_sim.runner_groups_of("octo-org")[1].group_id
    assert refused.status_code == 400
    assert calls[-1]["path"] == "/rate_limit"
    assert abs(calls[-1]["at"] - github_sim.clock()) < 60


async def test_runner_lists_are_paginated_with_link_headers(
    github_server: SimulatorServer, github_sim: GitHubSimulator
) -> None:
    for n in range(5):
        github_sim.register_jit_runner(ORG_REPO, name=f"r{n}", labels=LABELS)
    installation = next(iter(github_sim.installations))
    token = github_sim.issue_token(installation).value
    async with httpx.AsyncClient(base_url=github_server.url) as raw:
        response = await raw.get(
            f"/repos/{ORG_REPO}/actions/runners",
            params={"per_page": 2, "page": 2},
            headers={"Authorization": f"Bearer {token}"},
        )
        named = await raw.get(
            f"/repos/{ORG_REPO}/actions/runners",
            params={"name": "r3"},
            headers={"Authorization": f"Bearer {token}"},
        )

    assert [r["name"] for r in response.json()["runners"]] == ["r2", "r3"]
    assert response.json()["total_count"] == 5
    assert 'page=3>; rel="next"' in response.headers["link"]
    assert 'page=1>; rel="prev"' in response.headers["link"]
    assert [r["name"] for r in named.json()["runners"]] == ["r3"]


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        ({"exp": -1}, "'exp'"),
        ({"exp": 3600}, "too far in the future"),
        ({"iat": 600}, "'iat'"),
        ({}, "'iss'"),
    ],
)
async def test_app_jwts_are_checked_like_github_checks_them(
    github_server: SimulatorServer, app_keys: AppKeyPair, offsets: dict[str, int], message: str
) -> None:
    now = int(time.time())  # when the test runs, not when it was collected
    claims: dict[str, Any] = {name: now + offset for name, offset in offsets.items()}
    claims = claims or {"iss": "999"}
    async with httpx.AsyncClient(base_url=github_server.url) as raw:
        good = await raw.get("/app", headers={"Authorization": f"Bearer {_app_jwt(app_keys)}"})
        bad = await raw.get(
            "/app", headers={"Authorization": f"Bearer {_app_jwt(app_keys, **claims)}"}
        )

    assert good.status_code == 200
    assert bad.status_code == 401
    assert message in bad.json()["message"]


async def test_an_expired_installation_token_is_refused(
    github_server: SimulatorServer, github_sim: GitHubSimulator, clock: ShiftableClock
) -> None:
    token = github_sim.issue_token(next(iter(github_sim.installations))).value
    clock.advance(github_sim.token_ttl_s + 1)

    async with httpx.AsyncClient(base_url=github_server.url) as raw:
        response = await raw.get(
            f"/repos/{ORG_REPO}/actions/runners", headers={"Authorization": f"token {token}"}
        )

    assert (response.status_code, response.json()["message"]) == (401, "Bad credentials")


async def test_faults_answer_with_retry_after_then_recover(
    github_server: SimulatorServer, github_sim: GitHubSimulator
) -> None:
    github_sim.inject_fault("/rate_limit", status=429, retry_after=7, count=2)

    async with httpx.AsyncClient(base_url=github_server.url) as raw:
        answers = [await raw.get("/rate_limit") for _ in range(3)]

    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["retry-after"] == "7"


# --- webhooks against the webhook schemas --------------------------------------------


@pytest.fixture
def sim_with_webhooks(
    github_sim: GitHubSimulator, webhook_receiver: WebhookReceiver
) -> GitHubSimulator:
    github_sim.webhook_url = webhook_receiver.url
    return github_sim


async def test_a_queued_job_sends_a_signed_webhook_shaped_like_githubs(
    sim_with_webhooks: GitHubSimulator, webhook_receiver: WebhookReceiver
) -> None:
    job_id = await sim_with_webhooks.queue_job(USER_REPO, LABELS, run_id=77)

    [webhook] = await webhook_receiver.wait_for(1)
    payload = check_webhook(webhook)
    example = json.loads((FIXTURES / "webhooks" / "queued.payload.json").read_text())
    assert set(payload) == set(example)
    assert set(payload["workflow_job"]) == set(example["workflow_job"])
    assert set(payload["repository"]) == set(example["repository"])
    job = payload["workflow_job"]
    assert (job["id"], job["run_id"], job["labels"], job["status"]) == (
        job_id,
        77,
        LABELS,
        "queued",
    )
    assert payload["repository"]["full_name"] == USER_REPO
    assert sim_with_webhooks.deliveries_for(job_id)[0].status_code == 202


async def test_redelivery_keeps_the_delivery_id_and_duplicate_gets_a_new_one(
    sim_with_webhooks: GitHubSimulator, webhook_receiver: WebhookReceiver
) -> None:
    job_id = await sim_with_webhooks.queue_job(ORG_REPO, LABELS)
    [first] = sim_with_webhooks.deliveries_for(job_id)
    await sim_with_webhooks.redeliver(first.delivery_id)
    copy = await sim_with_webhooks.duplicate(first.delivery_id)

    received = await webhook_receiver.wait_for(3)
    ids = [w.headers["x-github-delivery"] for w in received]
    assert ids == [first.delivery_id, first.delivery_id, copy.delivery_id] != ids[:1] * 3
    assert received[0].body == received[1].body == received[2].body
    assert [check_webhook(w)["organization"]["login"] for w in received] == ["octo-org"] * 3
    assert len(first.attempts) == 2


async def test_a_cancelled_queued_job_sends_completed_cancelled(
    sim_with_webhooks: GitHubSimulator, webhook_receiver: WebhookReceiver
) -> None:
    job_id = await sim_with_webhooks.queue_job(ORG_REPO, LABELS)
    await sim_with_webhooks.cancel_job(job_id)

    received = await webhook_receiver.wait_for(2)
    completed = check_webhook(received[1])
    assert (completed["action"], completed["workflow_job"]["conclusion"]) == (
        "completed",
        "cancelled",
    )


async def test_dropped_webhooks_are_recorded_but_not_sent(
    sim_with_webhooks: GitHubSimulator, webhook_receiver: WebhookReceiver
) -> None:
    sim_with_webhooks.drop_webhooks = True
    job_id = await sim_with_webhooks.queue_job(ORG_REPO, LABELS)

    [delivery] = sim_with_webhooks.deliveries_for(job_id)
    assert delivery.status_code is None and webhook_receiver.received == []


# --- the simulated runner ---------------------------------------------------------------


async def _start_runner(
    client: GitHubAppClient, tmp_path: Path, name: str, labels: list[str]
) -> tuple[asyncio.subprocess.Process, int]:
    run_sh = write_runner_dir(tmp_path / name, job_seconds=0.05, idle_timeout_s=20)
    jit = await client.create_jit_config(ORG_REPO, runner_name=name, labels=labels)
    process = await asyncio.create_subprocess_exec(
        str(run_sh),
        "--jitconfig",
        jit.encoded,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return process, jit.runner_id


async def _until_online(sim: GitHubSimulator, runner_id: int) -> None:
    for _ in range(500):
        if sim.runners[runner_id].status == "online":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"runner {runner_id} never came online")


@pytest.mark.parametrize(("conclusion", "exit_code"), [("success", 0), ("failure", 1)])
async def test_run_sh_takes_the_job_reports_progress_and_exits_with_its_result(
    sim_with_webhooks: GitHubSimulator,
    webhook_receiver: WebhookReceiver,
    github_client: GitHubAppClient,
    tmp_path: Path,
    conclusion: str,
    exit_code: int,
) -> None:
    job_id = await sim_with_webhooks.queue_job(ORG_REPO, LABELS, conclusion=conclusion)
    process, runner_id = await _start_runner(github_client, tmp_path, "rf-77-1", LABELS)

    out, err = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == exit_code, (out, err)
    payloads = [check_webhook(w) for w in await webhook_receiver.wait_for(3)]
    assert [p["action"] for p in payloads] == ["queued", "in_progress", "completed"]
    for payload in payloads[1:]:
        job = payload["workflow_job"]
        assert (job["id"], job["runner_name"], job["runner_id"]) == (job_id, "rf-77-1", runner_id)
    assert payloads[2]["workflow_job"]["conclusion"] == conclusion
    assert await github_client.list_runners(ORG_REPO) == []
    assert (await github_client.get_job(ORG_REPO, JobId(job_id))).conclusion == conclusion


async def test_a_runner_takes_only_a_job_whose_labels_it_all_has(
    sim_with_webhooks: GitHubSimulator, github_client: GitHubAppClient, tmp_path: Path
) -> None:
    other = await sim_with_webhooks.queue_job(ORG_REPO, ["gpu"])
    mine = await sim_with_webhooks.queue_job(ORG_REPO, ["self-hosted", *LABELS])
    process, _ = await _start_runner(github_client, tmp_path, "rf-2", LABELS)

    await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 0
    assert sim_with_webhooks.jobs[mine].status == "completed"
    assert sim_with_webhooks.jobs[other].status == "queued"


async def test_a_held_job_waits_for_its_release_and_then_for_the_runner_it_is_offered_to(
    github_server: SimulatorServer, github_sim: GitHubSimulator
) -> None:
    first = github_sim.register_jit_runner(ORG_REPO, name="rf-6", labels=LABELS)
    second = github_sim.register_jit_runner(ORG_REPO, name="rf-7", labels=LABELS)
    async with httpx.AsyncClient(base_url=github_server.url) as raw:
        body = {"repository": ORG_REPO, "labels": LABELS, "held": True}
        job_id = (await raw.post("/_simulator/jobs", json=body)).json()["job_id"]
        assert await github_sim.acquire(first, wait_s=0.1) is None
        offered = await raw.post(f"/_simulator/jobs/{job_id}/release", json={"runner_name": "rf-7"})
        assert offered.status_code == 204
        assert await github_sim.acquire(first, wait_s=0.1) is None
        taken = await github_sim.acquire(second, wait_s=1)
        refused = await raw.post(f"/_simulator/jobs/{job_id}/release", json={"runner_name": 7})

    assert taken is not None and (taken.job_id, taken.runner_name) == (job_id, "rf-7")
    assert refused.status_code == 400


async def test_sigterm_while_running_completes_the_job_as_cancelled(
    sim_with_webhooks: GitHubSimulator,
    webhook_receiver: WebhookReceiver,
    github_client: GitHubAppClient,
    tmp_path: Path,
) -> None:
    await sim_with_webhooks.queue_job(ORG_REPO, LABELS, duration_s=60)
    process, _ = await _start_runner(github_client, tmp_path, "rf-3", LABELS)
    await webhook_receiver.wait_for(2)

    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 143
    completed = check_webhook((await webhook_receiver.wait_for(3))[2])
    assert completed["workflow_job"]["conclusion"] == "cancelled"


async def test_a_runner_stopped_before_it_heard_its_job_gets_the_job_cancelled(
    sim_with_webhooks: GitHubSimulator, webhook_receiver: WebhookReceiver
) -> None:
    job_id = await sim_with_webhooks.queue_job(ORG_REPO, LABELS)
    runner = sim_with_webhooks.register_jit_runner(ORG_REPO, name="rf-5", labels=LABELS)
    assert await sim_with_webhooks.acquire(runner, wait_s=1) is not None
    await sim_with_webhooks.disconnect(runner)  # the acquire answer never reached it
    completed = check_webhook((await webhook_receiver.wait_for(3))[2])
    assert completed["workflow_job"]["conclusion"] == "cancelled"
    assert sim_with_webhooks.jobs[job_id].status == "completed"


async def test_sigterm_while_waiting_leaves_the_runner_offline(
    github_sim: GitHubSimulator, github_client: GitHubAppClient, tmp_path: Path
) -> None:
    process, runner_id = await _start_runner(github_client, tmp_path, "rf-4", LABELS)
    await _until_online(github_sim, runner_id)

    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 143
    [runner] = await github_client.list_runners(ORG_REPO)
    assert (runner.status, runner.busy) == ("offline", False)


async def test_a_killed_runner_is_never_given_a_job(
    github_sim: GitHubSimulator, github_client: GitHubAppClient, tmp_path: Path
) -> None:
    process, runner_id = await _start_runner(github_client, tmp_path, "rf-5", LABELS)
    await _until_online(github_sim, runner_id)

    process.kill()
    await asyncio.wait_for(process.communicate(), 30)
    await asyncio.sleep(0.5)
    job_id = await github_sim.queue_job(ORG_REPO, LABELS)
    await asyncio.sleep(0.3)

    assert github_sim.jobs[job_id].status == "queued"
    assert github_sim.runners[runner_id].status == "offline"


# --- the command line --------------------------------------------------------------


async def test_the_command_line_serves_a_simulator_runs_fleet_can_use(tmp_path: Path) -> None:
    key, secret = tmp_path / "app.pem", tmp_path / "webhook-secret"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runs_fleet_github_simulator",
        "--app-id",
        str(APP_ID),
        "--app-key-out",
        str(key),
        "--webhook-secret-file",
        str(secret),
        "--repo",
        ORG_REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        async with GitHubAppClient(
            app_id=APP_ID, private_key=key.read_bytes(), api_url=url, retry=TEST_RETRY
        ) as client:
            await client.create_jit_config(ORG_REPO, runner_name="cli", labels=LABELS)
        async with httpx.AsyncClient(base_url=url) as raw:
            queued = await raw.post(
                "/_simulator/jobs", json={"repository": ORG_REPO, "labels": LABELS}
            )
            jobs = (await raw.get("/_simulator/jobs")).json()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)

    assert url.startswith("http://127.0.0.1:")
    assert queued.status_code == 201 and [j["id"] for j in jobs] == [queued.json()["job_id"]]
    assert os.stat(key).st_mode & 0o777 == 0o600 and len(secret.read_text()) == 64
    assert process.returncode == 0


def test_the_jit_config_is_base64_json_naming_the_runner_and_the_simulator(
    github_sim: GitHubSimulator,
) -> None:
    runner = github_sim.register_jit_runner(ORG_REPO, name="r", labels=LABELS)

    document = json.loads(base64.b64decode(github_sim.encode_jit_config(runner)))

    assert document["runner_id"] == runner.runner_id and document["runner_name"] == "r"
    assert set(LABELS) <= set(document["labels"])
    assert document["url"] == github_sim.api_url
