"""What the agent checks before it hands a job's JIT config to the runner.

A job that starts on a machine without room for its checkout, or on a runner GitHub no
longer accepts, fails late and confusingly, and its JIT config is spent. So before the
runner starts, the agent checks free disk and memory against configured minimums,
installs the runner when the runner directory has none (:mod:`runs_fleet_agent.install`),
and refuses a runner older than a configured minimum version. A failed check is
reported as ``failed`` (the job never started), with the figures, and ends the agent
with its own exit code.

The installed version is read from ``bin/runnerversion``, the file every actions/runner
release carries; when the directory has none (a runner of your own, the GitHub
simulator's stand-in), the version is unknown, which passes only when no minimum is set.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runs_fleet_agent.install import (
    EXIT_BAD_SETUP,
    VERSION_FILE,
    InstallError,
    RunnerRelease,
    ensure_installed,
    parse_checksums,
)

EXIT_LOW_RESOURCES = 70
GIB = 1 << 30
MIB = 1 << 20
_log = logging.getLogger("runs_fleet_agent")
_VERSION = re.compile(r"^v?(\d+(?:\.\d+){0,3})$")

#: The setup settings: environment name → command-line option.
SETTINGS = {
    "RUNS_FLEET_RUNNER_URL": "--runner-url",
    "RUNS_FLEET_RUNNER_VERSION": "--runner-version",
    "RUNS_FLEET_RUNNER_SHA256": "--runner-sha256",
    "RUNS_FLEET_MIN_RUNNER_VERSION": "--min-runner-version",
    "RUNS_FLEET_MIN_FREE_DISK_GIB": "--min-free-disk-gib",
    "RUNS_FLEET_MIN_FREE_MEMORY_MIB": "--min-free-memory-mib",
}


class SetupError(Exception):
    """The setup settings are wrong; the message names each setting to fix."""


@dataclass(frozen=True)
class Setup:
    """What to check and install before the runner starts (everything off by default)."""

    release: RunnerRelease | None = None
    min_runner_version: tuple[int, ...] | None = None
    min_free_disk_gib: float = 0.0
    min_free_memory_mib: float = 0.0
    download_timeout_s: float = 30.0


@dataclass(frozen=True)
class Readers:
    """Where the figures come from; tests give their own."""

    free_disk_bytes: Callable[[Path], int] = field(default=lambda path: free_disk_bytes(path))
    available_memory_bytes: Callable[[], int | None] = field(
        default=lambda: available_memory_bytes()
    )


def parse_setup(values: Mapping[str, str | None]) -> Setup:
    """A :class:`Setup` from ``values`` keyed by the names of :data:`SETTINGS` (missing
    or empty: not set). Raises :class:`SetupError` listing every problem."""
    problems: list[str] = []

    def get(name: str) -> str | None:
        value = values.get(name)
        return value.strip() if value and value.strip() else None

    def named(name: str) -> str:
        return f"{name} ({SETTINGS[name]})"

    def amount(name: str) -> float:
        text = get(name)
        if text is None:
            return 0.0
        try:
            number = float(text)
        except ValueError:
            number = -1.0
        if not number >= 0 or number == float("inf"):
            problems.append(f"{named(name)} must be a number ≥ 0, not {text!r}")
            return 0.0
        return number

    def version(name: str) -> tuple[int, ...] | None:
        text = get(name)
        if text is None:
            return None
        try:
            return parse_version(text)
        except ValueError:
            problems.append(f"{named(name)} must be a version like 2.320.0, not {text!r}")
            return None

    minimum = version("RUNS_FLEET_MIN_RUNNER_VERSION")
    disk = amount("RUNS_FLEET_MIN_FREE_DISK_GIB")
    memory = amount("RUNS_FLEET_MIN_FREE_MEMORY_MIB")
    release = None
    url = get("RUNS_FLEET_RUNNER_URL")
    if url is not None:
        release_version = get("RUNS_FLEET_RUNNER_VERSION")
        sha256 = get("RUNS_FLEET_RUNNER_SHA256")
        if not url.lower().startswith(("http://", "https://")):
            problems.append(f"{named('RUNS_FLEET_RUNNER_URL')} must be an http(s) URL")
        else:
            try:
                url.format(version="", os="", arch="")
            except (KeyError, IndexError, ValueError):
                problems.append(
                    f"{named('RUNS_FLEET_RUNNER_URL')} may use only the placeholders "
                    "{version}, {os} and {arch}"
                )
        if release_version is None:
            problems.append(f"{named('RUNS_FLEET_RUNNER_VERSION')} is needed with a runner URL")
        elif version("RUNS_FLEET_RUNNER_VERSION") is None:
            release_version = None
        if sha256 is None:
            problems.append(
                f"{named('RUNS_FLEET_RUNNER_SHA256')} is needed with a runner URL: an "
                "unverified runner is never run"
            )
        else:
            try:
                parse_checksums(sha256)
            except ValueError as exc:
                problems.append(f"{named('RUNS_FLEET_RUNNER_SHA256')} {exc}")
                sha256 = None
        if release_version and sha256:
            release = RunnerRelease(url, release_version.removeprefix("v"), sha256)
    if problems:
        raise SetupError("; ".join(problems))
    return Setup(release, minimum, disk, memory)


def parse_version(text: str) -> tuple[int, ...]:
    """``"2.320.0"`` (or ``"v2.320.0"``) as ``(2, 320, 0)``; ValueError otherwise."""
    match = _VERSION.match(text.strip())
    if match is None:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def installed_version(runner_dir: Path) -> str | None:
    """The version in ``runner_dir/bin/runnerversion``, or ``None`` when there is none."""
    try:
        text = (runner_dir / VERSION_FILE).read_text(errors="replace").strip()
    except OSError:
        return None
    return text or None


def free_disk_bytes(path: Path) -> int:
    """Free bytes for an unprivileged user on the file system of ``path`` (or of its
    nearest existing parent, for a runner directory not created yet)."""
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stats = os.statvfs(probe)
    return stats.f_bavail * stats.f_frsize


def available_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """``MemAvailable`` from ``meminfo`` in bytes, or ``None`` where there is no such
    figure (not Linux, or a kernel older than 3.14)."""
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, rest = line.partition(":")
        if name == "MemAvailable":
            figures = rest.split()
            if figures and figures[0].isdigit():
                unit = figures[1].lower() if len(figures) > 1 else "b"
                return int(figures[0]) * (1024 if unit == "kb" else 1)
    return None


def check_resources(runner_dir: Path, setup: Setup, readers: Readers) -> list[str]:
    """The unmet minimums of free disk (on ``runner_dir``'s file system) and memory,
    each with its figures; empty when both are met or off."""
    problems: list[str] = []
    if setup.min_free_disk_gib > 0:
        free = readers.free_disk_bytes(runner_dir)
        if free < setup.min_free_disk_gib * GIB:
            problems.append(
                f"{free / GIB:.2f} GiB of disk free at {runner_dir}, below the minimum "
                f"{setup.min_free_disk_gib:g} GiB (RUNS_FLEET_MIN_FREE_DISK_GIB)"
            )
    if setup.min_free_memory_mib > 0:
        available = readers.available_memory_bytes()
        if available is None:
            _log.warning("cannot read the available memory: not checking its minimum")
        elif available < setup.min_free_memory_mib * MIB:
            problems.append(
                f"{available / MIB:.0f} MiB of memory available, below the minimum "
                f"{setup.min_free_memory_mib:g} MiB (RUNS_FLEET_MIN_FREE_MEMORY_MIB)"
            )
    return problems


def check_version(runner_dir: Path, minimum: tuple[int, ...] | None) -> str | None:
    """Why the runner in ``runner_dir`` is refused, or ``None`` when it may run."""
    if minimum is None:
        return None
    wanted = ".".join(map(str, minimum))
    found = installed_version(runner_dir)
    if found is None:
        return (
            f"the runner version is unknown (no {VERSION_FILE} in {runner_dir}) and "
            f"RUNS_FLEET_MIN_RUNNER_VERSION asks for {wanted} or newer"
        )
    try:
        version = parse_version(found)
    except ValueError:
        return f"{runner_dir / VERSION_FILE} holds no version ({found[:40]!r})"
    if version < minimum:
        return (
            f"the runner is version {found}, older than the minimum {wanted} "
            "(RUNS_FLEET_MIN_RUNNER_VERSION): install a newer runner"
        )
    return None


def prepare(runner_dir: Path, setup: Setup, readers: Readers | None = None) -> tuple[int, str]:
    """Run every check and the install, in that order: resources, install, version.
    ``(0, "")`` when the runner may start, else ``(exit code, why)``."""
    problems = check_resources(runner_dir, setup, readers or Readers())
    if problems:
        return EXIT_LOW_RESOURCES, "this machine is too small for the job: " + "; ".join(problems)
    if setup.release is not None:
        try:
            ensure_installed(runner_dir, setup.release, timeout_s=setup.download_timeout_s)
        except InstallError as exc:
            return exc.exit_code, str(exc)
    refused = check_version(runner_dir, setup.min_runner_version)
    if refused is not None:
        return EXIT_BAD_SETUP, refused
    return 0, ""
