"""The HTTP side: Kubernetes REST paths mapped to verbs, authentication, injected faults
and RBAC denials, JSON responses, and watches streamed as newline-delimited events.

Requests are handled in worker threads (the store is shared with the test's thread, and
a test callback may call the API back while a request is in flight); only watch streams
live on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import attrs
import yaml  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.kube_api import errors
from tests.kube_api.errors import ApiError
from tests.kube_api.resources import (
    ALL,
    DEPLOYMENTS,
    SERVICEACCOUNTS,
    TOKENREVIEWS,
    ResourceType,
    lookup,
)
from tests.kube_api.selectors import parse_field_selector, parse_label_selector
from tests.kube_api.validation import KUBERNETES_VERSION
from tests.kube_api.watching import Watch, bookmark, line

if TYPE_CHECKING:
    from tests.kube_api.server import FakeKubeServer

DEFAULT_WATCH_TIMEOUT_S = 1800.0


@attrs.frozen
class Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    verb: str

    @property
    def resource(self) -> str:
        """``jobs`` or ``deployments/scale``: the resource as RBAC names it."""
        return f"{self.rt.plural}/{self.subresource}" if self.subresource else self.rt.plural


_OBJECT_VERBS = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _verb(method: str, collection: bool, watch: bool, subresource: str | None) -> str:
    if subresource == "token":
        if method == "POST":
            return "create"
        raise errors.method_not_allowed()
    if collection:
        verbs = {
            "GET": "watch" if watch else "list",
            "POST": "create",
            "DELETE": "deletecollection",
        }
    else:
        verbs = dict(_OBJECT_VERBS)
        if subresource:
            verbs.pop("DELETE")
    if method not in verbs:
        raise errors.method_not_allowed()
    return verbs[method]


def route(method: str, path: str, watch: bool) -> Target:
    """What ``method path`` asks for (404 for a path Kubernetes does not serve)."""
    parts = [part for part in path.split("/") if part]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise errors.path_not_found()
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces" and lookup(group, version, rest[2]) is not None:
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise errors.path_not_found()
    rt = lookup(group, version, rest[0])
    if rt is None or (namespace is not None and not rt.namespaced):
        raise errors.path_not_found()
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if name is not None and rt.namespaced and namespace is None:
        raise errors.path_not_found()
    if subresource is not None:
        allowed = (
            (subresource == "status" and rt.has_status)
            or (subresource == "scale" and rt is DEPLOYMENTS)
            or (subresource == "token" and rt is SERVICEACCOUNTS)
        )
        if not allowed:
            raise errors.path_not_found()
    collection = name is None
    if collection and method == "POST" and rt.namespaced and namespace is None:
        raise errors.method_not_allowed()
    if rt is TOKENREVIEWS and not (collection and method == "POST"):
        raise errors.method_not_allowed()
    return Target(rt, namespace, name, subresource, _verb(method, collection, watch, subresource))


def _parse_body(raw: bytes, content_type: str) -> Any:
    """JSON, or YAML for server-side apply (whose bodies may be either)."""
    if not raw:
        return None
    try:
        if "yaml" in content_type:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise errors.bad_request(f"the body of the request could not be decoded: {exc}") from None


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def _create(server: FakeKubeServer, target: Target, body: Any, dry_run: bool) -> Any:
    if target.rt is TOKENREVIEWS:
        return server.auth.token_review(target.rt, body)
    if target.subresource == "token":
        return server.auth.token_request(str(target.namespace), str(target.name), body)
    return server.verbs.create(target.rt, target.namespace, body, dry_run=dry_run)


def _collection(server: FakeKubeServer, target: Target, body: Any, query: dict[str, str]) -> Any:
    selectors = {
        "label_selector": query.get("labelSelector"),
        "field_selector": query.get("fieldSelector"),
    }
    if target.verb == "list":
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
        return server.verbs.list(
            target.rt,
            target.namespace,
            limit=limit,
            continue_token=query.get("continue"),
            **selectors,
        )
    options = _delete_options(body, query)
    return server.verbs.delete_collection(target.rt, target.namespace, options, **selectors)


def _delete_options(body: Any, query: dict[str, str]) -> dict[str, Any]:
    options = dict(body) if isinstance(body, dict) else {}
    for key in ("propagationPolicy", "gracePeriodSeconds"):
        if key in query:
            options[key] = query[key]
    return options


def handle(
    server: FakeKubeServer, target: Target, body: Any, query: dict[str, str], content_type: str
) -> tuple[int, Any]:
    """Carry out a (non-watch) request: ``(HTTP status, JSON body)``."""
    verbs, rt, ns, verb = server.verbs, target.rt, target.namespace, target.verb
    dry_run = query.get("dryRun") == "All"
    if verb == "create":
        return 201, _create(server, target, body, dry_run)
    if verb in ("list", "deletecollection"):
        return 200, _collection(server, target, body, query)
    name = str(target.name)
    if target.subresource == "scale":
        if verb == "get":
            return 200, server.scaling.get(ns, name)
        if verb == "update":
            return 200, server.scaling.replace(ns, name, body, dry_run=dry_run)
        return 200, server.scaling.patch(ns, name, content_type, body, dry_run=dry_run)
    status = target.subresource == "status"
    if verb == "get":
        return 200, verbs.get(rt, ns, name)
    if verb == "update":
        return 200, verbs.replace(rt, ns, name, body, status=status, dry_run=dry_run)
    if verb == "patch":
        return 200, verbs.patch(
            rt,
            ns,
            name,
            content_type,
            body,
            status=status,
            dry_run=dry_run,
            field_manager=query.get("fieldManager"),
        )
    return verbs.delete(rt, ns, name, _delete_options(body, query), dry_run=dry_run)


def _error_response(exc: ApiError) -> Response:
    headers = dict(exc.headers)
    return JSONResponse(exc.status(), status_code=exc.code, headers=headers)


async def _watch(server: FakeKubeServer, target: Target, query: dict[str, str]) -> Response:
    labels = parse_label_selector(query.get("labelSelector"))
    fields = parse_field_selector(query.get("fieldSelector"), target.rt.plural)
    try:
        timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_S)
    except ValueError:
        raise errors.bad_request(f"invalid timeoutSeconds: {query['timeoutSeconds']}") from None
    bookmarks = _truthy(query.get("allowWatchBookmarks"))
    send_initial = _truthy(query.get("sendInitialEvents"))
    loop = asyncio.get_running_loop()
    watch = Watch(target.rt, target.namespace, labels, fields, loop)
    try:
        first = server.watches.open(watch, query.get("resourceVersion"), send_initial=send_initial)
    except ApiError as exc:
        return Response(line("ERROR", exc.status()), media_type="application/json")
    if send_initial and bookmarks:
        first.append(bookmark(target.rt, server.store.resource_version, initial_events_end=True))

    async def stream() -> Any:
        try:
            for text in first:
                yield text
            deadline = loop.time() + timeout
            while (remaining := deadline - loop.time()) > 0:
                try:
                    event = await asyncio.wait_for(watch.queue.get(), remaining)
                except TimeoutError:
                    break
                if event is None:
                    return
                yield event
            if bookmarks:
                yield bookmark(target.rt, server.store.resource_version)
        finally:
            server.watches.close(watch)

    return StreamingResponse(stream(), media_type="application/json")


def build_app(server: FakeKubeServer) -> Starlette:
    """The Starlette application serving ``server``."""

    async def version(request: Request) -> Response:
        major, minor, _ = KUBERNETES_VERSION.split(".")
        return JSONResponse(
            {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{KUBERNETES_VERSION}",
                "platform": "linux/amd64",
            }
        )

    async def api_versions(request: Request) -> Response:
        return JSONResponse({"kind": "APIVersions", "versions": ["v1"]})

    async def api_groups(request: Request) -> Response:
        groups = sorted({rt.group for rt in ALL if rt.group})
        return JSONResponse(
            {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [{"groupVersion": f"{group}/v1", "version": "v1"}],
                        "preferredVersion": {"groupVersion": f"{group}/v1", "version": "v1"},
                    }
                    for group in groups
                ],
            }
        )

    async def resources(request: Request) -> Response:
        query = dict(request.query_params)
        try:
            target = route(request.method, request.url.path, _truthy(query.get("watch")))
        except ApiError as exc:
            server.record(request.method, request.url.path, "", "")
            return _error_response(exc)
        server.record(request.method, request.url.path, target.verb, target.resource)
        try:
            identity = server.auth.authenticate(request.headers.get("authorization"))
            server.check_faults(target.verb, target.resource, target.namespace)
            server.auth.authorize(
                identity, target.verb, target.rt, target.resource, target.namespace, target.name
            )
            if target.verb == "watch":
                return await _watch(server, target, query)
            content_type = request.headers.get("content-type", "application/json")
            body = _parse_body(await request.body(), content_type)
            code, payload = await anyio.to_thread.run_sync(
                functools.partial(handle, server, target, body, query, content_type)
            )
        except ApiError as exc:
            return _error_response(exc)
        except ClientDisconnect:
            # the client went away before its whole body came (a killed process, a reset
            # connection): nothing was applied and nobody reads an answer
            return Response(status_code=400)
        except Exception as exc:
            # A bug in the fake, not an answer Kubernetes would give: keep it for the
            # fixture to report, and answer 500 as a broken API server would.
            server.internal_errors.append(exc)
            error = ApiError(500, "InternalError", f"Internal error occurred: {exc!r}")
            return _error_response(error)
        return JSONResponse(payload, status_code=code)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            Route("/version", version, methods=["GET"]),
            Route("/api", api_versions, methods=["GET"]),
            Route("/apis", api_groups, methods=["GET"]),
            Route("/{path:path}", resources, methods=methods),
        ]
    )
