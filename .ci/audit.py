"""The dependency audit: pip-audit over the tests' dependency set, judged for CI.

pip-audit answers "no known vulnerabilities" both when it checked every dependency and
when it could check none (an advisory service that is unreachable, or a package index
that serves no JSON API, leaves every dependency skipped), and fails with a traceback
when its service cannot be reached at all. This script tells these apart: a known
vulnerability fails (exit 1); an audit that could not run passes with a warning line
that says so and why (exit 0), so the session stays meaningful where the service is
reachable; anything else it cannot understand is an error (exit 2).

    python .ci/audit.py freeze REQUIREMENTS   # the environment's packages, pinned
    python .ci/audit.py check REQUIREMENTS [pip-audit options...]
    python .ci/audit.py judge REPORT.json     # judge a report pip-audit wrote
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK, VULNERABLE, BROKEN = 0, 1, 2
UNREACHABLE_SIGNS = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "Failed to resolve",
    "timed out",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Connection refused",
)
"""What pip-audit's error output says when its advisory service cannot be reached."""


@dataclass
class Verdict:
    """The exit code of the audit and the lines that explain it."""

    code: int
    lines: list[str] = field(default_factory=list)


def judge(report: str | None, stderr: str = "") -> Verdict:
    """The verdict on pip-audit's JSON ``report`` (``None``: it wrote none) and its
    error output ``stderr``."""
    if not report or not report.strip():
        return _without_report(stderr)
    try:
        dependencies = json.loads(report)["dependencies"]
    except (ValueError, KeyError, TypeError) as exc:
        return Verdict(BROKEN, [f"error: the pip-audit report is not what it should be: {exc}"])
    vulnerable = [dep for dep in dependencies if dep.get("vulns")]
    if vulnerable:
        lines = [_vulnerability(dep, vuln) for dep in vulnerable for vuln in dep["vulns"]]
        count = sum(len(dep["vulns"]) for dep in vulnerable)
        summary = f"audit: {count} known vulnerabilit{'y' if count == 1 else 'ies'} in "
        return Verdict(VULNERABLE, [*lines, summary + f"{len(vulnerable)} package(s)"])
    skipped = [dep for dep in dependencies if "skip_reason" in dep]
    audited = len(dependencies) - len(skipped)
    if skipped and not audited:
        reason = skipped[0]["skip_reason"]
        return Verdict(
            OK,
            [
                f"WARNING: the dependency audit did not run: the advisory service checked "
                f"none of the {len(skipped)} dependencies (pip-audit: {reason!r}); "
                "it runs where PyPI's JSON API (or api.osv.dev) is reachable"
            ],
        )
    lines = [f"note: {dep['name']} not audited: {dep['skip_reason']}" for dep in skipped]
    return Verdict(OK, [*lines, f"audit: {audited} dependencies, no known vulnerability"])


def _without_report(stderr: str) -> Verdict:
    last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
    if any(sign in stderr for sign in UNREACHABLE_SIGNS):
        return Verdict(
            OK,
            [
                "WARNING: the dependency audit did not run: pip-audit could not reach its "
                f"advisory service ({last.strip()[:300]})"
            ],
        )
    return Verdict(BROKEN, [f"error: pip-audit wrote no report: {last.strip()[:300] or '?'}"])


def _vulnerability(dependency: dict[str, Any], vulnerability: dict[str, Any]) -> str:
    aliases = ", ".join(vulnerability.get("aliases") or [])
    fixes = ", ".join(vulnerability.get("fix_versions") or [])
    named = vulnerability["id"] + (f" ({aliases})" if aliases else "")
    package = f"{dependency['name']} {dependency.get('version', '?')}"
    return f"VULNERABLE: {package}: {named}; " + (f"fixed in {fixes}" if fixes else "no fix yet")


def freeze(requirements: Path) -> None:
    """Pin every package of this environment but the editable ones (the project's own)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    )
    requirements.write_text(listed.stdout)


def check(requirements: Path, options: list[str]) -> Verdict:
    """Run pip-audit on the pinned ``requirements`` as they are and judge its report."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "pip-audit.json"
        argv = [sys.executable, "-m", "pip_audit", "--requirement", str(requirements)]
        argv += ["--no-deps", "--disable-pip", "--format", "json", "--output", str(report)]
        argv += ["--aliases", "on", "--progress-spinner", "off", *options]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        text = report.read_text() if report.exists() else None
    return judge(text, done.stderr)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in {"freeze", "check", "judge"}:
        print(__doc__, file=sys.stderr)
        return BROKEN
    command, path = argv[0], Path(argv[1])
    if command == "freeze":
        freeze(path)
        return OK
    verdict = check(path, argv[2:]) if command == "check" else judge(path.read_text())
    for line in verdict.lines:
        print(line)
    return verdict.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
