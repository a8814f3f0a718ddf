"""A pinned ``checkov`` in its own virtual environment, and a runner for it.

checkov pins versions of boto3, packaging and others that clash with the project's own
environment, so it gets a venv of its own under ``<repo>/.cache/tools/checkov`` (git-ignored),
created once: concurrent test processes are serialised with a file lock, and the venv is
built in a temporary directory and published with an atomic rename, so a half-built one is
never used. The skip list lives in ``<repo>/.checkov.yaml`` and nowhere else.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO / ".cache" / "tools"
CHECKOV_VERSION = "3.3.30"
VENV = CACHE_DIR / "checkov"
CONFIG = REPO / ".checkov.yaml"
_STAMP = VENV / f".checkov-{CHECKOV_VERSION}"


class CheckovUnavailableError(RuntimeError):
    """checkov could not be installed (no package index reachable, for one)."""


def checkov_binary() -> Path:
    """The ``checkov`` executable of the pinned version, installing it on first use."""
    binary = VENV / "bin" / "checkov"
    if _STAMP.exists() and binary.exists():
        return binary
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".checkov.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _STAMP.exists() and binary.exists():  # built meanwhile by another process
            return binary
        staging = Path(tempfile.mkdtemp(dir=CACHE_DIR, prefix=".checkov-"))
        try:
            _build(staging)
            if VENV.exists():
                shutil.rmtree(VENV)
            os.rename(staging, VENV)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    # a venv's scripts name its interpreter by absolute path: built at the staging path,
    # they are run through the moved interpreter below, never by their shebang
    return binary


def _build(target: Path) -> None:
    python = sys.executable
    base = getattr(sys, "_base_executable", None) or python
    try:
        subprocess.run(
            [base, "-m", "venv", str(target)], check=True, capture_output=True, text=True
        )
        subprocess.run(
            [
                str(target / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"checkov=={CHECKOV_VERSION}",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        output = getattr(exc, "stderr", "") or ""
        raise CheckovUnavailableError(
            f"cannot install checkov {CHECKOV_VERSION}: {output}"
        ) from exc
    (target / f".checkov-{CHECKOV_VERSION}").write_text("")


def run_checkov(
    *,
    directory: Path | None = None,
    file: Path | None = None,
    framework: str,
    config: Path = CONFIG,
) -> list[dict[str, Any]]:
    """Run checkov on ``directory`` or ``file`` with ``framework`` and the repo's config;
    the parsed reports, one per framework checkov ran (each with ``results`` holding
    ``passed_checks``, ``failed_checks``, ``skipped_checks``)."""
    checkov_binary()
    if (directory is None) == (file is None):
        raise ValueError("give exactly one of directory or file")
    target = ["--directory", str(directory)] if directory else ["--file", str(file)]
    command = [
        str(VENV / "bin" / "python"),
        str(VENV / "bin" / "checkov"),
        "--config-file",
        str(config),
        *target,
        "--framework",
        framework,
        "--output",
        "json",
        "--quiet",
        "--compact",
        "--skip-download",
    ]
    env = {
        **os.environ,
        "BC_SKIP_MAPPING": "TRUE",
        "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
        "LOG_LEVEL": "ERROR",
    }
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"checkov failed ({done.returncode}): {done.stderr[-4000:]}")
    return parse_report(done.stdout)


def parse_report(text: str) -> list[dict[str, Any]]:
    """checkov's JSON output as a list of reports (it prints a bare object for one
    framework, a list for several, and a summary without results when nothing matched)."""
    text = text.strip()
    if not text:
        return []
    data = json.loads(text)
    reports = data if isinstance(data, list) else [data]
    return [report for report in reports if isinstance(report, dict)]


def failed_checks(reports: list[dict[str, Any]]) -> list[str]:
    """One line per failed check: id, resource and file, for an assertion message."""
    lines = []
    for report in reports:
        for check in report.get("results", {}).get("failed_checks", []):
            lines.append(
                f"{check.get('check_id')} {check.get('check_name')}: "
                f"{check.get('resource')} in {check.get('file_path')}"
            )
    return lines
