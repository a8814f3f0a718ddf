"""Label and field selectors, in the query-string syntax and as ``LabelSelector`` objects.

Adapters find their objects by label (a runner's config by ``runs-fleet.io/runner``, a
pool's pods by ``runs-fleet.io/pool``); a selector the fake matched more loosely than
Kubernetes would hide a query that finds nothing, or too much, on a real cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from tests.kube_api.errors import bad_request

Labels = Mapping[str, str]
Matcher = Callable[[Labels], bool]

_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|[A-Za-z0-9_./-]+)")
_SET_OPS = ("in", "notin")


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise bad_request(f"unable to parse requirement: invalid label selector: {text!r}")
        tokens.append(match.group(1))
        position = match.end()
    return tokens


def _requirement(key: str, op: str, values: tuple[str, ...]) -> Matcher:
    if op == "exists":
        return lambda labels: key in labels
    if op == "!":
        return lambda labels: key not in labels
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == values[0]
    if op == "!=":
        return lambda labels: labels.get(key) != values[0]
    if op == "in":
        return lambda labels: key in labels and labels[key] in values
    return lambda labels: labels.get(key) not in values


def parse_label_selector(text: str | None) -> Matcher:
    """A matcher for ``text`` in the full syntax: ``k=v``, ``k==v``, ``k!=v``,
    ``k in (a,b)``, ``k notin (a)``, ``k``, ``!k``, comma-separated (all must hold)."""
    if not text or not text.strip():
        return lambda labels: True
    tokens = _tokens(text)
    matchers: list[Matcher] = []
    index = 0

    def fail(problem: str) -> Exception:
        return bad_request(f"unable to parse requirement: {problem} in selector {text!r}")

    while index < len(tokens):
        if tokens[index] == "!":
            if index + 1 >= len(tokens) or not re.match(r"[A-Za-z0-9]", tokens[index + 1]):
                raise fail("expected a label key after '!'")
            matchers.append(_requirement(tokens[index + 1], "!", ()))
            index += 2
        else:
            key = tokens[index]
            if not re.match(r"[A-Za-z0-9]", key):
                raise fail(f"found {key!r}, expected a label key")
            following = tokens[index + 1] if index + 1 < len(tokens) else ","
            if following == ",":
                matchers.append(_requirement(key, "exists", ()))
                index += 1
            elif following in ("=", "==", "!="):
                value = tokens[index + 2] if index + 2 < len(tokens) else ","
                if value in ("(", ")", "=", "==", "!=", "!"):
                    raise fail(f"found {value!r}, expected a value for {key!r}")
                if value == ",":
                    value = ""
                    index += 2
                else:
                    index += 3
                matchers.append(_requirement(key, following, (value,)))
            elif following in _SET_OPS:
                if index + 2 >= len(tokens) or tokens[index + 2] != "(":
                    raise fail(f"expected '(' after {following!r}")
                values: list[str] = []
                index += 3
                while index < len(tokens) and tokens[index] != ")":
                    if tokens[index] != ",":
                        values.append(tokens[index])
                    index += 1
                if index >= len(tokens):
                    raise fail("expected ')'")
                if not values:
                    raise fail(f"for {following!r}, set '(', values... ')' must not be empty")
                matchers.append(_requirement(key, following, tuple(values)))
                index += 1
            else:
                raise fail(f"found {following!r}, expected one of '=', '!=', 'in', 'notin', ','")
        if index < len(tokens):
            if tokens[index] != ",":
                raise fail(f"found {tokens[index]!r}, expected ','")
            index += 1
    return lambda labels: all(matcher(labels) for matcher in matchers)


FIELD_LABELS: dict[str, frozenset[str]] = {
    "pods": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        }
    ),
    "secrets": frozenset({"type"}),
    "namespaces": frozenset({"status.phase"}),
    "jobs": frozenset({"status.successful"}),
}
"""Field selectors each resource supports besides ``metadata.name`` and
``metadata.namespace`` (Kubernetes refuses any other)."""


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    if path == "status.successful":
        return str(obj.get("status", {}).get("succeeded", 0))
    current: Any = obj
    for part in path.split("."):
        current = current.get(part) if isinstance(current, Mapping) else None
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def parse_field_selector(text: str | None, plural: str) -> Callable[[Mapping[str, Any]], bool]:
    """A matcher for a field selector (``=``, ``==``, ``!=``, comma-separated) on the
    fields Kubernetes supports for ``plural``."""
    if not text or not text.strip():
        return lambda obj: True
    allowed = {"metadata.name", "metadata.namespace"} | FIELD_LABELS.get(plural, frozenset())
    tests: list[tuple[str, bool, str]] = []
    for term in text.split(","):
        match = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*", term)
        if match is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        field, op, value = match.groups()
        if field not in allowed:
            raise bad_request(f"field label not supported: {field}")
        tests.append((field, op != "!=", value))
    return lambda obj: all(
        (_field_value(obj, field) == value) == equal for field, equal, value in tests
    )


def match_label_selector(selector: Mapping[str, Any] | None, labels: Labels) -> bool:
    """Whether ``labels`` satisfy a ``LabelSelector`` object (``matchLabels`` and
    ``matchExpressions``). An empty selector matches everything, as in a Deployment."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op = expression["key"], expression["operator"]
        values = tuple(expression.get("values") or ())
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = labels.get(key) not in values
        elif op == "Exists":
            ok = key in labels
        else:
            ok = key not in labels
        if not ok:
            return False
    return True


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """A ``LabelSelector`` in query syntax, as the ``/scale`` subresource reports it."""
    if not selector:
        return ""
    terms = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, op = expression["key"], expression["operator"]
        values = ",".join(sorted(expression.get("values") or ()))
        terms.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[op]
        )
    return ",".join(terms)
