"""Poison messages as an operator meets them: dead-lettered by the real worker loop on a
real Valkey, listed by ``GET /api/dead-letters`` and ``runs-fleet dead-letters list``,
sent back by ``runs-fleet dead-letters redrive`` and dispatched once the fault is gone.

The server runs in memory mode (its memory provider takes injected backend failures)
with the Valkey job queue on a real ``valkey-server``, on 127.0.0.1 and a random port,
its in-process worker dispatching (``running`` from ``test_server``). The CLI runs as a
process, in a thread, so the server on this event loop can answer it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from runs_fleet_core.errors import AdapterError
from runs_fleet_core.ports.queue import Delivery
from runs_fleet_core.testing.contracts.queue import job_message
from tests.contract.valkey_server import ValkeyTestServer, running_valkey_server
from tests.integration.test_server import Server, job_payload, running

CAPACITY = "AWS ec2.create_fleet failed: InsufficientInstanceCapacity (us-east-1a)"
STREAM = "runs-fleet:jobs"
TOKEN = "dead-letter-admin-token"
WAIT_S = 15.0
FAULTS = 10
"""Failures queued in the provider: more than the attempts, so one left over shows that
the message stopped being delivered, not that the failures ran out."""


@pytest.fixture(scope="module")
def valkey_test_server() -> Iterator[ValkeyTestServer]:
    with running_valkey_server() as server:
        yield server


@pytest.fixture
def valkey_url(valkey_test_server: ValkeyTestServer) -> str:
    with redis.Redis.from_url(valkey_test_server.url) as client:
        client.flushdb()
    return valkey_test_server.url


@pytest.fixture
async def idle_server(valkey_url: str) -> AsyncIterator[Server]:
    """The same server without its worker: dead letters are made by hand."""
    async with running(
        with_worker=False, RUNS_FLEET_QUEUE_ADAPTER="valkey", RUNS_FLEET_VALKEY_URL=valkey_url
    ) as started:
        yield started


@pytest.fixture
async def server(valkey_url: str) -> AsyncIterator[Server]:
    async with running(
        RUNS_FLEET_QUEUE_ADAPTER="valkey",
        RUNS_FLEET_VALKEY_URL=valkey_url,
        RUNS_FLEET_MAX_ATTEMPTS="3",
    ) as started:
        dispatcher = started.services.dispatcher
        dispatcher.retry_base_s = dispatcher.retry_cap_s = 0.05  # retries come at once
        yield started


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")} | env
    return subprocess.run(
        [sys.executable, "-m", "runs_fleet_cli", "dead-letters", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _dead_letters(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    assert server.services.address is not None
    host, port = server.services.address
    return await asyncio.to_thread(_cli, *args, "--server", f"http://{host}:{port}")


async def _listed(server: Server, count: int) -> list[dict[str, object]]:
    """The API's dead letters once there are ``count`` of them."""
    for _ in range(int(WAIT_S / 0.05)):
        answer = (await server.client.get("/api/dead-letters")).json()
        if answer["total"] >= count:
            letters: list[dict[str, object]] = answer["dead_letters"]
            return letters
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} dead letters after {WAIT_S} s: {answer}")


async def _until_status(server: Server, job_id: int, status: str) -> dict[str, object]:
    for _ in range(int(WAIT_S / 0.05)):
        job: dict[str, object] = (await server.job(job_id)).json()
        if job.get("status") == status:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {status}: {job}")


def _deliveries(metrics: str, outcome: str) -> float:
    """The ``runs_fleet_worker_deliveries_total`` counter of ``outcome``."""
    prefix = f'runs_fleet_worker_deliveries_total{{outcome="{outcome}"}} '
    lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0


