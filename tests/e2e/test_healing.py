"""Missed webhooks end to end (local mode, the GitHub simulator): GitHub fails to deliver
a job's webhooks, as it sometimes does and never makes up for. A job whose ``in_progress``
and ``completed`` never came: the scheduler leader asks GitHub about the quiet job within
one healing period and completes it, removing its runner config. A job whose ``queued``
never came: the leader finds it among the jobs GitHub holds queued and it gets its
runner as if the webhook had arrived."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runs_fleet_cli.demo.processes import http_json
from tests.e2e.local_stack import LocalStack, local_stack, runner_name

HEAL_AFTER_S = 10
DISCOVER_AFTER_S = 2


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    settings = {
        "RUNS_FLEET_HEAL_AFTER_S": str(HEAL_AFTER_S),
        "RUNS_FLEET_DISCOVER_AFTER_S": str(DISCOVER_AFTER_S),
        "RUNS_FLEET_SCHEDULER_INTERVAL_S": "1",
    }
    with local_stack(tmp_path, settings=settings) as started:
        started.start(job_seconds=0.5)
        yield started


def test_a_job_whose_completed_webhook_never_came_is_completed_from_githubs_view(
    stack: LocalStack,
) -> None:
    job_id, _ = stack.queue_job()
    stack.wait_for_status(job_id, "launching", "running")
    http_json("POST", f"{stack.simulator}/_simulator/webhooks", {"drop": True})
    stack.wait_for(
        "GitHub to see the job completed",
        lambda: stack.github_job(job_id)["status"] == "completed",
        timeout_s=30,
    )
    dropped = [d for d in stack.deliveries(job_id) if d["action"] == "completed"]
    assert dropped and all(d["status_code"] is None for d in dropped)
    record = stack.job(job_id)
    assert record is not None and record["status"] != "completed"  # nothing told runs-fleet
    healed = stack.wait_for_status(job_id, "completed", timeout_s=HEAL_AFTER_S + 20)
    assert healed["runner_name"] == runner_name(job_id)
    assert not list((stack.state_dir / "runner-configs").glob("*.json"))


def test_a_job_whose_queued_webhook_never_came_is_found_and_gets_its_runner(
    stack: LocalStack,
) -> None:
    served, _ = stack.queue_job()  # runs-fleet serves this repository
    stack.wait_for_status(served, "completed")
    http_json("POST", f"{stack.simulator}/_simulator/webhooks", {"drop": True})
    job_id, _ = stack.queue_job()
    assert [d["status_code"] for d in stack.deliveries(job_id)] == [None]  # never sent
    record = stack.wait_for(
        "runs-fleet to find the job", lambda: stack.job(job_id), timeout_s=DISCOVER_AFTER_S + 15
    )
    assert record["delivery_id"] == f"discovered-{job_id}"
    done = stack.wait_for(
        "GitHub to see the job run on its runner",
        lambda: (job := stack.github_job(job_id))["status"] == "completed" and job,
        timeout_s=30,
    )
    assert done["runner_name"] == runner_name(job_id)
    assert stack.jit_configs().count(runner_name(job_id)) == 1
