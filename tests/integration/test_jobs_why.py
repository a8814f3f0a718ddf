"""``runs-fleet jobs why`` and ``jobs list`` as an operator runs them against a server.

Each test starts the real server in memory mode on a random port (``running`` from
``test_server``) and brings jobs where they are in production: by GitHub's webhooks, the
worker's dispatch and a backend failure injected into the memory provider. The CLI runs
as a process, in a thread so that the server on this event loop can answer it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from runs_fleet_cli.jobs import explain
from runs_fleet_core.domain.ids import JobId, RunId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.errors import AdapterError
from tests.integration.test_server import Server, job_payload, running

CAPACITY = (
    "AWS ec2.create_fleet failed: InsufficientInstanceCapacity: We currently do not have "
    "sufficient c7g.xlarge capacity in the Availability Zone you requested (us-east-1a)."
)
WAIT_S = 15.0


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")} | env
    return subprocess.run(
        [sys.executable, "-m", "runs_fleet_cli", "jobs", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _why(server: Server, job_id: int, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_cli, "why", str(job_id), "--server", _url(server), *args)


def _url(server: Server) -> str:
    assert server.services.address is not None
    host, port = server.services.address
    return f"http://{host}:{port}"


def _words(text: str) -> str:
    """The text with its line breaks and indents as single spaces (paragraphs wrap)."""
    return " ".join(text.split())


async def _until(server: Server, job_id: int, status: str, reason: str = "") -> None:
    for _ in range(int(WAIT_S / 0.02)):
        response = await server.job(job_id)
        if response.status_code == 200:
            job = response.json()
            if job["status"] == status and (job["reason"] or "").startswith(reason):
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {status} {reason!r}: {response.text}")


async def _launched(server: Server, job_id: int) -> str:
    response = await server.webhook(job_payload("queued.payload.json", job_id))
    assert response.status_code == 202, response.text
    await _until(server, job_id, "launching")
    for _ in range(int(WAIT_S / 0.02)):  # the runner id is recorded just after launching
        if (await server.job(job_id)).json()["runner_id"]:
            return f"runs-fleet-{job_id}-1"
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} got no runner id")


async def _started(server: Server, job_id: int, runner_name: str) -> None:
    payload = job_payload("in_progress.payload.json", job_id, runner_name=runner_name)
    assert (await server.webhook(payload)).status_code == 200
    await _until(server, job_id, "running")


async def _dispatch(server: Server) -> None:
    """What the worker does with the next job message (the server runs without one)."""
    deliveries = await server.queue.receive(1, WAIT_S)
    assert len(deliveries) == 1, "no job message came"
    await server.services.dispatcher.handle(deliveries[0])


def _timeline(stdout: str) -> list[list[str]]:
    """The timeline's entries as ``[offset, status, …words]``."""
    lines = stdout.split("timeline (UTC, from ", 1)[1].splitlines()[1:]
    return [line.split() for line in lines]


async def test_a_rejected_job_is_explained_with_the_reason_as_recorded() -> None:
    async with running() as server:
        payload = job_payload("queued.payload.json", 3001, label="runs-fleet=1/cpu=banana")
        assert (await server.webhook(payload)).status_code == 422
        reason = (await server.job(3001)).json()["reason"]
        result = await _why(server, 3001)
        assert result.returncode == 0, result.stderr
        first = result.stdout.splitlines()[0]
        assert first == "job 3001 of Codertocat/Hello-World (run 2202229078): rejected"
        assert f"\n    {reason}\n" in result.stdout, "the reason is quoted whole, on its own"
        assert "will start no runner" in _words(result.stdout)
        assert "runs-fleet labels explain" in _words(result.stdout)
        assert [e[1:] for e in _timeline(result.stdout)] == [
            ["queued"],
            ["rejected:", *reason.split()],
        ]


