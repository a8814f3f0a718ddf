"""``runs-fleet k8s render LABEL`` as a user runs it: through the CLI, settings from the
environment, no cluster. Every document it prints must be one the API server accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from runs_fleet_cli.app import main

IMAGE = "ghcr.io/octo-org/runs-fleet-runner:1.0"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No deployment settings but those a test sets."""
    for name in (
        "RUNS_FLEET_CONFIG_FILE",
        "RUNS_FLEET_KUBE_RUNNER_IMAGE",
        "RUNS_FLEET_KUBE_NAMESPACE",
        "RUNS_FLEET_PUBLIC_URL",
        "RUNS_FLEET_PRESETS",
    ):
        monkeypatch.delenv(name, raising=False)


def render(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["k8s", "render", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def documents(out: str) -> dict[str, dict[str, Any]]:
    """The printed documents by kind, each checked against the Kubernetes schema."""
    found = {}
    for document in yaml.safe_load_all(out):
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
        found[document["kind"]] = document
    return found


def test_it_prints_the_runners_job_and_config_as_valid_manifests(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RUNS_FLEET_KUBE_RUNNER_IMAGE", IMAGE)
    monkeypatch.setenv("RUNS_FLEET_KUBE_NAMESPACE", "ci")
    code, out, err = render(
        capsys, "runs-fleet=9/cpu=4/ram=16/arch=arm64/spot=false", "--job-id", "12"
    )
    assert code == 0, err
    found = documents(out)
    assert sorted(found) == ["ConfigMap", "Job", "Secret"]
    job = found["Job"]
    assert job["metadata"]["name"] == "runs-fleet-12-1"
    assert job["metadata"]["labels"]["runs-fleet.io/job-id"] == "12"
    assert {d["metadata"]["namespace"] for d in found.values()} == {"ci"}
    pod = job["spec"]["template"]["spec"]
    (runner,) = pod["containers"]
    assert runner["image"] == IMAGE
    assert runner["resources"]["requests"]["memory"] == "16Gi"
    assert pod["nodeSelector"]["kubernetes.io/arch"] == "arm64"
    sources = pod["volumes"][0]["projected"]["sources"]
    assert sources[0]["configMap"]["name"] == found["ConfigMap"]["metadata"]["name"]
    assert sources[1]["secret"]["name"] == found["Secret"]["metadata"]["name"]
    assert "&id" not in out  # no YAML aliases: each document stands on its own
    assert "not set" not in err


def test_a_private_label_adds_the_network_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = render(capsys, "runs-fleet=9/cpu=2/private=true")
    assert code == 0
    policy = documents(out)["NetworkPolicy"]
    assert policy["metadata"]["name"] == "runs-fleet-1-1"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"runs-fleet.io/job-id": "1"}}
    code, out, _ = render(capsys, "runs-fleet=9/cpu=2/private=false")
    assert "NetworkPolicy" not in documents(out)


def test_the_secret_shows_no_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RUNS_FLEET_PUBLIC_URL", "https://ci.example.com")
    code, out, _ = render(capsys, "runs-fleet=9/cpu=2")
    assert code == 0
    found = documents(out)
    secret = found["Secret"]
    assert "data" not in secret
    assert set(secret["stringData"].values()) == {"<redacted>"}
    runner = json.loads(found["ConfigMap"]["data"]["runner.json"])
    assert runner["settings"] == {"report_url": "https://ci.example.com/api/agent/reports"}
    assert "jit_config" not in runner
    assert "report_token" not in found["ConfigMap"]["data"]["runner.json"]


def test_without_a_runner_image_it_shows_an_example_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = render(capsys, "runs-fleet=9/cpu=2")
    assert code == 0
    (runner,) = documents(out)["Job"]["spec"]["template"]["spec"]["containers"]
    assert "example" in runner["image"]
    assert "# RUNS_FLEET_KUBE_RUNNER_IMAGE is not set: the Job shows the example image" in err


def test_presets_and_spot_settings_shape_the_pod(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RUNS_FLEET_PRESETS", '{"big": "cpu=16/ram=64/arch=amd64"}')
    monkeypatch.setenv("RUNS_FLEET_KUBE_SPOT_SCHEDULING", "gke")
    code, out, err = render(capsys, "runs-fleet=9/runner=big")
    assert code == 0, err
    pod = documents(out)["Job"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["requests"]["cpu"] == "16"
    assert pod["nodeSelector"]["kubernetes.io/arch"] == "amd64"
    assert pod["tolerations"][0]["key"] == "cloud.google.com/gke-spot"


def test_a_bad_label_exits_2_with_the_reason_and_no_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = render(capsys, "runs-fleet=9/cpu=4/arch=sparc")
    assert code == 2
    assert out == ""
    assert "arch must be arm64, amd64 or x64" in err
    assert "Traceback" not in err


def test_bad_runner_pod_settings_exit_2_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RUNS_FLEET_KUBE_TOLERATIONS", '[{"key": "ci", "operator": "Maybe"}]')
    code, out, err = render(capsys, "runs-fleet=9/cpu=2")
    assert code == 2
    assert out == ""
    assert "RUNS_FLEET_KUBE_TOLERATIONS: entry 0: operator must be Equal or Exists" in err


def test_a_family_label_is_refused_when_the_family_node_label_is_set_empty(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "runs-fleet.toml"
    config.write_text('kube_family_label = ""\n')
    monkeypatch.setenv("RUNS_FLEET_CONFIG_FILE", str(config))
    code, out, err = render(capsys, "runs-fleet=9/family=c7g")
    assert code == 2
    assert out == ""
    assert "RUNS_FLEET_KUBE_FAMILY_LABEL is empty" in err
    code, _, err = render(capsys, "runs-fleet=9/cpu=2")
    assert code == 0, err
