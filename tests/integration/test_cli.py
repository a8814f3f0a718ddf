"""The ``runs-fleet`` command as a user runs it: a process, its output, its exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

EXPLAIN_KEYS = {
    "run_id",
    "cpu_min",
    "cpu_max",
    "ram_min",
    "ram_max",
    "arch",
    "os",
    "families",
    "gen",
    "disk_gib",
    "pool",
    "spot",
    "backend",
    "private",
}


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "runs_fleet_cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_labels_explain_json_prints_the_resolved_spec() -> None:
    result = _cli(
        "labels",
        "explain",
        "--json",
        "runs-fleet=123/runner=4cpu-linux-arm64/ram=16/pool=CI/spot=false",
    )
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)
    assert set(spec) >= EXPLAIN_KEYS
    assert (spec["run_id"], spec["cpu_min"], spec["cpu_max"]) == ("123", 4, 8)
    assert (spec["ram_min"], spec["ram_max"], spec["arch"]) == (16, None, "arm64")
    assert (spec["pool"], spec["spot"], spec["os"], spec["families"]) == ("ci", False, "linux", [])


def test_labels_explain_uses_configured_presets_and_disk() -> None:
    result = _cli(
        "labels",
        "explain",
        "--json",
        "runs-fleet=1/runner=big",
        RUNS_FLEET_PRESETS='{"big": "cpu=16/ram=64/family=c7g"}',
        RUNS_FLEET_DEFAULT_DISK_GIB="120",
    )
    spec = json.loads(result.stdout)
    assert (spec["cpu_min"], spec["ram_min"], spec["families"], spec["disk_gib"]) == (
        16,
        64,
        ["c7g"],
        120,
    )


@pytest.mark.parametrize("flag", [[], ["--json"]], ids=["text", "json"])
def test_a_bad_label_exits_2_with_the_reason(flag: list[str]) -> None:
    result = _cli("labels", "explain", *flag, "runs-fleet=1/cpu=4/cpu=8")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "cpu=8" in output and "Traceback" not in output
    if flag:
        assert set(json.loads(result.stdout)) == {"error"}


def test_labels_explain_in_text_shows_a_summary() -> None:
    result = _cli("labels", "explain", "runs-fleet=9/cpu=2+4/arch=x64")
    assert result.returncode == 0
    assert result.stdout.startswith("2-4 vCPU")
    assert "amd64" in result.stdout


def test_config_check_lists_every_problem_and_exits_2() -> None:
    result = _cli("config", "check", RUNS_FLEET_MODE="ec2", RUNS_FLEET_MAX_ATTEMPTS="x")
    assert result.returncode == 2
    for expected in (
        "RUNS_FLEET_QUEUE_URL is required",
        "RUNS_FLEET_PRIVATE_SUBNET_IDS",
        "RUNS_FLEET_GITHUB_APP_ID is required",
        "RUNS_FLEET_MAX_ATTEMPTS",
    ):
        assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_names_the_plugins_a_mode_needs() -> None:
    """A mode's missing settings and, once its plugin is disabled, its adapters are named."""
    env = {
        "RUNS_FLEET_MODE": "k8s",
        "RUNS_FLEET_VALKEY_URL": "redis://valkey:6379/0",
        "RUNS_FLEET_GITHUB_APP_ID": "1",
        "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY": "k",
        "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": "do-not-print-me",
    }
    result = _cli("config", "check", "--json", **env)
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert any("RUNS_FLEET_KUBE_RUNNER_IMAGE" in p for p in problems)
    assert "do-not-print-me" not in result.stdout + result.stderr
    without = env | {
        "RUNS_FLEET_KUBE_RUNNER_IMAGE": "example/runner:1",
        "RUNS_FLEET_DISABLE_PLUGINS": "k8s",
    }
    result = _cli("config", "check", "--json", **without)
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert any("needs the provider 'k8s'" in p for p in problems)
    assert any("needs the state store 'configmap'" in p for p in problems)

    ec2 = env | {
        "RUNS_FLEET_MODE": "ec2",
        "RUNS_FLEET_QUEUE_URL": "https://sqs/q.fifo",
        "RUNS_FLEET_PRIVATE_SUBNET_IDS": "subnet-1",
        "RUNS_FLEET_SECURITY_GROUP_ID": "sg-1",
        "RUNS_FLEET_INSTANCE_PROFILE_ARN": "arn:aws:iam::1:instance-profile/r",
        "RUNS_FLEET_DISABLE_PLUGINS": "ec2",
    }
    result = _cli("config", "check", "--json", **ec2)
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert any("needs the provider 'ec2'" in p for p in problems)
    assert "do-not-print-me" not in result.stdout + result.stderr


def test_config_check_passes_and_hides_secrets() -> None:
    result = _cli(
        "config",
        "check",
        RUNS_FLEET_MODE="memory",
        RUNS_FLEET_GITHUB_WEBHOOK_SECRET="do-not-print-me",
    )
    assert result.returncode == 0, result.stderr
    assert "configuration OK for mode memory" in result.stdout
    assert "(secret)" in result.stdout and "do-not-print-me" not in result.stdout


def test_config_check_reports_github_settings_that_do_not_fit_together() -> None:
    result = _cli(
        "config",
        "check",
        "--json",
        RUNS_FLEET_MODE="memory",
        RUNS_FLEET_GITHUB_WEBHOOK_SECRET="do-not-print-me",
        RUNS_FLEET_GITHUB_API_URL="https://ghe.example.com",
        RUNS_FLEET_RUNNER_GROUP="builders",
    )
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert any(
        "RUNS_FLEET_GITHUB_API_URL" in p and "https://ghe.example.com/api/v3" in p for p in problems
    ), problems
    assert any("RUNS_FLEET_RUNNER_GROUP='builders' needs RUNS_FLEET_RUNNER_SCOPE=org" in p
               for p in problems), problems  # fmt: skip
    assert "do-not-print-me" not in result.stdout + result.stderr


def test_plugins_lists_the_built_in_plugins() -> None:
    result = _cli("plugins")
    assert result.returncode == 0
    assert {line.split()[0] for line in result.stdout.splitlines()[1:]} >= {"local", "memory"}


def test_help_does_not_load_any_plugin() -> None:
    code = (
        "import sys\nfrom runs_fleet_cli.app import main\ncode = main(['--help'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('runs_fleet_local', "
        "'runs_fleet_core.testing')))\nprint(code, loaded)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip().endswith("0 []")


def test_an_unknown_command_is_a_usage_error() -> None:
    result = _cli("lables")
    assert result.returncode == 2
    assert "invalid choice: 'lables'" in result.stderr