async def test_a_launching_job_names_its_runner_and_waits_for_github() -> None:
    async with running() as server:
        name = await _launched(server, 3002)
        result = await _why(server, 3002)
        assert result.returncode == 0, result.stderr
        text = _words(result.stdout)
        assert text.startswith("job 3002 of Codertocat/Hello-World (run 2202229078): launching")
        assert f"Runner {name} (memory mem-1) was launched for it" in text
        assert "has not registered with GitHub yet" in text
        entries = _timeline(result.stdout)
        assert [e[1] for e in entries] == ["queued", "claimed", "launching"]
        assert entries[0][0] == "+0.0s" and all(e[0].startswith("+") for e in entries)
        owner = (await server.job(3002)).json()["claim_owner"]
        assert entries[1][2:4] == ["by", owner] and entries[1][4] == "(claim"
        assert entries[2][2:] == [name, "(memory", "mem-1)"]


async def test_a_running_job_names_the_runner_it_runs_on() -> None:
    async with running() as server:
        name = await _launched(server, 3003)
        await _started(server, 3003, name)
        result = await _why(server, 3003)
        assert result.returncode == 0, result.stderr
        text = _words(result.stdout)
        assert text.startswith("job 3003 of Codertocat/Hello-World (run 2202229078): running")
        assert f"It has been running on {name} (memory mem-1) for " in text
        assert "after it was queued" in text and "another runner" not in text
        assert _timeline(result.stdout)[-1][1:] == ["running", "on", name]


async def test_a_job_github_gave_to_another_of_our_runners_says_so() -> None:
    async with running() as server:
        launched = await _launched(server, 3004)
        other = await _launched(server, 3005)
        await _started(server, 3004, other)
        result = await _why(server, 3004)
        assert result.returncode == 0, result.stderr
        text = _words(result.stdout)
        assert f"It has been running on {other} for " in text
        assert "another runner of ours with equal labels" in text
        assert f"not to {launched} (memory mem-1) that was launched for it" in text
        assert _timeline(result.stdout)[-1][1:] == ["running", "on", other]


async def test_a_completed_job_says_how_it_ended_and_how_long_it_took() -> None:
    async with running() as server:
        name = await _launched(server, 3006)
        await _started(server, 3006, name)
        finished = job_payload(
            "completed.success.with-organization.payload.json", 3006, runner_name=name
        )
        assert (await server.webhook(finished)).status_code == 200
        await _until(server, 3006, "completed")
        result = await _why(server, 3006)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0].endswith(": completed")
        text = _words(result.stdout)
        assert "after it was queued. The reason: conclusion: success" in text
        assert f"It ran on {name}." in text
        statuses = [e[1].rstrip(":") for e in _timeline(result.stdout)]
        assert statuses == ["queued", "claimed", "launching", "running", "completed"]


async def test_a_job_waiting_after_a_failed_attempt_quotes_the_error() -> None:
    async with running() as server:
        dispatcher = server.services.dispatcher
        # The retry comes after a random share of the backoff: make it far off.
        dispatcher.retry_base_s = dispatcher.retry_cap_s = 3600.0
        dispatcher.rng = random.Random(0)
        server.provider.fail_next.append(AdapterError(CAPACITY, retryable=True))
        assert (await server.webhook(job_payload("queued.payload.json", 3007))).status_code == 202
        await _until(server, 3007, "queued", "attempt 1 failed")
        result = await _why(server, 3007)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0].endswith(": queued, waiting to be retried")
        assert f"\n    {CAPACITY}\n" in result.stdout
        text = _words(result.stdout)
        assert "Dispatch attempt 1 failed" in text and "tried again" in text
        assert server.provider.created == []


async def test_a_dead_lettered_job_says_it_needs_an_operator_or_a_rerun() -> None:
    async with running(RUNS_FLEET_MAX_ATTEMPTS="1") as server:
        server.provider.fail_next.append(AdapterError(CAPACITY, retryable=True))
        assert (await server.webhook(job_payload("queued.payload.json", 3008))).status_code == 202
        await _until(server, 3008, "queued", "dead-lettered")
        result = await _why(server, 3008)
        assert result.returncode == 0, result.stderr
        assert "(dead-lettered)" in result.stdout.splitlines()[0]
        assert f"\n    {CAPACITY}\n" in result.stdout
        text = _words(result.stdout)
        assert "after 1 failed dispatch attempt and moved its message" in text
        assert "will not get a runner unless an operator redrives the dead letter" in text


