"""The fake API server as a test sees it: started once on 127.0.0.1, reset between tests,
and steered from the test (faults, RBAC denials, pod phases, time) while the code under
test talks to it over HTTP with the official client."""

from __future__ import annotations

import copy
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
import uvicorn

from tests.kube_api.app import build_app
from tests.kube_api.auth import Auth
from tests.kube_api.controllers import GarbageCollector, Kubelet
from tests.kube_api.deployments import DeploymentController
from tests.kube_api.errors import ApiError
from tests.kube_api.jobs import JobController
from tests.kube_api.resources import NAMESPACES, SERVICEACCOUNTS
from tests.kube_api.resources import resource as resource_type
from tests.kube_api.scaling import Scaling
from tests.kube_api.store import DEFAULT_HISTORY, Clock, Obj, Store
from tests.kube_api.verbs import InvalidBody, Verbs
from tests.kube_api.watching import Watches

DEFAULT_NAMESPACES = ("default", "runs-fleet")
TICK_S = 0.1
_DEFAULT_REASONS = {
    400: ("BadRequest", "the request is invalid"),
    403: ("Forbidden", "the request is forbidden"),
    404: ("NotFound", "the server could not find the requested resource"),
    409: (
        "Conflict",
        "the object has been modified; please apply your changes to the latest version and "
        "try again",
    ),
    410: ("Expired", "the resource version is too old"),
    422: ("Invalid", "the request is invalid"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: the server is failing this request"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted"),
}


class RequestRecord(NamedTuple):
    method: str
    path: str
    verb: str
    resource: str


@attrs.define
class Fault:
    verb: str
    resource: str
    namespace: str | None
    error: ApiError
    times: int


