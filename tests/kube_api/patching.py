"""The patch formats the API server accepts: JSON merge patch (RFC 7386), strategic merge
patch (Kubernetes' own: lists of containers, volumes, env… merged by their keys), JSON
patch (RFC 6902), and server-side apply, simplified: the applied configuration is merged
as a strategic merge patch and creates the object if missing, but field ownership is not
tracked, so apply never reports a conflict between managers nor removes fields a manager
stopped applying.

The official client sends a dict body as a strategic merge patch, so that is what an
adapter's ``patch_namespaced_*`` call gets by default; it merges some lists where a JSON
merge patch would replace them, and a test that only knew one of the two would miss an
adapter that wipes a pod's other containers.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.kube_api.errors import bad_request, unsupported_media_type
from tests.kube_api.jsonpatch_ops import json_patch

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
SUPPORTED = [JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH]

MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
    "readinessGates": "conditionType",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
    "secrets": "name",
}
"""Lists merged item by item (``patchStrategy: merge``) and the key that pairs items.
Other lists (tolerations, args, command, NetworkPolicy rules) are replaced whole, as in
Kubernetes. A list whose items lack the key (NetworkPolicy ``ports``) is replaced too."""
PRIMITIVE_SETS = frozenset({"finalizers"})
"""Lists of strings merged as sets."""

_DELETE = object()


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: _strip_directives(item) for key, item in value.items() if not key.startswith("$")
        }
    if isinstance(value, list):
        return [_strip_directives(item) for item in value]
    return value


def _merge_list(field: str, original: Any, patch: list[Any]) -> list[Any]:
    current = list(original) if isinstance(original, list) else []
    if field in PRIMITIVE_SETS:
        return current + [item for item in patch if item not in current]
    key = MERGE_KEYS.get(field)
    items = [item for item in patch if not (isinstance(item, dict) and set(item) == {"$patch"})]
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [_strip_directives(item) for item in items]
    if key is None or not all(isinstance(item, dict) and key in item for item in items):
        return [_strip_directives(item) for item in items]
    for item in items:
        index = next(
            (
                i
                for i, old in enumerate(current)
                if isinstance(old, dict) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del current[index]
        elif index is None:
            current.append(_strip_directives(item))
        else:
            current[index] = strategic_merge_patch(current[index], item)
    return current


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge: a JSON merge patch whose listed lists merge by key,
    with the ``$patch: replace|delete``, ``$retainKeys``, ``$deleteFromPrimitiveList/``
    and ``$setElementOrder/`` directives."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return _DELETE
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = value
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {key: value for key, value in result.items() if key in retain}
    return result


def apply_patch(content_type: str, target: Any, body: Any) -> Any:
    """``target`` (left untouched) patched by ``body`` sent as ``content_type``."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == JSON_PATCH:
        return json_patch(target, body)
    if not isinstance(body, dict):
        raise bad_request(f"the body of a {media} patch must be a JSON object")
    if media == MERGE_PATCH:
        return merge_patch(copy.deepcopy(target), body)
    if media in (STRATEGIC_MERGE_PATCH, APPLY_PATCH):
        result = strategic_merge_patch(copy.deepcopy(target), body)
        return {} if result is _DELETE else result
    raise unsupported_media_type(content_type, SUPPORTED)
