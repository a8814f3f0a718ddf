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
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runs_fleet_github.client import GitHubAppClient
from runs_fleet_github.scope import Scope
from runs_fleet_github_simulator import AppKeyPair, SimulatorServer, generate_app_key
from runs_fleet_server.bootstrap import build_services
from tests.integration.github_sim_fixture import APP_ID, ORG_REPO, TEST_RETRY, USER_REPO

pytest_plugins = ["tests.integration.github_sim_fixture"]

Build = Callable[..., GitHubAppClient]


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


async def test_config_check_github_reports_the_problem_as_a_user_sees_it(
    github_server: SimulatorServer, app_keys: AppKeyPair, tmp_path: Path
) -> None:
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
        return await asyncio.to_thread(  # the simulator answers from this test's loop
            subprocess.run,
            [*argv, *repositories],
            env=env | more,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    good = await check(ORG_REPO)
    assert good.returncode == 0, good.stderr
    wrong = await check(ORG_REPO, RUNS_FLEET_GITHUB_APP_ID=str(APP_ID + 7))
    assert wrong.returncode == 2
    assert "RUNS_FLEET_GITHUB_APP_ID" in wrong.stderr and "Traceback" not in wrong.stderr
    missing = await check("octo-org/gone")
    assert missing.returncode == 2 and "octo-org/gone" in missing.stderr
    for result in (good, wrong, missing):
        assert "do-not-print-me" not in result.stdout + result.stderr
        assert app_keys.private_pem.decode() not in result.stdout + result.stderr


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
