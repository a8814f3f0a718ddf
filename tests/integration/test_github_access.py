"""Telling a misconfigured GitHub App apart from a working one, against the simulated
GitHub on 127.0.0.1: each cause gets a problem naming what to fix, and
``runs-fleet config check --github`` reports them as a user runs it."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runs_fleet_core.errors import GitHubError
from runs_fleet_github.client import GitHubAppClient
from runs_fleet_github.scope import Scope
from runs_fleet_github_simulator import (
    AppKeyPair,
    GitHubSimulator,
    SimulatorServer,
    generate_app_key,
)
from runs_fleet_github_simulator.records import Token
from runs_fleet_github_simulator.simulator import ApiError
from runs_fleet_server.bootstrap import build_services
from tests.integration.github_sim_fixture import APP_ID, ORG_REPO, TEST_RETRY, USER_REPO

pytest_plugins = ["tests.integration.github_sim_fixture"]

Build = Callable[..., GitHubAppClient]
Check = Callable[..., Awaitable[subprocess.CompletedProcess[str]]]
RUNNERS = f"/repos/{ORG_REPO}/actions/runners"
JITCONFIG = f"{RUNNERS}/generate-jitconfig"


@pytest.fixture
async def make_client(github_server: SimulatorServer, app_keys: AppKeyPair) -> AsyncIterator[Build]:
    made: list[GitHubAppClient] = []

    def build(**options: object) -> GitHubAppClient:
        settings: dict[str, object] = {
            "app_id": APP_ID,
            "private_key": app_keys.private_pem,
            "api_url": github_server.url,
            "retry": TEST_RETRY,
            "timeout_s": 2.0,
        }
        client = GitHubAppClient(**(settings | options))  # type: ignore[arg-type]
        made.append(client)
        return client

    yield build
    for client in made:
        await client.aclose()


async def test_a_working_app_has_no_problem(make_client: Build) -> None:
    assert await make_client().access_problems([ORG_REPO, USER_REPO]) == []


async def test_a_wrong_app_id_or_key_names_both_settings(make_client: Build) -> None:
    for client in (make_client(app_id=APP_ID + 1), make_client(private_key=_other_key())):
        [problem] = await client.access_problems([ORG_REPO])
        assert "RUNS_FLEET_GITHUB_APP_ID" in problem
        assert "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY" in problem


@pytest.fixture
def web_ui() -> Iterator[str]:
    """A web server answering every path with an HTML page, as GitHub Enterprise
    Server's web UI does outside /api/v3."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!DOCTYPE html><html><body>Sign in to GitHub</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_a_url_that_is_not_githubs_api_names_the_url_setting(
    make_client: Build, web_ui: str
) -> None:
    [problem] = await make_client(api_url=web_ui).access_problems([ORG_REPO])
    assert f"RUNS_FLEET_GITHUB_API_URL={web_ui} does not answer like GitHub's REST API" in problem
    assert "/api/v3" in problem


async def test_an_unreachable_github_names_the_url_setting(make_client: Build) -> None:
    [problem] = await make_client(api_url="http://127.0.0.1:9").access_problems([])
    assert "cannot reach GitHub at RUNS_FLEET_GITHUB_API_URL=http://127.0.0.1:9" in problem


async def test_an_owner_without_the_app_and_a_missing_repository_are_told_apart(
    make_client: Build,
) -> None:
    problems = await make_client().access_problems(["stranger/repo", "octo-org/no-such-repo"])
    assert len(problems) == 2
    assert problems[0].startswith("stranger/repo: ") and "not installed on stranger" in problems[0]
    assert problems[1].startswith("octo-org/no-such-repo: ")
    assert "installation on octo-org includes it" in problems[1]


async def test_organization_runners_for_a_user_account_are_refused(make_client: Build) -> None:
    [problem] = await make_client(scope=Scope.ORG).access_problems([USER_REPO])
    assert "RUNS_FLEET_RUNNER_SCOPE=org" in problem