async def test_a_failing_job_and_an_unreadable_entry_are_dead_lettered_listed_and_redriven(
    server: Server, valkey_url: str
) -> None:
    server.provider.fail_next.extend(AdapterError(CAPACITY, retryable=True) for _ in range(FAULTS))
    assert (await server.webhook(job_payload("queued.payload.json", 6001))).status_code == 202
    with redis.Redis.from_url(valkey_url) as raw:
        raw.xadd(STREAM, {"payload": '{"job_id": "ghs_notAToken"}', "attempts": "0"})
        raw.xadd(STREAM, {"garbage": "no fields of a message"})

    letters = await _listed(server, 3)
    await asyncio.sleep(0.5)  # time enough for a loop to show: nothing is delivered again
    assert len(server.provider.fail_next) == FAULTS - 3, "exactly 3 dispatch attempts"
    metrics = (await server.client.get("/metrics")).text
    assert (_deliveries(metrics, "retry"), _deliveries(metrics, "dead_lettered")) == (2, 1)
    assert len(await _listed(server, 3)) == 3

    by_job = {letter["job_id"]: letter for letter in letters}
    job = by_job[6001]
    assert (job["repository"], job["attempts"], job["readable"]) == (
        "Codertocat/Hello-World",
        3,
        True,
    )
    assert job["reason"] == f"gave up after 3 attempts: {CAPACITY}"
    assert job["dead_lettered_at"]
    unreadable = [letter for letter in letters if not letter["readable"]]
    assert [(u["job_id"], u["attempts"]) for u in unreadable] == [(None, 1), (None, 1)]
    assert all(str(u["reason"]).startswith("unreadable message") for u in unreadable)
    assert sorted(u["size"] for u in unreadable) == [0, len('{"job_id": "ghs_notAToken"}')]
    assert "ghs_notAToken" not in json.dumps(letters)
    assert (await _until_status(server, 6001, "queued"))["reason"] == (
        f"dead-lettered, gave up after 3 attempts: {CAPACITY}"
    )

    listed = await _dead_letters(server, "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["id", "job", "repository", "attempts", "age", "reason"]
    assert sorted(row.split()[0] for row in rows) == sorted(str(x["id"]) for x in letters)
    row = next(row for row in rows if row.startswith(str(job["id"])))
    assert row.split()[1:4] == ["6001", "Codertocat/Hello-World", "3"]
    assert "gave up after 3 attempts" in row
    assert sum("(unreadable," in row for row in rows) == 2

    server.provider.fail_next.clear()  # the fault is gone: capacity is back
    redriven = await _dead_letters(server, "redrive", str(job["id"]))
    assert redriven.returncode == 0, redriven.stderr
    assert redriven.stdout == f"redriven 1 dead letter(s): {job['id']}\n"
    launched = await _until_status(server, 6001, "launching")
    assert launched["runner_name"] == "runs-fleet-6001-1" and launched["attempt"] == 1
    assert len(server.provider.created) == 1

    refused = await _dead_letters(server, "redrive", "--all")
    assert refused.returncode == 1 and refused.stdout == "redriven 0 dead letter(s)\n"
    for dead in unreadable:
        assert f"'runs-fleet dead-letters purge {dead['id']}'" in refused.stderr
        purged = await _dead_letters(server, "purge", str(dead["id"]))
        assert purged.returncode == 0, purged.stderr
    emptied = await _dead_letters(server, "list")
    assert emptied.stdout == "no dead letters\n"
    assert len(server.provider.created) == 1, "nothing else was dispatched"


async def test_unknown_ids_are_reported_and_exit_1(idle_server: Server) -> None:
    server = idle_server
    redrive = await _dead_letters(server, "redrive", "1-0", "not-an-id")
    assert redrive.returncode == 1
    assert redrive.stdout == "redriven 0 dead letter(s)\n"
    assert "there is no dead letter 1-0 (redriven or purged already?)" in redrive.stderr
    assert "there is no dead letter not-an-id" in redrive.stderr
    purge = await _dead_letters(server, "purge", "1-0")
    assert purge.returncode == 1
    assert purge.stderr.startswith("error: there is no dead letter 1-0; ")
    as_json = await _dead_letters(server, "redrive", "--json", "1-0")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {
        "moved": 0,
        "moved_ids": [],
        "not_found": ["1-0"],
        "unreadable": [],
    }


def test_an_unreachable_server_exits_2_naming_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for args in (("list",), ("redrive", "--all"), ("purge", "1-0")):
        result = _cli(*args, "--server", url)
        assert result.returncode == 2, args
        assert result.stderr.startswith(f"error: cannot reach the runs-fleet server at {url} ")
        assert "Traceback" not in result.stderr


async def test_redrive_needs_ids_or_all_but_not_both(idle_server: Server) -> None:
    server = idle_server
    for args in ((), ("1-0", "--all")):
        result = await _dead_letters(server, "redrive", *args)
        assert result.returncode == 2
        assert "name the dead letters to redrive (ID ...) or give --all" in result.stderr


async def test_the_listing_pages_and_prints_json(idle_server: Server) -> None:
    queue = idle_server.services.adapters.queue
    for job_id in (6101, 6102, 6103):
        await queue.send(job_message(job_id))
    deliveries: list[Delivery] = []
    while len(deliveries) < 3:
        deliveries += await queue.receive(3 - len(deliveries), WAIT_S)
    for delivery in sorted(deliveries, key=lambda d: d.message.job_id):
        await queue.dead_letter(delivery, "poison")
    letters = await _listed(idle_server, 3)
    assert [d["job_id"] for d in letters] == [6101, 6102, 6103]
    first = await _dead_letters(idle_server, "list", "--limit", "2")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:3]] == [
        [str(letters[0]["id"]), "6101"],
        [str(letters[1]["id"]), "6102"],
    ]
    assert lines[3:] == ["more dead letters follow: add --after 2"]
    rest = await _dead_letters(idle_server, "list", "--json", "--after", "2")
    answer = json.loads(rest.stdout)
    assert [d["id"] for d in answer["dead_letters"]] == [letters[2]["id"]]
    assert answer["next_cursor"] is None and answer["total"] == 3
    bad = await _dead_letters(idle_server, "list", "--limit", "0")
    assert bad.returncode == 2 and "--limit must be between 1 and 500" in bad.stderr


