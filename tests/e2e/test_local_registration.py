"""Local mode end to end with ``RUNS_FLEET_RUNNER_REGISTRATION=token``: no JIT configs,
runners that register themselves with ``config.sh`` and a registration token.

The same stack as :mod:`tests.e2e.test_local_mode`; what changes is what runs-fleet
asks of GitHub (registration tokens, never a JIT config), where each agent runs its
runner (a runner directory of its own), and that the tokens reach no log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runs_fleet_cli.demo.processes import http_json
from tests.e2e.local_stack import JIT_PATH, REPOSITORY, LocalStack, local_stack, runner_name

TOKEN_PATH = f"/repos/{REPOSITORY}/actions/runners/registration-token"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    settings = {"RUNS_FLEET_RUNNER_REGISTRATION": "token"}
    with local_stack(tmp_path, settings=settings) as started:
        started.start()
        yield started


def _registrations(stack: LocalStack) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = http_json(
        "GET", f"{stack.simulator}/_simulator/runner-registrations"
    )
    return found


def test_queued_jobs_run_on_runners_that_registered_with_tokens(stack: LocalStack) -> None:
    jobs = [stack.queue_job()[0] for _ in range(2)]

    for job_id in jobs:
        stack.wait_for_status(job_id, "completed", timeout_s=30)

    names = sorted(runner_name(job_id) for job_id in jobs)
    # GitHub issued a registration token per runner and never a JIT config
    assert [c["status"] for c in stack.calls("POST", TOKEN_PATH)] == [201, 201]
    assert stack.calls("POST", JIT_PATH) == []
    registrations = _registrations(stack)
    assert sorted(r["name"] for r in registrations) == names
    assert {r["url"] for r in registrations} == {f"{stack.simulator}/{REPOSITORY}"}
    # each runner served one job on GitHub (equal labels: which one is GitHub's choice)
    for job_id in jobs:
        github = stack.github_job(job_id)
        assert (github["status"], github["conclusion"]) == ("completed", "success"), github
    assert sorted(stack.github_job(job_id)["runner_name"] for job_id in jobs) == names
    assert stack.runner_dirs() == names
    for name in names:

        def reported(name: str = name) -> bool:
            return "delivered the 'finished' report" in stack.agent_log(name)

        stack.wait_for(f"the agent of {name} to report the end of its run", reported)
        own_dir = stack.state_dir / "runners" / name / "actions-runner"
        log = stack.agent_log(name)
        assert f"running {own_dir}/run.sh" in log
        assert "ended: finished (exit code 0)" in log
        assert not (own_dir / ".runner").exists()
    assert not (stack.workdir / "runner" / ".runner").exists()
    # no token reached a log
    tokens = [str(r["token"]) for r in registrations]
    logs = sorted(stack.workdir.rglob("*.log"))
    assert any(log.name == "agent.log" for log in logs)
    for log in logs:
        text = log.read_text(errors="replace")
        assert not any(token in text for token in tokens), f"a registration token in {log}"
