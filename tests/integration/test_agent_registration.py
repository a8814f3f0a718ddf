"""The agent with a registration token instead of a JIT config, against the simulated
GitHub's runner directory: ``config.sh`` registers the runner (the token in its
environment only), ``run.sh`` runs the job, the reports go out, and the registration is
gone afterwards; a runner directory registered already is refused.

The simulated ``config.sh`` and ``run.sh`` are wrapped by scripts that record their
arguments and whether the token reached their environment, then run the real ones.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runs_fleet_core.converters import dumps, make_config_converter
from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.messages import AgentEvent
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_github.client import GitHubAppClient
from runs_fleet_github_simulator import GitHubSimulator, write_runner_dir
from tests.integration.github_sim_fixture import ORG_REPO
from tests.integration.test_agent import TOKEN, Agents, Receiver

pytest_plugins = ["tests.integration.github_sim_fixture"]

NAME = "runs-fleet-7-1"
LABELS = ("runs-fleet=77/cpu=2",)
RECORDING_WRAPPER = """#!/bin/sh
printf '%s\\n' "$@" > "{record}.args"
printf '%s' "$ACTIONS_RUNNER_INPUT_TOKEN" > "{record}.token"
exec "$(dirname "$0")/{real}" "$@"
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    """Agents whose runner directory is the simulator's, with recording wrappers."""
    agents = Agents(tmp_path)
    write_runner_dir(agents.runner_dir, job_seconds=0.05, idle_timeout_s=20)
    for script in ("config.sh", "run.sh"):
        real = f"real-{script}"
        (agents.runner_dir / script).rename(agents.runner_dir / real)
        wrapper = agents.runner_dir / script
        wrapper.write_text(RECORDING_WRAPPER.format(record=tmp_path / script, real=real))
        wrapper.chmod(0o755)
    yield agents
    agents.kill_all()


def _write_token_config(agents: Agents, token: str, url: str, **settings: str) -> None:
    config = RunnerConfig(
        runner_name=NAME,
        job_id=JobId(7),
        repository=ORG_REPO,
        jit_config="",
        labels=LABELS,
        settings=settings,
        registration_token=token,
        registration_url=url,
    )
    temp = agents.config_file.with_suffix(".tmp")
    temp.write_text(dumps(make_config_converter(), config))
    temp.rename(agents.config_file)


async def _run_agent(agents: Agents) -> tuple[int, str]:
    """Run the agent to its end without blocking the simulator's event loop."""
    return await asyncio.to_thread(agents.run)


async def test_config_sh_gets_the_token_from_its_environment_and_run_sh_runs_the_job(
    agents: Agents,
    receiver: Receiver,
    github_sim: GitHubSimulator,
    github_client: GitHubAppClient,
) -> None:
    job_id = await github_sim.queue_job(ORG_REPO, list(LABELS))
    registration = await github_client.registration_token(ORG_REPO)
    _write_token_config(
        agents, registration.token, registration.url, report_url=receiver.url, report_token=TOKEN
    )

    code, output = await _run_agent(agents)

    assert code == 0, output
    args = (agents.work / "config.sh.args").read_text().splitlines()
    assert args == [
        "--unattended", "--ephemeral", "--disableupdate", "--name", NAME,
        "--labels", ",".join(LABELS), "--work", "_work", "--url", registration.url,
    ]  # fmt: skip
    assert not any(registration.token in arg for arg in args)
    assert (agents.work / "config.sh.token").read_text() == registration.token
    assert (agents.work / "run.sh.args").read_text() == "\n"  # no arguments
    assert (agents.work / "run.sh.token").read_text() == ""  # the job never sees it
    assert [r.event for r in receiver.reports()] == [AgentEvent.STARTED, AgentEvent.FINISHED]
    job = github_sim.jobs[job_id]
    assert (job.status, job.conclusion, job.runner_name) == ("completed", "success", NAME)
    assert not (agents.runner_dir / ".runner").exists()
    assert not agents.config_file.exists()
    assert registration.token not in output


async def test_a_runner_directory_registered_already_is_refused(
    agents: Agents, receiver: Receiver
) -> None:
    (agents.runner_dir / ".runner").write_text(json.dumps({"runner_id": 1}))
    _write_token_config(
        agents,
        "AREGISTRATIONTOKEN",
        f"https://github.com/{ORG_REPO}",
        report_url=receiver.url,
        report_token=TOKEN,
    )

    code, output = await _run_agent(agents)

    assert code == 78
    assert str(agents.runner_dir) in output and "already holds a registered runner" in output
    [report] = receiver.reports()
    assert (report.event, report.exit_code) == (AgentEvent.FAILED, 78)
    assert report.detail is not None and str(agents.runner_dir) in report.detail
    assert not (agents.work / "config.sh.args").exists()
    assert not (agents.work / "run.sh.args").exists()
    assert "AREGISTRATIONTOKEN" not in output


async def test_a_failed_registration_is_reported_failed_and_nothing_runs(
    agents: Agents, receiver: Receiver, github_sim: GitHubSimulator
) -> None:
    url = f"{github_sim.api_url}/{ORG_REPO}"
    _write_token_config(agents, "NOTATOKEN", url, report_url=receiver.url, report_token=TOKEN)

    code, output = await _run_agent(agents)

    assert code == 2  # the simulated config.sh's exit code for a refused registration
    started, failed = receiver.reports()
    assert started.event is AgentEvent.STARTED
    assert (failed.event, failed.exit_code) == (AgentEvent.FAILED, 2)
    assert failed.detail is not None and "config.sh" in failed.detail
    assert not (agents.work / "run.sh.args").exists()
    assert github_sim.runners == {}
    assert "NOTATOKEN" not in output
