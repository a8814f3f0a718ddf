"""Payloads generated from GitHub's own JSON Schemas of the ``workflow_job`` webhook.

hypothesis-jsonschema does not run with the Hypothesis this project uses, and these
schemas only use a small part of draft 7 (``$ref``, ``allOf``, ``oneOf``, ``enum``,
``type``, ``properties``/``required``, ``items``, ``format``), so this module builds
instances itself, from a ``random.Random`` so that one payload costs one Hypothesis draw.
Every instance is valid against its schema (tests/fuzz/test_schema_payloads.py checks
that with jsonschema); the fuzz target then bends the fields runs-fleet reads.
"""

from __future__ import annotations

import functools
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).parents[1] / "fixtures" / "github" / "webhook-schemas"
ACTIONS = ("queued", "in_progress", "completed", "waiting")
_WORDS = ["Codertocat", "Hello-World", "octo-org", "main", "build", "test", "runs-fleet", ""]
_ODD_TEXT = ["\u00e9t\u00e9", "\U0001f680", "a\x00b", "\ud800", "\u202eevil", "x" * 300, " "]
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_MAX_DEPTH = 6


def _inline(node: Any, base: Path) -> Any:
    """``node`` with every ``$ref`` replaced by the schema it names (resolved against
    ``base``, the folder of the file that holds the reference)."""
    if isinstance(node, list):
        return [_inline(item, base) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = base / node["$ref"]
        return _inline(json.loads(target.read_text()), target.parent)
    return {key: _inline(value, base) for key, value in node.items() if key != "$id"}


@functools.cache
def schema(action: str) -> dict[str, Any]:
    """The schema of the ``workflow_job`` event with ``action``, references inlined
    (they are relative to the schemas' root folder in the event files)."""
    path = SCHEMAS / "workflow_job" / f"{action}.schema.json"
    inlined: dict[str, Any] = _inline(json.loads(path.read_text()), SCHEMAS)
    return inlined


def instance(node: dict[str, Any], rnd: random.Random, depth: int = 0) -> Any:
    """A random instance of the schema ``node``."""
    if "allOf" in node:
        return instance(_merge(node["allOf"]), rnd, depth)
    if "oneOf" in node or "anyOf" in node:
        return instance(rnd.choice(node.get("oneOf") or node["anyOf"]), rnd, depth)
    if "enum" in node:
        return rnd.choice(node["enum"])
    kind = node.get("type", "object")
    if isinstance(kind, list):
        kind = rnd.choice(kind)
    if kind == "object":
        return _object(node, rnd, depth)
    if kind == "array":
        most = 0 if depth >= _MAX_DEPTH else 3
        return [
            instance(node.get("items", {}), rnd, depth + 1) for _ in range(rnd.randint(0, most))
        ]
    return _scalar(kind, node.get("format"), rnd)


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One object schema with the properties and requirements of all ``parts`` (a later
    part's property wins: in these schemas it only narrows an earlier one)."""
    merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    for part in parts:
        if "allOf" in part:
            part = _merge(part["allOf"])
        merged["properties"].update(part.get("properties", {}))
        merged["required"] += [k for k in part.get("required", []) if k not in merged["required"]]
        if part.get("additionalProperties") is False:
            merged["additionalProperties"] = False
    return merged


def _object(node: dict[str, Any], rnd: random.Random, depth: int) -> dict[str, Any]:
    required = set(node.get("required", []))
    return {
        key: instance(child, rnd, depth + 1)
        for key, child in node.get("properties", {}).items()
        if key in required or (depth < _MAX_DEPTH and rnd.random() < 0.3)
    }


def _scalar(kind: str, form: str | None, rnd: random.Random) -> Any:
    if kind == "integer":
        if rnd.random() < 0.8:
            return rnd.randint(1, 10**10)
        return rnd.choice([rnd.randint(-5, 5), 2**63, -(2**64)])
    if kind == "number":
        return rnd.choice([rnd.randint(1, 10**10), rnd.random() * 10**6, 0.0, 2**70])
    if kind == "boolean":
        return rnd.random() < 0.5
    if kind == "null":
        return None
    if form == "date-time":
        moment = _EPOCH + timedelta(seconds=rnd.randint(0, 10**9))
        return moment.isoformat().replace("+00:00", "Z")
    if form in ("uri", "uri-template"):
        return f"https://api.github.com/repos/{rnd.choice(_WORDS)}/{rnd.randint(1, 99)}"
    return rnd.choice(_WORDS) if rnd.random() < 0.9 else rnd.choice(_ODD_TEXT)
