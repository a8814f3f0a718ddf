"""Watches: newline-delimited JSON events streamed to the client, replayed from the
store's bounded history when the client resumes from a ``resourceVersion``.

As in Kubernetes' watch cache, a label or field selector is applied to both sides of a
change: an object that starts to match arrives as ``ADDED`` and one that stops matching
as ``DELETED``, which is how a pool sees a pod leave it when its labels change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tests.kube_api.errors import gone
from tests.kube_api.resources import ResourceType
from tests.kube_api.store import Event, Obj, Store, namespace_of


class Watch:
    """One client's watch: the events it should see, queued as JSON lines for the
    event loop that streams them (``None`` ends the stream)."""

    def __init__(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: Callable[[Mapping[str, str]], bool],
        fields: Callable[[Mapping[str, Any]], bool],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.rt = rt
        self.namespace = namespace
        self._labels = labels
        self._fields = fields
        self.loop = loop
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and namespace_of(obj) != self.namespace:
            return False
        return self._labels(obj["metadata"].get("labels") or {}) and self._fields(obj)

    def translate(self, event: Event) -> str | None:
        """The JSON line this watch gets for ``event``, if any."""
        if event.plural != self.rt.plural:
            return None
        if event.type == "ADDED":
            kind = "ADDED" if self.matches(event.obj) else None
        elif event.type == "DELETED":
            kind = "DELETED" if self.matches(event.obj) else None
        else:
            was, now = self.matches(event.old), self.matches(event.obj)
            kind = {(True, True): "MODIFIED", (False, True): "ADDED", (True, False): "DELETED"}.get(
                (was, now)
            )
        return line(kind, event.obj) if kind else None

    def push(self, text: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the server's loop has stopped
            self.loop.call_soon_threadsafe(self.queue.put_nowait, text)


def line(kind: str, obj: Obj) -> str:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n"


def bookmark(rt: ResourceType, rv: int, *, initial_events_end: bool = False) -> str:
    meta: Obj = {"resourceVersion": str(rv)}
    if initial_events_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return line("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta})


class Watches:
    """The open watches of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._open: set[Watch] = set()
        store.listeners.append(self._on_event)

    def _on_event(self, event: Event) -> None:
        with self._lock:
            watches = list(self._open)
        for watch in watches:
            text = watch.translate(event)
            if text is not None:
                watch.push(text)

    def open(
        self, watch: Watch, resource_version: str | None, *, send_initial: bool | None = None
    ) -> list[str]:
        """Start ``watch``; the lines to send first: the matching objects as ``ADDED``
        when no version is given (or ``0``), else the events after that version. A
        version older than the history answers 410 ``Expired``."""
        store = self.store
        with store.lock:
            if not resource_version or resource_version == "0" or send_initial:
                first = [
                    line("ADDED", obj)
                    for obj in store.items(watch.rt, watch.namespace)
                    if watch.matches(obj)
                ]
            else:
                try:
                    since = int(resource_version)
                except ValueError:
                    raise gone(f"invalid resource version: {resource_version}") from None
                if since < store.compacted_rv:
                    raise gone(f"too old resource version: {since} ({store.compacted_rv + 1})")
                first = [
                    text
                    for event in store.history
                    if event.rv > since and (text := watch.translate(event)) is not None
                ]
            with self._lock:
                self._open.add(watch)
        return first

    def close(self, watch: Watch) -> None:
        with self._lock:
            self._open.discard(watch)

    def close_all(self) -> None:
        """End every open watch (the client sees its stream finish)."""
        with self._lock:
            watches, self._open = list(self._open), set()
        for watch in watches:
            watch.push(None)
