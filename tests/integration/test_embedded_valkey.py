"""Local mode's embedded Valkey: a real valkey-server, private, durable, and gone after.

Every server a test starts is stopped (or killed) at teardown; the tests check that no
``valkey-server`` process outlives them and that the password shows up nowhere it could
leak (logs, the server's command line).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from runs_fleet_core.settings import Settings
from runs_fleet_local.embedded_valkey import EmbeddedValkey, EmbeddedValkeyError, embedded_valkey
from runs_fleet_local.plugin import valkey_service

URL_RE = re.compile(r"redis://:(?P<password>[0-9a-f]{64})@127\.0\.0\.1:(?P<port>\d+)/0")


def running(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode()


@pytest.fixture
def servers() -> Iterator[list[EmbeddedValkey]]:
    """Servers started directly by a test; each is stopped at teardown."""
    started: list[EmbeddedValkey] = []
    yield started
    for server in started:
        server.stop()


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


async def test_the_service_serves_a_private_valkey_and_leaves_nothing_behind(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with embedded_valkey(tmp_path) as overrides:
        url = overrides["RUNS_FLEET_VALKEY_URL"]
        match = URL_RE.fullmatch(url)
        assert match is not None
        password = match["password"]
        with _client(url) as client:
            assert client.ping()
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
            assert client.config_get("bind") == {"bind": "127.0.0.1"}
            pid = int(client.info("server")["process_id"])
        with socket.create_connection(("127.0.0.1", int(match["port"])), timeout=5) as anonymous:
            anonymous.sendall(b"PING\r\n")
            assert anonymous.recv(100).startswith(b"-NOAUTH")
        assert password not in cmdline(pid)
    assert not running(pid)
    assert password not in caplog.text
    assert "embedded Valkey on 127.0.0.1" in caplog.text
    assert password not in (tmp_path / "valkey" / "valkey.log").read_text()


async def test_secrets_and_data_are_private_to_the_owner(tmp_path: Path) -> None:
    async with embedded_valkey(tmp_path) as overrides:
        password_file = tmp_path / "valkey.password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert password_file.read_text().strip() in overrides["RUNS_FLEET_VALKEY_URL"]
        assert stat.S_IMODE((tmp_path / "valkey").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "valkey" / "valkey.conf").stat().st_mode) == 0o600


async def test_a_restart_on_the_same_state_dir_keeps_the_data(tmp_path: Path) -> None:
    async with embedded_valkey(tmp_path) as overrides:
        with _client(overrides["RUNS_FLEET_VALKEY_URL"]) as client:
            client.set("runs-fleet:probe", "kept")
            client.xadd("runs-fleet:stream", {"job": "7"})
    assert (tmp_path / "valkey" / "appendonlydir").is_dir()
    async with embedded_valkey(tmp_path) as overrides:
        with _client(overrides["RUNS_FLEET_VALKEY_URL"]) as client:
            assert client.get("runs-fleet:probe") == b"kept"
            assert client.xlen("runs-fleet:stream") == 1


def test_a_server_left_by_a_dead_orchestrator_is_stopped_first(
    tmp_path: Path, servers: list[EmbeddedValkey]
) -> None:
    leftover = EmbeddedValkey(tmp_path)
    leftover.start()
    with _client(leftover.url) as client:
        client.set("before", "crash")
    old_pid = leftover.pid
    assert old_pid is not None
    successor = EmbeddedValkey(tmp_path)
    servers.extend([successor, leftover])  # the leftover is our child: reap it at teardown
    successor.start()
    assert not running(old_pid)
    with _client(successor.url) as client:
        assert client.get("before") == b"crash"


def test_stop_is_idempotent_and_start_failures_say_why(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path, executable="/bin/false", start_timeout_s=2)
    with pytest.raises(EmbeddedValkeyError, match="did not start"):
        server.start()
    server.stop()
    server.stop()


@pytest.mark.parametrize(
    ("env", "needed"),
    [
        ({"RUNS_FLEET_MODE": "local"}, True),
        ({"RUNS_FLEET_MODE": "local", "RUNS_FLEET_VALKEY_URL": "redis://v:6379/0"}, False),
        ({"RUNS_FLEET_MODE": "ec2"}, False),
        ({"RUNS_FLEET_MODE": "k8s"}, False),
        (
            {
                "RUNS_FLEET_MODE": "local",
                "RUNS_FLEET_QUEUE_ADAPTER": "memory",
                "RUNS_FLEET_STATE_ADAPTER": "memory",
            },
            False,
        ),
    ],
)
def test_the_service_is_needed_only_in_local_mode_without_a_valkey_url(
    tmp_path: Path, env: dict[str, str], needed: bool
) -> None:
    settings = Settings(values={"RUNS_FLEET_STATE_DIR": tmp_path, **env})
    service = valkey_service(settings)
    assert (service is not None) == needed
    if service is not None:  # an unused context manager starts nothing
        assert not (tmp_path / "valkey").exists()


def servers_in(data_dir: Path) -> list[int]:
    """Live valkey-server processes working in ``data_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")) == data_dir.resolve():
                    found.append(int(entry.name))
    return [pid for pid in found if running(pid)]


async def test_a_start_cancelled_midway_leaves_no_server_behind(tmp_path: Path) -> None:
    async def serve() -> None:
        async with embedded_valkey(tmp_path):
            await asyncio.sleep(60)

    for delay in (0.0, 0.02, 0.3):
        task = asyncio.create_task(serve())
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert servers_in(tmp_path / "valkey") == []
