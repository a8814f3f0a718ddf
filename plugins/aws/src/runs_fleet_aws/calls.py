"""boto3 calls from async code: off the event loop, bounded, timed out, and mapped to
runs-fleet errors.

boto3 clients block, so every call runs in a small thread pool shared by the process.
botocore's *standard* retry mode retries throttling and transient errors with
exponential backoff and jitter; :class:`AwsCaller` adds a deadline per call, counts
calls and throttles as metrics (by service and operation, never by resource), and turns
a failure into :class:`~runs_fleet_core.errors.AdapterError` whose message carries the
AWS error code, so it reaches job records and logs as ``AccessDenied``,
``InsufficientInstanceCapacity`` … rather than as a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from runs_fleet_core.errors import AdapterError, ConfigError

if TYPE_CHECKING:
    import botocore.exceptions
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports import Metrics

T = TypeVar("T")

THROTTLING_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
    }
)
"""Error codes that mean "slow down": retried by botocore, counted by us."""

TRANSIENT_CODES = THROTTLING_CODES | {
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "TransactionInProgressException",
}
"""Error codes after which the same call may succeed later."""

DEFAULT_TIMEOUT_S = 30.0
MAX_WORKERS = 16


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError``, or of the ``ClientError`` behind an
    ``AdapterError`` this module raised (``""`` for anything else)."""
    from botocore.exceptions import ClientError

    if isinstance(exc, AdapterError) and exc.__cause__ is not None:
        return error_code(exc.__cause__)
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def client_config(*, timeout_s: float = DEFAULT_TIMEOUT_S, max_attempts: int = 5) -> Any:
    """botocore settings for every runs-fleet client: standard retries with backoff,
    connect and read timeouts below the per-call deadline."""
    import botocore.config

    return botocore.config.Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=min(10.0, timeout_s),
        read_timeout=timeout_s,
        user_agent_extra="runs-fleet",
    )


class AwsCaller:
    """Makes boto3 clients and runs their calls for async adapters.

    One caller per process is enough (clients are thread-safe and cached per service);
    tests build one per moto server. ``region`` and ``endpoint_url`` default to boto3's
    own resolution (``AWS_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``,
    instance metadata …).
    """

    def __init__(
        self,
        *,
        metrics: Metrics | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_attempts: int = 5,
        session: Any | None = None,
    ) -> None:
        self.metrics = metrics
        self.timeout_s = timeout_s
        import boto3.session

        self._session: Any = session or boto3.session.Session(region_name=region)
        self._endpoint_url = endpoint_url
        self._config = client_config(timeout_s=timeout_s, max_attempts=max_attempts)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="aws")

    @property
    def region(self) -> str | None:
        region: str | None = self._session.region_name
        return region

    def client(self, service: str) -> Any:
        """The cached boto3 client of ``service``, instrumented for metrics."""
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = self._session.client(
                    service, endpoint_url=self._endpoint_url, config=self._config
                )
                events = client.meta.events
                events.register("after-call", functools.partial(self._after_call, service))
                events.register("needs-retry", functools.partial(self._needs_retry, service))
                self._clients[service] = client
            return client

    async def call(self, service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        """``client(service).<operation>(**params)`` in the pool, within the deadline.
        ``operation`` is the Python method name (``create_fleet``)."""
        method = getattr(self.client(service), operation)
        return await self.run(f"{service}.{operation}", method, **params)

    async def run(self, what: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a blocking AWS function (a call, a paginator walk) in the pool with the
        deadline and the error mapping of :meth:`call`. ``what`` names it in errors."""
        import botocore.exceptions

        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.wait_for(future, timeout=self.timeout_s * 2)
        except TimeoutError as exc:
            raise AdapterError(
                f"AWS {what} timed out after {self.timeout_s * 2:.0f} s", retryable=True
            ) from exc
        except botocore.exceptions.ClientError as exc:
            raise aws_error(what, exc) from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise AdapterError(
                f"AWS {what} failed: no AWS credentials found; give the process a role "
                "(instance profile, IRSA, ECS task role) or set AWS_PROFILE",
                retryable=False,
            ) from exc
        except botocore.exceptions.NoRegionError as exc:
            raise AdapterError(
                f"AWS {what} failed: no region; set AWS_REGION", retryable=False
            ) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise AdapterError(f"AWS {what} failed: {exc}", retryable=True) from exc

    def require_region(self) -> AwsCaller:
        """This caller, or ``ConfigError`` saying how to set a region when boto3 found
        none (it does not ask the instance metadata for one)."""
        if not self.region:
            raise ConfigError(
                [
                    "no AWS region: set AWS_REGION (e.g. AWS_REGION=eu-west-1), or name a "
                    "profile with a region in AWS_PROFILE"
                ]
            )
        return self

    def close(self) -> None:
        """Stop the thread pool (calls in flight finish)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- instrumentation (botocore event handlers, run in the pool's threads) ----------

    def _after_call(self, service: str, model: Any = None, **_: Any) -> None:
        if self.metrics is not None and model is not None:
            self.metrics.increment(
                "aws_api_calls", labels={"service": service, "operation": model.name}
            )

    def _needs_retry(
        self,
        service: str,
        response: tuple[Any, Mapping[str, Any]] | None = None,
        operation: Any = None,
        **_: Any,
    ) -> None:
        if self.metrics is None or response is None:
            return
        code = str(response[1].get("Error", {}).get("Code", ""))
        if code in THROTTLING_CODES:
            name = getattr(operation, "name", "?")
            self.metrics.increment("aws_throttled", labels={"service": service, "operation": name})


def aws_error(what: str, exc: botocore.exceptions.ClientError) -> AdapterError:
    """An ``AdapterError`` naming the call and the AWS error code and message; the
    ``ClientError`` stays its ``__cause__`` (``error_code(err.__cause__)``)."""
    code = error_code(exc) or "Unknown"
    message = str(exc.response.get("Error", {}).get("Message", "")).strip()
    text = f"AWS {what} failed: {code}" + (f": {message}" if message else "")
    return AdapterError(text, retryable=code in TRANSIENT_CODES)


_SHARED: dict[tuple[int, int], tuple[object, object, AwsCaller]] = {}
_SHARED_LOCK = threading.Lock()


def shared_caller(context: AdapterContext) -> AwsCaller:
    """The one :class:`AwsCaller` of a deployment: the AWS adapters built from the same
    settings and metrics sink share its clients and thread pool. (The metrics sink's
    own factory sees a different sink, so its calls are not counted into itself.)"""
    from runs_fleet_aws.plugin import TIMEOUT

    key = (id(context.settings), id(context.metrics))
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is None or entry[0] is not context.settings or entry[1] is not context.metrics:
            timeout_s = float(context.settings.get(TIMEOUT, DEFAULT_TIMEOUT_S))
            caller = AwsCaller(metrics=context.metrics, timeout_s=timeout_s).require_region()
            entry = (context.settings, context.metrics, caller)
            _SHARED[key] = entry
        return entry[2]
