"""Which runner runs which job, end to end (local mode, the GitHub simulator, real
agents): GitHub gives a queued job to any runner whose labels it all has, so the runner
runs-fleet launched for one job of a run may take another job of that run, and a job
may be cancelled before or while a runner runs it.

The simulator holds jobs back (``held``) and offers a released job to one runner, so
the tests choose GitHub's assignments instead of racing for them. What a user relies on
is asserted: every job ends as GitHub ended it, runs-fleet records which runner ran it
(and counts a swap in ``runs_fleet_runner_mismatches_total``), a runner left without a
job is removed after ``RUNS_FLEET_ORPHAN_GRACE_S``, no job is left without a runner, and
nothing is launched for a cancelled job.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runs_fleet_cli.demo.processes import http_json
from tests.e2e.local_stack import (
    RUN_ID,
    LocalStack,
    local_stack,
    processes_in,
    runner_name,
)

SETTINGS = {
    "RUNS_FLEET_SCHEDULER_INTERVAL_S": "1",
    "RUNS_FLEET_ORPHAN_GRACE_S": "2",
    "RUNS_FLEET_HEAL_AFTER_S": "10",
    "RUNS_FLEET_RELAUNCH_AFTER_S": "10",
}
WAIT_S = 60.0
"""A safety limit for each wait (a loaded machine is slow; nothing here times anything)."""
LONG_JOB_S = 20.0
"""How long a job lasts while the tests watch what happens around it."""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with local_stack(tmp_path, settings=SETTINGS) as started:
        started.start(job_seconds=0.5)
        yield started


def _launched(stack: LocalStack, job_id: int) -> dict[str, Any]:
    """runs-fleet's record of ``job_id`` once a runner was launched for it."""
    return stack.wait_for(
        f"a runner for job {job_id}",
        lambda: (r := stack.job(job_id)) is not None and r.get("runner_id") and r,
        timeout_s=WAIT_S,
    )


def _release(stack: LocalStack, job_id: int, to: str | None = None) -> None:
    """GitHub lets runners take the held job; ``to``: only the runner of that name."""
    http_json("POST", f"{stack.simulator}/_simulator/jobs/{job_id}/release", {"runner_name": to})


def _github_done(stack: LocalStack, job_id: int) -> dict[str, Any]:
    return stack.wait_for(
        f"GitHub to complete job {job_id}",
        lambda: (job := stack.github_job(job_id))["status"] == "completed" and job,
        timeout_s=WAIT_S,
    )


