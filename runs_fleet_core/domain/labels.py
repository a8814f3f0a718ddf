"""Parse the ``runs-on`` label with which a workflow asks runs-fleet for a runner.

A workflow author describes the runner a job needs in one label, for example
``runs-fleet=${{ github.run_id }}/cpu=4/arch=arm64``. This module is the only place that
knows that grammar, so webhook intake, warm pools and the CLI's ``labels explain`` all
resolve a label to the same :class:`RunnerSpec`. Whatever it cannot honour becomes a
:class:`LabelError` whose message names the offending segment and says what is allowed:
nothing in a label is ever silently ignored or guessed.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import attrs

from runs_fleet_core.domain.ids import RunId
from runs_fleet_core.domain.pool import POOL_NAME_RE
from runs_fleet_core.domain.spec import DEFAULT_DISK_GIB, DEFAULT_OS, Arch, RunnerSpec
from runs_fleet_core.errors import LabelError

MARKER = "runs-fleet="
DEFAULT_BACKENDS = frozenset({"ec2", "k8s", "local"})
CPU_LIMITS = (1, 512)
RAM_LIMITS = (1, 32768)
GEN_LIMITS = (1, 10)
DISK_LIMITS = (1, 16384)
MAX_FAMILIES = 20
SHOWN_MAX = 80
"""Longest part of a label an error message quotes; a longer one is cut."""

KNOWN_KEYS = (
    "runner", "cpu", "ram", "arch", "family", "gen", "disk", "pool", "spot", "private",
    "backend",
)  # fmt: skip
_KEYS = ", ".join(KNOWN_KEYS)

_RUN_ID_RE = re.compile(r"[A-Za-z0-9._-]+")
_NUMBER_RE = re.compile(r"[0-9]+")
_FAMILY_RE = re.compile(r"[a-z][a-z0-9-]*")
_PRESET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_GENERIC_PRESET_RE = re.compile(r"([0-9]+)cpu-([a-z0-9_.]+)-([a-z0-9_.]+)")
_ARCHES = {"arm64": Arch.ARM64, "amd64": Arch.AMD64, "x64": Arch.AMD64}
_BOOLS = {"true": True, "false": False}
_GENERIC_FORM = "<N>cpu-linux-<arch> (arch arm64, amd64 or x64), for example 4cpu-linux-arm64"
_USAGE = {
    "cpu": (
        "cpu must be a whole number N (asks for N..2N vCPUs) or a range N+M, "
        "for example cpu=4 or cpu=4+8"
    ),
    "ram": (
        "ram must be a whole number of GiB N (at least N GiB, no upper limit) or a range N+M, "
        "for example ram=16 or ram=16+32"
    ),
    "gen": "gen must be a whole number, the minimum instance generation, e.g. gen=7",
    "disk": "disk must be a whole number of GiB, e.g. disk=100",
    "arch": "arch must be arm64, amd64 or x64 (the same as amd64)",
    "spot": "spot must be true or false",
    "private": "private must be true or false",
    "pool": (
        "pool must be a pool name of 1-63 characters: lower-case letters, digits, '_' and "
        "'-', starting with a letter or digit"
    ),
}


def _frozen_presets(value: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class LabelDefaults:
    """Installation-wide settings the parser needs.

    ``presets`` maps an operator-chosen preset name to a spec in the segment grammar
    (``cpu=16/ram=64/arch=arm64``); they take precedence over generic presets of the same
    name. ``backends`` are the values ``backend=`` accepts.
    """

    disk_gib: int = DEFAULT_DISK_GIB
    presets: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_presets, hash=False)
    backends: frozenset[str] = DEFAULT_BACKENDS


_DEFAULTS = LabelDefaults()


class _Invalid(Exception):
    """A value problem, before it is tied to the segment that caused it."""


def quote(text: str) -> str:
    """``text`` as a message quotes a part of a label: cut to :data:`SHOWN_MAX` characters,
    unprintable ones escaped (``\\x1b``). Quoted raw, a control sequence in a workflow
    would reach an operator's terminal, and a lone surrogate could not even be encoded."""
    cut = text if len(text) <= SHOWN_MAX else text[: SHOWN_MAX - 3] + "..."
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in cut)
    return f"'{shown}'"


