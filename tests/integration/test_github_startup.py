"""What ``runs-fleet serve`` says about a misconfigured GitHub App, run as a user runs
it against the simulated GitHub on 127.0.0.1: at start-up, each cause it can see
without a job (a wrong App id or key, an App installed nowhere, a URL that is not
GitHub's API, a GitHub it cannot reach) is logged naming the setting to fix while the
server keeps serving; a GitHub Enterprise Server URL without ``/api/v3`` keeps it from
starting; and a job for an owner without the App, for a repository outside the
installation or of a suspended installation fails with a reason, and a log line, naming
what to fix."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from runs_fleet_core.domain.ids import JobId, RunId
from runs_fleet_core.domain.job import Job
from runs_fleet_github_simulator import (
    AppKeyPair,
    GitHubSimulator,
    SimulatorServer,
    generate_app_key,
)
from runs_fleet_server.bootstrap import build_services
from tests.integration.github_sim_fixture import APP_ID, ORG_REPO
from tests.integration.test_github_access import suspend_installations, web_ui

__all__ = ["web_ui"]  # imported as a fixture of this module

pytest_plugins = ["tests.integration.github_sim_fixture"]

WEBHOOK_SECRET = "startup-webhook-secret"
PAYLOAD = Path(__file__).parents[1] / "fixtures" / "github" / "webhooks" / "queued.payload.json"
NOT_USABLE = "GitHub App not usable: "
STARTED_S = 30.0
Env = Callable[..., dict[str, str]]


class Served:
    """A ``runs-fleet serve`` process and the lines it has logged so far."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def line_with(self, *parts: str, within_s: float = 20.0) -> str:
        """The first logged line containing every one of ``parts``."""
        async with asyncio.timeout(within_s):
            while True:
                for line in self.lines:
                    if all(part in line for part in parts):
                        return line
                assert self.process.returncode is None, self.log
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reader


async def _until(done: Callable[[], bool], within_s: float = 20.0) -> None:
    async with asyncio.timeout(within_s):
        while True:
            if done():
                return
            await asyncio.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving(env: dict[str, str]) -> AsyncIterator[Served]:
    """``runs-fleet serve`` with ``env``, once it answers ``/health``; stopped after."""
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "runs_fleet_cli", "serve", "--listen", f"127.0.0.1:{port}"),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    served = Served(process, f"http://127.0.0.1:{port}")
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=2) as client:
            async with asyncio.timeout(STARTED_S):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/health")).status_code == 200:
                            break
                    assert process.returncode is None, served.log
                    await asyncio.sleep(0.1)
        yield served
    finally:
        await served.stop()
    assert "Traceback" not in served.log, served.log