# -- the API's guards ------------------------------------------------------------------


async def test_every_route_answers_401_without_the_admin_token_when_one_is_set() -> None:
    async with running(with_worker=False, RUNS_FLEET_ADMIN_TOKEN=TOKEN) as server:
        calls = [
            ("GET", "/api/dead-letters", None),
            ("POST", "/api/dead-letters/redrive", {"all": True}),
            ("DELETE", "/api/dead-letters/1", None),
        ]
        for method, path, body in calls:
            for headers in ({}, {"Authorization": "Bearer wrong-token"}):
                answer = await server.client.request(method, path, json=body, headers=headers)
                assert answer.status_code == 401, (method, path, headers)
                assert answer.headers["www-authenticate"] == "Bearer"
                assert TOKEN not in answer.text
        good = {"Authorization": f"Bearer {TOKEN}"}
        listed = await server.client.get("/api/dead-letters", headers=good)
        assert listed.json() == {"dead_letters": [], "total": 0, "next_cursor": None}
        redriven = await server.client.post(
            "/api/dead-letters/redrive", json={"all": True}, headers=good
        )
        assert redriven.json()["moved"] == 0
        purged = await server.client.delete("/api/dead-letters/1", headers=good)
        assert purged.status_code == 404 and "there is no dead letter '1'" in purged.text

        url = ["--server", str(server.client.base_url)]
        none = await asyncio.to_thread(_cli, "list", *url)
        assert none.returncode == 2
        assert "set RUNS_FLEET_ADMIN_TOKEN (or RUNS_FLEET_ADMIN_TOKEN_FILE)" in none.stderr
        wrong = await asyncio.to_thread(
            _cli, "redrive", "--all", *url, RUNS_FLEET_ADMIN_TOKEN="not-the-token"
        )
        assert wrong.returncode == 2 and "was refused" in wrong.stderr
        assert "not-the-token" not in wrong.stderr
        right = await asyncio.to_thread(_cli, "list", *url, RUNS_FLEET_ADMIN_TOKEN=TOKEN)
        assert (right.returncode, right.stdout) == (0, "no dead letters\n")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "the body is not JSON"),
        (b"", "the body must be a JSON object"),
        (b'["1-0"]', "the body must be a JSON object"),
        (b"{}", "give either ids or all, not both nor neither"),
        (b'{"ids": ["1-0"], "all": true}', "give either ids or all, not both nor neither"),
        (b'{"ids": "1-0"}', '"ids" must be a non-empty list of dead-letter ids'),
        (b'{"ids": []}', '"ids" must be a non-empty list of dead-letter ids'),
        (b'{"ids": [1]}', 'every id in "ids" must be a non-empty string'),
        (b'{"ids": [" "]}', 'every id in "ids" must be a non-empty string'),
        (b'{"all": false}', '"all" must be true'),
        (b'{"all": true, "force": true}', "unknown field(s) force"),
    ],
)
async def test_a_malformed_redrive_body_is_refused_with_the_shape_to_send(
    body: bytes, says: str
) -> None:
    async with running(with_worker=False) as server:
        answer = await server.client.post("/api/dead-letters/redrive", content=body)
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error.startswith(says), error
        assert error.endswith('send {"ids": ["<id>", ...]} or {"all": true}')


async def test_too_many_ids_a_huge_body_and_bad_paging_are_refused() -> None:
    async with running(with_worker=False) as server:
        many = await server.client.post(
            "/api/dead-letters/redrive", json={"ids": [f"{n}-0" for n in range(1001)]}
        )
        assert many.status_code == 400 and "at most 1000 ids at once" in many.text
        huge = await server.client.post(
            "/api/dead-letters/redrive", content=b'{"ids": ["' + b"x" * 70_000 + b'"]}'
        )
        assert huge.status_code == 413
        for query in ("limit=0", "limit=501", "limit=ten", "cursor=-1"):
            paged = await server.client.get(f"/api/dead-letters?{query}")
            assert paged.status_code == 400, query
