"""Warm pools as an operator defines them: the server's pools API and ``runs-fleet pools``.

Each test starts the real server in memory mode on a random port (``running`` from
``test_server``), drives the API over HTTP, and runs the pool loop's leader chores
itself (``build_leadership(...).tick()``), so the runners a pool shows are the ones the
pool loop really made. The CLI runs as a process against that server, as an operator
runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import attrs
import httpx

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.pool import PoolConfig, Schedule
from runs_fleet_core.testing.memory import MemoryProvider
from runs_fleet_core.usecases.leadership import Leadership
from runs_fleet_scheduler.scheduler import build_leadership
from runs_fleet_server.app import create_app
from tests.integration.test_server import Server, running

LABEL = "runs-fleet=pool/cpu=4/arch=arm64/pool=ci"
BODY = {"label": LABEL, "desired_running": 2, "desired_stopped": 1}
STORED = {
    "name": "ci",
    "label": LABEL,
    "desired_running": 2,
    "desired_stopped": 1,
    "idle_timeout_s": 600,
    "schedules": [],
    "ephemeral": False,
    "backend": None,
}


def _pool_loop(server: Server) -> Leadership:
    """The leader's chores (pool reconciliation first) on the server's adapters."""
    return build_leadership(server.services.adapters, owner="pools-test")


async def _pass(loop: Leadership) -> None:
    assert await loop.tick(), "the pool loop did not get the leadership"


async def _runners(server: Server, name: str) -> list[tuple[str, str, int | None]]:
    shown = await server.client.get(f"/api/pools/{name}")
    assert shown.status_code == 200, shown.text
    return [(r["runner_id"], r["phase"], r["job_id"]) for r in shown.json()["runners"]]


async def _bind(server: Server, runner_id: str, job_id: int) -> None:
    state = server.services.adapters.state
    assert await state.assign_runner(RunnerId(runner_id), JobId(job_id), datetime.now(UTC))


# -- the API -----------------------------------------------------------------------------


async def test_a_pool_is_set_listed_and_shown_with_the_runners_the_pool_loop_made() -> None:
    async with running() as server:
        created = await server.client.put("/api/pools/ci", json=BODY)
        assert created.status_code == 201, created.text
        assert created.json() == STORED
        assert created.headers["location"] == "/api/pools/ci"
        stored = await server.services.adapters.state.get_pool("ci")
        assert stored == PoolConfig(name="ci", label=LABEL, desired_running=2, desired_stopped=1)
        assert (await server.client.get("/api/pools")).json() == {"pools": [STORED]}
        assert await _runners(server, "ci") == []

        await _pass(_pool_loop(server))
        await _bind(server, "mem-pool-2", 77)

        shown = (await server.client.get("/api/pools/ci")).json()
        assert {k: v for k, v in shown.items() if k != "runners"} == STORED
        assert await _runners(server, "ci") == [
            ("mem-pool-1", "running", None),
            ("mem-pool-2", "running", 77),
            ("mem-pool-3", "stopped", None),
        ]
        assert all(runner["idle_since"] for runner in shown["runners"])


async def test_every_problem_with_a_pool_is_answered_at_once_and_nothing_is_saved() -> None:
    async with running() as server:
        body = {
            "label": "runs-fleet=pool/cpu=4/pool=other",
            "desired_running": -1,
            "desired_stopped": "2",
            "idle_timeout_s": True,
            "backend": "ec2",
            "schedules": [{"weekdays": [7], "start_hour": 8, "end_hour": 8, "running": 1}],
            "size": 3,
        }
        response = await server.client.put("/api/pools/ci", json=body)
        assert response.status_code == 422
        problems = response.json()["problems"]
        expected = [
            "unknown field 'size'",
            "pool=other names another pool",
            "backend 'ec2' is not a backend of this deployment (memory); backends with "
            "warm pools: memory",
            "desired_running must be a whole number from 0 to 1000, got -1",
            'desired_stopped must be a whole number from 0 to 1000, got "2"',
            "idle_timeout_s must be a whole number from 0 to 604800, got true",
            "schedules[0].running: unknown field",
            "schedules[0].weekdays must list different days from 0 (Monday) to 6",
            "schedules[0].start_hour and end_hour are both 8",
        ]
        for wanted in expected:
            assert any(wanted in problem for problem in problems), (wanted, problems)
        assert len(problems) == len(expected), problems
        assert await server.services.adapters.state.list_pools() == []


async def test_a_pool_name_and_its_label_are_checked_against_the_deployment() -> None:
    async with running() as server:
        bad_name = await server.client.put("/api/pools/CI", json={"desired_running": 1})
        assert bad_name.status_code == 422
        problems = bad_name.json()["problems"]
        assert any(p.startswith("name 'CI': a pool name is 1-63 characters") for p in problems)
        assert any(p.startswith("label is required") for p in problems)
        assert any(p.startswith("desired_stopped is required") for p in problems)
        for label, named in [
            ("cpu=4/pool=ci", "a runs-fleet label starts with 'runs-fleet='"),
            ("runs-fleet=pool/cpu=four", "cpu must be a whole number"),
            ("runs-fleet=pool/runner=big", "unknown runner preset 'big'"),
            ("runs-fleet=pool/backend=local", "backend 'memory' contradicts the label's"),
        ]:
            body = BODY | {"label": label, "backend": "memory"}
            response = await server.client.put("/api/pools/ci", json=body)
            assert response.status_code == 422, label
            assert [named in p for p in response.json()["problems"]] == [True], response.text
        with_preset = BODY | {"label": "runs-fleet=pool/runner=big/pool=ci"}
        assert (await server.client.put("/api/pools/ci", json=with_preset)).status_code == 422

    async with running(RUNS_FLEET_PRESETS='{"big": "cpu=16/ram=64"}') as server:
        response = await server.client.put("/api/pools/ci", json=with_preset)
        assert response.status_code == 201, response.text


async def test_a_backend_without_warm_pools_is_refused_naming_those_with_them() -> None:
    async with running() as server:
        adapters = server.services.adapters
        server.services.adapters = attrs.evolve(
            adapters,
            providers={**adapters.providers, "cold": MemoryProvider(adapters.clock, name="cold")},
            wiring=attrs.evolve(adapters.wiring, backends=("memory", "cold")),
        )
        response = await server.client.put("/api/pools/ci", json=BODY | {"backend": "cold"})
        assert response.status_code == 422
        assert response.json()["problems"] == [
            "backend 'cold' keeps no warm pools; backends with warm pools: memory"
        ]
        ok = await server.client.put("/api/pools/ci", json=BODY | {"backend": "memory"})
        assert ok.status_code == 201 and ok.json()["backend"] == "memory"


async def test_a_body_that_is_not_a_json_object_is_refused_with_400() -> None:
    async with running() as server:
        for body in (b"{not json", b"[1, 2]", b'"ci"', b"\xff\xfe"):
            response = await server.client.put("/api/pools/ci", content=body)
            assert response.status_code == 400, body
            assert response.json()["error"].startswith("the body ")
        huge = json.dumps(BODY | {"label": "x" * 100_000}).encode()
        assert (await server.client.put("/api/pools/ci", content=huge)).status_code == 413
        assert await server.services.adapters.state.list_pools() == []


async def test_writing_an_existing_pool_replaces_it_and_an_ephemeral_one_becomes_configured() -> (
    None
):
    async with running() as server:
        state = server.services.adapters.state
        made = PoolConfig(name="ci", label=LABEL, desired_running=10, ephemeral=True)
        await state.put_pool(made)
        schedule = {"weekdays": [0, 1, 2, 3, 4], "start_hour": 22, "end_hour": 6}
        body = BODY | {"idle_timeout_s": 30, "schedules": [schedule | {"desired_running": 5}]}
        replaced = await server.client.put("/api/pools/ci", json=body)
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["ephemeral"] is False
        assert replaced.json()["schedules"] == [
            schedule | {"desired_running": 5, "desired_stopped": 0}
        ]
        assert await state.get_pool("ci") == PoolConfig(
            name="ci",
            label=LABEL,
            desired_running=2,
            desired_stopped=1,
            idle_timeout_s=30,
            schedules=(
                Schedule(weekdays=(0, 1, 2, 3, 4), start_hour=22, end_hour=6, desired_running=5),
            ),
        )
        again = await server.client.put("/api/pools/ci", json=replaced.json())
        assert again.status_code == 200 and again.json() == replaced.json()
        assert len(await state.list_pools()) == 1


async def test_deleting_a_pool_with_runners_winds_it_down_until_they_are_gone() -> None:
    async with running() as server:
        state = server.services.adapters.state
        body = BODY | {"schedules": [{"desired_running": 4}]}
        assert (await server.client.put("/api/pools/ci", json=body)).status_code == 201
        loop = _pool_loop(server)
        await _pass(loop)
        assert len(await _runners(server, "ci")) == 4  # the all-week schedule wins
        await _bind(server, "mem-pool-1", 88)

        refused = await server.client.delete("/api/pools/ci")
        assert refused.status_code == 409
        assert refused.json()["runners"] == 4
        assert "delete it again once they are gone" in refused.json()["error"]
        assert await state.get_pool("ci") == PoolConfig(name="ci", label=LABEL, idle_timeout_s=0)

        await _pass(loop)  # the idle runners go; the busy one stays
        assert await _runners(server, "ci") == [("mem-pool-1", "running", 88)]
        still = await server.client.delete("/api/pools/ci")
        assert still.status_code == 409 and still.json()["runners"] == 1

        await state.release_runner(RunnerId("mem-pool-1"), JobId(88))
        await _pass(loop)
        assert await _runners(server, "ci") == []
        deleted = await server.client.delete("/api/pools/ci")
        assert deleted.status_code == 200 and deleted.json() == {"deleted": "ci"}
        assert (await server.client.get("/api/pools/ci")).status_code == 404
        assert await state.list_pools() == []


async def test_deleting_a_pool_without_runners_removes_it_at_once() -> None:
    async with running() as server:
        assert (await server.client.put("/api/pools/ci", json=BODY)).status_code == 201
        deleted = await server.client.delete("/api/pools/ci")
        assert deleted.status_code == 200
        assert (await server.client.get("/api/pools")).json() == {"pools": []}
        assert await server.services.adapters.state.get_pool("ci") is None
        for gone in (server.client.get("/api/pools/ci"), server.client.delete("/api/pools/ci")):
            response = await gone
            assert response.status_code == 404
            assert response.json()["error"] == "pool 'ci' is not known to runs-fleet"


async def test_the_pools_api_needs_the_admin_token_when_one_is_set() -> None:
    async with running(RUNS_FLEET_ADMIN_TOKEN="admin-token-1") as server:
        calls = [
            ("GET", "/api/pools", None, 200),
            ("PUT", "/api/pools/ci", BODY, 201),
            ("GET", "/api/pools/ci", None, 200),
            ("DELETE", "/api/pools/ci", None, 200),
        ]
        for method, path, body, status in calls:
            for headers in ({}, {"Authorization": "Bearer admin-token-2"}):
                denied = await server.client.request(method, path, json=body, headers=headers)
                assert denied.status_code == 401, (method, path, headers)
                assert denied.headers["www-authenticate"] == "Bearer"
            right = {"Authorization": "Bearer admin-token-1"}
            allowed = await server.client.request(method, path, json=body, headers=right)
            assert allowed.status_code == status, (method, path, allowed.text)
        assert await server.services.adapters.state.list_pools() == []


async def test_without_an_admin_token_the_pools_api_answers_loopback_clients_only() -> None:
    async with running() as server:
        transport = httpx.ASGITransport(
            app=create_app(server.services), client=("203.0.113.7", 4242)
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://runs-fleet") as remote:
            for method, path in [
                ("GET", "/api/pools"),
                ("PUT", "/api/pools/ci"),
                ("GET", "/api/pools/ci"),
                ("DELETE", "/api/pools/ci"),
            ]:
                body = BODY if method == "PUT" else None
                response = await remote.request(method, path, json=body)
                assert response.status_code == 403, (method, path)
                assert "RUNS_FLEET_ADMIN_TOKEN" in response.json()["error"]
        assert await server.services.adapters.state.list_pools() == []
        assert (await server.client.put("/api/pools/ci", json=BODY)).status_code == 201


# -- the CLI -----------------------------------------------------------------------------


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")} | env
    return subprocess.run(
        [sys.executable, "-m", "runs_fleet_cli", "pools", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread, so the server on this event loop can answer it."""
    return await asyncio.to_thread(_cli, *args, **env)