@pytest.fixture
def serve_env(github_server: SimulatorServer, app_keys: AppKeyPair, tmp_path: Path) -> Env:
    """The environment of a memory-mode server using the GitHub App client against the
    simulator; keyword arguments override settings."""
    key = tmp_path / "app.pem"
    key.write_bytes(app_keys.private_pem)

    def env(**more: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")}
        return base | app_settings(github_server, key) | more

    return env


def app_settings(github_server: SimulatorServer, key: Path) -> dict[str, str]:
    """Memory mode with the GitHub App client against the simulator, the App's key in
    ``key``."""
    return {
        "RUNS_FLEET_MODE": "memory",
        "RUNS_FLEET_GITHUB_ADAPTER": "github",
        "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "RUNS_FLEET_GITHUB_APP_ID": str(APP_ID),
        "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE": str(key),
        "RUNS_FLEET_GITHUB_API_URL": github_server.url,
    }


def _no_secret(log: str, app_keys: AppKeyPair) -> None:
    assert WEBHOOK_SECRET not in log and "PRIVATE KEY" not in log
    assert app_keys.private_pem.decode() not in log


async def test_a_working_app_gets_no_complaint_at_start_up(
    serve_env: Env, github_sim: GitHubSimulator
) -> None:
    async with serving(serve_env()) as served:
        await _until(lambda: bool(github_sim.calls("GET", "/app")))
        await asyncio.sleep(0.5)
    assert [c.status for c in github_sim.calls("GET", "/app")] == [200]
    assert NOT_USABLE not in served.log


@pytest.mark.parametrize("wrong", ["app_id", "key"])
async def test_a_wrong_app_id_or_key_is_named_at_start_up(
    serve_env: Env, app_keys: AppKeyPair, tmp_path: Path, wrong: str
) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(generate_app_key().private_pem)
    more = (
        {"RUNS_FLEET_GITHUB_APP_ID": str(APP_ID + 1)}
        if wrong == "app_id"
        else {"RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE": str(other)}
    )
    async with serving(serve_env(**more)) as served:
        line = await served.line_with(NOT_USABLE)
        async with httpx.AsyncClient(base_url=served.url) as client:
            assert (await client.get("/health")).status_code == 200  # still serving
    assert "ERROR" in line and "GitHub refused the credentials of App" in line
    assert "check RUNS_FLEET_GITHUB_APP_ID" in line
    assert "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY or RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE" in line
    _no_secret(served.log, app_keys)


async def test_an_app_installed_nowhere_is_told_to_install_it_at_start_up(
    serve_env: Env, github_sim: GitHubSimulator, app_keys: AppKeyPair
) -> None:
    github_sim.installations.clear()
    async with serving(serve_env()) as served:
        line = await served.line_with(NOT_USABLE)
    assert f"GitHub App {APP_ID} is not installed on any organization or user" in line
    assert "Install App" in line and "RUNS_FLEET_GITHUB_APP_ID" in line
    _no_secret(served.log, app_keys)


async def test_a_url_that_is_not_the_api_is_named_at_start_up(serve_env: Env, web_ui: str) -> None:
    async with serving(serve_env(RUNS_FLEET_GITHUB_API_URL=web_ui)) as served:
        line = await served.line_with(NOT_USABLE)
    assert f"RUNS_FLEET_GITHUB_API_URL={web_ui} does not answer like GitHub's REST API" in line
    assert "https://HOST/api/v3" in line


async def test_an_unreachable_github_is_named_but_the_server_keeps_serving(
    serve_env: Env,
) -> None:
    nowhere = "http://127.0.0.1:9"
    async with serving(serve_env(RUNS_FLEET_GITHUB_API_URL=nowhere)) as served:
        line = await served.line_with(NOT_USABLE, within_s=40)
        async with httpx.AsyncClient(base_url=served.url) as client:
            assert (await client.get("/health")).status_code == 200
    assert f"cannot reach GitHub at RUNS_FLEET_GITHUB_API_URL={nowhere}" in line
    assert served.process.returncode == 0


async def test_a_ghes_url_without_api_v3_keeps_the_server_from_starting(serve_env: Env) -> None:
    env = serve_env(RUNS_FLEET_GITHUB_API_URL="https://ghe.example.com")
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "runs_fleet_cli", "serve", "--listen", "127.0.0.1:0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert (
        "RUNS_FLEET_GITHUB_API_URL='https://ghe.example.com' looks like a GitHub Enterprise "
        "Server without its API path: use https://ghe.example.com/api/v3"
    ) in result.stderr
    assert "Traceback" not in result.stderr


# -- jobs for repositories the App cannot serve ------------------------------------------


def _queued(job_id: int, repository: str) -> bytes:
    """GitHub's example ``queued`` webhook, for job ``job_id`` of ``repository``."""
    payload: dict[str, Any] = copy.deepcopy(json.loads(PAYLOAD.read_text()))
    owner, name = repository.split("/")
    job = payload["workflow_job"]
    job["id"] = job_id
    job["labels"] = [f"runs-fleet={job['run_id']}/cpu=2", "linux"]
    payload["repository"] |= {"full_name": repository, "name": name}
    payload["repository"]["owner"]["login"] = owner
    return json.dumps(payload).encode()


