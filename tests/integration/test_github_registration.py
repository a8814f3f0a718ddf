"""Registration tokens end to end on the simulated GitHub: the client asks for one and
the URL to register at, the simulated ``config.sh`` trades it for a runner, and
``run.sh`` without arguments runs a job as that runner.

This is the path for a GitHub without JIT runner configs; the simulator keeps GitHub's
rules that matter for it: a token is good for the repository (or organization) it was
issued for, for one hour, and only through the App's installation on its owner.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import httpx
import pytest

from runs_fleet_core.errors import GitHubError
from runs_fleet_github.client import GitHubAppClient
from runs_fleet_github.scope import Scope, registration_url
from runs_fleet_github_simulator import AppKeyPair, GitHubSimulator, write_runner_dir
from tests.integration.github_sim_fixture import (
    APP_ID,
    ORG_REPO,
    TEST_RETRY,
    USER_REPO,
    ShiftableClock,
    WebhookReceiver,
    check_webhook,
)

pytest_plugins = ["tests.integration.github_sim_fixture"]

LABELS = ["runs-fleet=88/cpu=2"]
REGISTER = "/_simulator/runner-registrations"


@pytest.mark.parametrize(
    ("api_url", "scope", "expected"),
    [
        ("https://api.github.com", Scope.REPO, "https://github.com/octo-org/app"),
        ("https://api.github.com/", Scope.ORG, "https://github.com/octo-org"),
        ("https://ghe.example.com/api/v3", Scope.REPO, "https://ghe.example.com/octo-org/app"),
        ("https://ghe.example.com/api/v3/", Scope.ORG, "https://ghe.example.com/octo-org"),
        ("https://api.acme.ghe.com", Scope.REPO, "https://acme.ghe.com/octo-org/app"),
        ("http://127.0.0.1:8765", Scope.REPO, "http://127.0.0.1:8765/octo-org/app"),
    ],
)
def test_the_registration_url_is_the_web_url_of_the_repository_or_organization(
    api_url: str, scope: Scope, expected: str
) -> None:
    assert registration_url(scope, api_url, "octo-org/app") == expected


async def test_the_client_gets_a_token_for_the_repository_and_its_url(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    registration = await github_client.registration_token(ORG_REPO)

    assert registration.url == f"{github_sim.api_url}/{ORG_REPO}"
    issued = github_sim.registration_tokens[registration.token]
    assert issued.scope == ORG_REPO
    assert registration.token not in repr(registration)


async def test_in_organization_scope_the_token_and_url_are_the_organizations(
    github_sim: GitHubSimulator, app_keys: AppKeyPair
) -> None:
    async with GitHubAppClient(
        app_id=APP_ID,
        private_key=app_keys.private_pem,
        api_url=github_sim.api_url,
        retry=TEST_RETRY,
        scope=Scope.ORG,
    ) as client:
        registration = await client.registration_token(ORG_REPO)

    assert registration.url == f"{github_sim.api_url}/octo-org"
    assert github_sim.registration_tokens[registration.token].scope == "octo-org"


async def test_a_missing_jit_endpoint_suggests_registration_tokens(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    path = f"/repos/{ORG_REPO}/actions/runners/generate-jitconfig"
    github_sim.inject_fault(path, status=404)

    with pytest.raises(GitHubError, match="RUNS_FLEET_RUNNER_REGISTRATION=token") as caught:
        await github_client.create_jit_config(ORG_REPO, runner_name="r", labels=LABELS)

    assert caught.value.retryable is False
    assert "404" in str(caught.value)


# --- the registration endpoint ------------------------------------------------------


def _body(token: str, url: str, name: str = "rf-1", **more: object) -> dict[str, object]:
    return {"token": token, "url": url, "name": name, "labels": LABELS, "ephemeral": True} | more


async def test_a_live_token_registers_an_offline_ephemeral_runner(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    registration = await github_client.registration_token(ORG_REPO)

    async with httpx.AsyncClient(base_url=github_sim.api_url) as raw:
        answer = await raw.post(REGISTER, json=_body(registration.token, registration.url))
        listed = (await raw.get(REGISTER)).json()

    assert answer.status_code == 201
    config = answer.json()["config"]
    runner = github_sim.runners[config["runner_id"]]
    assert (runner.name, runner.repository, runner.status) == ("rf-1", ORG_REPO, "offline")
    assert config["secret"] == runner.secret and config["url"] == github_sim.api_url
    assert set(LABELS) <= set(config["labels"])
    assert [(r["name"], r["url"], r["token"]) for r in listed] == [
        ("rf-1", registration.url, registration.token)
    ]


async def test_an_idle_runner_of_the_same_name_is_replaced(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    registration = await github_client.registration_token(ORG_REPO)
    old = github_sim.register_jit_runner(ORG_REPO, name="rf-1", labels=LABELS)

    async with httpx.AsyncClient(base_url=github_sim.api_url) as raw:
        answer = await raw.post(REGISTER, json=_body(registration.token, registration.url))
        github_sim.runners[answer.json()["runner"]["id"]].busy = True
        refused = await raw.post(REGISTER, json=_body(registration.token, registration.url))

    assert answer.status_code == 201
    assert old.runner_id not in github_sim.runners
    assert [r.name for r in github_sim.runners_of(ORG_REPO)] == ["rf-1"]
    assert refused.status_code == 409


async def test_a_token_is_good_only_for_its_repository_its_hour_and_ephemeral_runners(
    github_client: GitHubAppClient, github_sim: GitHubSimulator, clock: ShiftableClock
) -> None:
    registration = await github_client.registration_token(ORG_REPO)
    other = f"{github_sim.api_url}/{USER_REPO}"

    async with httpx.AsyncClient(base_url=github_sim.api_url) as raw:
        unknown = await raw.post(REGISTER, json=_body("NOTATOKEN", registration.url))
        elsewhere = await raw.post(REGISTER, json=_body(registration.token, other))
        organization = await raw.post(
            REGISTER, json=_body(registration.token, f"{github_sim.api_url}/octo-org")
        )
        lasting = await raw.post(
            REGISTER, json=_body(registration.token, registration.url, ephemeral=False)
        )
        clock.advance(3601)
        expired = await raw.post(REGISTER, json=_body(registration.token, registration.url))

    assert [a.status_code for a in (unknown, elsewhere, organization, expired)] == [401] * 4
    assert lasting.status_code == 422
    assert github_sim.runners == {} and github_sim.token_registrations == []


async def test_an_organization_token_registers_an_organization_runner(
    github_sim: GitHubSimulator,
) -> None:
    org = next(i for i in github_sim.installations.values() if i.account.login == "octo-org")
    token = github_sim.issue_registration_token(org.installation_id, "octo-org").value

    async with httpx.AsyncClient(base_url=github_sim.api_url) as raw:
        answer = await raw.post(REGISTER, json=_body(token, f"{github_sim.api_url}/octo-org"))

    assert answer.status_code == 201
    [runner] = github_sim.org_runners("octo-org")
    assert (runner.name, runner.org) == ("rf-1", "octo-org")


# --- the simulated config.sh and run.sh -----------------------------------------------


@pytest.fixture
def sim_with_webhooks(
    github_sim: GitHubSimulator, webhook_receiver: WebhookReceiver
) -> GitHubSimulator:
    github_sim.webhook_url = webhook_receiver.url
    return github_sim


async def _run(command: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        env={"PATH": os.environ["PATH"], **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


def _config_sh(runner_dir: Path, url: str, name: str = "rf-88-1") -> list[str]:
    return [
        str(runner_dir / "config.sh"), "--unattended", "--ephemeral", "--disableupdate",
        "--name", name, "--labels", ",".join(LABELS), "--work", "_work", "--url", url,
    ]  # fmt: skip


async def test_config_sh_registers_and_run_sh_runs_the_job_then_forgets_the_runner(
    sim_with_webhooks: GitHubSimulator,
    webhook_receiver: WebhookReceiver,
    github_client: GitHubAppClient,
    tmp_path: Path,
) -> None:
    runner_dir = tmp_path / "runner"
    write_runner_dir(runner_dir, job_seconds=0.05, idle_timeout_s=20)
    job_id = await sim_with_webhooks.queue_job(ORG_REPO, LABELS)
    registration = await github_client.registration_token(ORG_REPO)

    code, output = await _run(
        _config_sh(runner_dir, registration.url),
        {"ACTIONS_RUNNER_INPUT_TOKEN": registration.token},
    )
    assert code == 0, output
    assert stat.S_IMODE((runner_dir / ".runner").stat().st_mode) == 0o600
    [registered] = sim_with_webhooks.token_registrations
    assert (registered.name, registered.labels) == ("rf-88-1", LABELS)

    code, output = await _run([str(runner_dir / "run.sh")])

    assert code == 0, output
    payloads = [check_webhook(w) for w in await webhook_receiver.wait_for(3)]
    assert [p["action"] for p in payloads] == ["queued", "in_progress", "completed"]
    assert payloads[2]["workflow_job"]["runner_name"] == "rf-88-1"
    assert sim_with_webhooks.jobs[job_id].conclusion == "success"
    assert not (runner_dir / ".runner").exists()
    assert sim_with_webhooks.runners_of(ORG_REPO) == []
    assert registration.token not in output


async def test_config_sh_without_a_good_token_registers_nothing(
    github_client: GitHubAppClient, github_sim: GitHubSimulator, tmp_path: Path
) -> None:
    runner_dir = tmp_path / "runner"
    write_runner_dir(runner_dir)
    registration = await github_client.registration_token(ORG_REPO)

    missing = await _run(_config_sh(runner_dir, registration.url))
    wrong = await _run(
        _config_sh(runner_dir, registration.url), {"ACTIONS_RUNNER_INPUT_TOKEN": "WRONG"}
    )

    assert missing[0] == 2 and "ACTIONS_RUNNER_INPUT_TOKEN" in missing[1]
    assert wrong[0] == 2 and "401" in wrong[1]
    assert not (runner_dir / ".runner").exists() and github_sim.runners == {}


async def test_config_sh_refuses_a_runner_directory_configured_already(
    github_client: GitHubAppClient, github_sim: GitHubSimulator, tmp_path: Path
) -> None:
    runner_dir = tmp_path / "runner"
    write_runner_dir(runner_dir)
    (runner_dir / ".runner").write_text("{}")
    registration = await github_client.registration_token(ORG_REPO)

    code, output = await _run(
        _config_sh(runner_dir, registration.url),
        {"ACTIONS_RUNNER_INPUT_TOKEN": registration.token},
    )

    assert code == 2 and "configured already" in output
    assert github_sim.runners == {}


async def test_run_sh_without_a_jit_config_or_a_registration_refuses_to_run(
    tmp_path: Path,
) -> None:
    runner_dir = tmp_path / "runner"
    write_runner_dir(runner_dir)

    code, output = await _run([str(runner_dir / "run.sh")])

    assert code == 2 and "not one the simulator made" in output