def _url(server: Server) -> str:
    assert server.services.address is not None
    host, port = server.services.address
    return f"http://{host}:{port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


async def test_the_cli_sets_lists_shows_and_deletes_a_pool() -> None:
    async with running() as server:
        url = ["--server", _url(server)]
        # a day that is not today, so the schedule is never in force during the test
        day = (datetime.now(UTC).weekday() + 3) % 7
        schedule = f"days={_DAYS[day]}/hours=8-18/running=3/stopped=1"
        created = await _run(
            "set", "ci", "--label", LABEL, "--running", "1", "--stopped", "0",
            "--schedule", schedule, *url,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        assert created.stdout.startswith("pool ci created\n")
        assert f"schedule      {schedule}\n" in created.stdout
        stored = await server.services.adapters.state.get_pool("ci")
        assert stored is not None and stored.schedules == (
            Schedule(weekdays=(day,), start_hour=8, end_hour=18, desired_running=3,
                     desired_stopped=1),
        )  # fmt: skip

        listed = await _run("list", *url)
        assert listed.returncode == 0, listed.stderr
        header, row = listed.stdout.splitlines()
        assert header.split()[:3] == ["name", "backend", "running"]
        assert row.split() == ["ci", "(default)", "1", "0", "600", "s", "1", "configured", LABEL]

        await _pass(_pool_loop(server))
        shown = await _run("show", "ci", *url)
        assert shown.returncode == 0, shown.stderr
        assert "label         " + LABEL in shown.stdout
        assert any(line.split()[:2] == ["runners", "1"] for line in shown.stdout.splitlines())
        as_json = json.loads((await _run("show", "ci", "--json", *url)).stdout)
        assert [r["runner_id"] for r in as_json["runners"]] == ["mem-pool-1"]

        refused = await _run("delete", "ci", *url)
        assert refused.returncode == 2
        assert "still has 1 runner(s)" in refused.stderr and "Traceback" not in refused.stderr
        await _pass(_pool_loop(server))  # same owner: the lease is still ours
        deleted = await _run("delete", "ci", *url)
        assert deleted.returncode == 0, deleted.stderr
        assert deleted.stdout == "pool ci deleted\n"
        gone = await _run("show", "ci", *url)
        assert gone.returncode == 2 and "error: pool 'ci' is not known" in gone.stderr


async def test_the_cli_lists_every_problem_the_server_found_and_exits_2() -> None:
    async with running() as server:
        result = await _run(
            "set", "ci", "--label", "runs-fleet=pool/pool=other", "--running", "-1",
            "--stopped", "0", "--backend", "k8s", "--server", _url(server),
        )  # fmt: skip
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert lines[0] == "error: pool 'ci' was not saved"
        assert len(lines) == 4 and all(line.startswith("  - ") for line in lines[1:])
        assert "desired_running" in result.stderr and "pool=other" in result.stderr
        assert "backend 'k8s'" in result.stderr and "Traceback" not in result.stderr
        as_json = await _run("list", "--json", "--server", _url(server))
        assert json.loads(as_json.stdout) == {"pools": []}


async def test_the_cli_finds_the_server_from_the_settings_and_sends_the_admin_token(
    tmp_path: Path,
) -> None:
    async with running(RUNS_FLEET_ADMIN_TOKEN="admin-token-4") as server:
        url = _url(server)
        port = url.rsplit(":", 1)[1]
        no_token = await _run("list", "--server", url)
        assert no_token.returncode == 2
        assert "set RUNS_FLEET_ADMIN_TOKEN (or RUNS_FLEET_ADMIN_TOKEN_FILE)" in no_token.stderr
        wrong = await _run("list", "--server", url, RUNS_FLEET_ADMIN_TOKEN="admin-token-5")
        assert wrong.returncode == 2 and "was refused" in wrong.stderr
        assert "admin-token-5" not in wrong.stderr

        token_file = tmp_path / "token"
        token_file.write_text("admin-token-4\n")
        from_listen = await _run(
            "list",
            RUNS_FLEET_LISTEN=f"0.0.0.0:{port}",
            RUNS_FLEET_ADMIN_TOKEN_FILE=str(token_file),
        )
        assert from_listen.returncode == 0, from_listen.stderr
        dead = f"127.0.0.1:{_free_port()}"
        from_public_url = await _run(
            "list",
            RUNS_FLEET_PUBLIC_URL=url + "/",
            RUNS_FLEET_LISTEN=dead,
            RUNS_FLEET_ADMIN_TOKEN="admin-token-4",
        )
        assert from_public_url.returncode == 0, from_public_url.stderr
        config_file = tmp_path / "runs-fleet.toml"
        config_file.write_text(f'listen = "{dead}"\npublic_url = "{url}"\nqueue_url = "x"\n')
        from_config_file = await _run(
            "list",
            RUNS_FLEET_CONFIG_FILE=str(config_file),
            RUNS_FLEET_ADMIN_TOKEN="admin-token-4",
        )
        assert from_config_file.returncode == 0, from_config_file.stderr


def test_an_unreachable_server_is_named_with_how_to_point_the_cli_elsewhere() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    for args, env, source in [
        (["--server", url], {}, "--server"),
        ([], {"RUNS_FLEET_LISTEN": url.removeprefix("http://")}, "RUNS_FLEET_LISTEN"),
    ]:
        result = _cli("list", *args, **env)
        assert result.returncode == 2
        assert result.stderr.startswith(f"error: cannot reach the runs-fleet server at {url} ")
        assert f"(from {source})" in result.stderr
        assert "--server URL" in result.stderr and "RUNS_FLEET_PUBLIC_URL" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_cli_refuses_a_malformed_schedule_or_server_url_before_any_request() -> None:
    port = _free_port()
    schedule = _cli(
        "set", "ci", "--label", LABEL, "--running", "1", "--stopped", "0",
        "--schedule", "days=mon-fry", "--server", f"http://127.0.0.1:{port}",
    )  # fmt: skip
    assert schedule.returncode == 2
    assert "--schedule 'days=mon-fry': write it as days=mon-fri/hours=8-18" in schedule.stderr
    scheme = _cli("list", "--server", "ftp://127.0.0.1")
    assert scheme.returncode == 2
    assert "--server: 'ftp://127.0.0.1' is not an http:// or https:// URL" in scheme.stderr
