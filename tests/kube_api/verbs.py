"""The API verbs on stored objects: create, get, list, update, patch, delete and
deletecollection, on the main resource and its ``/status`` subresource (``/scale`` is in
:mod:`tests.kube_api.scaling`).

This is where a body becomes an object: namespace and name checks, ``generateName``,
defaults, validation (every rejected body is kept in ``invalid_bodies``), optimistic
concurrency on ``resourceVersion``, ``generation``, and the rule that the main resource
and ``/status`` each change only their own half of an object. Controllers write through
the same verbs, so their pods are defaulted, validated and admitted like anyone's.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

import attrs

from tests.kube_api import defaults, errors, validation
from tests.kube_api.admission import admit_pod
from tests.kube_api.errors import ApiError
from tests.kube_api.paging import decode_continue, encode_continue
from tests.kube_api.patching import APPLY_PATCH, apply_patch
from tests.kube_api.resources import PODS, ResourceType
from tests.kube_api.selectors import parse_field_selector, parse_label_selector
from tests.kube_api.store import Obj, Store, name_of, namespace_of

SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
    "managedFields",
)
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix(length: int = 5) -> str:
    """The random tail Kubernetes gives generated names (no vowels, no look-alikes)."""
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(length))


@attrs.frozen
class InvalidBody:
    """A body the server refused as invalid: what was sent and everything wrong with it."""

    verb: str
    resource: str
    namespace: str | None
    name: str
    body: Any
    message: str


def _without_metadata_and_status(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


class Verbs:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.invalid_bodies: list[InvalidBody] = []

    # -- helpers ------------------------------------------------------------------

    def reject(
        self, verb: str, rt: ResourceType, ns: str | None, name: str, body: Any, exc: ApiError
    ) -> ApiError:
        if exc.code in (400, 422):
            self.invalid_bodies.append(
                InvalidBody(verb, rt.plural, ns, name, copy.deepcopy(body), exc.message)
            )
        return exc

    def _incoming(self, rt: ResourceType, ns: str | None, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body of a {rt.kind} request must be a JSON object")
        obj = copy.deepcopy(body)
        if obj.get("kind") not in (None, rt.kind):
            raise errors.bad_request(
                f"the kind of the object ({obj['kind']}) does not match the kind of the "
                f"resource ({rt.kind})"
            )
        if obj.get("apiVersion") not in (None, rt.api_version):
            raise errors.bad_request(
                f"the API version in the data ({obj['apiVersion']}) does not match the "
                f"expected API version ({rt.api_version})"
            )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be a JSON object")
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        return obj

    def existing(self, rt: ResourceType, ns: str | None, name: str) -> Obj:
        obj = self.store.get(rt, ns, name)
        if obj is None:
            raise errors.not_found(rt, name)
        return obj

    # -- create, get, list --------------------------------------------------------

    def create(self, rt: ResourceType, ns: str | None, body: Any, *, dry_run: bool = False) -> Obj:
        name = (
            str(((body or {}).get("metadata") or {}).get("name") or "")
            if isinstance(body, dict)
            else ""
        )
        try:
            obj = self._incoming(rt, ns, body)
            meta = obj["metadata"]
            requested = str(meta.get("name") or meta.get("generateName") or "")
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise errors.invalid(
                        rt,
                        "",
                        [("metadata.name", "Required value: name or generateName is required")],
                    )
                meta["name"] = f"{meta['generateName']}{random_suffix()}"
            name = meta["name"]
            for field in SERVER_FIELDS:
                meta.pop(field, None)
            uid = self.store.new_uid()
            validation.check_base64(rt, obj)
            defaults.apply(rt.kind, obj, uid, creating=True)
            validation.check(rt, obj)
        except ApiError as exc:
            raise self.reject("create", rt, ns, name, body, exc) from None
        if rt.has_status:
            obj.pop("status", None)
            status = defaults.initial_status(rt.kind)
            if status is not None:
                obj["status"] = status
        with self.store.transaction():
            if self.store.peek(rt, ns, name) is not None:
                raise errors.already_exists(rt, name)
            if rt is PODS:
                admit_pod(self.store, obj, requested)
            obj["metadata"].update(
                uid=uid, creationTimestamp=self.store.clock.timestamp(), generation=1
            )
            if dry_run:
                return obj
            return self.store.add(rt, obj)

    def get(self, rt: ResourceType, ns: str | None, name: str) -> Obj:
        return self.existing(rt, ns, name)

    def list(
        self,
        rt: ResourceType,
        ns: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> Obj:
        """A list response; ``limit``/``continue`` page in key order (later pages read
        current data: the fake keeps no snapshots)."""
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, rt.plural)
        with self.store.lock:
            rv = self.store.resource_version
            found = [
                obj
                for obj in self.store.items(rt, ns)
                if labels(obj["metadata"].get("labels") or {}) and fields(obj)
            ]
        if continue_token:
            rv, start = decode_continue(continue_token)
            found = [obj for obj in found if [namespace_of(obj), name_of(obj)] > start]
        meta: Obj = {"resourceVersion": str(rv)}
        if limit and len(found) > limit:
            last = found[limit - 1]
            meta["continue"] = encode_continue(rv, [namespace_of(last), name_of(last)])
            if not label_selector and not field_selector:
                meta["remainingItemCount"] = len(found) - limit
            found = found[:limit]
        items = []
        for obj in found:
            item = copy.deepcopy(obj)
            item.pop("kind", None)
            item.pop("apiVersion", None)
            items.append(item)
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": meta,
            "items": items,
        }

    # -- update and patch ---------------------------------------------------------

    def replace(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        body: Any,
        *,
        status: bool = False,
        dry_run: bool = False,
    ) -> Obj:
        verb = "update"
        try:
            obj = self._incoming(rt, ns, body)
            if obj["metadata"].get("name") != name:
                raise errors.bad_request(
                    f"the name of the object ({obj['metadata'].get('name')}) does not match "
                    f"the name on the URL ({name})"
                )
        except ApiError as exc:
            raise self.reject(verb, rt, ns, name, body, exc) from None
        with self.store.transaction():
            old = self.existing(rt, ns, name)
            check_versions(rt, old, obj["metadata"])
            return self.write(verb, rt, old, obj, body, status=status, dry_run=dry_run)

    def patch(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        content_type: str,
        body: Any,
        *,
        status: bool = False,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> Obj:
        with self.store.transaction():
            if content_type.split(";")[0].strip() == APPLY_PATCH:
                self._check_apply(rt, ns, name, body, field_manager)
                if self.store.peek(rt, ns, name) is None and not status:
                    return self.create(rt, ns, body, dry_run=dry_run)
            old = self.existing(rt, ns, name)
            try:
                patched = apply_patch(content_type, old, body)
                if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
                    raise errors.invalid(rt, name, [("metadata", "Required value")])
                meta = patched["metadata"]
                if meta.get("name") != name or (rt.namespaced and meta.get("namespace") != ns):
                    raise errors.invalid(
                        rt, name, [("metadata.name", "Invalid value: field is immutable")]
                    )
                patched = self._incoming(rt, ns, patched)
            except ApiError as exc:
                raise self.reject("patch", rt, ns, name, body, exc) from None
            check_versions(rt, old, patched["metadata"])
            return self.write("patch", rt, old, patched, body, status=status, dry_run=dry_run)

    def _check_apply(
        self, rt: ResourceType, ns: str | None, name: str, body: Any, manager: str | None
    ) -> None:
        problem = None
        if not manager:
            problem = "PATCH is not supported for apply without a fieldManager"
        elif not isinstance(body, dict) or not body.get("apiVersion"):
            problem = "apiVersion must be set in an applied configuration"
        elif not body.get("kind"):
            problem = "kind must be set in an applied configuration"
        elif (body.get("metadata") or {}).get("name") not in (None, name):
            problem = "the name of the applied configuration does not match the URL"
        if problem:
            raise self.reject("patch", rt, ns, name, body, errors.bad_request(problem))

    def write(
        self,
        verb: str,
        rt: ResourceType,
        old: Obj,
        obj: Obj,
        body: Any,
        *,
        status: bool,
        dry_run: bool,
    ) -> Obj:
        if status:
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        else:
            new = obj
            meta = new["metadata"]
            for field in SERVER_FIELDS:
                meta.pop(field, None)
                if field in old["metadata"] and field != "resourceVersion":
                    meta[field] = old["metadata"][field]
            if rt.has_status:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
        try:
            validation.check_base64(rt, new)
            defaults.apply(rt.kind, new, str(old["metadata"]["uid"]), creating=False)
            validation.check(rt, new, old)
        except ApiError as exc:
            raise self.reject(
                verb, rt, namespace_of(old) or None, name_of(old), body, exc
            ) from None
        if _without_metadata_and_status(new) != _without_metadata_and_status(old):
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if dry_run:
            return new
        return self.store.put(rt, new)

    # -- delete -------------------------------------------------------------------

    def delete(
        self, rt: ResourceType, ns: str | None, name: str, options: Obj, *, dry_run: bool = False
    ) -> tuple[int, Obj]:
        """``(HTTP status, body)``: 200 with the pod (pods) or a success ``Status``; 202
        with the object when finalizers keep it."""
        propagation = _propagation(options)
        preconditions = options.get("preconditions") or {}
        if dry_run:
            return 200, self.existing(rt, ns, name)
        obj, gone = self.store.delete(
            rt, ns, name, propagation=propagation, preconditions=preconditions
        )
        if not gone:
            return 202, obj
        if rt is PODS:
            return 200, obj
        return 200, errors.success(rt, name, str(obj["metadata"]["uid"]))

    def delete_collection(
        self,
        rt: ResourceType,
        ns: str | None,
        options: Obj,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Obj:
        propagation = _propagation(options)
        with self.store.transaction():
            listed = self.list(rt, ns, label_selector=label_selector, field_selector=field_selector)
            deleted = []
            for item in listed["items"]:
                try:
                    obj, _ = self.store.delete(
                        rt, namespace_of(item) or None, name_of(item), propagation=propagation
                    )
                except ApiError:
                    continue
                obj.pop("kind", None)
                obj.pop("apiVersion", None)
                deleted.append(obj)
        listed["items"] = deleted
        return listed


def check_versions(rt: ResourceType, old: Obj, meta: Obj) -> None:
    """A ``resourceVersion`` (or ``uid``) in the body is a precondition: it must be the
    stored one, or someone else wrote in between."""
    rv = meta.get("resourceVersion")
    if rv and str(rv) != old["metadata"]["resourceVersion"]:
        raise errors.conflict(rt, name_of(old))
    uid = meta.get("uid")
    if uid and uid != old["metadata"]["uid"]:
        raise errors.conflict(
            rt,
            name_of(old),
            f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
            f"{old['metadata']['uid']}",
        )


def _propagation(options: Obj) -> str | None:
    policy = options.get("propagationPolicy")
    if policy is None and options.get("orphanDependents") is not None:
        policy = "Orphan" if options["orphanDependents"] else "Background"
    if policy not in (None, "Orphan", "Background", "Foreground"):
        raise errors.bad_request(
            f'propagationPolicy: Unsupported value: "{policy}": supported values: '
            '"Foreground", "Background", "Orphan"'
        )
    return policy