async def test_a_requeued_job_says_why_and_that_its_next_attempt_is_on_demand() -> None:
    async with running(with_worker=False) as server:
        assert (await server.webhook(job_payload("queued.payload.json", 3013))).status_code == 202
        await _dispatch(server)
        name = "runs-fleet-3013-1"
        config = await server.services.adapters.configs.get(RunnerId(name))
        assert config is not None
        interrupted = {
            "job_id": 3013,
            "runner_name": name,
            "event": "interrupted",
            "at": "2026-01-05T09:00:00Z",
            "detail": "spot interruption notice: the instance is reclaimed",
        }
        token = {"Authorization": f"Bearer {config.settings['report_token']}"}
        answer = await server.client.post("/api/agent/reports", json=interrupted, headers=token)
        assert answer.status_code == 202, answer.text
        await _until(server, 3013, "requeued")
        result = await _why(server, 3013)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0].endswith(", attempt 2: requeued")
        assert "\n    spot interruption notice: the instance is reclaimed\n" in result.stdout
        assert "Attempt 2 waits for a worker to launch a new runner on on-demand capacity" in (
            _words(result.stdout)
        )
        await _dispatch(server)
        relaunched = _words((await _why(server, 3013)).stdout)
        assert "This is attempt 2, on on-demand capacity, after the runner of attempt 1 was " in (
            relaunched
        )
        assert "Runner runs-fleet-3013-2 (memory mem-2) was launched for it" in relaunched


async def test_json_prints_the_record_and_an_unknown_job_exits_1() -> None:
    async with running() as server:
        await _launched(server, 3009)
        as_json = await _why(server, 3009, "--json")
        assert as_json.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout) == (await server.job(3009)).json()
        unknown = await _why(server, 424242)
        assert unknown.returncode == 1 and unknown.stdout == ""
        assert unknown.stderr.startswith("runs-fleet never saw job 424242: ")
        assert "runs-fleet= label" in unknown.stderr and "Traceback" not in unknown.stderr


async def test_a_refused_admin_token_gets_the_same_message_as_pools() -> None:
    async with running(RUNS_FLEET_ADMIN_TOKEN="admin-token-6") as server:
        url = ["--server", _url(server)]
        none = await asyncio.to_thread(_cli, "why", "1", *url)
        assert none.returncode == 2
        assert "set RUNS_FLEET_ADMIN_TOKEN (or RUNS_FLEET_ADMIN_TOKEN_FILE)" in none.stderr
        wrong = await asyncio.to_thread(_cli, "list", *url, RUNS_FLEET_ADMIN_TOKEN="admin-token-7")
        assert wrong.returncode == 2 and "was refused" in wrong.stderr
        assert "admin-token-7" not in wrong.stderr
        right = await asyncio.to_thread(
            _cli, "why", "1", *url, RUNS_FLEET_ADMIN_TOKEN="admin-token-6"
        )
        assert right.returncode == 1, "with the token, the job is looked up"


def test_an_unreachable_server_exits_2_naming_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = _cli("why", "3010", "--server", url)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot reach the runs-fleet server at {url} ")
    assert "--server URL" in result.stderr and "Traceback" not in result.stderr