def _error(segment: str, message: str) -> LabelError:
    return LabelError(f"segment {quote(segment)}: {message}", segment=segment)


class _Setting(NamedTuple):
    segment: str
    fields: dict[str, Any]


def find_marker(labels: Sequence[str]) -> str | None:
    """The first label (as given) that starts with ``runs-fleet=``, ignoring surrounding
    whitespace; ``None`` when no label does."""
    return next((label for label in labels if label.strip().startswith(MARKER)), None)


def parse_runs_on(
    labels: Sequence[str] | str, *, defaults: LabelDefaults = _DEFAULTS
) -> RunnerSpec | None:
    """The spec a job's ``runs-on`` labels ask for, or ``None`` when it is not for us.

    A plain string counts as a one-label list. ``label`` of the result is the (stripped)
    marker label, ``labels`` all labels as given. Raises :class:`LabelError` when the
    marker label is invalid, when two different marker labels are given, or when a label
    is the marker in the wrong letter case (it would otherwise wait forever).
    """
    given = (labels,) if isinstance(labels, str) else tuple(labels)
    marker = find_marker(given)
    for label in (text.strip() for text in given):
        if marker is None and label.lower().startswith(MARKER):
            raise LabelError(
                f"label {quote(label)}: the marker must be written in lower case as '{MARKER}'",
                segment=label,
            )
        if marker is not None and label.startswith(MARKER) and label != marker.strip():
            raise LabelError(
                f"label {quote(label)}: only one runs-fleet label per job is allowed, and "
                f"{quote(marker.strip())} was given first; merge them into one label",
                segment=label,
            )
    if marker is None:
        return None
    return attrs.evolve(parse_label(marker, defaults=defaults), labels=given)


def parse_label(label: str, *, defaults: LabelDefaults = _DEFAULTS) -> RunnerSpec:
    """The spec one ``runs-fleet=<run_id>/key=value/...`` label asks for.

    Surrounding whitespace is ignored. Raises :class:`LabelError` (message naming the
    offending segment, ``segment`` set to it) for every problem: unknown, repeated or
    upper-case keys, bad or out-of-range values, empty segments, and explicit keys that
    contradict the ``runner=`` preset.
    """
    text = label.strip()
    _reject_expressions(text)
    if not text.startswith(MARKER):
        raise LabelError(
            f"label {quote(text)}: a runs-fleet label starts with '{MARKER}' followed by the run "
            "id, for example runs-fleet=${{ github.run_id }}/cpu=4",
            segment=text,
        )
    head, *rest = text[len(MARKER) :].split("/")
    run_id = _parse_run_id(head)
    explicit = _parse_segments(rest, defaults, allow_runner=True, label=text)
    settings = _apply_preset(explicit, defaults)
    fields: dict[str, Any] = {"disk_gib": defaults.disk_gib}
    for setting in settings.values():
        fields.update(setting.fields)
    return RunnerSpec(run_id=RunId(run_id), label=text, **fields)


def validate_presets(
    presets: Mapping[str, str], *, defaults: LabelDefaults = _DEFAULTS
) -> list[str]:
    """One message per invalid operator preset (bad name or bad spec); empty when all are
    valid. ``defaults`` supplies the accepted backends; its own presets are not read."""
    problems: list[str] = []
    for name, spec in presets.items():
        if not isinstance(name, str) or not _PRESET_NAME_RE.fullmatch(name):
            problems.append(
                f"preset {quote(str(name))}: a preset name is 1-63 characters of lower-case "
                "letters, digits, '.', '_' and '-', starting with a letter or digit"
            )
            continue
        if not isinstance(spec, str):
            problems.append(f"preset {quote(name)}: the spec must be a string such as 'cpu=4'")
            continue
        try:
            _operator_preset(spec, defaults)
        except LabelError as error:
            problems.append(f"preset {quote(name)}: {error}")
    return problems


