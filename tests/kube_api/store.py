"""The fake cluster's storage: objects, one global ``resourceVersion`` counter, the event
history watches replay from, and cascading deletion through ``ownerReferences``.

Like etcd behind a real API server, every write gets the next resource version and
becomes an event; watches, the controllers and the test's assertions all read the same
store, so what a watch reports is what a ``get`` returns. Writes happen inside a
*transaction* (a re-entrant lock): the controllers react to a write before the request
that made it returns, and callbacks into the test (``on_pod_created``) run once the lock
is released, so they may call the API server themselves.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs

from tests.kube_api import errors
from tests.kube_api.resources import BY_PLURAL, NAMESPACES, ResourceType

Obj = dict[str, Any]
DEFAULT_HISTORY = 5000
SETTLE_ROUNDS = 1000


class Clock:
    """Wall-clock time plus whatever the test skipped with :meth:`advance`."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.offset)

    def timestamp(self) -> str:
        return format_time(self.now())

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@attrs.frozen
class Event:
    rv: int
    type: str
    plural: str
    obj: Obj
    old: Obj | None


class Controller(Protocol):
    def observe(self, event: Event) -> None:
        """Note an event (cheaply); the work happens in :meth:`settle`."""

    def settle(self) -> bool:
        """Do the work noted so far; ``True`` if anything was written."""


def namespace_of(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("namespace") or "")


