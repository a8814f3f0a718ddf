"""Tests of the ``runs-on`` label grammar (runs_fleet_core.domain.labels)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runs_fleet_core.domain.labels import (
    MARKER,
    SHOWN_MAX,
    LabelDefaults,
    find_marker,
    parse_label,
    parse_runs_on,
    quote,
    validate_presets,
)
from runs_fleet_core.domain.spec import Arch, RunnerSpec, describe
from runs_fleet_core.errors import LabelError

PRESETS = {
    "big-arm": "cpu=16/ram=64/arch=arm64/family=c7g+m7g",
    "gpu": "cpu=8+8/disk=200/spot=false",
    "broken": "cpu=lots",
}
DEFAULTS = LabelDefaults(presets=PRESETS)
TWENTY_FAMILIES = "+".join(f"f{i}" for i in range(20))
POOL_63 = "p" * 63


def _parse(label: str) -> RunnerSpec:
    return parse_label(label, defaults=DEFAULTS)


def _valid(suffix: str, id_: str, **expected: Any) -> Any:
    return pytest.param(f"runs-fleet=42{suffix}", expected, id=id_)


VALID = [
    _valid("", "defaults", cpu_min=2, cpu_max=4, ram_min=0, ram_max=None, arch=None,
           families=(), gen=None, disk_gib=40, pool=None, spot=True, private=False,
           backend=None, preset=None, os="linux", run_id="42"),
    _valid("/cpu=4", "cpu-single-doubles", cpu_min=4, cpu_max=8),
    _valid("/cpu=1", "cpu-min", cpu_min=1, cpu_max=2),
    _valid("/cpu=512", "cpu-max", cpu_min=512, cpu_max=1024),
    _valid("/cpu=4+8", "cpu-range", cpu_min=4, cpu_max=8),
    _valid("/cpu=4+4", "cpu-range-equal", cpu_min=4, cpu_max=4),
    _valid("/cpu=1+512", "cpu-range-widest", cpu_min=1, cpu_max=512),
    _valid("/cpu=08", "cpu-leading-zero", cpu_min=8, cpu_max=16),
    _valid("/ram=16", "ram-single-no-cap", ram_min=16, ram_max=None),
    _valid("/ram=16+32", "ram-range", ram_min=16, ram_max=32),
    _valid("/ram=1", "ram-min", ram_min=1, ram_max=None),
    _valid("/ram=32768", "ram-max", ram_min=32768, ram_max=None),
    _valid("/ram=8+8", "ram-range-equal", ram_min=8, ram_max=8),
    _valid("/arch=arm64", "arch-arm64", arch=Arch.ARM64),
    _valid("/arch=amd64", "arch-amd64", arch=Arch.AMD64),
    _valid("/arch=x64", "arch-x64-alias", arch=Arch.AMD64),
    _valid("/arch=ARM64", "arch-upper", arch=Arch.ARM64),
    _valid("/arch=X64", "arch-x64-upper", arch=Arch.AMD64),
    _valid("/family=c7g", "family-one", families=("c7g",)),
    _valid("/family=c7g+m7g", "family-two", families=("c7g", "m7g")),
    _valid("/family=C7G+M7i-Flex", "family-lowered", families=("c7g", "m7i-flex")),
    _valid(f"/family={TWENTY_FAMILIES}", "family-twenty",
           families=tuple(f"f{i}" for i in range(20))),
    _valid("/gen=1", "gen-min", gen=1),
    _valid("/gen=10", "gen-max", gen=10),
    _valid("/disk=1", "disk-min", disk_gib=1),
    _valid("/disk=16384", "disk-max", disk_gib=16384),
    _valid("/disk=100", "disk-100", disk_gib=100),
    _valid("/pool=default", "pool", pool="default"),
    _valid("/pool=My-Pool", "pool-lowered", pool="my-pool"),
    _valid("/pool=a", "pool-one-char", pool="a"),
    _valid("/pool=a_b-1", "pool-underscore", pool="a_b-1"),
    _valid(f"/pool={POOL_63}", "pool-63-chars", pool=POOL_63),
    _valid("/spot=false", "spot-false", spot=False),
    _valid("/spot=TRUE", "spot-upper", spot=True),
    _valid("/spot=False", "spot-mixed-case", spot=False),
    _valid("/private=true", "private-true", private=True),
    _valid("/private=FALSE", "private-upper-false", private=False),
    _valid("/backend=ec2", "backend-ec2", backend="ec2"),
    _valid("/backend=k8s", "backend-k8s", backend="k8s"),
    _valid("/backend=local", "backend-local", backend="local"),
    _valid("/backend=EC2", "backend-upper", backend="ec2"),
    _valid("/runner=4cpu-linux-arm64", "generic-arm64", cpu_min=4, cpu_max=8,
           arch=Arch.ARM64, preset="4cpu-linux-arm64", os="linux"),
    _valid("/runner=2cpu-linux-x64", "generic-x64", cpu_min=2, cpu_max=4, arch=Arch.AMD64,
           preset="2cpu-linux-x64"),
    _valid("/runner=16cpu-linux-amd64", "generic-amd64", cpu_min=16, cpu_max=32,
           arch=Arch.AMD64),
    _valid("/runner=4CPU-Linux-ARM64", "generic-upper", cpu_min=4, arch=Arch.ARM64,
           preset="4cpu-linux-arm64"),
    _valid("/runner=4cpu-linux-arm64/cpu=4", "generic-same-cpu", cpu_min=4, cpu_max=8),
    _valid("/runner=4cpu-linux-arm64/cpu=4+8", "generic-same-cpu-range", cpu_min=4,
           cpu_max=8),
    _valid("/runner=2cpu-linux-x64/arch=amd64", "generic-same-arch-alias", arch=Arch.AMD64),
    _valid("/arch=arm64/runner=4cpu-linux-arm64", "generic-after-key", arch=Arch.ARM64,
           cpu_min=4),
    _valid("/runner=4cpu-linux-arm64/ram=16/disk=100", "generic-plus-other-keys",
           cpu_min=4, ram_min=16, disk_gib=100),
    _valid("/runner=big-arm", "operator-preset", cpu_min=16, cpu_max=32, ram_min=64,
           ram_max=None, arch=Arch.ARM64, families=("c7g", "m7g"), preset="big-arm"),
    _valid("/runner=big-arm/ram=64", "operator-same-ram", ram_min=64),
    _valid("/runner=big-arm/disk=200/spot=false", "operator-plus-keys", cpu_min=16,
           disk_gib=200, spot=False),
    _valid("/runner=gpu", "operator-gpu", cpu_min=8, cpu_max=8, disk_gib=200, spot=False),
    _valid("/runner=GPU", "operator-name-case-insensitive", preset="gpu", cpu_max=8),
    _valid("/cpu=4+16/ram=8+32/arch=arm64/family=c7g+m7g/gen=7/disk=80/pool=builds"
           "/spot=false/private=true/backend=k8s", "every-key",
           cpu_min=4, cpu_max=16, ram_min=8, ram_max=32, arch=Arch.ARM64,
           families=("c7g", "m7g"), gen=7, disk_gib=80, pool="builds", spot=False,
           private=True, backend="k8s"),
    pytest.param("runs-fleet=abc.DEF_1-2", {"run_id": "abc.DEF_1-2"}, id="run-id-chars"),
    pytest.param("  runs-fleet=7/cpu=4\n", {"label": "runs-fleet=7/cpu=4", "cpu_min": 4},
                 id="surrounding-whitespace-stripped"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "expected"), VALID)
def test_valid_labels(label: str, expected: dict[str, Any]) -> None:
    spec = _parse(label)
    actual = {field: getattr(spec, field) for field in expected}
    assert actual == expected
    assert spec.label == label.strip()


def _bad(suffix: str, id_: str, *fragments: str) -> Any:
    return pytest.param(f"runs-fleet=42{suffix}", fragments, id=id_)


INVALID = [
    pytest.param("runs-fleet=", ("'runs-fleet='", "run id is missing"), id="no-run-id"),
    pytest.param("runs-fleet=/cpu=4", ("'runs-fleet='", "run id is missing"),
                 id="no-run-id-with-keys"),
    pytest.param("runs-fleet=${{ github.run_id }}/cpu=4",
                 ("'runs-fleet=${{ github.run_id }}'", "not expanded", "double-quoted"),
                 id="unexpanded-run-id"),
    pytest.param("runs-fleet=$GITHUB_RUN_ID", ("'runs-fleet=$GITHUB_RUN_ID'", "shell variable"),
                 id="shell-variable-run-id"),
    pytest.param("runs-fleet=12#3", ("'runs-fleet=12#3'", "only letters, digits"),
                 id="run-id-bad-char"),
    pytest.param("runs-fleet=1 2/cpu=4", ("'runs-fleet=1 2'", "only letters"),
                 id="run-id-space"),
    pytest.param("self-hosted", ("'self-hosted'", "starts with 'runs-fleet='"),
                 id="not-a-marker"),
    pytest.param("runs-fleet=42//cpu=4", ("'runs-fleet=42//cpu=4'", "empty segment"),
                 id="double-slash"),
    _bad("/cpu=4/", "trailing-slash", "'runs-fleet=42/cpu=4/'", "empty segment"),
    _bad("/", "only-slash", "empty segment"),
    _bad("/cpu= 4", "space-in-value", "'cpu= 4'", "whitespace"),
    _bad("/cpu=\t4", "tab-in-value", "whitespace"),
    _bad("/cpu=\uff14", "non-ascii-digit", "'cpu=\uff14'", "non-ASCII"),
    _bad("/cpu4", "no-equals", "'cpu4'", "key=value", "known keys"),
    _bad("/cpu=", "empty-value", "'cpu='", "needs a value"),
    _bad("/=4", "empty-key", "'=4'", "unknown key"),
    _bad("/cpu=abc", "cpu-not-number", "'cpu=abc'", "cpu=4 or cpu=4+8", "N..2N"),
    _bad("/cpu=0", "cpu-zero", "'cpu=0'", "between 1 and 512"),
    _bad("/cpu=513", "cpu-too-big", "'cpu=513'", "between 1 and 512"),
    _bad("/cpu=99999999999999999999", "cpu-huge", "between 1 and 512"),
    _bad("/cpu=-1", "cpu-negative", "'cpu=-1'", "whole number"),
    _bad("/cpu=4.5", "cpu-fraction", "'cpu=4.5'", "whole number"),
    _bad("/cpu=8+4", "cpu-min-above-max", "'cpu=8+4'", "smaller number first", "cpu=4+8"),
    _bad("/cpu=4+8+16", "cpu-three-parts", "'cpu=4+8+16'", "range N+M"),
    _bad("/cpu=4+", "cpu-range-missing-max", "'cpu=4+'", "range N+M"),
    _bad("/cpu=+4", "cpu-range-missing-min", "'cpu=+4'", "range N+M"),
    _bad("/cpu=4+600", "cpu-range-max-too-big", "'cpu=4+600'", "between 1 and 512"),
    _bad("/cpu=2/cpu=4", "cpu-twice", "'cpu=4'", "already set by 'cpu=2'"),
    _bad("/cpu=4/cpu=4", "cpu-twice-same", "'cpu=4'", "give each key once"),
    _bad("/CPU=4", "key-upper-case", "'CPU=4'", "lower case", "'cpu'"),
    _bad("/Arch=arm64", "key-mixed-case", "'Arch=arm64'", "'arch'"),
    _bad("/cpux=4", "key-typo", "'cpux=4'", "unknown key 'cpux'", "did you mean 'cpu'"),
    _bad("/memory=16", "key-unknown", "'memory=16'", "unknown key", "known keys: runner, cpu"),
    _bad("/gpu=1", "key-unknown-gpu", "'gpu=1'", "unknown key 'gpu'"),
    _bad("/ram=0", "ram-zero", "'ram=0'", "between 1 and 32768"),
    _bad("/ram=32769", "ram-too-big", "'ram=32769'", "between 1 and 32768"),
    _bad("/ram=16GB", "ram-with-unit", "'ram=16GB'", "ram=16 or ram=16+32"),
    _bad("/ram=32+16", "ram-min-above-max", "'ram=32+16'", "smaller number first"),
    _bad("/arch=arm", "arch-unknown", "'arch=arm'", "arm64, amd64 or x64"),
    _bad("/arch=aarch64", "arch-aarch64", "'arch=aarch64'", "arm64, amd64 or x64"),
    _bad("/family=c7g++m7g", "family-empty-name", "'family=c7g++m7g'", "empty name"),
    _bad("/family=c7g+", "family-trailing-plus", "'family=c7g+'", "empty name"),
    _bad("/family=7g", "family-starts-digit", "'family=7g'", "not an instance family"),
    _bad("/family=c7g.large", "family-instance-type", "'family=c7g.large'",
         "not an instance family"),
    _bad("/family=c7g+C7G", "family-duplicate", "'family=c7g+C7G'", "more than once"),
    _bad(f"/family={TWENTY_FAMILIES}+extra", "family-too-many", "at most 20"),
    _bad("/gen=0", "gen-zero", "'gen=0'", "between 1 and 10"),
    _bad("/gen=11", "gen-too-big", "'gen=11'", "between 1 and 10"),
    _bad("/gen=seven", "gen-not-number", "'gen=seven'", "gen=7"),
    _bad("/gen=6+7", "gen-range", "'gen=6+7'", "whole number"),
    _bad("/disk=0", "disk-zero", "'disk=0'", "between 1 and 16384 GiB"),
    _bad("/disk=16385", "disk-too-big", "'disk=16385'", "between 1 and 16384"),
    _bad("/disk=100GB", "disk-with-unit", "'disk=100GB'", "disk=100"),
    _bad("/pool=-bad", "pool-leading-dash", "'pool=-bad'", "pool name of 1-63"),
    _bad("/pool=a.b", "pool-dot", "'pool=a.b'", "pool name"),
    _bad(f"/pool={POOL_63}x", "pool-64-chars", "pool name of 1-63"),
    _bad("/spot=yes", "spot-yes", "'spot=yes'", "true or false"),
    _bad("/spot=1", "spot-one", "'spot=1'", "true or false"),
    _bad("/private=maybe", "private-maybe", "'private=maybe'", "private must be true or false"),
    _bad("/backend=aws", "backend-unknown", "'backend=aws'", "ec2, k8s, local"),
    _bad("/backend=fargate", "backend-fargate", "'backend=fargate'", "one of"),
    _bad("/runner=8cpu-windows-x64", "generic-windows", "'runner=8cpu-windows-x64'",
         "only Linux runners"),
    _bad("/runner=4cpu-macos-arm64", "generic-macos", "only Linux runners"),
    _bad("/runner=4cpu-linux-riscv", "generic-bad-arch", "'runner=4cpu-linux-riscv'",
         "unknown architecture 'riscv'"),
    _bad("/runner=0cpu-linux-x64", "generic-zero-cpu", "'runner=0cpu-linux-x64'",
         "between 1 and 512"),
    _bad("/runner=1024cpu-linux-x64", "generic-too-many-cpu", "between 1 and 512"),
    _bad("/runner=huge", "preset-unknown", "'runner=huge'", "unknown runner preset 'huge'",
         "<N>cpu-linux-<arch>", "big-arm, broken, gpu"),
    _bad("/runner=big-armm", "preset-typo", "'runner=big-armm'", "did you mean 'big-arm'"),
    _bad("/runner=broken", "preset-misconfigured", "'runner=broken'",
         "configuration is invalid", "'cpu=lots'", "operator"),
    _bad("/runner=4cpu-linux-arm64/cpu=8", "contradiction-cpu", "'cpu=8'",
         "'runner=4cpu-linux-arm64'", "cpu=4"),
    _bad("/runner=4cpu-linux-arm64/arch=amd64", "contradiction-arch", "'arch=amd64'",
         "'runner=4cpu-linux-arm64'", "arch=arm64"),
    _bad("/arch=x64/runner=4cpu-linux-arm64", "contradiction-key-first", "'arch=x64'",
         "contradicts"),
    _bad("/runner=big-arm/family=c7g", "contradiction-operator-family", "'family=c7g'",
         "'runner=big-arm'", "family=c7g+m7g"),
    _bad("/runner=gpu/spot=true", "contradiction-operator-spot", "'spot=true'",
         "spot=false"),
    _bad("/runner=big-arm/runner=gpu", "runner-twice", "'runner=gpu'", "already set"),
    _bad("/runner=", "runner-empty", "'runner='", "needs a value"),
    _bad("/cpu=4/${{ matrix.cpu }}", "unexpanded-expression-later", "not expanded"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "fragments"), INVALID)
def test_invalid_labels(label: str, fragments: tuple[str, ...]) -> None:
    with pytest.raises(LabelError) as caught:
        _parse(label)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    assert caught.value.segment
    assert quote(caught.value.segment) in message


def test_table_is_large_enough() -> None:
    assert len(VALID) + len(INVALID) >= 80


# -- parse_runs_on and find_marker ------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param([], id="empty"),
        pytest.param(["self-hosted", "linux"], id="other-labels"),
        pytest.param("ubuntu-latest", id="plain-string"),
        pytest.param(["runs-fleet"], id="word-without-equals"),
        pytest.param(["x-runs-fleet=1"], id="marker-not-at-start"),
    ],
)
def test_parse_runs_on_returns_none_without_marker(labels: list[str] | str) -> None:
    assert parse_runs_on(labels) is None


def test_parse_runs_on_keeps_every_label() -> None:
    labels = ["self-hosted", "runs-fleet=9/cpu=4", "extra"]
    spec = parse_runs_on(labels)
    assert spec is not None
    assert spec.label == "runs-fleet=9/cpu=4"
    assert spec.labels == ("self-hosted", "runs-fleet=9/cpu=4", "extra")
    assert spec.run_id == "9"
    assert spec.cpu_min == 4


def test_parse_runs_on_accepts_a_plain_string() -> None:
    spec = parse_runs_on("runs-fleet=9/arch=x64")
    assert spec is not None
    assert spec.labels == ("runs-fleet=9/arch=x64",)
    assert spec.arch is Arch.AMD64


def test_parse_runs_on_uses_defaults() -> None:
    spec = parse_runs_on(["runs-fleet=9/runner=gpu"], defaults=DEFAULTS)
    assert spec is not None
    assert spec.preset == "gpu"
    assert spec.disk_gib == 200


def test_parse_runs_on_rejects_two_different_markers() -> None:
    with pytest.raises(LabelError, match="only one runs-fleet label") as caught:
        parse_runs_on(["runs-fleet=9/cpu=4", "runs-fleet=9/cpu=8"])
    assert caught.value.segment == "runs-fleet=9/cpu=8"


def test_parse_runs_on_allows_a_repeated_identical_marker() -> None:
    spec = parse_runs_on(["runs-fleet=9/cpu=4", "runs-fleet=9/cpu=4"])
    assert spec is not None
    assert spec.cpu_min == 4


def test_parse_runs_on_rejects_an_upper_case_marker() -> None:
    with pytest.raises(LabelError, match="lower case"):
        parse_runs_on(["self-hosted", "Runs-Fleet=9/cpu=4"])


def test_parse_runs_on_propagates_label_errors() -> None:
    with pytest.raises(LabelError, match="'cpu=x'"):
        parse_runs_on(["linux", "runs-fleet=9/cpu=x"])


def test_find_marker() -> None:
    labels = ["self-hosted", "runs-fleet=1/cpu=2", "runs-fleet=2", "linux"]
    assert find_marker(labels) == "runs-fleet=1/cpu=2"
    assert labels == ["self-hosted", "runs-fleet=1/cpu=2", "runs-fleet=2", "linux"]
    assert find_marker(["self-hosted"]) is None
    assert find_marker([]) is None
    assert find_marker([" runs-fleet=3 "]) == " runs-fleet=3 "


# -- defaults and presets ------------------------------------------------------------


def test_default_disk_comes_from_defaults() -> None:
    spec = parse_label("runs-fleet=1", defaults=LabelDefaults(disk_gib=75))
    assert spec.disk_gib == 75
    explicit = parse_label("runs-fleet=1/disk=10", defaults=LabelDefaults(disk_gib=75))
    assert explicit.disk_gib == 10


def test_operator_preset_takes_precedence_over_generic() -> None:
    defaults = LabelDefaults(presets={"4cpu-linux-arm64": "cpu=6/arch=amd64"})
    spec = parse_label("runs-fleet=1/runner=4cpu-linux-arm64", defaults=defaults)
    assert (spec.cpu_min, spec.cpu_max, spec.arch) == (6, 12, Arch.AMD64)
    assert spec.preset == "4cpu-linux-arm64"


def test_unknown_preset_without_configured_presets() -> None:
    with pytest.raises(LabelError, match="none configured"):
        parse_label("runs-fleet=1/runner=big")


def test_preset_cannot_nest() -> None:
    defaults = LabelDefaults(presets={"outer": "runner=4cpu-linux-arm64"})
    with pytest.raises(LabelError, match="cannot refer to another preset"):
        parse_label("runs-fleet=1/runner=outer", defaults=defaults)


def test_backends_come_from_defaults() -> None:
    defaults = LabelDefaults(backends=frozenset({"ec2"}))
    assert parse_label("runs-fleet=1/backend=ec2", defaults=defaults).backend == "ec2"
    with pytest.raises(LabelError, match=r"backend must be one of ec2$"):
        parse_label("runs-fleet=1/backend=k8s", defaults=defaults)


def test_presets_are_read_only_copies() -> None:
    source = {"a": "cpu=4"}
    defaults = LabelDefaults(presets=source)
    source["a"] = "cpu=8"
    assert defaults.presets["a"] == "cpu=4"
    with pytest.raises(TypeError):
        defaults.presets["b"] = "cpu=2"  # type: ignore[index]
    assert LabelDefaults().presets == {}


def test_validate_presets_accepts_good_presets() -> None:
    good = {"big-arm": PRESETS["big-arm"], "gpu": PRESETS["gpu"], "x.1_y": "backend=k8s"}
    assert validate_presets(good) == []


@pytest.mark.parametrize(
    ("presets", "fragments"),
    [
        pytest.param({"Big": "cpu=4"}, ("preset 'Big'", "lower-case"), id="upper-case-name"),
        pytest.param({"a/b": "cpu=4"}, ("preset 'a/b'", "preset name"), id="slash-in-name"),
        pytest.param({"": "cpu=4"}, ("preset ''",), id="empty-name"),
        pytest.param({"x": "cpu=lots"}, ("preset 'x'", "'cpu=lots'"), id="bad-value"),
        pytest.param({"x": ""}, ("preset 'x'", "empty segment"), id="empty-spec"),
        pytest.param({"x": "cpu=4/cpu=8"}, ("already set",), id="duplicate-key"),
        pytest.param({"x": "runner=gpu"}, ("another preset",), id="nested"),
        pytest.param({"x": "backend=nomad"}, ("'backend=nomad'",), id="unknown-backend"),
        pytest.param({"x": "runs-fleet=1/cpu=4"}, ("unknown key",), id="full-label"),
    ],
)
def test_validate_presets_reports_problems(
    presets: dict[str, str], fragments: tuple[str, ...]
) -> None:
    problems = validate_presets(presets, defaults=LabelDefaults())
    assert len(problems) == 1
    for fragment in fragments:
        assert fragment in problems[0]


def test_validate_presets_reports_each_invalid_preset() -> None:
    problems = validate_presets({"ok": "cpu=4", "Bad": "cpu=4", "worse": "ram=x"})
    assert len(problems) == 2


# -- what an error quotes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        ("runs-fleet=1/cpu=\x1b[31m4", "'cpu=\\x1b[31m4'"),
        ("runs-fleet=\ud800", "'runs-fleet=\\ud800'"),
        ("RUNS-FLEET=1\x07", "'RUNS-FLEET=1\\x07'"),
        ("runs-fleet=1/family=c7g+\x00", "'\\x00'"),
    ],
    ids=["terminal-escape", "lone-surrogate", "bell-in-upper-case-marker", "nul-in-family"],
)
def test_an_error_escapes_what_a_terminal_or_utf8_cannot_take(label: str, shown: str) -> None:
    """A label comes from a workflow file: quoted raw, a control sequence would reach the
    operator's terminal and a lone surrogate made the webhook's 422 answer unencodable
    (the server answered 500 instead)."""
    with pytest.raises(LabelError) as caught:
        parse_runs_on([label], defaults=DEFAULTS)
    message = str(caught.value)
    assert shown in message
    assert message.isprintable()
    message.encode("utf-8")


def test_an_error_quotes_a_long_part_cut_short() -> None:
    label = "runs-fleet=1/pool=" + "x" * 5000
    with pytest.raises(LabelError) as caught:
        _parse(label)
    message = str(caught.value)
    assert "'pool=xxxx" in message and "...'" in message
    assert len(message) < 400
    assert caught.value.segment == "pool=" + "x" * 5000


def test_a_huge_number_is_described_not_repeated() -> None:
    with pytest.raises(LabelError) as caught:
        _parse("runs-fleet=1/cpu=" + "9" * 3000)
    assert "got a number of 3000 digits" in str(caught.value)
    assert len(str(caught.value)) < 300


def test_quote_leaves_ordinary_text_alone() -> None:
    assert quote("cpu=4") == "'cpu=4'"
    assert quote("caf\u00e9") == "'caf\u00e9'"
    assert quote("a" * SHOWN_MAX) == f"'{'a' * SHOWN_MAX}'"
    assert quote("a" * (SHOWN_MAX + 1)) == f"'{'a' * (SHOWN_MAX - 3)}...'"


# -- describe --------------------------------------------------------------------------


def test_describe_defaults() -> None:
    spec = parse_label("runs-fleet=1")
    assert describe(spec) == "2-4 vCPU, any RAM, any arch, linux, 40 GiB disk, spot"


def test_describe_everything() -> None:
    spec = _parse(
        "runs-fleet=1/runner=big-arm/gen=7/pool=builds/backend=k8s/spot=false/private=true"
    )
    assert describe(spec) == (
        "16-32 vCPU, 64+ GiB RAM, arm64 only, linux, family c7g/m7g, generation 7+, "
        "40 GiB disk, on-demand, private network, pool builds, backend k8s, preset big-arm"
    )


def test_describe_ranges() -> None:
    assert describe(parse_label("runs-fleet=1/cpu=4+4/ram=8+16")).startswith("4 vCPU, 8-16 GiB RAM")


# -- properties ------------------------------------------------------------------------

_KEYS = ["runner", "cpu", "ram", "arch", "family", "gen", "disk", "pool", "spot",
         "private", "backend", "CPU", "foo", ""]  # fmt: skip
_VALUE_CHARS = "0123456789+-_.abcdfgilmnrstuxACGX$ {}"
_near_segments = st.builds(
    lambda key, eq, value: f"{key}{eq}{value}",
    st.sampled_from(_KEYS),
    st.sampled_from(["=", "", "=="]),
    st.text(alphabet=_VALUE_CHARS, max_size=12),
)
_near_labels = st.builds(
    lambda run_id, segments: MARKER + run_id + "".join("/" + s for s in segments),
    st.text(alphabet="0123456789abc-_.$ {}", max_size=6),
    st.lists(_near_segments, max_size=6),
)
_any_label = st.one_of(st.text(max_size=40), _near_labels, _near_labels.map(str.upper))


@settings(max_examples=500)
@given(st.one_of(st.lists(_any_label, max_size=4), _any_label))
def test_parse_runs_on_never_fails_unexpectedly(labels: list[str] | str) -> None:
    outcome: RunnerSpec | LabelError | None
    try:
        outcome = parse_runs_on(labels, defaults=DEFAULTS)
    except LabelError as error:
        outcome = error
    if isinstance(outcome, LabelError):
        assert str(outcome)
    else:
        assert outcome is None or isinstance(outcome, RunnerSpec)


@st.composite
def _label_and_expected(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    segments: list[str] = []
    expected: dict[str, Any] = {}
    if draw(st.booleans()):
        low = draw(st.integers(1, 512))
        if draw(st.booleans()):
            high = draw(st.integers(low, 512))
            segments.append(f"cpu={low}+{high}")
        else:
            high = 2 * low
            segments.append(f"cpu={low}")
        expected.update(cpu_min=low, cpu_max=high)
    if draw(st.booleans()):
        low = draw(st.integers(1, 32768))
        high_or_none = draw(st.none() | st.integers(low, 32768))
        segments.append(f"ram={low}" if high_or_none is None else f"ram={low}+{high_or_none}")
        expected.update(ram_min=low, ram_max=high_or_none)
    if draw(st.booleans()):
        word = draw(st.sampled_from(["arm64", "amd64", "x64", "ARM64", "X64"]))
        segments.append(f"arch={word}")
        expected["arch"] = Arch.ARM64 if word.lower() == "arm64" else Arch.AMD64
    if draw(st.booleans()):
        fams = draw(
            st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True), min_size=1,
                     max_size=20, unique=True)
        )  # fmt: skip
        segments.append("family=" + "+".join(fams))
        expected["families"] = tuple(fams)
    for key, field, lo, hi in (("gen", "gen", 1, 10), ("disk", "disk_gib", 1, 16384)):
        if draw(st.booleans()):
            number = draw(st.integers(lo, hi))
            segments.append(f"{key}={number}")
            expected[field] = number
    if draw(st.booleans()):
        pool = draw(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True))
        segments.append(f"pool={pool}")
        expected["pool"] = pool
    for key in ("spot", "private"):
        if draw(st.booleans()):
            flag = draw(st.booleans())
            segments.append(f"{key}={str(flag).lower()}")
            expected[key] = flag
    if draw(st.booleans()):
        backend = draw(st.sampled_from(["ec2", "k8s", "local"]))
        segments.append(f"backend={backend}")
        expected["backend"] = backend
    run_id = draw(st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True))
    expected["run_id"] = run_id
    ordered = draw(st.permutations(segments))
    return MARKER + run_id + "".join("/" + s for s in ordered), expected


@settings(max_examples=500)
@given(_label_and_expected())
def test_rendered_valid_spec_parses_back(case: tuple[str, dict[str, Any]]) -> None:
    label, expected = case
    spec = parse_label(label)
    assert {field: getattr(spec, field) for field in expected} == expected
    assert spec.label == label
    from_list = parse_runs_on(["self-hosted", label])
    assert from_list == attrs.evolve(spec, labels=("self-hosted", label))
