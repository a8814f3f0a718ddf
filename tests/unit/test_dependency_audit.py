"""The dependency audit's judgement (``.ci/audit.py``) of what pip-audit reports.

The reports are pip-audit's JSON format (``pip-audit --format json --aliases on``): a
vulnerable environment, a clean one, one whose every dependency was skipped because the
advisory service answered for none (what pip-audit writes where PyPI's JSON API is not
reachable), and no report at all with the traceback pip-audit prints when it cannot
reach api.osv.dev.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / ".ci" / "audit.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_audit", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


audit = _load()

VULNERABLE = {
    "dependencies": [
        {"name": "attrs", "version": "24.2.0", "vulns": []},
        {
            "name": "jinja2",
            "version": "3.1.2",
            "vulns": [
                {
                    "id": "GHSA-h5c8-rqwp-cp95",
                    "fix_versions": ["3.1.3"],
                    "aliases": ["CVE-2024-22195"],
                },
                {"id": "PYSEC-2024-0001", "fix_versions": [], "aliases": []},
            ],
        },
    ],
    "fixes": [],
}
CLEAN = {
    "dependencies": [
        {"name": "attrs", "version": "24.2.0", "vulns": []},
        {"name": "starlette", "version": "0.41.3", "vulns": []},
    ],
    "fixes": [],
}
NOTHING_AUDITED = {
    "dependencies": [
        {
            "name": name,
            "skip_reason": f"Dependency not found on PyPI and could not be audited: {name} (1.0)",
        }
        for name in ("attrs", "starlette")
    ],
    "fixes": [],
}
OSV_UNREACHABLE = """Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/requests/adapters.py", line 729, in send
    raise ConnectionError(e, request=request)
requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.osv.dev', port=443): \
Max retries exceeded with url: /v1/query (Caused by NameResolutionError("Failed to resolve \
'api.osv.dev'"))
"""


def test_a_known_vulnerability_fails_the_audit_naming_package_advisory_and_fix() -> None:
    verdict = audit.judge(json.dumps(VULNERABLE))
    assert verdict.code == 1
    assert verdict.lines == [
        "VULNERABLE: jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (CVE-2024-22195); fixed in 3.1.3",
        "VULNERABLE: jinja2 3.1.2: PYSEC-2024-0001; no fix yet",
        "audit: 2 known vulnerabilities in 1 package(s)",
    ]


def test_a_clean_environment_passes() -> None:
    verdict = audit.judge(json.dumps(CLEAN))
    assert (verdict.code, verdict.lines) == (0, ["audit: 2 dependencies, no known vulnerability"])


def test_a_report_that_audited_nothing_passes_with_a_warning_that_the_audit_did_not_run() -> None:
    verdict = audit.judge(json.dumps(NOTHING_AUDITED))
    assert verdict.code == 0
    (line,) = verdict.lines
    assert line.startswith("WARNING: the dependency audit did not run: ")
    assert "none of the 2 dependencies" in line and "not found on PyPI" in line


def test_some_skipped_dependencies_are_named_and_the_rest_still_count() -> None:
    report = {"dependencies": CLEAN["dependencies"] + NOTHING_AUDITED["dependencies"][:1]}
    verdict = audit.judge(json.dumps(report))
    assert verdict.code == 0
    assert verdict.lines[0].startswith("note: attrs not audited: Dependency not found")
    assert verdict.lines[-1] == "audit: 2 dependencies, no known vulnerability"


def test_an_unreachable_advisory_service_passes_with_a_warning_that_says_why() -> None:
    verdict = audit.judge(None, OSV_UNREACHABLE)
    assert verdict.code == 0
    (line,) = verdict.lines
    assert line.startswith("WARNING: the dependency audit did not run: pip-audit could not reach")
    assert "api.osv.dev" in line


@pytest.mark.parametrize(
    ("report", "stderr", "says"),
    [
        (None, "ERROR: invalid requirement: 'attrs=='", "wrote no report: ERROR: invalid"),
        ("[]", "", "not what it should be"),
        ("{not json", "", "not what it should be"),
    ],
    ids=["pip-audit-failed", "not-an-object", "not-json"],
)
def test_a_failure_that_is_not_about_the_network_is_an_error(
    report: str | None, stderr: str, says: str
) -> None:
    verdict = audit.judge(report, stderr)
    assert verdict.code == 2
    assert says in verdict.lines[0]


def test_judge_reads_a_report_file_and_exits_with_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "pip-audit.json"
    report.write_text(json.dumps(VULNERABLE))
    assert audit.main(["judge", str(report)]) == 1
    assert "VULNERABLE: jinja2 3.1.2" in capsys.readouterr().out
    assert audit.main(["audit"]) == 2


def test_freeze_pins_this_environment_without_the_projects_own_packages(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    assert audit.main(["freeze", str(requirements)]) == 0
    pins = requirements.read_text().splitlines()
    names = {pin.partition("==")[0].lower() for pin in pins}
    assert {"attrs", "cattrs", "pluggy", "starlette", "pytest"} <= names
    assert not any(name.startswith("runs-fleet") for name in names)
    assert all("==" in pin for pin in pins)
