"""JSON patch (RFC 6902): ``add``, ``remove``, ``replace``, ``move``, ``copy`` and
``test`` on JSON pointers (RFC 6901), failing as the API server fails them: a malformed
patch is a 400, an operation that does not apply (missing path, failed ``test``) a 422."""

from __future__ import annotations

import copy
from typing import Any

from tests.kube_api.errors import ApiError, bad_request


class _DoesNotApply(Exception):
    pass


def _tokens(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise bad_request(f"the JSON patch is malformed: invalid JSON pointer {pointer!r}")
    if pointer == "":
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _index(container: list[Any], token: str, *, insert: bool) -> int:
    if token == "-" and insert:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise _DoesNotApply(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not insert):
        raise _DoesNotApply(f"array index {index} out of range")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    current = doc
    for token in tokens[:-1]:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token, insert=False)]
        else:
            raise _DoesNotApply(f"missing path element {token!r}")
    return current


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, insert=False)]
    raise _DoesNotApply(f"missing value at {last!r}")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, insert=True), value)
    else:
        raise _DoesNotApply(f"cannot add {last!r} to a scalar")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise _DoesNotApply("cannot remove the whole document")
    _get(doc, tokens)
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[_index(parent, last, insert=False)]
    return doc


def _apply(doc: Any, operation: dict[str, Any]) -> Any:
    op, path = operation.get("op"), _tokens(operation.get("path"))
    if op in ("add", "replace", "test") and "value" not in operation:
        raise bad_request(f"the JSON patch is malformed: {op} operation has no value")
    if op == "add":
        return _add(doc, path, copy.deepcopy(operation["value"]))
    if op == "remove":
        return _remove(doc, path)
    if op == "replace":
        _get(doc, path)
        return _add(_remove(doc, path) if path else doc, path, copy.deepcopy(operation["value"]))
    if op == "test":
        if _get(doc, path) != operation["value"]:
            raise _DoesNotApply(f"testing value {operation.get('path')} failed")
        return doc
    if op in ("move", "copy"):
        source = _tokens(operation.get("from"))
        value = copy.deepcopy(_get(doc, source))
        if op == "move":
            if path[: len(source)] == source and path != source:
                raise _DoesNotApply("cannot move a value into itself")
            doc = _remove(doc, source)
        return _add(doc, path, value)
    raise bad_request(f"the JSON patch is malformed: unknown operation {op!r}")


def json_patch(target: Any, operations: Any) -> Any:
    """``target`` (a copy) with ``operations`` applied, all or nothing."""
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    for operation in operations:
        try:
            doc = _apply(doc, operation)
        except _DoesNotApply as exc:
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: "
                f"jsonpatch {operation.get('op')} operation does not apply: {exc}",
            ) from None
    return doc
