"""Hypothesis strategies for ``runs-on`` labels: random text, and near-valid labels built
from the grammar's own keys and values with wrong values, duplicates, unicode, huge
numbers and stray separators mixed in. Shared by the label and webhook fuzz targets.

10,000 examples of each target run in the normal suite, and every Hypothesis draw costs
tens of microseconds, so a near-valid label is assembled by a ``random.Random`` whose
seed Hypothesis draws (the label itself is what a failure reports), next to plain
Hypothesis text for everything else.
"""

from __future__ import annotations

import random

from hypothesis import strategies as st

from runs_fleet_core.domain.labels import KNOWN_KEYS, MARKER, LabelDefaults

PRESETS = {
    "big-arm": "cpu=16/ram=64/arch=arm64/family=c7g+m7g",
    "gpu": "cpu=8+8/disk=200/spot=false",
    "broken": "cpu=lots",
}
DEFAULTS = LabelDefaults(presets=PRESETS, backends=frozenset({"ec2", "k8s", "local", "memory"}))
"""Operator presets (one of them invalid) and one extra backend, as a deployment has."""

_TWENTY_FAMILIES = "+".join(f"f{i}" for i in range(20))
_GOOD_VALUES = {
    "runner": ["4cpu-linux-arm64", "2cpu-linux-x64", "512cpu-linux-amd64", "big-arm", "gpu",
               "GPU", "broken", "4CPU-Linux-ARM64", "16cpu-linux-amd64"],
    "cpu": ["1", "2", "4", "08", "512", "4+8", "4+4", "1+512", "8+16", "16+32"],
    "ram": ["1", "16", "64", "32768", "16+32", "8+8"],
    "arch": ["arm64", "amd64", "x64", "ARM64", "X64"],
    "family": ["c7g", "c7g+m7g", "m7i-flex", "C7G+M7i-Flex", _TWENTY_FAMILIES],
    "gen": ["1", "7", "10"],
    "disk": ["1", "40", "100", "200", "16384"],
    "pool": ["default", "a", "My-Pool", "a_b-1", "p" * 63],
    "spot": ["true", "false", "TRUE", "False"],
    "private": ["true", "false", "FALSE"],
    "backend": ["ec2", "k8s", "local", "memory", "EC2"],
}  # fmt: skip
_ODD_CHARACTERS = (
    # digits and letters outside ASCII, case-folding traps, invisible and control
    # characters, right-to-left override, lone surrogates
    "\u0663\uff14\u00b2\U0001d7d8\u0130\u0131\u212a\u01c5\u00df\ufb00\u017f\x00\x07\x1b"
    "\x7f\x85\u200b\u200d\u202e\ufeff\u00a0\u3000\u2028\ud800\udfff\U0001f600\u0301"
)
_BAD_VALUES = [
    "", "0", "-1", "513", "32769", "16385", "11", "9" * 30, "1" * 9, "1000000000", "0" * 20 + "4",
    "1e3", "0x10", "4.5", "4+", "+4", "4++8", "8+4", "4+8+16", "+", "++", "yes", "1", "arm",
    "aarch64", "sparc", "c7g+c7g", "c7g++m7g", "7g", "c7g.large", "p" * 64, "-bad", "a.b",
    "banana", "lots", "aws", "=", "a=b", "/", "${{ matrix.cpu }}", "}}", "${{", " 4", "4 ", "\t",
    "\n", "8cpu-windows-x64", "0cpu-linux-x64", "1024cpu-linux-x64", "4cpu-linux-riscv",
    "big-armm", "9" * 12 + "cpu-linux-arm64", "4cpu-linux-", "cpu-linux-arm64", "4cpu--arm64",
    "\x1b[31m", "x" * 500, *_ODD_CHARACTERS,
]  # fmt: skip
_KEY_VARIANTS = [
    *KNOWN_KEYS, "CPU", "Arch", "cpux", "memory", "gpu", "", "ram ", "\u017fpot", "K8S",
]  # fmt: skip
_ALL_VALUES = sorted({v for values in _GOOD_VALUES.values() for v in values} | set(_BAD_VALUES))
_GOOD_SEGMENTS = [f"{key}={value}" for key, values in _GOOD_VALUES.items() for value in values]
_SEPARATORS = ["=", "=", "=", "", "==", ":", " = "]
_CHARACTERS = "0123456789+-_.=/abcdefgilmnprstuxACGX${} " + _ODD_CHARACTERS
_RUN_IDS = ["42", "2202229078", "abc.DEF_1-2", "a", "0", "-", ".", "x" * 40]
_BAD_RUN_IDS = [
    "", "${{ github.run_id }}", "$GITHUB_RUN_ID", "12#3", "1 2", "\u0663", "\ud800", "\x1b[2J",
]  # fmt: skip
_MARKERS = [MARKER] * 25 + ["RUNS-FLEET=", "Runs-Fleet=", "runs-fleet", "runs-fleet:", "runs_f="]
_OTHER_LABELS = ["self-hosted", "linux", "ubuntu-latest", "x64", "runs-fleet", "x-runs-fleet=1", ""]


