"""The GitHub App client against the simulated GitHub served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import pytest

from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.errors import ConfigError, GitHubError, NotFoundError
from runs_fleet_core.plugins import AdapterContext, PluginManager
from runs_fleet_core.ports import GitHub, SystemClock
from runs_fleet_core.settings import Settings
from runs_fleet_core.testing.memory import RecordingMetrics
from runs_fleet_github.client import GitHubAppClient
from runs_fleet_github.transport import RetryPolicy
from runs_fleet_github_simulator import (
    AppKeyPair,
    GitHubSimulator,
    SimulatorServer,
    generate_app_key,
)
from tests.integration.github_sim_fixture import (
    APP_ID,
    ORG_REPO,
    TEST_RETRY,
    USER_REPO,
    RecordingSleep,
    ShiftableClock,
)

pytest_plugins = ["tests.integration.github_sim_fixture"]

RUNNERS = f"/repos/{ORG_REPO}/actions/runners"
JITCONFIG = f"{RUNNERS}/generate-jitconfig"
LABELS = ["runs-fleet=123/runner=2cpu-linux-x64"]


def _token_calls(sim: GitHubSimulator) -> int:
    return sum(1 for c in sim.calls("POST") if c.path.endswith("/access_tokens"))


async def test_full_flow_from_installation_lookup_to_job_status(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    jit = await github_client.create_jit_config(ORG_REPO, runner_name="rf-1-1", labels=LABELS)
    [runner] = await github_client.list_runners(ORG_REPO)
    await github_client.delete_runner(ORG_REPO, jit.runner_id)
    job_id = await github_sim.queue_job(ORG_REPO, LABELS)
    report = await github_client.get_job(ORG_REPO, JobId(job_id))

    assert isinstance(github_client, GitHub)
    assert (runner.runner_id, runner.name, runner.busy) == (jit.runner_id, "rf-1-1", False)
    assert set(LABELS) <= set(runner.labels)
    assert json.loads(base64.b64decode(jit.encoded))["runner_id"] == jit.runner_id
    assert (report.status, report.conclusion, report.runner_name) == ("queued", None, None)
    assert await github_client.list_runners(ORG_REPO) == []
    installation = github_sim.installation_for("octo-org", APP_ID)
    assert installation is not None
    assert [(c.method, c.path) for c in github_sim.calls()] == [
        ("GET", "/orgs/octo-org/installation"),
        ("POST", f"/app/installations/{installation.installation_id}/access_tokens"),
        ("POST", JITCONFIG),
        ("GET", RUNNERS),
        ("DELETE", f"{RUNNERS}/{jit.runner_id}"),
        ("GET", f"/repos/{ORG_REPO}/actions/jobs/{job_id}"),
        ("GET", RUNNERS),
    ]
    [jit_call] = github_sim.calls("POST", JITCONFIG)
    assert jit_call.body == {
        "name": "rf-1-1",
        "runner_group_id": 1,
        "labels": LABELS,
        "work_folder": "_work",
    }


async def test_a_user_owned_repository_is_found_through_the_user_installation(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    await github_client.registration_token(USER_REPO)

    lookups = [(c.path, c.status) for c in github_sim.calls("GET")]
    assert lookups == [("/orgs/octocat/installation", 404), ("/users/octocat/installation", 200)]


async def test_an_owner_without_the_app_is_a_permanent_error(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    github_sim.add_repository("stranger/repo", installed=False)

    with pytest.raises(GitHubError, match="not installed on stranger") as caught:
        await github_client.list_runners("stranger/repo")
    assert caught.value.retryable is False


async def test_one_token_serves_many_calls(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    for n in range(5):
        await github_client.create_jit_config(ORG_REPO, runner_name=f"r{n}", labels=LABELS)

    assert _token_calls(github_sim) == 1
    assert len(github_sim.calls("GET", "/orgs/octo-org/installation")) == 1


async def test_twenty_concurrent_callers_share_one_token_request(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    names = [f"runner-{n}" for n in range(20)]
    jits = await asyncio.gather(
        *(github_client.create_jit_config(ORG_REPO, runner_name=n, labels=LABELS) for n in names)
    )

    assert len({jit.runner_id for jit in jits}) == 20
    assert _token_calls(github_sim) == 1
    assert len(github_sim.calls("GET", "/orgs/octo-org/installation")) == 1


async def test_the_token_is_renewed_within_five_minutes_of_its_expiry(
    github_client: GitHubAppClient, github_sim: GitHubSimulator, clock: ShiftableClock
) -> None:
    await github_client.list_runners(ORG_REPO)
    clock.advance(54 * 60)
    await github_client.list_runners(ORG_REPO)
    assert _token_calls(github_sim) == 1

    clock.advance(2 * 60)
    await github_client.list_runners(ORG_REPO)
    assert _token_calls(github_sim) == 2


async def test_a_revoked_token_is_replaced_once(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    await github_client.list_runners(ORG_REPO)
    github_sim.tokens.clear()

    assert await github_client.list_runners(ORG_REPO) == []
    # the third call, with the new token, asks conditionally: nothing changed, 304
    assert [c.status for c in github_sim.calls("GET", RUNNERS)] == [200, 401, 304]
    assert _token_calls(github_sim) == 2


async def test_a_conflict_replaces_the_idle_runner_of_that_name(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    first = await github_client.create_jit_config(ORG_REPO, runner_name="rf-9-1", labels=LABELS)
    second = await github_client.create_jit_config(ORG_REPO, runner_name="rf-9-1", labels=LABELS)

    runners = await github_client.list_runners(ORG_REPO)
    assert [r.runner_id for r in runners] == [second.runner_id] != [first.runner_id]
    assert [c.status for c in github_sim.calls("POST", JITCONFIG)] == [201, 409, 201]
    assert [c.status for c in github_sim.calls("DELETE")] == [204]


async def test_a_conflict_with_a_busy_runner_is_refused(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    await github_client.create_jit_config(ORG_REPO, runner_name="rf-7-1", labels=LABELS)
    await github_sim.queue_job(ORG_REPO, LABELS)
    runner = github_sim.runner_named(ORG_REPO, "rf-7-1")
    assert runner is not None and await github_sim.acquire(runner, wait_s=1) is not None

    with pytest.raises(GitHubError, match="busy") as caught:
        await github_client.create_jit_config(ORG_REPO, runner_name="rf-7-1", labels=LABELS)
    assert caught.value.retryable is False
    assert github_sim.calls("DELETE") == []


async def test_server_errors_are_retried_until_success(
    github_client: GitHubAppClient, github_sim: GitHubSimulator, sleeps: RecordingSleep
) -> None:
    github_sim.inject_fault(JITCONFIG, status=500)
    github_sim.inject_fault(JITCONFIG, status=502)

    await github_client.create_jit_config(ORG_REPO, runner_name="r", labels=LABELS)

    assert [c.status for c in github_sim.calls("POST", JITCONFIG)] == [500, 502, 201]
    assert len(sleeps.waits) == 2
    assert all(0 < wait <= TEST_RETRY.cap_s for wait in sleeps.waits)


async def test_persistent_server_errors_end_in_a_retryable_error(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    github_sim.inject_fault(RUNNERS, status=502, count=10)

    with pytest.raises(GitHubError, match="4 attempts") as caught:
        await github_client.list_runners(ORG_REPO)
    assert caught.value.retryable is True
    assert len(github_sim.calls("GET", RUNNERS)) == TEST_RETRY.max_attempts


async def test_429_waits_as_long_as_retry_after_says(
    github_client: GitHubAppClient, github_sim: GitHubSimulator, sleeps: RecordingSleep
) -> None:
    github_sim.inject_fault(JITCONFIG, status=429, retry_after=2)

    await github_client.create_jit_config(ORG_REPO, runner_name="r", labels=LABELS)

    assert sleeps.waits == [2.0]
    assert [c.status for c in github_sim.calls("POST", JITCONFIG)] == [429, 201]


async def test_an_exhausted_rate_limit_waits_until_its_reset(
    github_client: GitHubAppClient, github_sim: GitHubSimulator, sleeps: RecordingSleep
) -> None:
    github_sim.inject_fault(RUNNERS, status=403, reset_in=2)

    await github_client.list_runners(ORG_REPO)

    [wait] = sleeps.waits
    assert 1.5 < wait <= 3.1


async def test_a_throttle_longer_than_the_cap_fails_fast_and_retryable(
    github_client: GitHubAppClient, github_sim: GitHubSimulator, sleeps: RecordingSleep
) -> None:
    github_sim.inject_fault(RUNNERS, status=403, retry_after=3600)

    with pytest.raises(GitHubError, match="throttled") as caught:
        await github_client.list_runners(ORG_REPO)
    assert caught.value.retryable is True
    assert sleeps.waits == []


async def test_a_plain_403_is_not_retried(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    github_sim.inject_fault(RUNNERS, status=403)

    with pytest.raises(GitHubError, match="403") as caught:
        await github_client.list_runners(ORG_REPO)
    assert caught.value.retryable is False
    assert len(github_sim.calls("GET", RUNNERS)) == 1


async def test_a_slow_answer_times_out_and_is_retried(
    github_server: SimulatorServer, app_keys: AppKeyPair
) -> None:
    github_server.sim.inject_fault(RUNNERS, status=None, delay_s=1.0)
    async with GitHubAppClient(
        app_id=APP_ID,
        private_key=app_keys.private_pem,
        api_url=github_server.url,
        retry=TEST_RETRY,
        timeout_s=0.2,
    ) as client:
        assert await client.list_runners(ORG_REPO) == []


async def test_an_unreachable_github_is_a_retryable_error(app_keys: AppKeyPair) -> None:
    async with GitHubAppClient(
        app_id=APP_ID,
        private_key=app_keys.private_pem,
        api_url="http://127.0.0.1:9",
        retry=TEST_RETRY,
        sleep=RecordingSleep(),
    ) as client:
        with pytest.raises(GitHubError, match="ConnectError") as caught:
            await client.list_runners(ORG_REPO)
    assert caught.value.retryable is True


async def test_an_unknown_job_is_not_found(github_client: GitHubAppClient) -> None:
    with pytest.raises(NotFoundError, match="no job 99"):
        await github_client.get_job(ORG_REPO, JobId(99))


async def test_a_completed_job_reports_its_conclusion(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    job_id = await github_sim.queue_job(ORG_REPO, LABELS)
    await github_sim.cancel_job(job_id)

    report = await github_client.get_job(ORG_REPO, JobId(job_id))

    assert (report.job_id, report.status, report.conclusion) == (job_id, "completed", "cancelled")


async def test_a_validation_error_is_not_retryable(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    with pytest.raises(GitHubError, match="422") as caught:
        await github_client.create_jit_config(ORG_REPO, runner_name="r", labels=[])
    assert caught.value.retryable is False
    assert len(github_sim.calls("POST", JITCONFIG)) == 1


async def test_a_bad_request_is_not_retryable(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    github_sim.inject_fault(f"{RUNNERS}/registration-token", status=400)

    with pytest.raises(GitHubError, match="400") as caught:
        await github_client.registration_token(ORG_REPO)
    assert caught.value.retryable is False


async def test_deleting_a_runner_already_gone_is_fine(github_client: GitHubAppClient) -> None:
    await github_client.delete_runner(ORG_REPO, 424242)


async def test_list_runners_reads_every_page(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    for n in range(130):
        github_sim.register_jit_runner(ORG_REPO, name=f"r{n:03}", labels=LABELS)

    runners = await github_client.list_runners(ORG_REPO)

    assert [r.name for r in runners] == [f"r{n:03}" for n in range(130)]
    assert [c.query["page"] for c in github_sim.calls("GET", RUNNERS)] == ["1", "2"]


async def test_a_wrong_app_key_is_refused_and_not_retried(
    github_server: SimulatorServer,
) -> None:
    async with GitHubAppClient(
        app_id=APP_ID,
        private_key=generate_app_key().private_pem,
        api_url=github_server.url,
        retry=TEST_RETRY,
    ) as client:
        with pytest.raises(GitHubError, match="RUNS_FLEET_GITHUB_APP_ID") as caught:
            await client.list_runners(ORG_REPO)
    assert caught.value.retryable is False


async def test_no_secret_appears_in_errors_or_logs(
    github_client: GitHubAppClient,
    github_sim: GitHubSimulator,
    app_keys: AppKeyPair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    jit = await github_client.create_jit_config(ORG_REPO, runner_name="busy", labels=LABELS)
    await github_sim.queue_job(ORG_REPO, LABELS)
    runner = github_sim.runner_named(ORG_REPO, "busy")
    assert runner is not None and await github_sim.acquire(runner, wait_s=1)
    github_sim.inject_fault(RUNNERS, status=503, count=10)
    for failing in (
        github_client.create_jit_config(ORG_REPO, runner_name="busy", labels=LABELS),
        github_client.create_jit_config(ORG_REPO, runner_name="x", labels=[]),
        github_client.list_runners(ORG_REPO),
        github_client.get_job(ORG_REPO, JobId(1)),
    ):
        with pytest.raises((GitHubError, NotFoundError)) as caught:
            await failing
        texts += [str(caught.value), repr(caught.value)]
    texts += [caplog.text, repr(github_client), repr(jit)]

    secrets = [jit.encoded, *github_sim.tokens, "eyJ", "PRIVATE KEY"]
    secrets += app_keys.private_pem.decode().splitlines()[1:-1]
    leaks = [s for s in secrets for text in texts if s in text]
    assert leaks == []


def _context(**values: object) -> AdapterContext:
    return AdapterContext(
        settings=Settings(values=values), clock=SystemClock(), metrics=RecordingMetrics()
    )


def test_the_plugin_is_found_through_entry_points() -> None:
    statuses = {s.name: s for s in PluginManager().statuses()}

    assert statuses["github"].available, statuses["github"].reason
    assert statuses["github"].distribution == "runs-fleet-github"
    assert "GitHub client:github" in statuses["github"].provides


def test_the_factory_names_a_missing_private_key() -> None:
    factory = PluginManager().adapters().github_clients.get("github")

    with pytest.raises(ConfigError, match="RUNS_FLEET_GITHUB_APP_PRIVATE_KEY is not set"):
        factory(_context(RUNS_FLEET_GITHUB_APP_ID=APP_ID))


def test_the_factory_rejects_a_bad_key_without_showing_it() -> None:
    factory = PluginManager().adapters().github_clients.get("github")
    bad = "not-a-key-but-a-secret-value"

    with pytest.raises(ConfigError) as caught:
        factory(_context(RUNS_FLEET_GITHUB_APP_ID=APP_ID, RUNS_FLEET_GITHUB_APP_PRIVATE_KEY=bad))
    assert "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY" in str(caught.value)
    assert bad not in str(caught.value)


@pytest.mark.parametrize("encoding", ["pem", "base64", "escaped-newlines"])
async def test_the_factory_builds_a_working_client_from_the_settings(
    encoding: str, github_server: SimulatorServer, app_keys: AppKeyPair
) -> None:
    pem = app_keys.private_pem.decode()
    key = {
        "pem": pem,
        "base64": base64.b64encode(pem.encode()).decode(),
        "escaped-newlines": pem.replace("\n", "\\n"),
    }[encoding]
    factory = PluginManager().adapters().github_clients.get("github")
    client = factory(
        _context(
            RUNS_FLEET_GITHUB_APP_ID=APP_ID,
            RUNS_FLEET_GITHUB_APP_PRIVATE_KEY=key,
            RUNS_FLEET_GITHUB_API_URL=github_server.url,
        )
    )
    assert isinstance(client, GitHubAppClient)
    try:
        assert await client.list_runners(ORG_REPO) == []
    finally:
        await client.aclose()


def test_retry_policy_backoff_is_bounded_and_jittered() -> None:
    import random

    policy = RetryPolicy(base_s=1.0, cap_s=8.0)
    rng = random.Random(7)
    waits = [policy.backoff(attempt, rng) for attempt in range(1, 8)]

    assert all(0.5 <= w <= 8.0 for w in waits)
    assert waits[-1] >= 4.0 and waits[0] <= 1.0
