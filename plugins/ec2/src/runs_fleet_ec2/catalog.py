"""The EC2 instance types runs-fleet may start runners on, and which of them fit a spec.

A label asks for a shape (``cpu=4+8/ram=16/arch=arm64/family=c7g+m7g/gen=7``), not an
instance type. EC2 Fleet needs concrete types, and asking AWS which types exist would
cost a call per job and make ``runs-fleet ec2 render`` depend on AWS; so the catalog is
built in: current general-purpose, compute- and memory-optimised families of both
architectures, plus small burstable ones. Matching is smallest first (vCPU, memory,
then name) because a CI job that asked for "at least 4 vCPU" is served best by the
cheapest machine that has them, and Fleet chooses among the candidates we list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import attrs

from runs_fleet_core.domain.spec import Arch, RunnerSpec

MAX_CANDIDATES = 20
"""EC2 Fleet takes at most this many overrides per launch template config."""


@attrs.frozen(kw_only=True)
class InstanceType:
    """One EC2 instance type: its name and the facts a spec is matched against."""

    name: str
    vcpu: int
    memory_gib: int
    arch: Arch
    family: str
    generation: int

    @property
    def sort_key(self) -> tuple[int, int, str]:
        """Smallest first: vCPU, then memory, then name (a stable tie-break)."""
        return (self.vcpu, self.memory_gib, self.name)


_SIZES = {
    "medium": 1,
    "large": 2,
    "xlarge": 4,
    "2xlarge": 8,
    "4xlarge": 16,
    "8xlarge": 32,
    "12xlarge": 48,
    "16xlarge": 64,
}
_FROM_LARGE = tuple(size for size in _SIZES if size != "medium")
_FROM_MEDIUM = tuple(_SIZES)

# family, architecture, GiB of memory per vCPU, sizes offered
_REGULAR_FAMILIES: tuple[tuple[str, Arch, int, tuple[str, ...]], ...] = (
    ("m6i", Arch.AMD64, 4, _FROM_LARGE),
    ("m7i", Arch.AMD64, 4, _FROM_LARGE),
    ("m7a", Arch.AMD64, 4, _FROM_MEDIUM),
    ("m7g", Arch.ARM64, 4, _FROM_MEDIUM),
    ("m8g", Arch.ARM64, 4, _FROM_MEDIUM),
    ("c6i", Arch.AMD64, 2, _FROM_LARGE),
    ("c7i", Arch.AMD64, 2, _FROM_LARGE),
    ("c7a", Arch.AMD64, 2, _FROM_MEDIUM),
    ("c6g", Arch.ARM64, 2, _FROM_MEDIUM),
    ("c7g", Arch.ARM64, 2, _FROM_MEDIUM),
    ("c8g", Arch.ARM64, 2, _FROM_MEDIUM),
    ("r7i", Arch.AMD64, 8, _FROM_LARGE),
    ("r7g", Arch.ARM64, 8, _FROM_MEDIUM),
)

# Burstable types do not follow a fixed memory-per-vCPU ratio: (size, vCPU, GiB).
_BURSTABLE_SIZES = (("medium", 2, 4), ("large", 2, 8), ("xlarge", 4, 16))
_BURSTABLE_FAMILIES = (("t3", Arch.AMD64), ("t4g", Arch.ARM64))


def generation_of(family: str) -> int:
    """The generation digit of a family name: ``m7g`` → 7, ``t4g`` → 4."""
    found = re.search(r"[0-9]+", family)
    if found is None:
        raise ValueError(f"instance family {family!r} has no generation number")
    return int(found.group())


def _build() -> tuple[InstanceType, ...]:
    types: list[InstanceType] = []
    for family, arch, ratio, sizes in _REGULAR_FAMILIES:
        for size in sizes:
            vcpu = _SIZES[size]
            types.append(_type(family, size, vcpu, vcpu * ratio, arch))
    for family, arch in _BURSTABLE_FAMILIES:
        for size, vcpu, memory in _BURSTABLE_SIZES:
            types.append(_type(family, size, vcpu, memory, arch))
    return tuple(sorted(types, key=lambda t: t.sort_key))


def _type(family: str, size: str, vcpu: int, memory: int, arch: Arch) -> InstanceType:
    return InstanceType(
        name=f"{family}.{size}",
        vcpu=vcpu,
        memory_gib=memory,
        arch=arch,
        family=family,
        generation=generation_of(family),
    )


CATALOG: tuple[InstanceType, ...] = _build()
"""Every instance type runs-fleet knows, smallest first."""

FAMILIES: frozenset[str] = frozenset(t.family for t in CATALOG)

BY_NAME: dict[str, InstanceType] = {t.name: t for t in CATALOG}


def family_of(instance_type: str) -> str:
    """The family part of an instance type name: ``c7g.large`` → ``c7g``."""
    return instance_type.split(".", 1)[0]


def _fits_cpu(spec: RunnerSpec, t: InstanceType) -> bool:
    return spec.cpu_min <= t.vcpu and (spec.cpu_max is None or t.vcpu <= spec.cpu_max)


def _fits_ram(spec: RunnerSpec, t: InstanceType) -> bool:
    return spec.ram_min <= t.memory_gib and (spec.ram_max is None or t.memory_gib <= spec.ram_max)


def _fits_family(spec: RunnerSpec, t: InstanceType) -> bool:
    return not spec.families or t.family in spec.families


def _fits_gen(spec: RunnerSpec, t: InstanceType) -> bool:
    return spec.gen is None or t.generation >= spec.gen


def matching(
    spec: RunnerSpec, arch: Arch | None = None, *, types: Iterable[InstanceType] = CATALOG
) -> list[InstanceType]:
    """Every type that satisfies ``spec``, smallest first.

    ``arch`` narrows to one architecture (the provider passes the one it chose when the
    spec leaves it open); without it the spec's own ``arch`` applies, and ``None`` in
    both means either architecture.
    """
    wanted = arch or spec.arch
    found = [
        t
        for t in types
        if (wanted is None or t.arch is wanted)
        and _fits_cpu(spec, t)
        and _fits_ram(spec, t)
        and _fits_family(spec, t)
        and _fits_gen(spec, t)
    ]
    return sorted(found, key=lambda t: t.sort_key)


def candidates(spec: RunnerSpec, arch: Arch | None = None) -> list[InstanceType]:
    """The at most :data:`MAX_CANDIDATES` smallest types that satisfy ``spec``."""
    return matching(spec, arch)[:MAX_CANDIDATES]


def arches_for(spec: RunnerSpec) -> list[Arch]:
    """The architectures with at least one matching type, arm64 first."""
    found = {t.arch for t in matching(spec)}
    return [arch for arch in (Arch.ARM64, Arch.AMD64) if arch in found]


def why_nothing_matches(spec: RunnerSpec, arch: Arch | None = None) -> str:
    """A sentence for the workflow author naming the constraint that leaves no type.

    Constraints are applied one at a time in the order a reader thinks about them
    (family, generation, architecture, vCPU, memory); the first one after which nothing
    is left is the one to relax, and the sentence says what the remaining types offered.
    """
    wanted = arch or spec.arch
    unknown = sorted(set(spec.families) - FAMILIES)
    if unknown and len(unknown) == len(spec.families):
        return (
            f"family {'+'.join(unknown)} is not in the runs-fleet instance catalog; "
            f"known families: {', '.join(sorted(FAMILIES))}"
        )
    steps: Sequence[tuple[str, Callable[[InstanceType], bool]]] = (
        ("family=" + "+".join(spec.families), lambda t: _fits_family(spec, t)),
        (f"gen={spec.gen}", lambda t: _fits_gen(spec, t)),
        (f"arch={wanted}", lambda t: wanted is None or t.arch is wanted),
        ("cpu=" + _span(spec.cpu_min, spec.cpu_max, "vCPU"), lambda t: _fits_cpu(spec, t)),
        ("ram=" + _span(spec.ram_min, spec.ram_max, "GiB"), lambda t: _fits_ram(spec, t)),
    )
    left: list[InstanceType] = list(CATALOG)
    applied: list[str] = []
    for text, keep in steps:
        remaining = [t for t in left if keep(t)]
        if not remaining:
            before = f" among the types left by {', '.join(applied)}" if applied else ""
            keys = [part.split("=")[0] + "=" for part in [text, *applied]]
            return (
                f"no EC2 instance type in the runs-fleet catalog has {text}{before} "
                f"({_offer(left)}); change {' or '.join(keys)} in the label"
            )
        if len(remaining) != len(left):
            applied.append(text)
        left = remaining
    return "every constraint is satisfiable on its own"  # pragma: no cover - callers check


def _span(low: int, high: int | None, unit: str) -> str:
    if high is None:
        return f"{low}+ {unit}"
    return f"{low}-{high} {unit}" if low != high else f"{low} {unit}"


def _offer(types: Sequence[InstanceType]) -> str:
    vcpus = [t.vcpu for t in types]
    memory = [t.memory_gib for t in types]
    generations = [t.generation for t in types]
    arches = "/".join(sorted({str(t.arch) for t in types}))
    return (
        f"they offer {_span(min(vcpus), max(vcpus), 'vCPU')}, "
        f"{_span(min(memory), max(memory), 'GiB')}, "
        f"generation {_span(min(generations), max(generations), '').strip()}, {arches}"
    )
