"""Kubernetes API calls from async code: off the event loop, bounded, timed out, retried
when the API server asks for it, and mapped to runs-fleet errors.

The official client blocks, so every call runs in a small thread pool. A failure becomes
:class:`KubeApiError` (an :class:`~runs_fleet_core.errors.AdapterError`) whose message
carries the HTTP status, the Kubernetes ``reason`` (``Forbidden``, ``AlreadyExists``,
``Conflict``, ``Invalid`` …) and the API server's own message, so an RBAC denial or a
quota rejection reaches job records and logs in the words ``kubectl`` would use, never
as a traceback. Calls are counted as the ``k8s_api_calls`` metric, by operation only.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from runs_fleet_core.errors import AdapterError, ConfigError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports import Metrics
from runs_fleet_core.settings import Kind, Setting

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
MAX_WORKERS = 16
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Statuses after which the same request may succeed: throttling (``429`` with
``Retry-After``, API priority and fairness) and an API server restarting or overloaded."""

KUBECONFIG = Setting(
    name="RUNS_FLEET_KUBECONFIG",
    help="kubeconfig file to reach the cluster with (default: the in-cluster service "
    "account when running in a pod, else $KUBECONFIG or ~/.kube/config)",
    kind=Kind.PATH,
)
KUBE_CONTEXT = Setting(
    name="RUNS_FLEET_KUBE_CONTEXT",
    help="kubeconfig context to use (default: the file's current context)",
)
KUBE_TIMEOUT = Setting(
    name="RUNS_FLEET_KUBE_TIMEOUT_S",
    help="seconds one Kubernetes API request may take before it is abandoned",
    kind=Kind.FLOAT,
    default=DEFAULT_TIMEOUT_S,
    minimum=1,
)
SETTINGS: tuple[Setting, ...] = (KUBECONFIG, KUBE_CONTEXT, KUBE_TIMEOUT)


class KubeApiError(AdapterError):
    """A Kubernetes API request failed. ``status`` is the HTTP status (0 when the API
    server was not reached) and ``reason`` the ``Status`` object's reason."""

    def __init__(self, message: str, *, status: int, reason: str, retryable: bool) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def conflict(self) -> bool:
        """A write with a stale ``resourceVersion`` (re-read and decide again)."""
        return self.status == 409 and self.reason != "AlreadyExists"


