"""A fault-injecting TCP proxy, protocol-agnostic, for the fault matrix.

One :class:`FaultProxy` stands between runs-fleet and one backend (Valkey, the moto
server, the fake Kubernetes API server, the GitHub simulator). A test switches its
mode: ``pass`` forwards, ``reset`` aborts every connection (new and open ones: the
backend "crashed" or a network blip), ``stall`` holds every byte (the backend hangs,
so the caller's timeouts must fire). A *tap* arms a one-shot action on a request: when
a request whose bytes contain a pattern has been forwarded and the backend starts to
answer, the action runs (the test SIGKILLs the replica that sent it) and the answer
is dropped: the backend applied the step, its caller never learns the outcome, which
is the harshest moment for a crash.

Every proxy runs on one asyncio loop in a daemon thread (:class:`LoopThread`); the
test thread drives them through thread-safe methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs

T = TypeVar("T")
_CHUNK = 65536
_WINDOW = 1024
"""Bytes of a connection's earlier chunks kept, for a pattern that straddles two."""


class Mode(enum.StrEnum):
    PASS = "pass"
    RESET = "reset"
    STALL = "stall"


class LoopThread:
    """An asyncio loop in a daemon thread, for servers the test thread controls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Awaitable[T], timeout_s: float = 30) -> T:
        async def wrapped() -> T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@attrs.define
class Tap:
    """Run ``action`` once, when the answer to a request containing ``pattern`` starts."""

    pattern: bytes
    action: Callable[[], None]
    label: str
    fired: threading.Event = attrs.field(factory=threading.Event)


@attrs.define(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    recent: bytearray = attrs.field(factory=bytearray)
    tap: Tap | None = None

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.transport.abort()


class FaultProxy:
    """Listens on 127.0.0.1:``port`` and forwards to ``upstream()`` (a port, asked per
    connection, so a balancer can pick among replicas; ``None``: refuse)."""

    def __init__(self, loop: LoopThread, upstream: Callable[[], int | None], name: str) -> None:
        self.name = name
        self.mode = Mode.PASS
        self.connections = 0
        self._loop = loop
        self._upstream = upstream
        self._open: set[_Connection] = set()
        self._taps: list[Tap] = []
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._server: asyncio.Server = loop.run(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- the test thread's controls ---------------------------------------------------

    def set_mode(self, mode: Mode) -> None:
        """Switch the mode; ``reset`` also aborts every open connection now."""
        self.mode = mode
        self._loop.loop.call_soon_threadsafe(self._apply)

    def arm(self, pattern: bytes, action: Callable[[], None], label: str) -> Tap:
        """A one-shot tap (see the module docstring); it fires at most once."""
        tap = Tap(pattern=pattern, action=action, label=label)
        with self._lock:
            self._taps.append(tap)
        return tap

    def disarm(self) -> None:
        with self._lock:
            self._taps.clear()

    def close(self) -> None:
        async def closing() -> None:
            self._server.close()
            self._abort_all()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

        self._loop.run(closing())

    # --- the loop's side ------------------------------------------------------------------

    def _apply(self) -> None:
        if self.mode is Mode.STALL:
            self._flowing.clear()
        else:
            self._flowing.set()
        if self.mode is Mode.RESET:
            self._abort_all()

    def _abort_all(self) -> None:
        for connection in list(self._open):
            connection.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        port = self._upstream()
        if self.mode is Mode.RESET or port is None:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.transport.abort()
            return
        connection = _Connection(client=writer, upstream=up_writer)
        self._open.add(connection)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, connection, outbound=True),
                self._pump(up_reader, writer, connection, outbound=False),
            )
        finally:
            self._open.discard(connection)
            connection.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: _Connection,
        *,
        outbound: bool,
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                await self._flowing.wait()
                if self.mode is Mode.RESET:
                    break
                if outbound:
                    self._watch(connection, data)
                elif connection.tap is not None:
                    tap, connection.tap = connection.tap, None
                    await asyncio.get_running_loop().run_in_executor(None, tap.action)
                    tap.fired.set()
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            connection.abort()

    def _watch(self, connection: _Connection, data: bytes) -> None:
        """Look for armed patterns in this chunk and the tail of the ones before (a
        pattern may straddle two chunks; a large request's first bytes must still be
        seen, so the tail is cut only after the search)."""
        connection.recent += data
        with self._lock:
            for tap in self._taps:
                if tap.pattern in connection.recent:
                    self._taps.remove(tap)
                    connection.tap = tap
                    connection.recent.clear()
                    return
        del connection.recent[:-_WINDOW]