class FakeKubeServer:
    """Control of the fake API server (see the package docs for its semantics).

    For assertions: ``requests`` and ``request_count()``, ``invalid_bodies``,
    ``objects()``/``get()``, ``controller_errors`` (pods a controller could not create).
    To steer it: ``fail_next()``, ``forbid()``, ``set_pod_phase()``, ``advance()``,
    ``on_pod_created``/``on_pod_deleted``, ``controllers_enabled``, ``history_limit``,
    ``create()`` (as a cluster administrator, unrecorded), ``reset()``.
    """

    def __init__(self) -> None:
        self.admin_token = f"admin-{secrets.token_hex(16)}"
        self.clock = Clock()
        self.store = Store(self.clock)
        self.verbs = Verbs(self.store)
        self.scaling = Scaling(self.verbs)
        self.auth = Auth(self.store, self.admin_token)
        self.watches = Watches(self.store)
        self.controller_errors: list[str] = []
        self.kubelet = Kubelet(self.store)
        self.jobs = JobController(self.store, self.verbs, self.controller_errors)
        self.deployments = DeploymentController(self.store, self.verbs, self.controller_errors)
        self.collector = GarbageCollector(self.store)
        self.store.controllers = [self.jobs, self.deployments, self.collector]
        self.requests: list[RequestRecord] = []
        self.internal_errors: list[BaseException] = []
        self._faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self.url = ""
        self._uvicorn: uvicorn.Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.reset()

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        sock = socket.socket()
        # Accepted connections inherit this; without it every response waits out the
        # client's delayed ACK (about 40 ms a request).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            build_app(self), log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self._uvicorn = uvicorn.Server(config)
        serve = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [sock]}, name="fake-kube-api", daemon=True
        )
        ticker = threading.Thread(target=self._tick, name="fake-kube-clock", daemon=True)
        self._threads = [serve, ticker]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 10
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not serve.is_alive():
                raise RuntimeError("the fake Kubernetes API server did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self._stopping.set()
        self.watches.close_all()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        for thread in self._threads:
            thread.join(timeout=5)

    def _tick(self) -> None:
        while not self._stopping.wait(TICK_S):
            self.sweep()

    def sweep(self) -> None:
        """Let time-driven controller work happen (finished Jobs' TTL)."""
        if self.store.controllers_enabled:
            with self.store.transaction():
                self.jobs.sweep()

    def reset(self) -> None:
        """Empty the cluster and forget every rule, fault, record and callback."""
        self.watches.close_all()
        with self.store.lock:
            self.store.clear()
            self.store.controllers_enabled = True
            self.store.history_limit = DEFAULT_HISTORY
            self.clock.offset = 0.0
            self.auth.reset()
            self.kubelet.reset()
            self.jobs.reset()
            self.deployments.reset()
            self.collector.reset()
            self.controller_errors.clear()
            with self._faults_lock:
                self._faults.clear()
            for name in DEFAULT_NAMESPACES:
                self.verbs.create(NAMESPACES, None, {"metadata": {"name": name}})
                self.verbs.create(SERVICEACCOUNTS, name, {"metadata": {"name": "default"}})
            self.requests.clear()
            self.internal_errors.clear()
            self.verbs.invalid_bodies.clear()

    # -- what requests see --------------------------------------------------------

    def record(self, method: str, path: str, verb: str, resource: str) -> None:
        self.requests.append(RequestRecord(method, path, verb, resource))

    def request_count(self, verb: str | None = None, resource: str | None = None) -> int:
        """Requests made since the reset, optionally only those of ``verb`` on
        ``resource`` (``jobs``, ``deployments/scale``…)."""
        return sum(
            1
            for record in self.requests
            if verb in (None, record.verb) and resource in (None, record.resource)
        )

    @property
    def invalid_bodies(self) -> list[InvalidBody]:
        return self.verbs.invalid_bodies

    def fail_next(
        self,
        verb: str,
        resource: str,
        *,
        status: int = 500,
        reason: str | None = None,
        message: str | None = None,
        times: int = 1,
        retry_after: float | None = None,
        namespace: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests of ``verb`` on ``resource`` (``*``
        matches any) with a failure ``Status`` (e.g. 403 ``exceeded quota``, 429 with
        ``Retry-After``, 500, 503)."""
        default_reason, default_message = _DEFAULT_REASONS.get(status, ("InternalError", "failure"))
        headers = {}
        details: Obj | None = None
        if retry_after is not None:
            headers["Retry-After"] = str(
                int(retry_after) if retry_after == int(retry_after) else retry_after
            )
            details = {"retryAfterSeconds": int(retry_after)}
        error = ApiError(
            status,
            reason or default_reason,
            message or default_message,
            details=details,
            headers=headers,
        )
        with self._faults_lock:
            self._faults.append(Fault(verb, resource, namespace, error, times))

    def check_faults(self, verb: str, resource: str, namespace: str | None) -> None:
        with self._faults_lock:
            for fault in self._faults:
                if fault.verb not in ("*", verb) or fault.resource not in ("*", resource):
                    continue
                if fault.namespace is not None and fault.namespace != namespace:
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                raise fault.error

    def forbid(self, verb: str, resource: str, namespace: str | None = None) -> None:
        """Deny ``verb`` on ``resource`` (in ``namespace``, or everywhere) with
        RBAC's 403."""
        self.auth.forbid(verb, resource, namespace)

    # -- the cluster, from the test's side ------------------------------------------

    @property
    def controllers_enabled(self) -> bool:
        return self.store.controllers_enabled

    @controllers_enabled.setter
    def controllers_enabled(self, enabled: bool) -> None:
        self.store.controllers_enabled = enabled

    @property
    def history_limit(self) -> int:
        """How many events watches can resume from (older versions get 410 Gone)."""
        return self.store.history_limit

    @history_limit.setter
    def history_limit(self, limit: int) -> None:
        self.store.history_limit = limit

    @property
    def callback_errors(self) -> list[BaseException]:
        """Exceptions raised by ``on_pod_created``/``on_pod_deleted`` callbacks."""
        return self.kubelet.callback_errors

    @property
    def on_pod_created(self) -> Callable[[Obj], Any] | None:
        return self.kubelet.on_pod_created

    @on_pod_created.setter
    def on_pod_created(self, callback: Callable[[Obj], Any] | None) -> None:
        self.kubelet.on_pod_created = callback

    @property
    def on_pod_deleted(self) -> Callable[[Obj], Any] | None:
        return self.kubelet.on_pod_deleted

    @on_pod_deleted.setter
    def on_pod_deleted(self, callback: Callable[[Obj], Any] | None) -> None:
        self.kubelet.on_pod_deleted = callback

    def set_pod_phase(
        self, namespace: str, name: str, phase: str, *, exit_code: int | None = None
    ) -> Obj:
        """What the kubelet would report for pod ``namespace/name`` in ``phase``."""
        return self.kubelet.set_pod_phase(namespace, name, phase, exit_code=exit_code)

    def advance(self, seconds: float) -> None:
        """Move the cluster's clock forward (token expiry, Jobs' TTL after finished)."""
        self.clock.advance(seconds)
        self.sweep()

    def objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """Copies of the stored objects of a resource, in key order."""
        return [copy.deepcopy(obj) for obj in self.store.items(resource_type(resource), namespace)]

    def get(self, resource: str, namespace: str | None, name: str) -> Obj | None:
        return self.store.get(resource_type(resource), namespace, name)

    def create(self, resource: str, body: Obj, namespace: str | None = None) -> Obj:
        """Create an object as a cluster administrator would (validated, no request
        recorded): a PriorityClass, a ServiceAccount the chart would have made…"""
        return self.verbs.create(resource_type(resource), namespace, body)