def _metric(stack: LocalStack, name: str) -> float:
    """The sum of a Prometheus metric's samples on runs-fleet's ``/metrics``."""
    with urllib.request.urlopen(f"{stack.api}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    )


def _counted(stack: LocalStack, name: str, expected: float) -> None:
    """Wait until the metric's samples add up to ``expected`` (a runner is counted once
    its removal returned, a moment after its processes are gone)."""
    stack.wait_for(f"{name} to be {expected:g}", lambda: _metric(stack, name) == expected, WAIT_S)


def _gone(stack: LocalStack, name: str) -> None:
    """Wait until no process of runner ``name`` (its agent, its runner) is left."""
    work_dir = stack.state_dir / "runners" / name
    stack.wait_for(f"runner {name} to be gone", lambda: not processes_in(work_dir), WAIT_S)


def _no_runner_left(stack: LocalStack) -> None:
    """Every agent ended and no runner config (a secret) is left behind."""
    runners = stack.state_dir / "runners"
    stack.wait_for("every runner to end", lambda: not processes_in(runners), WAIT_S)
    configs = stack.state_dir / "runner-configs"
    stack.wait_for(
        "every runner config to be removed", lambda: not list(configs.glob("*.json")), WAIT_S
    )


def _jobs_why(stack: LocalStack, job_id: int) -> str:
    done = stack.run_logged(
        "runs-fleet-jobs-why",
        [sys.executable, "-m", "runs_fleet_cli", "jobs", "why", str(job_id), "--server", stack.api],
        env={k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_two_jobs_of_a_run_that_swap_runners_both_run_and_the_swap_is_recorded(
    stack: LocalStack,
) -> None:
    first, _ = stack.queue_job(held=True)
    second, _ = stack.queue_job(held=True)
    for job_id in (first, second):
        _launched(stack, job_id)
    # GitHub gives each job to the runner launched for the other one (equal labels)
    _release(stack, second, to=runner_name(first))
    _release(stack, first, to=runner_name(second))

    records = {job_id: stack.wait_for_status(job_id, "completed", timeout_s=WAIT_S)
               for job_id in (first, second)}  # fmt: skip
    for job_id, other in ((first, second), (second, first)):
        github = _github_done(stack, job_id)
        assert (github["conclusion"], github["runner_name"]) == ("success", runner_name(other))
        record = records[job_id]
        assert record["runner_name"] == runner_name(job_id)  # launched for it
        assert record["observed_runner"] == runner_name(other)  # what GitHub reported
        assert record["attempt"] == 1
        assert f"It ran on {runner_name(other)}." in _jobs_why(stack, job_id)
    assert _metric(stack, "runs_fleet_runner_mismatches_total") == 2
    # each runner ran a job: nothing was relaunched, nothing is left
    assert sorted(stack.jit_configs()) == sorted(runner_name(j) for j in (first, second))
    _no_runner_left(stack)
    for job_id in (first, second):
        assert "ended: finished (exit code 0)" in stack.agent_log(runner_name(job_id))


def test_a_runner_passed_over_is_removed_and_the_job_it_was_left_for_gets_another(
    stack: LocalStack,
) -> None:
    first, _ = stack.queue_job(held=True, duration_s=LONG_JOB_S)
    second, _ = stack.queue_job(held=True)
    for job_id in (first, second):
        _launched(stack, job_id)
    # GitHub gives the first job to the second job's runner and, for now, the second
    # job to nobody: the first job's runner is passed over and sits idle
    _release(stack, first, to=runner_name(second))
    stack.wait_for(
        "runs-fleet to see the first job run on the second job's runner",
        lambda: (r := stack.job(first)) and r["observed_runner"] == runner_name(second),
        timeout_s=WAIT_S,
    )

    idle = runner_name(first)
    _gone(stack, idle)  # removed by housekeeping once the grace has passed
    assert "ended: interrupted (exit code 143)" in stack.agent_log(idle)
    _counted(stack, "runs_fleet_orphans_terminated_total", 1)
    assert stack.github_job(second)["status"] == "queued"  # the idle runner never took it
    _release(stack, second)

    # the second job gets a runner of its own: a next attempt (the second, unless a
    # loaded machine kept it waiting past another relaunch period)
    second_record = stack.wait_for_status(second, "completed", timeout_s=WAIT_S)
    attempt = second_record["attempt"]
    assert attempt >= 2
    github = _github_done(stack, second)
    assert (github["conclusion"], github["runner_name"]) == (
        "success",
        runner_name(second, attempt),
    )
    # the runner that took the first job kept it to its end, whatever the second did
    first_record = stack.wait_for_status(first, "completed", timeout_s=WAIT_S)
    github = _github_done(stack, first)
    assert (github["conclusion"], github["runner_name"]) == ("success", runner_name(second))
    assert first_record["runner_name"] == idle
    assert first_record["observed_runner"] == runner_name(second)
    assert first_record["attempt"] == 1
    assert _metric(stack, "runs_fleet_runner_mismatches_total") == 1
    later = [runner_name(second, n) for n in range(2, attempt + 1)]
    assert stack.jit_configs() == [idle, runner_name(second), *later]
    _no_runner_left(stack)


def test_a_cancelled_job_ends_cancelled_and_its_runner_is_removed(stack: LocalStack) -> None:
    # GitHub never gives this job to a runner: it is cancelled while queued
    queued, _ = stack.queue_job(held=True)
    # this one is cancelled while its runner runs it (another run: other labels)
    label = f"runs-fleet={RUN_ID + 1}/cpu=2"
    running, _ = stack.queue_job([label], run_id=RUN_ID + 1, duration_s=LONG_JOB_S * 3)
    _launched(stack, queued)
    stack.wait_for(
        "runs-fleet to see the job run on its runner",
        lambda: (r := stack.job(running)) and r["observed_runner"] == runner_name(running),
        timeout_s=WAIT_S,
    )

    for job_id in (queued, running):
        http_json("POST", f"{stack.simulator}/_simulator/jobs/{job_id}/cancel")
    for job_id in (queued, running):
        record = stack.wait_for_status(job_id, "cancelled", timeout_s=WAIT_S)
        assert record["reason"] == "conclusion: cancelled"
        assert stack.github_job(job_id)["conclusion"] == "cancelled"
        # neither runner would end on its own: runs-fleet removes both
        _gone(stack, runner_name(job_id))
        assert "ended: interrupted (exit code 143)" in stack.agent_log(runner_name(job_id))
    _no_runner_left(stack)
    _counted(stack, "runs_fleet_orphans_terminated_total", 2)

    # nothing was launched again, and the jobs stay cancelled
    assert sorted(stack.jit_configs()) == sorted(runner_name(j) for j in (queued, running))
    assert stack.runner_dirs() == sorted(runner_name(j) for j in (queued, running))
    for job_id in (queued, running):
        record = stack.job(job_id)
        assert record is not None
        assert (record["status"], record["attempt"]) == ("cancelled", 1)