@pytest.fixture
def config_check(github_server: SimulatorServer, app_keys: AppKeyPair, tmp_path: Path) -> Check:
    """``runs-fleet config check --github REPOSITORY...`` run as a user runs it, with
    the App's settings pointing at the simulator; keyword arguments override settings.
    Every run is checked to print neither the webhook secret nor the App's key."""
    key = tmp_path / "app.pem"
    key.write_bytes(app_keys.private_pem)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")} | {
        "RUNS_FLEET_MODE": "local",
        "RUNS_FLEET_STATE_DIR": str(tmp_path / "state"),
        "RUNS_FLEET_RUNNER_DIR": str(tmp_path / "runner"),
        "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": "do-not-print-me",
        "RUNS_FLEET_GITHUB_APP_ID": str(APP_ID),
        "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE": str(key),
        "RUNS_FLEET_GITHUB_API_URL": github_server.url,
    }

    async def check(*repositories: str, **more: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "runs_fleet_cli", "config", "check", "--github"]
        result = await asyncio.to_thread(  # the simulator answers from this test's loop
            subprocess.run,
            [*argv, *repositories],
            env=env | more,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        shown = result.stdout + result.stderr
        assert "do-not-print-me" not in shown and "PRIVATE KEY" not in shown
        assert "Traceback" not in shown
        return result

    return check


async def test_config_check_github_reports_the_problem_as_a_user_sees_it(
    config_check: Check,
) -> None:
    good = await config_check(ORG_REPO)
    assert good.returncode == 0, good.stderr
    wrong = await config_check(ORG_REPO, RUNS_FLEET_GITHUB_APP_ID=str(APP_ID + 7))
    assert wrong.returncode == 2
    assert "RUNS_FLEET_GITHUB_APP_ID" in wrong.stderr
    missing = await config_check("octo-org/gone")
    assert missing.returncode == 2 and "octo-org/gone" in missing.stderr


async def test_config_check_names_the_key_settings_for_a_key_of_another_app(
    config_check: Check, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(_other_key())
    result = await config_check(ORG_REPO, RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE=str(other))
    assert result.returncode == 2
    assert f"GitHub refused the credentials of App {APP_ID}" in result.stderr
    assert "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY or RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE" in (
        result.stderr
    )


async def test_config_check_tells_an_owner_without_the_app_from_a_repository_outside_it(
    config_check: Check,
) -> None:
    result = await config_check("stranger/repo", "octo-org/gone")
    assert result.returncode == 2
    assert "2 configuration problem(s)" in result.stderr
    assert f"stranger/repo: GitHub App {APP_ID} is not installed on stranger" in result.stderr
    assert "Install App → stranger" in result.stderr
    assert "octo-org/gone: GitHub does not show this repository to the App" in result.stderr
    assert "installation on octo-org includes it" in result.stderr


async def test_config_check_says_to_install_an_app_installed_nowhere(
    config_check: Check, github_sim: GitHubSimulator
) -> None:
    github_sim.installations.clear()
    result = await config_check()
    assert result.returncode == 2
    assert f"GitHub App {APP_ID} is not installed on any organization or user" in result.stderr
    assert "Install App" in result.stderr


async def test_config_check_names_the_installation_when_github_refuses_its_tokens(
    config_check: Check, github_sim: GitHubSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    github_sim.inject_fault(RUNNERS, status=401, count=2)
    refused = await config_check(ORG_REPO)
    assert refused.returncode == 2
    assert f"GitHub refused a new token of App {APP_ID}'s installation on octo-org too" in (
        refused.stderr
    )
    assert "octo-org's settings → GitHub Apps → the App → Configure" in refused.stderr
    suspend_installations(github_sim, monkeypatch)
    suspended = await config_check(ORG_REPO)
    assert suspended.returncode == 2
    assert "installation is suspended; unsuspend it in octo-org's settings" in suspended.stderr
    for value in github_sim.tokens:
        assert value not in refused.stderr + suspended.stderr


async def test_config_check_names_the_api_url_setting_for_a_url_that_is_not_the_api(
    config_check: Check, web_ui: str
) -> None:
    page = await config_check(RUNS_FLEET_GITHUB_API_URL=web_ui)
    assert page.returncode == 2
    assert f"RUNS_FLEET_GITHUB_API_URL={web_ui} does not answer like GitHub's REST API" in (
        page.stderr
    )
    assert "https://HOST/api/v3" in page.stderr
    ghes = await config_check(RUNS_FLEET_GITHUB_API_URL="https://ghe.example.com")
    assert ghes.returncode == 2
    assert (
        "RUNS_FLEET_GITHUB_API_URL='https://ghe.example.com' looks like a GitHub Enterprise "
        "Server without its API path: use https://ghe.example.com/api/v3" in ghes.stderr
    )


async def test_an_app_installed_nowhere_is_told_to_install_it(
    make_client: Build, github_sim: GitHubSimulator
) -> None:
    github_sim.installations.clear()
    [problem] = await make_client().access_problems([])
    assert f"GitHub App {APP_ID} is not installed on any organization or user" in problem


async def test_a_token_refused_again_after_renewal_names_the_installation(
    make_client: Build, github_sim: GitHubSimulator
) -> None:
    client = make_client()
    await client.list_runners(ORG_REPO)  # a token in hand, which GitHub now refuses
    github_sim.inject_fault(JITCONFIG, status=401, count=2)
    with pytest.raises(GitHubError) as raised:
        await client.create_jit_config(ORG_REPO, runner_name="rf-1-1", labels=["linux"])
    message = str(raised.value)
    assert f"GitHub refused a new token of App {APP_ID}'s installation on octo-org too" in message
    assert "installation may be suspended or removed" in message
    assert "RUNS_FLEET_GITHUB_APP_ID" in message and raised.value.retryable
    assert [c.status for c in github_sim.calls("POST", JITCONFIG)] == [401, 401]
    renewals = [c for c in github_sim.calls("POST") if c.path.endswith("/access_tokens")]
    assert len(renewals) == 2  # the first token, and one new token
    assert not any(value in message for value in github_sim.tokens)


async def test_a_suspended_installation_is_named(
    make_client: Build, github_sim: GitHubSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()
    await client.list_runners(ORG_REPO)  # a token in hand, which the suspension revokes
    suspend_installations(github_sim, monkeypatch)
    with pytest.raises(GitHubError) as raised:
        await client.create_jit_config(ORG_REPO, runner_name="rf-1-1", labels=["linux"])
    message = str(raised.value)
    assert message.startswith(f"GitHub App {APP_ID} may not have a token of its installation")
    assert "(403 This installation has been suspended)" in message
    assert "unsuspend it in octo-org's settings → GitHub Apps" in message
    assert not raised.value.retryable
    assert [c.status for c in github_sim.calls("POST", JITCONFIG)] == [401]
    [problem] = await make_client().access_problems([ORG_REPO])
    assert problem == f"{ORG_REPO}: {message}"


def suspend_installations(sim: GitHubSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Suspend the App's installations as GitHub does: the tokens they have stop
    working and GitHub gives them no new one."""

    def refuse(installation_id: int) -> Token:
        raise ApiError(403, "This installation has been suspended")

    sim.tokens.clear()
    monkeypatch.setattr(sim, "issue_token", refuse)


def _other_key() -> bytes:
    return generate_app_key().private_pem


async def test_the_server_says_at_start_up_what_keeps_the_app_from_working(
    github_server: SimulatorServer,
    app_keys: AppKeyPair,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = tmp_path / "app.pem"
    key.write_bytes(app_keys.private_pem)
    env = {
        "RUNS_FLEET_MODE": "memory",
        "RUNS_FLEET_GITHUB_ADAPTER": "github",
        "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": "s3cret",
        "RUNS_FLEET_GITHUB_APP_ID": str(APP_ID + 1),
        "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE": str(key),
        "RUNS_FLEET_GITHUB_API_URL": github_server.url,
    }
    services = build_services(env)
    with caplog.at_level(logging.ERROR, logger="runs_fleet_server"):
        await services.astart()
        for _ in range(100):
            if "GitHub App not usable" in caplog.text:
                break
            await asyncio.sleep(0.05)
        await services.aclose()
    assert "GitHub App not usable" in caplog.text and "RUNS_FLEET_GITHUB_APP_ID" in caplog.text
