"""checkov on the Terraform module and on the rendered Helm chart.

checkov runs from its own pinned venv (``checkov_tool``) with ``<repo>/.checkov.yaml``,
the one place where checks are skipped, each skip with its justification. A known-bad
fixture proves the checks really run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.deploy import checkov_tool, helm_tool
from tests.deploy.checkov_tool import CONFIG, REPO, checkov_binary, failed_checks, run_checkov

TERRAFORM = REPO / "terraform"
CHART = REPO / "charts" / "runs-fleet"
SKIP_ID = re.compile(r"^CKV2?_[A-Z0-9]+_\d+$")


@pytest.fixture(scope="module")
def checkov() -> Path:
    try:
        return checkov_binary()
    except checkov_tool.CheckovUnavailableError as exc:
        pytest.skip(f"checkov cannot be installed here: {exc}")


def _skip_lines() -> list[str]:
    lines = CONFIG.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("skip-check:"))
    entries = []
    for line in lines[start + 1 :]:
        if not line.startswith(" ") or not line.strip():
            break
        entries.append(line.strip())
    return entries


def test_every_skip_is_justified() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    skipped = config.get("skip-check", [])
    entries = _skip_lines()
    assert len(entries) == len(skipped)
    for entry, check in zip(entries, skipped, strict=True):
        match = re.fullmatch(r"- (\S+)\s+#\s*(.+)", entry)
        assert match, f"skip without a justification comment: {entry!r}"
        assert match.group(1) == check and SKIP_ID.match(check), entry
        assert len(match.group(2).split()) >= 8, f"justification too short: {entry!r}"
    assert len(set(skipped)) == len(skipped), "a check is skipped twice"
    # nothing else in the file turns checks off
    assert not {"skip-framework", "skip-path", "soft-fail", "soft-fail-on", "check"} & set(config)


def test_no_inline_skips() -> None:
    offenders = []
    for root in (TERRAFORM, CHART):
        for path in root.rglob("*"):
            if path.is_file() and re.search(r"checkov:skip", path.read_text(errors="replace")):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"inline checkov skips (use .checkov.yaml): {offenders}"


def test_checkov_catches_a_bad_configuration(checkov: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.tf").write_text(
        'resource "aws_launch_template" "bad" {\n'
        '  name = "bad"\n'
        "  metadata_options {\n"
        '    http_tokens = "optional"\n'
        "  }\n"
        "}\n"
    )
    reports = run_checkov(directory=tmp_path, framework="terraform")
    assert any("CKV_AWS_79" in line for line in failed_checks(reports)), reports
    (tmp_path / "pod.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "bad", "namespace": "x"},
                "spec": {
                    "containers": [
                        {"name": "c", "image": "x:1", "securityContext": {"privileged": True}}
                    ]
                },
            }
        )
    )
    reports = run_checkov(file=tmp_path / "pod.yaml", framework="kubernetes")
    assert any("CKV_K8S_16" in line for line in failed_checks(reports)), reports


def test_terraform_passes(checkov: Path) -> None:
    reports = run_checkov(directory=TERRAFORM, framework="terraform")
    assert reports, "checkov reported nothing"
    (report,) = [r for r in reports if r.get("check_type") == "terraform"]
    summary = report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] >= 30, summary  # the module and both examples
    assert summary["passed"] > 100, summary
    assert not failed_checks(reports), "\n".join(failed_checks(reports))


def _example_values() -> list[Path]:
    return sorted((CHART / "examples").glob("*.yaml")) if CHART.is_dir() else []


@pytest.mark.parametrize("values", _example_values(), ids=lambda p: p.stem)
def test_rendered_chart_passes(checkov: Path, values: Path, tmp_path: Path) -> None:
    try:
        helm_tool.helm_binary()
    except helm_tool.HelmUnavailableError as exc:
        pytest.skip(f"no helm binary: {exc}")
    documents = helm_tool.render([values])
    assert documents, values
    rendered = tmp_path / f"{values.stem}.yaml"
    rendered.write_text(yaml.safe_dump_all(documents))
    reports = run_checkov(file=rendered, framework="kubernetes")
    (report,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    assert report["summary"]["passed"] > 0, report["summary"]
    assert not failed_checks(reports), "\n".join(failed_checks(reports))


def test_chart_examples_exist() -> None:
    if not CHART.is_dir():
        pytest.skip("charts/runs-fleet is not there yet")
    names = {p.name for p in _example_values()}
    assert {"hybrid-minimal.yaml", "hybrid-full.yaml"} <= names, names