def name_of(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


class Store:
    """Objects by resource, namespace and name. Stored dicts are never changed in
    place: every write stores a new dict, so history and watchers can share them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.history_limit = DEFAULT_HISTORY
        self.controllers: list[Controller] = []
        self.controllers_enabled = True
        self.listeners: list[Callable[[Event], None]] = []
        self._rv = 0
        self._depth = 0
        self._deferred: list[Callable[[], None]] = []
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self._objects: dict[str, dict[tuple[str, str], Obj]] = {p: {} for p in BY_PLURAL}
            self._uids: dict[str, tuple[str, str, str]] = {}
            self._owned: dict[str, set[tuple[str, str, str]]] = {}
            self._sequence: dict[str, int] = {}
            self.history: deque[Event] = deque()
            self.compacted_rv = self._rv

    # -- transactions -------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the store; on leaving the outermost one, let the controllers react,
        then (lock released) run deferred callbacks."""
        deferred: list[Callable[[], None]] = []
        with self.lock:
            self._depth += 1
            try:
                yield
                if self._depth == 1:
                    self._settle()
            finally:
                self._depth -= 1
                if self._depth == 0:
                    deferred, self._deferred = self._deferred, []
        for callback in deferred:
            callback()

    def defer(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the current transaction ends, outside the lock."""
        self._deferred.append(callback)

    def _settle(self) -> None:
        for _ in range(SETTLE_ROUNDS):
            if not self.controllers_enabled:
                return
            worked = [controller.settle() for controller in self.controllers]
            if not any(worked):
                return
        raise RuntimeError("the fake cluster's controllers did not settle")

    # -- reads --------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        obj = self._objects[rt.plural].get((namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def peek(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        """The stored object itself (read only), for hot paths that copy nothing."""
        return self._objects[rt.plural].get((namespace or "", name))

    def items(self, rt: ResourceType, namespace: str | None = None) -> list[Obj]:
        """Stored objects (read only) in etcd key order: namespace, then name."""
        with self.lock:
            found = [
                obj
                for (ns, _), obj in self._objects[rt.plural].items()
                if namespace is None or ns == namespace
            ]
        return sorted(found, key=lambda obj: (namespace_of(obj), name_of(obj)))

    def by_uid(self, uid: str) -> tuple[ResourceType, Obj] | None:
        location = self._uids.get(uid)
        if location is None:
            return None
        plural, namespace, name = location
        rt = BY_PLURAL[plural]
        obj = self.peek(rt, namespace, name)
        return (rt, obj) if obj is not None else None

    def creation_order(self, obj: Obj) -> int:
        """When ``obj`` was created, finer than its one-second ``creationTimestamp``."""
        return self._sequence.get(str(obj["metadata"].get("uid")), 0)

    def dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        """The objects (read only) with an ownerReference to ``uid``."""
        found = []
        for plural, namespace, name in sorted(self._owned.get(uid, ())):
            obj = self.peek(BY_PLURAL[plural], namespace, name)
            if obj is not None:
                found.append((BY_PLURAL[plural], obj))
        return found

    def _index_owners(self, plural: str, obj: Obj, *, add: bool) -> None:
        key = (plural, namespace_of(obj), name_of(obj))
        for ref in obj["metadata"].get("ownerReferences") or []:
            uid = str(ref.get("uid"))
            if add:
                self._owned.setdefault(uid, set()).add(key)
            elif uid in self._owned:
                self._owned[uid].discard(key)
                if not self._owned[uid]:
                    del self._owned[uid]

    # -- writes -------------------------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, event: Event) -> None:
        self.history.append(event)
        while len(self.history) > self.history_limit:
            self.compacted_rv = self.history.popleft().rv
        for listener in list(self.listeners):
            listener(event)
        if self.controllers_enabled:
            for controller in self.controllers:
                controller.observe(event)

    def add(self, rt: ResourceType, obj: Obj) -> Obj:
        """Store a new object (its metadata already complete but for the version)."""
        with self.transaction():
            key = (namespace_of(obj), name_of(obj))
            if key in self._objects[rt.plural]:
                raise errors.already_exists(rt, key[1])
            stored = copy.deepcopy(obj)
            rv = self._next_rv()
            stored["metadata"]["resourceVersion"] = str(rv)
            self._objects[rt.plural][key] = stored
            uid = str(stored["metadata"]["uid"])
            self._uids[uid] = (rt.plural, key[0], key[1])
            self._index_owners(rt.plural, stored, add=True)
            self._sequence[uid] = rv
            self._record(Event(rv, "ADDED", rt.plural, stored, None))
            return copy.deepcopy(stored)

    def put(self, rt: ResourceType, obj: Obj) -> Obj:
        """Replace a stored object; an unchanged object keeps its version and makes no
        event, as in Kubernetes. An object being deleted whose last finalizer is gone
        is removed."""
        with self.transaction():
            key = (namespace_of(obj), name_of(obj))
            old = self._objects[rt.plural].get(key)
            if old is None:
                raise errors.not_found(rt, key[1])
            stored = copy.deepcopy(obj)
            stored["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if stored == old:
                return copy.deepcopy(old)
            rv = self._next_rv()
            stored["metadata"]["resourceVersion"] = str(rv)
            self._objects[rt.plural][key] = stored
            self._index_owners(rt.plural, old, add=False)
            self._index_owners(rt.plural, stored, add=True)
            self._record(Event(rv, "MODIFIED", rt.plural, stored, old))
            meta = stored["metadata"]
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                return self._cascade(rt, stored, "Background")
            return copy.deepcopy(stored)

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        key = (namespace_of(obj), name_of(obj))
        old = self._objects[rt.plural].pop(key)
        uid = str(old["metadata"]["uid"])
        self._uids.pop(uid, None)
        self._index_owners(rt.plural, old, add=False)
        self._sequence.pop(uid, None)
        rv = self._next_rv()
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(rv)
        self._record(Event(rv, "DELETED", rt.plural, gone, old))
        return copy.deepcopy(gone)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        preconditions: Obj | None = None,
    ) -> tuple[Obj, bool]:
        """Delete an object, its dependents as ``propagation`` says (default: Orphan for
        batch/v1 Jobs, as Kubernetes keeps for compatibility; Background otherwise).
        Returns the object and whether it is gone (``False``: finalizers hold it)."""
        with self.transaction():
            obj = self.peek(rt, namespace, name)
            if obj is None:
                raise errors.not_found(rt, name)
            _check_preconditions(rt, obj, preconditions or {})
            policy = propagation or ("Orphan" if rt.plural == "jobs" else "Background")
            meta = obj["metadata"]
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return copy.deepcopy(obj), False
                pending = copy.deepcopy(obj)
                pending["metadata"]["deletionTimestamp"] = self.clock.timestamp()
                pending["metadata"]["deletionGracePeriodSeconds"] = 0
                return self.put(rt, pending), False
            return self._cascade(rt, obj, policy), True

    def _cascade(self, rt: ResourceType, obj: Obj, policy: str) -> Obj:
        uid = str(obj["metadata"]["uid"])
        if rt is NAMESPACES:
            for plural, objects in self._objects.items():
                inside = [o for (ns, _), o in objects.items() if ns == name_of(obj)]
                for member in inside:
                    if self.peek(BY_PLURAL[plural], name_of(obj), name_of(member)) is not None:
                        self._cascade(BY_PLURAL[plural], member, "Background")
        if policy == "Orphan":
            for dep_rt, dependent in self.dependents(uid):
                orphan = copy.deepcopy(dependent)
                refs = [r for r in orphan["metadata"]["ownerReferences"] if r.get("uid") != uid]
                if refs:
                    orphan["metadata"]["ownerReferences"] = refs
                else:
                    del orphan["metadata"]["ownerReferences"]
                self.put(dep_rt, orphan)
            return self._remove(rt, obj)
        dependents = self.dependents(uid)
        gone = self._remove(rt, obj) if policy == "Background" else None
        for dep_rt, dependent in dependents:
            current = self.peek(dep_rt, namespace_of(dependent), name_of(dependent))
            if current is None:
                continue
            refs = [r for r in current["metadata"]["ownerReferences"] if r.get("uid") != uid]
            if any(self.by_uid(str(r.get("uid"))) is not None for r in refs):
                kept = copy.deepcopy(current)
                kept["metadata"]["ownerReferences"] = refs
                self.put(dep_rt, kept)
            else:
                self._cascade(dep_rt, current, policy)
        return gone if gone is not None else self._remove(rt, obj)

    def new_uid(self) -> str:
        return str(uuid.uuid4())


def _check_preconditions(rt: ResourceType, obj: Obj, preconditions: Obj) -> None:
    meta = obj["metadata"]
    uid = preconditions.get("uid")
    if uid and uid != meta.get("uid"):
        raise errors.conflict(
            rt,
            name_of(obj),
            f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
            f"{meta.get('uid')}",
        )
    rv = preconditions.get("resourceVersion")
    if rv and rv != meta.get("resourceVersion"):
        raise errors.conflict(
            rt,
            name_of(obj),
            f"Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in "
            f"object meta: {meta.get('resourceVersion')}",
        )
