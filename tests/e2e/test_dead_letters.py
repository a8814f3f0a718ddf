"""Poison messages in local mode, end to end: ``runs-fleet serve`` with its worker and a
Valkey server of the test's, a simulated GitHub that refuses JIT configs for a while,
and an operator who lists, redrives and purges dead letters with the CLI.

Every runs-fleet process is a real subprocess (see :mod:`tests.e2e.local_stack`). The
simulated GitHub's call log counts the dispatch attempts: each asks for one JIT config,
and a throttle answer longer than the client will wait fails the attempt at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e.local_stack import JIT_PATH, LocalStack, local_stack, runner_name

ATTEMPTS = 3
UNREADABLE = '{"job_id": "not a number", "token": "ghs_e2eNotASecret"}'


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    settings = {"RUNS_FLEET_MAX_ATTEMPTS": str(ATTEMPTS)}
    with local_stack(tmp_path, external_valkey=True, settings=settings) as started:
        started.start()
        yield started


def _dead_letters(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    """``runs-fleet dead-letters …`` against the stack's server."""
    return subprocess.run(
        [sys.executable, "-m", "runs_fleet_cli", "dead-letters", *args, "--server", stack.api],
        env={k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _listing(stack: LocalStack) -> list[dict[str, Any]]:
    result = _dead_letters(stack, "list", "--json")
    assert result.returncode == 0, result.stderr
    letters: list[dict[str, Any]] = json.loads(result.stdout)["dead_letters"]
    return letters


def _refused_jit_calls(stack: LocalStack) -> int:
    return sum(call["status"] == 429 for call in stack.calls("POST", JIT_PATH))


def test_a_job_github_keeps_refusing_is_dead_lettered_once_then_redriven_and_run(
    stack: LocalStack,
) -> None:
    assert stack.valkey is not None
    # GitHub throttles the next ATTEMPTS JIT config requests for an hour: each dispatch
    # attempt fails at once, retryably; after them the fault is gone
    stack.inject_fault(JIT_PATH, method="POST", status=429, retry_after=3600, count=ATTEMPTS)
    job_id, _ = stack.queue_job()
    with redis.Redis.from_url(stack.valkey.url) as raw:
        raw.xadd("runs-fleet:jobs", {"payload": UNREADABLE, "dedup": "x:1", "attempts": "0"})

    def both_dead() -> list[dict[str, Any]] | None:
        found = _listing(stack)
        return found if len(found) == 2 else None

    letters = stack.wait_for("the job and the unreadable entry to be dead", both_dead, 45)
    time.sleep(2)  # a looping message would ask GitHub again meanwhile
    assert _refused_jit_calls(stack) == ATTEMPTS
    assert stack.jit_configs() == []
    assert len(_listing(stack)) == 2

    (dead,) = [letter for letter in letters if letter["job_id"] == job_id]
    assert dead["attempts"] == ATTEMPTS
    assert dead["reason"].startswith(f"gave up after {ATTEMPTS} attempts: GitHub POST ")
    (unreadable,) = [letter for letter in letters if not letter["readable"]]
    assert unreadable["reason"].startswith("unreadable message")
    assert unreadable["size"] == len(UNREADABLE) and "ghs_e2eNotASecret" not in str(letters)
    record = stack.job(job_id)
    assert record is not None and record["status"] == "queued"
    assert record["reason"].startswith(f"dead-lettered, gave up after {ATTEMPTS} attempts")

    table = _dead_letters(stack, "list")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    assert rows[dead["id"]][1:4] == [str(job_id), "octo-org/e2e", str(ATTEMPTS)]
    assert rows[unreadable["id"]][1:3] == ["-", "(unreadable,"]

    redriven = _dead_letters(stack, "redrive", dead["id"])
    assert redriven.returncode == 0, redriven.stderr
    assert redriven.stdout == f"redriven 1 dead letter(s): {dead['id']}\n"
    record = stack.wait_for_status(job_id, "completed", timeout_s=30)
    assert record["attempt"] == 1 and record["runner_name"] == runner_name(job_id)
    assert stack.jit_configs() == [runner_name(job_id)]

    kept = _dead_letters(stack, "redrive", unreadable["id"])
    assert kept.returncode == 1 and "cannot be redriven" in kept.stderr
    purged = _dead_letters(stack, "purge", unreadable["id"])
    assert (purged.returncode, purged.stdout) == (0, f"purged dead letter {unreadable['id']}\n")
    assert _listing(stack) == []