async def _send(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "workflow_job",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
    }
    return await client.post("/webhook", content=body, headers=headers)


async def _final(client: httpx.AsyncClient, job_id: int) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            job: dict[str, Any] = (await client.get(f"/api/jobs/{job_id}")).json()
            if job.get("status") in ("failed", "rejected", "completed", "cancelled"):
                return job
            await asyncio.sleep(0.1)


async def test_a_job_the_app_cannot_serve_fails_naming_what_to_fix(
    serve_env: Env,
    github_sim: GitHubSimulator,
    app_keys: AppKeyPair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving(serve_env()) as served, httpx.AsyncClient(base_url=served.url) as client:
        for job_id, repository in ((71, "stranger/repo"), (72, "octo-org/gone")):
            assert (await _send(client, _queued(job_id, repository))).status_code == 202
        stranger, gone = await _final(client, 71), await _final(client, 72)
        suspend_installations(github_sim, monkeypatch)
        assert (await _send(client, _queued(73, ORG_REPO))).status_code == 202
        suspended = await _final(client, 73)
        lines = [
            await served.line_with("job 71 of stranger/repo: could not get a runner: "),
            await served.line_with("job 72 of octo-org/gone: could not get a runner: "),
            await served.line_with(f"job 73 of {ORG_REPO}: could not get a runner: "),
        ]
    assert stranger["status"] == gone["status"] == suspended["status"] == "failed"
    assert stranger["reason"] == (
        f"could not get a runner: GitHub App {APP_ID} is not installed on stranger: install it "
        "on the organization or user that owns the repository (the App's settings → Install "
        "App → stranger), or check that RUNS_FLEET_GITHUB_APP_ID names the App installed there"
    )
    assert gone["reason"].startswith(
        "could not get a runner: GitHub has no JIT runner configs for octo-org/gone (404): "
        "check the repository's name, that the App's installation on octo-org includes it "
        "(installation settings → Repository access)"
    )
    assert "ERROR" in lines[0] and stranger["reason"] in lines[0]
    assert "ERROR" in lines[1] and gone["reason"] in lines[1]
    assert suspended["reason"] == (
        f"could not get a runner: GitHub App {APP_ID} may not have a token of its "
        "installation on octo-org (403 This installation has been suspended): the "
        "installation is suspended; unsuspend it in octo-org's settings → GitHub Apps → the "
        "App → Configure"
    )
    assert "ERROR" in lines[2] and suspended["reason"] in lines[2]
    _no_secret(served.log, app_keys)
    assert not any(value in served.log for value in github_sim.tokens)


async def test_start_up_checks_the_repositories_of_the_jobs_waiting_for_a_runner(
    github_server: SimulatorServer,
    app_keys: AppKeyPair,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server restarted with jobs waiting says whether GitHub lets it serve their
    repositories (jobs kept in the state store, in-process: the memory store does not
    outlive a process)."""
    key = tmp_path / "app.pem"
    key.write_bytes(app_keys.private_pem)
    services = build_services(app_settings(github_server, key))
    now = datetime.now(UTC)
    for job_id, repository in enumerate((ORG_REPO, "stranger/repo", "octo-org/gone"), 81):
        job = Job.new(job_id=JobId(job_id), run_id=RunId("1"), repository=repository, at=now)
        await services.adapters.state.put_job(job, expect_version=None)
    with caplog.at_level(logging.ERROR, logger="runs_fleet_server"):
        await services.astart()
        try:
            await _until(lambda: caplog.text.count(NOT_USABLE) >= 2)
        finally:
            await services.aclose()
    problems = [r.getMessage() for r in caplog.records if r.getMessage().startswith(NOT_USABLE)]
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{NOT_USABLE}octo-org/gone: GitHub does not show this")
    assert "installation on octo-org includes it" in problems[0]
    assert problems[1].startswith(f"{NOT_USABLE}stranger/repo: GitHub App {APP_ID} is not")
    assert "Install App → stranger" in problems[1]
