"""Fuzzing the ``runs-on`` grammar: whatever a workflow writes, the parser answers with a
spec inside the grammar's ranges, or with a :class:`LabelError` whose message quotes the
offending part; never with any other exception."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from hypothesis import given, settings

from runs_fleet_core.domain.labels import (
    CPU_LIMITS,
    DISK_LIMITS,
    GEN_LIMITS,
    MARKER,
    MAX_FAMILIES,
    RAM_LIMITS,
    SHOWN_MAX,
    find_marker,
    parse_runs_on,
    quote,
)
from runs_fleet_core.domain.pool import POOL_NAME_RE
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import LabelError
from tests.fuzz.label_strategies import DEFAULTS, runs_on

EXAMPLES = 10_000


def render(spec: RunnerSpec) -> str:
    """The canonical label of ``spec``: every field spelt out, in the grammar's order."""
    cpu = spec.cpu_min if spec.cpu_max == 2 * spec.cpu_min else f"{spec.cpu_min}+{spec.cpu_max}"
    segments = [f"cpu={cpu}"]
    if spec.ram_min:
        high = "" if spec.ram_max is None else f"+{spec.ram_max}"
        segments.append(f"ram={spec.ram_min}{high}")
    optional = {
        "runner": spec.preset,
        "arch": spec.arch,
        "family": "+".join(spec.families),
        "gen": spec.gen,
        "pool": spec.pool,
        "backend": spec.backend,
    }
    segments += [f"{key}={value}" for key, value in optional.items() if value]
    segments += [
        f"disk={spec.disk_gib}",
        f"spot={str(spec.spot).lower()}",
        f"private={str(spec.private).lower()}",
    ]
    return MARKER + spec.run_id + "".join("/" + segment for segment in segments)


def _check_spec(spec: RunnerSpec, given_labels: Sequence[str]) -> None:
    marker = find_marker(given_labels)
    assert marker is not None and spec.label == marker.strip()
    assert spec.labels == tuple(given_labels)
    assert CPU_LIMITS[0] <= spec.cpu_min <= CPU_LIMITS[1]
    assert spec.cpu_max is not None and spec.cpu_min <= spec.cpu_max <= 2 * CPU_LIMITS[1]
    assert spec.ram_min == 0 or RAM_LIMITS[0] <= spec.ram_min <= RAM_LIMITS[1]
    assert spec.ram_max is None or spec.ram_min <= spec.ram_max <= RAM_LIMITS[1]
    assert spec.ram_max is None or spec.ram_min > 0
    assert spec.gen is None or GEN_LIMITS[0] <= spec.gen <= GEN_LIMITS[1]
    assert DISK_LIMITS[0] <= spec.disk_gib <= DISK_LIMITS[1]
    assert len(spec.families) <= MAX_FAMILIES and len(set(spec.families)) == len(spec.families)
    assert all(name.isascii() and name.islower() for name in spec.families)
    assert spec.pool is None or POOL_NAME_RE.fullmatch(spec.pool)
    assert spec.backend is None or spec.backend in DEFAULTS.backends
    assert spec.os == "linux" and spec.job_id is None
    canonical = render(spec)
    again = parse_runs_on(canonical, defaults=DEFAULTS)
    assert again == attrs.evolve(spec, label=canonical, labels=(canonical,)), canonical


def _check_error(error: LabelError, given_labels: Sequence[str]) -> None:
    message = str(error)
    assert message.isprintable(), message
    assert error.segment, message
    assert any(error.segment in label for label in given_labels), error.segment
    assert quote(error.segment) in message, message
    if len(error.segment) <= SHOWN_MAX and error.segment.isprintable():
        assert f"'{error.segment}'" in message, message
    assert len(message) < 2000, len(message)


@settings(max_examples=EXAMPLES, deadline=None)
@given(runs_on)
def test_any_runs_on_gives_a_spec_in_range_or_a_label_error_naming_the_part(
    labels: str | list[str],
) -> None:
    given_labels = (labels,) if isinstance(labels, str) else tuple(labels)
    try:
        spec = parse_runs_on(labels, defaults=DEFAULTS)
    except LabelError as error:
        _check_error(error, given_labels)
        return
    if spec is None:
        assert find_marker(given_labels) is None
        assert not any(label.strip().lower().startswith(MARKER) for label in given_labels)
        return
    _check_spec(spec, given_labels)