def _reject_expressions(text: str) -> None:
    if "${{" not in text and "}}" not in text:
        return
    segment = next((s for s in text.split("/") if "${{" in s or "}}" in s), text)
    raise _error(
        segment,
        "contains a GitHub expression that was not expanded, so the real value never "
        "reached runs-fleet. Put the expression in the workflow's runs-on as a "
        'double-quoted YAML string, e.g. runs-on: "runs-fleet=${{ github.run_id }}/cpu=4", '
        "so GitHub replaces it with the real value",
    )


def _parse_run_id(head: str) -> str:
    segment = MARKER + head
    if not head:
        raise _error(
            segment,
            "the run id is missing; write runs-fleet=${{ github.run_id }} so each workflow "
            "run gets its own runners",
        )
    if not _RUN_ID_RE.fullmatch(head):
        hint = (
            " ('$' looks like a shell variable, but runs-on is not run by a shell: use "
            "${{ github.run_id }})"
            if "$" in head
            else ""
        )
        raise _error(
            segment, f"the run id may contain only letters, digits, '.', '_' and '-'{hint}"
        )
    return head


def _parse_segments(
    segments: Sequence[str], defaults: LabelDefaults, *, allow_runner: bool, label: str
) -> dict[str, _Setting]:
    settings: dict[str, _Setting] = {}
    for segment in segments:
        key, value = _split_segment(segment, label)
        if key in settings:
            raise _error(
                segment,
                f"key '{key}' is already set by {quote(settings[key].segment)}; give each key once",
            )
        if key == "runner":
            if not allow_runner:
                raise _error(segment, "a preset cannot refer to another preset")
            settings[key] = _Setting(segment, {"preset": value.lower()})
            continue
        try:
            settings[key] = _Setting(segment, _fields(key, value, defaults))
        except _Invalid as problem:
            raise _error(segment, str(problem)) from None
    return settings


def _split_segment(segment: str, label: str) -> tuple[str, str]:
    if not segment:
        raise LabelError(
            f"label {quote(label)}: has an empty segment ('//' or a '/' at the end); remove it",
            segment=label,
        )
    if any(ch.isspace() for ch in segment):
        raise _error(segment, "contains whitespace; a label has no spaces, e.g. cpu=4")
    if not segment.isascii():
        raise _error(segment, "contains non-ASCII characters")
    if "=" not in segment:
        raise _error(segment, f"is not key=value, e.g. cpu=4; known keys: {_KEYS}")
    key, value = segment.split("=", 1)
    if key not in KNOWN_KEYS:
        raise _error(segment, _unknown_key(key))
    if not value:
        raise _error(segment, f"'{key}' needs a value after '='")
    return key, value