def _text(rnd: random.Random, most: int) -> str:
    return "".join(rnd.choice(_CHARACTERS) for _ in range(rnd.randint(0, most)))


def _number(rnd: random.Random) -> str:
    return str(rnd.choice([rnd.randint(-5, 600), rnd.randint(0, 10**40), rnd.randint(0, 20)]))


def _segment(rnd: random.Random, key: str) -> str:
    """Mostly a good value for ``key``, so most labels get past their first segments and
    the checks behind them (repeats, presets, contradictions) are reached."""
    roll = rnd.random()
    if roll < 0.75:
        return f"{key}={rnd.choice(_GOOD_VALUES[key])}"
    if roll < 0.9:
        return (
            rnd.choice(_KEY_VARIANTS + [key] * 10)
            + rnd.choice(_SEPARATORS)
            + rnd.choice(_ALL_VALUES)
        )
    if roll < 0.96:
        high = "" if rnd.random() < 0.5 else "+" + _number(rnd)
        return f"{rnd.choice(['cpu', 'ram', 'gen', 'disk', key])}={_number(rnd)}{high}"
    return f"{rnd.choice(_KEY_VARIANTS)}={_text(rnd, 10)}"


def near_valid_label(rnd: random.Random) -> str:
    """A label that starts (nearly) like a runs-fleet label: the grammar's keys with good
    and bad values, sometimes a repeated segment and stray or doubled separators."""
    keys = rnd.sample(sorted(_GOOD_VALUES), rnd.choice([0, 1, 1, 2, 2, 3, 3, 4, 5, 6]))
    segments = [_segment(rnd, key) for key in keys]
    if segments and rnd.random() < 0.1:
        segments.insert(rnd.randint(0, len(segments)), rnd.choice(segments))
    body = "".join("/" + segment for segment in segments[:-1])
    if segments:
        body += rnd.choice(["/"] * 20 + ["//", "\\", "/ "]) + segments[-1]
    roll = rnd.random()
    run_id = rnd.choice(_RUN_IDS if roll < 0.9 else _BAD_RUN_IDS) if roll < 0.95 else _text(rnd, 8)
    label = rnd.choice(_MARKERS) + run_id + body + rnd.choice([""] * 12 + ["/", "//"])
    padding = rnd.choice(["", "", "", " ", "\n", "\u3000"])
    return padding + label + padding


def good_label(rnd: random.Random) -> str:
    """A label of good values only (a preset may still contradict another key)."""
    keys = rnd.sample(sorted(_GOOD_VALUES), rnd.randint(0, 4))
    segments = "".join(f"/{key}={rnd.choice(_GOOD_VALUES[key])}" for key in keys)
    return MARKER + rnd.choice(_RUN_IDS) + segments


def runs_on_list(rnd: random.Random) -> list[str]:
    """A ``runs-on`` list: other labels mixed with (near) runs-fleet labels."""
    return [
        near_valid_label(rnd) if rnd.random() < 0.6 else rnd.choice(_OTHER_LABELS)
        for _ in range(rnd.randint(0, 4))
    ]


randoms = st.integers(min_value=0, max_value=2**64 - 1).map(random.Random)
"""A ``random.Random`` seeded by one Hypothesis draw (Hypothesis's own ``randoms()``
routes every call through itself, which costs more than the rest of an example)."""
near_valid_labels = randoms.map(near_valid_label)
single_labels = st.one_of(
    near_valid_labels,
    near_valid_labels,
    near_valid_labels,
    st.text(max_size=60),
    st.text(max_size=60).map(lambda text: MARKER + text),
)
"""One label: mostly near-valid, sometimes any text (with or without the marker)."""

runs_on = st.one_of(single_labels, randoms.map(runs_on_list))
"""A job's ``runs-on``: one label, or a list mixing other labels with (near) runs-fleet ones."""
