"""Connecting to Valkey, and turning client failures into the core's ``AdapterError``.

Both adapters need the same two things: a client with timeouts on every call (an
external call without a timeout can hang a dispatcher forever), and errors that the use
cases understand without knowing about redis-py. Messages never include the URL, which
may carry a password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff

from runs_fleet_core.errors import AdapterError

DEFAULT_SOCKET_TIMEOUT_S = 10.0
"""Per-call timeout. Blocking queue reads wait at most one second per call, well below."""
DEFAULT_CONNECT_TIMEOUT_S = 5.0
RECONNECT_RETRIES = 2
"""Retries of a command whose connection broke (e.g. a pooled connection to a server
that restarted since): ``Redis.from_url`` sets none, so without them the first command
after a Valkey restart fails, and a webhook answered 503 is never redelivered. Only
connection errors are retried (a timed-out command may have run), briefly."""

_SCHEMES = {"valkey://": "redis://", "valkeys://": "rediss://"}


def normalize_url(url: str) -> str:
    """``url`` with a ``valkey://``/``valkeys://`` scheme spelled the way redis-py reads it."""
    for scheme, replacement in _SCHEMES.items():
        if url.startswith(scheme):
            return replacement + url.removeprefix(scheme)
    return url


def connect(
    url: str,
    *,
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> Redis:
    """A client (with its own connection pool) for ``url``; connects lazily, on first use.

    ``url``: ``redis://``, ``rediss://`` (TLS), ``unix://``, or the ``valkey://`` /
    ``valkeys://`` spellings of the first two.
    """
    if socket_timeout_s <= 1.0:
        raise ValueError(
            f"socket_timeout_s must exceed 1 s (a blocking read waits up to 1 s), "
            f"got {socket_timeout_s}"
        )
    try:
        return Redis.from_url(
            normalize_url(url),
            decode_responses=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            health_check_interval=30,
            retry=Retry(
                EqualJitterBackoff(cap=0.5, base=0.05),
                RECONNECT_RETRIES,
                supported_errors=(redis_errors.ConnectionError,),
            ),
        )
    except ValueError as exc:
        raise ValueError(
            "not a Valkey URL: expected redis://, rediss://, unix://, valkey:// or valkeys://"
        ) from exc


@contextlib.contextmanager
def backend_errors(operation: str) -> Iterator[None]:
    """Re-raise client failures during ``operation`` as ``AdapterError``.

    Connection problems and timeouts may pass (``retryable=True``); a command the
    server refuses will be refused again (``retryable=False``).
    """
    try:
        yield
    except redis_errors.AuthenticationError as exc:
        raise AdapterError(
            f"Valkey {operation} failed: the server refused the credentials of "
            "RUNS_FLEET_VALKEY_URL",
            retryable=False,
        ) from exc
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        raise AdapterError(
            f"Valkey {operation} failed, the server is unreachable or slow: "
            f"{type(exc).__name__}: {exc}",
            retryable=True,
        ) from exc
    except redis_errors.RedisError as exc:
        raise AdapterError(
            f"Valkey {operation} failed: {type(exc).__name__}: {exc}", retryable=False
        ) from exc


def server_address(client: Redis) -> tuple[object, ...]:
    """The server and database a client talks to, as comparable values."""
    kwargs = client.connection_pool.connection_kwargs
    return tuple(kwargs.get(name) for name in ("host", "port", "path", "db"))