def _status_body(body: object) -> tuple[str, str]:
    """``(reason, message)`` of a ``Status`` response body (``("", "")`` otherwise)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        return "", ""
    try:
        status = json.loads(body)
    except ValueError:
        return "", body.strip()[:300]
    if not isinstance(status, dict):
        return "", ""
    return str(status.get("reason", "")), str(status.get("message", "")).strip()


def api_error(what: str, exc: Exception) -> KubeApiError:
    """The :class:`KubeApiError` for an ``ApiException`` (or a transport failure)."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        reason, message = _status_body(exc.body)
        reason = reason or str(exc.reason or "")
        quota = status == 403 and "exceeded quota" in message
        text = f"Kubernetes {what} failed: {status} {reason}".rstrip()
        if message:
            text += f": {message}"
        if status == 403 and not quota:
            text += (
                " (grant the orchestrator's service account this permission; see the Helm "
                "chart's RBAC)"
            )
        retryable = status in RETRY_STATUSES or quota or status == 0
        return KubeApiError(text, status=status, reason=reason, retryable=retryable)
    return KubeApiError(
        f"Kubernetes {what} failed: API server unreachable: {type(exc).__name__}: {exc}",
        status=0,
        reason="Unreachable",
        retryable=True,
    )


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(exc, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def load_api_client(
    *, kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None
) -> Any:
    """An ``ApiClient`` for the cluster: ``kubeconfig`` when given, the pod's service
    account inside a cluster, else ``$KUBECONFIG`` or ``~/.kube/config``. Raises
    ``ConfigError`` saying how to point runs-fleet at a cluster when none is found."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            path = kubeconfig or os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config"
            if not Path(path).is_file():
                raise ConfigError(
                    [
                        f"no kubeconfig at {path}: set RUNS_FLEET_KUBECONFIG to a kubeconfig "
                        "file, or run the orchestrator in the cluster (in-cluster service "
                        "account)"
                    ]
                )
            config.load_kube_config(
                config_file=str(path), context=context, client_configuration=configuration
            )
    except config.ConfigException as exc:
        raise ConfigError([f"cannot load the Kubernetes client configuration: {exc}"]) from exc
    return client.ApiClient(configuration)


class KubeCaller:
    """The API groups runs-fleet uses, and :meth:`call` to run one request of theirs.

    One caller per deployment (adapters share its connection pool and threads); tests
    build one per fake API server. ``namespace`` is where every runs-fleet object lives.
    """

    def __init__(
        self,
        api_client: Any,
        *,
        namespace: str,
        metrics: Metrics | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_attempts: int = 4,
        rng: random.Random | None = None,
    ) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.namespace = namespace
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self._rng = rng or random.Random()  # noqa: S311 (backoff jitter)
        self._executor = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="k8s")
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.authentication = client.AuthenticationV1Api(api_client)
        self.scheduling = client.SchedulingV1Api(api_client)

    async def call(
        self, fn: Callable[..., T], /, *args: Any, retry: bool = True, **kwargs: Any
    ) -> T:
        """``fn(*args, **kwargs)`` (a method of one of the API objects above) in the pool,
        with the request timeout; retried with backoff on 429/5xx and transport errors
        when ``retry`` (leave it on for requests that are safe to repeat: every read,
        and writes keyed by name or ``resourceVersion``)."""
        operation = getattr(fn, "__name__", "call")
        kwargs.setdefault("_request_timeout", self.timeout_s)
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            self._count("k8s_api_calls", operation)
            future = loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
            try:
                return await asyncio.wait_for(future, timeout=self.timeout_s + 5)
            except TimeoutError as exc:
                error = KubeApiError(
                    f"Kubernetes {operation} timed out after {self.timeout_s:.0f} s",
                    status=0,
                    reason="Timeout",
                    retryable=True,
                )
                cause: Exception = exc
            except Exception as exc:  # ApiException, urllib3 transport errors
                if not _is_api_failure(exc):
                    raise
                error = api_error(operation, exc)
                cause = exc
            if error.status == 429:
                self._count("k8s_api_throttled", operation)
            if not (retry and error.retryable and attempt < self.max_attempts):
                raise error from cause
            delay = self._rng.uniform(0, min(8.0, 0.2 * 2**attempt))
            await asyncio.sleep(max(delay, _retry_after(cause) or 0.0))

    def _count(self, name: str, operation: str) -> None:
        if self.metrics is not None:
            self.metrics.increment(name, labels={"operation": operation})

    def close(self) -> None:
        """Stop the thread pool and the client's connection pool."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()


def _is_api_failure(exc: Exception) -> bool:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    return isinstance(exc, ApiException | HTTPError | OSError)


_SHARED: dict[tuple[int, int], tuple[object, object, KubeCaller]] = {}
_SHARED_LOCK = threading.Lock()
NAMESPACE_SETTING = "RUNS_FLEET_KUBE_NAMESPACE"


def shared_caller(context: AdapterContext) -> KubeCaller:
    """The one :class:`KubeCaller` of a deployment (its adapters share it)."""
    key = (id(context.settings), id(context.metrics))
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is None or entry[0] is not context.settings or entry[1] is not context.metrics:
            kubeconfig = context.settings.get(KUBECONFIG.name, None)
            api_client = load_api_client(
                kubeconfig=kubeconfig, context=context.settings.get(KUBE_CONTEXT.name, None)
            )
            caller = KubeCaller(
                api_client,
                namespace=str(context.settings.get(NAMESPACE_SETTING, "default")),
                metrics=context.metrics,
                timeout_s=float(context.settings.get(KUBE_TIMEOUT.name, DEFAULT_TIMEOUT_S)),
            )
            entry = (context.settings, context.metrics, caller)
            _SHARED[key] = entry
        return entry[2]
