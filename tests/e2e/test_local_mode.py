"""Local mode end to end: signed webhooks from a simulated GitHub, ``runs-fleet serve``
with its Valkey, runner agents running ``run.sh --jitconfig``, and back to GitHub.

Every process is a real subprocess (see :mod:`tests.e2e.local_stack`); the simulated
GitHub's call log and deliveries show what runs-fleet asked of GitHub and what its
runners did there, runs-fleet's jobs API shows what runs-fleet recorded.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.local_stack import (
    JIT_PATH,
    LocalStack,
    local_stack,
    runner_name,
    send_signal,
)

SHORT_LEASES = {
    # a dead worker's claim and its queue delivery expire within seconds, not minutes
    "RUNS_FLEET_CLAIM_TTL_S": "5",
    "RUNS_FLEET_VALKEY_VISIBILITY_TIMEOUT_S": "5",
}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    """The demo's deployment: ``runs-fleet serve`` with its worker and embedded Valkey."""
    with local_stack(tmp_path) as started:
        started.start()
        yield started


@pytest.fixture
def split_stack(tmp_path: Path) -> Iterator[LocalStack]:
    """A Valkey server of the test's (AOF, fsync always) and ``runs-fleet serve
    --no-worker``: the test starts (and kills) ``runs-fleet worker`` processes itself."""
    with local_stack(tmp_path, external_valkey=True, settings=SHORT_LEASES) as started:
        started.start(worker=False)
        yield started


def _statuses(record: dict[str, object]) -> list[str]:
    timeline = record["timeline"]
    assert isinstance(timeline, list)
    return [str(entry["status"]) for entry in timeline]


def _assert_each_ran_once(stack: LocalStack, job_ids: list[int]) -> None:
    """Every job got exactly one JIT config and one runner, whose agent ran ``run.sh``
    with it, and every runner served exactly one job on GitHub.

    GitHub gives a JIT runner any queued job whose labels it has, so jobs with equal
    labels may swap runners: the runner launched for one job can run another. What
    holds is the one-to-one match, not which runner ran which job."""
    names = sorted(runner_name(job_id) for job_id in job_ids)
    assert sorted(stack.jit_configs()) == names
    assert stack.runner_dirs() == names
    ran_on = []
    for job_id in job_ids:
        github = stack.github_job(job_id)
        assert (github["status"], github["conclusion"]) == ("completed", "success"), github
        ran_on.append(github["runner_name"])
        actions = [d["action"] for d in stack.deliveries(job_id)]
        assert actions.count("in_progress") == 1 and actions.count("completed") == 1
    assert sorted(ran_on) == names
    for job_id in job_ids:
        name = runner_name(job_id)

        def reported(name: str = name) -> bool:
            return "delivered the 'finished' report" in stack.agent_log(name)

        stack.wait_for(f"the agent of {name} to report the end of its run", reported)
        log = stack.agent_log(name)
        assert f"runner {name} takes job {job_id}" in log
        assert "ended: finished (exit code 0)" in log


def test_a_queued_webhook_gets_one_runner_that_runs_the_job(stack: LocalStack) -> None:
    job_id, delivery_id = stack.queue_job()

    record = stack.wait_for_status(job_id, "completed")

    name = runner_name(job_id)
    # GitHub issued one JIT config, for the runner runs-fleet named after the job
    calls = stack.calls("POST", JIT_PATH)
    assert [(c["status"], c["body"]["name"]) for c in calls] == [(201, name)]
    assert stack.runner_dirs() == [name]
    _assert_each_ran_once(stack, [job_id])
    assert stack.github_job(job_id)["runner_name"] == name
    deliveries = stack.deliveries(job_id)
    assert [(d["action"], d["status_code"]) for d in deliveries] == [
        ("queued", 202),
        ("in_progress", 200),
        ("completed", 200),
    ]
    assert deliveries[0]["delivery_id"] == delivery_id
    # runs-fleet recorded every phase, on that runner, and ended as GitHub did
    assert record["runner_name"] == name
    assert record["reason"] == "conclusion: success"
    assert _statuses(record) == ["queued", "claimed", "launching", "running", "completed"]


def test_redelivered_and_duplicated_webhooks_get_one_runner(stack: LocalStack) -> None:
    job_id, delivery_id = stack.queue_job()
    # GitHub's "Redeliver" (same delivery id) at every phase of the job, and the same
    # job under a new delivery id: each is acknowledged like the first
    assert stack.resend(delivery_id, "redeliver") == 202
    assert stack.resend(delivery_id, "duplicate") == 202
    stack.wait_for_status(job_id, "running", "completed")
    assert stack.resend(delivery_id, "redeliver") == 202
    stack.wait_for_status(job_id, "completed")
    assert stack.resend(delivery_id, "redeliver") == 202
    assert stack.resend(delivery_id, "duplicate") == 202
    # a job queued after all of them: once it has run, any message the resent
    # webhooks had queued has been dispatched too
    later, _ = stack.queue_job()
    stack.wait_for_status(later, "completed")

    _assert_each_ran_once(stack, [job_id, later])
    assert stack.jit_configs() == [runner_name(job_id), runner_name(later)]
    queued = [d for d in stack.deliveries(job_id) if d["action"] == "queued"]
    assert len(queued) == 3  # the original (sent 4 times) and two duplicates
    assert [d["attempts"] for d in queued] == [4, 1, 1]
    record = stack.job(job_id)
    assert record is not None
    assert _statuses(record) == ["queued", "claimed", "launching", "running", "completed"]


def test_a_worker_killed_between_claim_and_runner_start_leaves_one_runner(
    split_stack: LocalStack,
) -> None:
    stack = split_stack
    # GitHub answers the first JIT config request slowly (and then fails): a window of
    # seconds in which the worker holds the claim but has no runner yet
    stack.inject_fault(JIT_PATH, method="POST", status=502, delay_s=3)
    doomed = stack.start_worker()
    job_id, _ = stack.queue_job()
    claimed = stack.wait_for_status(job_id, "claimed")

    send_signal(doomed, signal.SIGKILL)
    record = stack.job(job_id)
    assert record is not None and record["status"] == "claimed"
    assert record["claim_owner"] == claimed["claim_owner"]
    assert stack.runner_dirs() == [] and stack.jit_configs() == []

    stack.start_worker()  # takes the message over once the dead worker's claim expired
    record = stack.wait_for_status(job_id, "completed", timeout_s=30)

    _assert_each_ran_once(stack, [job_id])
    assert record["attempt"] == 1 and record["runner_name"] == runner_name(job_id)


def test_a_valkey_restart_loses_no_queued_job(split_stack: LocalStack) -> None:
    stack = split_stack
    assert stack.valkey is not None
    # no worker runs: the jobs stay queued in Valkey
    jobs = [stack.queue_job()[0] for _ in range(3)]
    for job_id in jobs:
        assert [(d["action"], d["status_code"]) for d in stack.deliveries(job_id)] == [
            ("queued", 202)
        ]

    stack.valkey.kill()  # a crash: nothing is flushed on the way out
    stack.valkey.start()  # same port, same data dir (AOF)

    # the next webhook is taken in at once: GitHub would not send it again
    after, _ = stack.queue_job()
    assert [d["status_code"] for d in stack.deliveries(after)] == [202]
    for job_id in jobs:
        record = stack.job(job_id)
        assert record is not None and record["status"] == "queued", record
    stack.start_worker()

    for job_id in [*jobs, after]:
        stack.wait_for_status(job_id, "completed", timeout_s=30)
    _assert_each_ran_once(stack, [*jobs, after])
