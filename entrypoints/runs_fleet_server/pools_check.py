"""The check of a pool config written through ``/api/pools``, apart from its HTTP.

A config is checked as a whole and every problem is reported at once, each naming the
field and what would be accepted, so an operator fixes them in one go. The limits
guard against typos (a pool of thousands of machines, a week-long idle timeout) rather
than describe any real pool. Nothing here touches the StateStore or the web framework:
the result is the record converter's primitives, ready to structure into a
:class:`PoolConfig` once there is no problem.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from runs_fleet_core.domain.labels import LabelDefaults, parse_label
from runs_fleet_core.domain.pool import POOL_NAME_RE
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import LabelError

MAX_RUNNERS = 1000
"""Most idle runners one pool (or one of its schedules) may ask for: a guard against a
typo that would start thousands of machines, well above any real pool."""
MAX_IDLE_TIMEOUT_S = 7 * 24 * 3600
MAX_SCHEDULES = 50
FIELDS = ("label", "desired_running", "desired_stopped", "idle_timeout_s", "schedules", "backend")
ECHOED = ("name", "ephemeral")
"""Fields of a GET answer that a PUT accepts back unchanged, so a shown pool can be edited
and written again."""
SCHEDULE_FIELDS = ("weekdays", "start_hour", "end_hour", "desired_running", "desired_stopped")


def check_pool(
    name: str,
    body: Mapping[str, Any],
    *,
    labels: LabelDefaults,
    backends: Sequence[str],
    pool_backends: Collection[str],
    default_backend: str,
) -> tuple[dict[str, Any], list[str]]:
    """The pool config ``body`` asks for under ``name`` (as the record converter's
    primitives, ready to structure into a :class:`PoolConfig`) and every problem with
    it; the config is only meaningful when there is none.

    ``backends`` are the deployment's backends, ``pool_backends`` those with a pool
    provider, ``default_backend`` what a pool without a backend uses.
    """
    problems: list[str] = []
    if not POOL_NAME_RE.fullmatch(name):
        problems.append(
            f"name {name!r}: a pool name is 1-63 characters of lower-case letters, digits, "
            "'_' and '-', starting with a letter or digit (labels name it as pool=NAME)"
        )
    for key in body:
        if key not in FIELDS + ECHOED:
            problems.append(f"unknown field {key!r}; the fields are {', '.join(FIELDS)}")
    if "name" in body and body["name"] != name:
        problems.append(f"name {body['name']!r} differs from the pool named in the URL ({name!r})")
    if body.get("ephemeral", False) is not False:
        problems.append(
            "ephemeral must be false or left out: runs-fleet makes ephemeral pools itself, "
            "and a pool written here is a configured one"
        )
    spec = _label(body.get("label"), name, labels, problems)
    backend = _backend(
        body.get("backend"), spec, backends, pool_backends, default_backend, problems
    )
    raw = {
        "name": name,
        "label": spec.label if spec else "",
        "desired_running": _whole(body, "desired_running", problems, high=MAX_RUNNERS),
        "desired_stopped": _whole(body, "desired_stopped", problems, high=MAX_RUNNERS),
        "idle_timeout_s": _whole(
            body, "idle_timeout_s", problems, high=MAX_IDLE_TIMEOUT_S, default=600
        ),
        "schedules": _schedules(body.get("schedules", []), problems),
        "ephemeral": False,
        "backend": backend,
    }
    return raw, problems


def _label(value: Any, name: str, labels: LabelDefaults, problems: list[str]) -> RunnerSpec | None:
    if value is None:
        problems.append(
            "label is required: the runs-on label the pool's runners are built from, "
            f"e.g. runs-fleet=pool/cpu=4/pool={name}"
        )
        return None
    if not isinstance(value, str):
        problems.append(f"label must be a string such as runs-fleet=pool/cpu=4/pool={name}")
        return None
    try:
        spec = parse_label(value, defaults=labels)
    except LabelError as exc:
        problems.append(f"label: {exc}")
        return None
    if spec.pool is not None and spec.pool != name:
        problems.append(
            f"label: pool={spec.pool} names another pool; the label of pool {name!r} may "
            f"name only itself (pool={name}) or no pool"
        )
    return spec


def _backend(
    value: Any,
    spec: RunnerSpec | None,
    backends: Sequence[str],
    pool_backends: Collection[str],
    default_backend: str,
    problems: list[str],
) -> str | None:
    """The backend to store (``None``: the deployment's default), checked."""
    capable = ", ".join(b for b in backends if b in pool_backends) or "none in this deployment"
    if value is not None and (not isinstance(value, str) or not value):
        problems.append(
            f"backend must be a backend name or null; backends with warm pools: {capable}"
        )
        return None
    from_label = spec.backend if spec else None
    if value and from_label and value != from_label:
        problems.append(
            f"backend {value!r} contradicts the label's backend={from_label}; give one of "
            "them or make them agree"
        )
        return None
    chosen: str | None = value or from_label
    effective = chosen or default_backend
    if chosen is not None and chosen not in backends:
        problems.append(
            f"backend {chosen!r} is not a backend of this deployment "
            f"({', '.join(backends)}); backends with warm pools: {capable}"
        )
    elif effective not in pool_backends:
        which = "" if chosen else " (the deployment's default)"
        problems.append(
            f"backend {effective!r}{which} keeps no warm pools; backends with warm pools: {capable}"
        )
    return chosen


def _whole(
    body: Mapping[str, Any],
    field: str,
    problems: list[str],
    *,
    high: int,
    default: int | None = None,
    where: str = "",
) -> int:
    """``body[field]`` checked to be a whole number in ``0..high``; required when there
    is no ``default``. A problem leaves 0 in its place."""
    if field not in body or body[field] is None:
        if default is None:
            problems.append(f"{where}{field} is required: a whole number from 0 to {high}")
            return 0
        return default
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        problems.append(
            f"{where}{field} must be a whole number from 0 to {high}, got {json.dumps(value)}"
        )
        return 0
    return value


def _schedules(value: Any, problems: list[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        problems.append("schedules must be a list of objects (or left out)")
        return []
    if len(value) > MAX_SCHEDULES:
        problems.append(f"schedules: at most {MAX_SCHEDULES} are allowed, got {len(value)}")
        return []
    return [_schedule(item, f"schedules[{i}].", problems) for i, item in enumerate(value)]


def _schedule(item: Any, where: str, problems: list[str]) -> dict[str, Any]:
    """One schedule, checked; the domain's defaults fill what it leaves out (every day,
    the whole day, nothing kept)."""
    if not isinstance(item, dict):
        problems.append(f"{where[:-1]} must be an object with fields {', '.join(SCHEDULE_FIELDS)}")
        return {}
    for key in item:
        if key not in SCHEDULE_FIELDS:
            problems.append(
                f"{where}{key}: unknown field; the fields are {', '.join(SCHEDULE_FIELDS)}"
            )
    weekdays = item.get("weekdays", list(range(7)))
    if (
        not isinstance(weekdays, list)
        or not weekdays
        or any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 6 for d in weekdays)
        or len(set(weekdays)) != len(weekdays)
    ):
        problems.append(
            f"{where}weekdays must list different days from 0 (Monday) to 6 (Sunday), "
            f"got {json.dumps(weekdays)}"
        )
        weekdays = list(range(7))
    start = _whole(item, "start_hour", problems, high=23, default=0, where=where)
    end = _whole(item, "end_hour", problems, high=24, default=24, where=where)
    if start == end:
        problems.append(
            f"{where}start_hour and end_hour are both {start}: the window would be empty "
            "(hours are UTC, start included, end excluded; start > end wraps past midnight)"
        )
    return {
        "weekdays": weekdays,
        "start_hour": start,
        "end_hour": end,
        "desired_running": _whole(
            item, "desired_running", problems, high=MAX_RUNNERS, default=0, where=where
        ),
        "desired_stopped": _whole(
            item, "desired_stopped", problems, high=MAX_RUNNERS, default=0, where=where
        ),
    }