def _unknown_key(key: str) -> str:
    if key.lower() in KNOWN_KEYS:
        return f"keys are lower case: write {quote(key.lower())}"
    close = difflib.get_close_matches(key.lower(), KNOWN_KEYS, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key {quote(key)}; known keys: {_KEYS}{hint}"


def _apply_preset(explicit: dict[str, _Setting], defaults: LabelDefaults) -> dict[str, _Setting]:
    runner = explicit.get("runner")
    if runner is None:
        return explicit
    name: str = runner.fields["preset"]
    from_preset = _expand_preset(name, runner.segment, defaults)
    for key, setting in explicit.items():
        implied = from_preset.get(key)
        if implied is not None and implied.fields != setting.fields:
            raise _error(
                setting.segment,
                f"contradicts {quote(runner.segment)}, which already means {implied.segment}; "
                "remove one or make them agree",
            )
    return {**from_preset, **explicit}


def _expand_preset(name: str, segment: str, defaults: LabelDefaults) -> dict[str, _Setting]:
    if name in defaults.presets:
        try:
            return _operator_preset(defaults.presets[name], defaults)
        except LabelError as error:
            raise _error(
                segment,
                f"preset {quote(name)} from the runs-fleet configuration is invalid ({error}); "
                "ask your runs-fleet operator to fix it",
            ) from None
    generic = _GENERIC_PRESET_RE.fullmatch(name)
    if generic is None:
        configured = ", ".join(sorted(defaults.presets)) or "none configured"
        close = difflib.get_close_matches(name, list(defaults.presets), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise _error(
            segment,
            f"unknown runner preset {quote(name)}; use the generic form {_GENERIC_FORM}, or a "
            f"preset of this installation ({configured}){hint}",
        )
    cpu, os_name, arch = generic.groups()
    if os_name != DEFAULT_OS:
        raise _error(
            segment, f"only Linux runners are supported, so the preset must be {_GENERIC_FORM}"
        )
    if arch not in _ARCHES:
        raise _error(segment, f"unknown architecture '{arch}'; the preset must be {_GENERIC_FORM}")
    low, high = CPU_LIMITS
    if len(cpu) > 9 or not low <= int(cpu) <= high:
        raise _error(segment, f"the vCPU count must be between {low} and {high}")
    return _parse_segments(
        [f"cpu={int(cpu)}", f"arch={arch}"], defaults, allow_runner=False, label=name
    )


def _operator_preset(spec: str, defaults: LabelDefaults) -> dict[str, _Setting]:
    return _parse_segments(spec.strip().split("/"), defaults, allow_runner=False, label=spec)


def _number(key: str, text: str, limits: tuple[int, int], unit: str) -> int:
    if not _NUMBER_RE.fullmatch(text):
        raise _Invalid(_USAGE[key])
    low, high = limits
    if len(text) > 9 or not low <= int(text) <= high:
        got = text if len(text) <= 20 else f"a number of {len(text)} digits"
        raise _Invalid(f"{key} must be between {low} and {high} {unit}".rstrip() + f", got {got}")
    return int(text)


def _range(key: str, value: str, limits: tuple[int, int], unit: str) -> tuple[int, int | None]:
    parts = value.split("+")
    if len(parts) > 2:
        raise _Invalid(_USAGE[key])
    numbers = [_number(key, part, limits, unit) for part in parts]
    if len(numbers) == 1:
        return numbers[0], None
    low, high = numbers
    if low > high:
        raise _Invalid(
            f"{key}={value} asks for at least {low} but at most {high} {unit}; write the "
            f"smaller number first, e.g. {key}={high}+{low}"
        )
    return low, high


def _fields(key: str, value: str, defaults: LabelDefaults) -> dict[str, Any]:
    lower = value.lower()
    match key:
        case "cpu":
            low, high = _range(key, value, CPU_LIMITS, "vCPUs")
            return {"cpu_min": low, "cpu_max": 2 * low if high is None else high}
        case "ram":
            low, high = _range(key, value, RAM_LIMITS, "GiB")
            return {"ram_min": low, "ram_max": high}
        case "gen":
            return {"gen": _number(key, value, GEN_LIMITS, "")}
        case "disk":
            return {"disk_gib": _number(key, value, DISK_LIMITS, "GiB")}
        case "family":
            return {"families": _families(lower)}
        case "arch" if lower in _ARCHES:
            return {"arch": _ARCHES[lower]}
        case "spot" | "private" if lower in _BOOLS:
            return {key: _BOOLS[lower]}
        case "pool" if POOL_NAME_RE.fullmatch(lower):
            return {"pool": lower}
        case "backend" if lower in defaults.backends:
            return {"backend": lower}
    if key == "backend":
        raise _Invalid(f"backend must be one of {', '.join(sorted(defaults.backends))}")
    raise _Invalid(_USAGE[key])


def _families(value: str) -> tuple[str, ...]:
    names = value.split("+")
    usage = "family lists instance families joined by '+', e.g. family=c7g+m7g"
    for name in names:
        if not name:
            raise _Invalid(f"{usage}; an empty name is not allowed")
        if not _FAMILY_RE.fullmatch(name):
            raise _Invalid(
                f"{quote(name)} is not an instance family: use lower-case letters, digits and "
                f"'-', starting with a letter; {usage}"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise _Invalid(f"family '{repeated[0]}' is listed more than once")
    if len(names) > MAX_FAMILIES:
        raise _Invalid(f"at most {MAX_FAMILIES} families may be listed, got {len(names)}")
    return tuple(names)
