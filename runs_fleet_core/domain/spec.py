"""The resolved, backend-neutral description of the runner one job needs.

A ``RunnerSpec`` comes out of the label parser (``labels.py``) and is completed with
the job's identity by intake. Providers translate it into their own terms (EC2 instance
type overrides, Kubernetes resource requests); nothing here knows about either.
"""

from __future__ import annotations

import enum

import attrs

from runs_fleet_core.domain.ids import JobId, RunId


class Arch(enum.StrEnum):
    """CPU architecture of a runner. ``x64`` in labels is an alias of ``amd64``."""

    ARM64 = "arm64"
    AMD64 = "amd64"


DEFAULT_CPU = 2
DEFAULT_DISK_GIB = 40
DEFAULT_OS = "linux"


@attrs.frozen(kw_only=True)
class RunnerSpec:
    """What a job asked for, fully resolved.

    ``cpu_max`` and ``ram_max`` of ``None`` mean "no upper bound"; ``ram_min`` of 0
    means "no minimum"; ``arch`` of ``None`` lets the backend choose the cheaper one.
    ``job_id``, ``repository`` and ``attempt`` are filled in by intake; a spec that only
    came from a label has ``job_id=None``.
    """

    run_id: RunId
    label: str
    cpu_min: int = DEFAULT_CPU
    cpu_max: int | None = DEFAULT_CPU * 2
    ram_min: int = 0
    ram_max: int | None = None
    arch: Arch | None = None
    os: str = DEFAULT_OS
    families: tuple[str, ...] = ()
    gen: int | None = None
    disk_gib: int = DEFAULT_DISK_GIB
    pool: str | None = None
    spot: bool = True
    backend: str | None = None
    private: bool = False
    preset: str | None = None
    labels: tuple[str, ...] = ()
    job_id: JobId | None = None
    repository: str = ""
    attempt: int = 1

    def for_job(self, job_id: JobId, repository: str, attempt: int = 1) -> RunnerSpec:
        """This spec bound to one job (and attempt) of ``repository``."""
        return attrs.evolve(self, job_id=job_id, repository=repository, attempt=attempt)

    def on_demand(self) -> RunnerSpec:
        """The same request without spot (used when a spot runner was interrupted)."""
        return attrs.evolve(self, spot=False)


def describe(spec: RunnerSpec) -> str:
    """A short one-line summary of ``spec`` for people, e.g. ``2-4 vCPU, any RAM, any
    arch, linux, 40 GiB disk, spot``."""
    ram = "any RAM" if spec.ram_min == 0 and spec.ram_max is None else ""
    parts = [
        _span(spec.cpu_min, spec.cpu_max, "vCPU"),
        ram or _span(spec.ram_min, spec.ram_max, "GiB RAM"),
        f"{spec.arch} only" if spec.arch else "any arch",
        spec.os,
        "family " + "/".join(spec.families) if spec.families else "",
        f"generation {spec.gen}+" if spec.gen is not None else "",
        f"{spec.disk_gib} GiB disk",
        "spot" if spec.spot else "on-demand",
        "private network" if spec.private else "",
        f"pool {spec.pool}" if spec.pool else "",
        f"backend {spec.backend}" if spec.backend else "",
        f"preset {spec.preset}" if spec.preset else "",
    ]
    return ", ".join(part for part in parts if part)


def _span(low: int, high: int | None, unit: str) -> str:
    if high is None:
        return f"{low}+ {unit}"
    return f"{low} {unit}" if low == high else f"{low}-{high} {unit}"