async def test_list_shows_a_compact_table_filtered_by_status() -> None:
    async with running() as server:
        name = await _launched(server, 3011)
        bad = job_payload("queued.payload.json", 3012, label="runs-fleet=1/arch=sparc")
        assert (await server.webhook(bad)).status_code == 422
        url = ["--server", _url(server)]
        listed = await asyncio.to_thread(_cli, "list", *url)
        assert listed.returncode == 0, listed.stderr
        header, launching, rejected = listed.stdout.splitlines()
        assert header.split() == ["job", "status", "repository", "runner", "age", "reason"]
        assert launching.split()[:4] == ["3011", "launching", "Codertocat/Hello-World", name]
        assert rejected.split()[:4] == ["3012", "rejected", "Codertocat/Hello-World", "-"]
        reason = rejected.split(None, 5)[5]
        assert len(reason) == 60 and reason.startswith("label not accepted") and reason[-1] == "…"
        only = await asyncio.to_thread(_cli, "list", "--status", "rejected", "--limit", "1", *url)
        assert [line.split()[0] for line in only.stdout.splitlines()] == ["job", "3012"]
        paged = await asyncio.to_thread(_cli, "list", "--limit", "1", *url)
        assert paged.stdout.splitlines()[-1] == "more jobs follow: add --after 3011"
        bad_limit = await asyncio.to_thread(_cli, "list", "--limit", "0", *url)
        assert bad_limit.returncode == 2
        assert "error: limit must be between 1 and 500" in bad_limit.stderr


def test_a_job_stuck_past_what_housekeeping_allows_is_called_so_with_where_to_look() -> None:
    queued = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)
    job = (
        Job.new(job_id=JobId(3014), run_id=RunId("7"), repository="o/r", at=queued)
        .transition(JobStatus.CLAIMED, at=queued + timedelta(seconds=1), claim_owner="w-1")
        .transition(
            JobStatus.LAUNCHING,
            at=queued + timedelta(seconds=2),
            runner_name="runs-fleet-3014-1",
            runner_id=RunnerId("i-0abc"),
            backend="ec2",
            claim_expires_at=queued + timedelta(seconds=121),
        )
    )
    text = explain(job, queued + timedelta(minutes=20))
    assert "launched for it 19m58s ago (at 09:00:02 UTC)" in _words(text)
    assert "longer than runs-fleet expects (15m00s)" in _words(text)
    assert "runs_fleet_jobs_stuck" in text and "look at its log on the backend" in _words(text)
    assert "+2.0s  launching runs-fleet-3014-1 (ec2 i-0abc)" in text
    assert "claimed by w-1 (claim until 09:02:01)" in text
    next_day = explain(job, queued + timedelta(days=1, hours=2))
    assert "launched for it 1d01h ago (at 2026-01-05 09:00:02 UTC)" in _words(next_day)


async def test_a_job_whose_runner_was_lost_says_so_and_what_became_of_it() -> None:
    async with running() as server:
        name = await _launched(server, 3010)
        await _started(server, 3010, name)
        job = await server.services.adapters.state.get_job(JobId(3010))
        assert job is not None
        lost = "spot interruption warning (terminate) for i-0abc"
        await server.services.completion.runner_lost(job.job_id, name, lost)
        text = _words((await _why(server, 3010)).stdout)
        assert f"Its runner was lost while running it: {lost}" in text
        assert "RUNS_FLEET_RERUN_LOST_JOBS decides" in text

        failed = job_payload(
            "completed.failure.with-organization.payload.json", 3010, runner_name=name
        )
        assert (await server.webhook(failed)).status_code == 200
        await _until(server, 3010, "completed")
        for _ in range(int(WAIT_S / 0.02)):
            ended = await server.services.adapters.state.get_job(JobId(3010))
            if ended is not None and "RUNS_FLEET_RERUN_LOST_JOBS" in (ended.reason or ""):
                break
            await asyncio.sleep(0.02)
        text = _words((await _why(server, 3010)).stdout)
        assert "The reason: conclusion: failure" in text
        assert "Its runner was lost while running it:" in text
        assert "not re-run: RUNS_FLEET_RERUN_LOST_JOBS is 0" in text


def test_a_discovered_job_says_its_webhook_never_came() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    job = Job.new(
        job_id=JobId(77),
        run_id=RunId("9"),
        repository="octo-org/app",
        at=now - timedelta(seconds=30),
        delivery_id="discovered-77",
    )
    text = _words(explain(job, now))
    assert "its queued webhook never arrived" in text
