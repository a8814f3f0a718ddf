from __future__ import annotations

from pathlib import Path

import pytest

from runs_fleet_core.catalog import CORE_SETTINGS
from runs_fleet_core.errors import ConfigError
from runs_fleet_core.settings import Secret, env_flag, inspect_settings, load_settings

DEFS = {s.name: s for s in CORE_SETTINGS}
GITHUB = {
    "RUNS_FLEET_GITHUB_APP_ID": "12345",
    "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----x",
    "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": "s3cret-webhook",
}


def _problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env, DEFS)
    return caught.value.problems


def test_defaults_give_local_mode() -> None:
    settings = load_settings({}, DEFS, require=False)
    assert settings.mode == "local"
    assert settings["RUNS_FLEET_DEFAULT_DISK_GIB"] == 40
    assert settings["RUNS_FLEET_MAX_ATTEMPTS"] == 3


def test_every_missing_ec2_setting_is_named_at_once() -> None:
    problems = _problems({"RUNS_FLEET_MODE": "ec2", **GITHUB})
    text = "\n".join(problems)
    for name in (
        "RUNS_FLEET_QUEUE_URL",
        "RUNS_FLEET_PRIVATE_SUBNET_IDS",
        "RUNS_FLEET_SECURITY_GROUP_ID",
        "RUNS_FLEET_INSTANCE_PROFILE_ARN",
    ):
        assert f"{name} is required when RUNS_FLEET_MODE=ec2" in text
    assert len(problems) == 4


def test_invalid_values_are_all_reported_with_what_is_allowed() -> None:
    problems = _problems(
        {
            "RUNS_FLEET_MODE": "ecs",
            "RUNS_FLEET_MAX_ATTEMPTS": "three",
            "RUNS_FLEET_DEFAULT_DISK_GIB": "0",
            "RUNS_FLEET_PRESETS": "[1]",
        }
    )
    text = "\n".join(problems)
    assert "RUNS_FLEET_MODE: must be one of local, ec2, k8s, memory (got 'ecs')" in text
    assert "RUNS_FLEET_MAX_ATTEMPTS: 'three' is not a whole number" in text
    assert "RUNS_FLEET_DEFAULT_DISK_GIB: must be at least 1" in text
    assert "RUNS_FLEET_PRESETS" in text


def test_secrets_are_read_from_files_and_never_shown(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nabc\n")
    env = {**GITHUB, "RUNS_FLEET_MODE": "memory"}
    del env["RUNS_FLEET_GITHUB_APP_PRIVATE_KEY"]
    env["RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE"] = str(key)
    settings = load_settings(env, DEFS)
    value = settings["RUNS_FLEET_GITHUB_APP_PRIVATE_KEY"]
    assert isinstance(value, Secret) and value.endswith("abc")
    assert "abc" not in repr(settings)


def test_a_secret_set_twice_or_unreadable_is_a_problem(tmp_path: Path) -> None:
    env = {
        **GITHUB,
        "RUNS_FLEET_MODE": "ec2",
        "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE": str(tmp_path / "k"),
        "RUNS_FLEET_GITHUB_WEBHOOK_SECRET_FILE": str(tmp_path / "missing"),
    }
    del env["RUNS_FLEET_GITHUB_WEBHOOK_SECRET"]
    text = "\n".join(_problems(env))
    assert (
        "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY and RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE are both set"
        in text
    )
    assert "RUNS_FLEET_GITHUB_WEBHOOK_SECRET_FILE: cannot read" in text


def test_a_bad_secret_value_is_not_echoed() -> None:
    defs = dict(DEFS)
    from runs_fleet_core.settings import Kind, Setting

    defs["RUNS_FLEET_TOKEN_TTL"] = Setting(
        name="RUNS_FLEET_TOKEN_TTL", help="", kind=Kind.INT, secret=True
    )
    with pytest.raises(ConfigError) as caught:
        load_settings({"RUNS_FLEET_TOKEN_TTL": "hunter2"}, defs, require=False)
    assert "hunter2" not in str(caught.value)


def test_toml_file_values_and_environment_precedence(tmp_path: Path) -> None:
    config = tmp_path / "runs-fleet.toml"
    config.write_text(
        'mode = "memory"\ndefault_disk_gib = 80\nbackends = ["memory"]\n'
        '[presets]\nbig = "cpu=16/ram=64"\n'
    )
    settings = load_settings(
        {"RUNS_FLEET_CONFIG_FILE": str(config), "RUNS_FLEET_DEFAULT_DISK_GIB": "100"},
        DEFS,
        require=False,
    )
    assert settings.mode == "memory"
    assert settings["RUNS_FLEET_DEFAULT_DISK_GIB"] == 100
    assert settings["RUNS_FLEET_PRESETS"] == {"big": "cpu=16/ram=64"}
    assert settings.sources["RUNS_FLEET_MODE"] == "config file"


def test_unknown_toml_keys_and_broken_files_are_problems(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('mdoe = "ec2"\n')
    assert any(
        "unknown key 'mdoe'; did you mean 'mode'?" in p
        for p in _problems({"RUNS_FLEET_CONFIG_FILE": str(config)})
    )
    config.write_text("mode = \n")
    assert any("cannot read" in p for p in _problems({"RUNS_FLEET_CONFIG_FILE": str(config)}))


def test_unknown_variables_warn_with_a_suggestion_but_service_links_do_not() -> None:
    settings = load_settings(
        {
            "RUNS_FLEET_QUEUE_ULR": "x",
            "RUNS_FLEET_PORT": "tcp://10.96.0.12:8080",
            "RUNS_FLEET_SERVICE_HOST": "10.96.0.12",
            "RUNS_FLEET_SERVICE_PORT_HTTP": "8080",
            "RUNS_FLEET_VALKEY_PORT_6379_TCP_ADDR": "10.96.0.13",
            "RUNS_FLEET_VALKEY_PORT_6379_TCP_PROTO": "tcp",
            "RUNS_FLEET_METRICS_PORT": "9090",
            "RUNS_FLEET_DISABLE_PLUGINS": "memory",
        },
        DEFS,
        require=False,
    )
    assert settings.warnings == (
        "RUNS_FLEET_METRICS_PORT is not a runs-fleet setting and is ignored; "
        "did you mean RUNS_FLEET_METRICS_ADAPTER?",
        "RUNS_FLEET_QUEUE_ULR is not a runs-fleet setting and is ignored; "
        "did you mean RUNS_FLEET_QUEUE_URL?",
    )


def test_lists_and_numbers_parse() -> None:
    settings = load_settings(
        {"RUNS_FLEET_BACKENDS": "ec2, k8s", "RUNS_FLEET_MAX_ATTEMPTS": "5"}, DEFS, require=False
    )
    assert settings["RUNS_FLEET_BACKENDS"] == ["ec2", "k8s"]
    assert settings["RUNS_FLEET_MAX_ATTEMPTS"] == 5


def test_an_empty_variable_counts_as_unset(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('mode = "memory"\n')
    settings = load_settings(
        {"RUNS_FLEET_CONFIG_FILE": str(config), "RUNS_FLEET_MODE": ""}, DEFS, require=False
    )
    assert settings.mode == "memory"


def test_inspecting_reports_every_problem_and_keeps_defaults_for_bad_values() -> None:
    settings, problems = inspect_settings(
        {"RUNS_FLEET_MAX_ATTEMPTS": "x", "RUNS_FLEET_MODE": "ec2"}, DEFS
    )
    assert settings["RUNS_FLEET_MAX_ATTEMPTS"] == 3
    assert settings.mode == "ec2"
    assert len(problems) == 1 + 4 + 3  # the bad number, four ec2 settings, three GitHub ones


def test_env_flags() -> None:
    assert env_flag({"RUNS_FLEET_DEBUG": "yes"}, "RUNS_FLEET_DEBUG")
    assert not env_flag({"RUNS_FLEET_DEBUG": "false"}, "RUNS_FLEET_DEBUG")
    assert not env_flag({}, "RUNS_FLEET_DEBUG")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_number_that_is_not_finite_is_a_problem(value: str) -> None:
    problems = _problems({"RUNS_FLEET_CLAIM_TTL_S": value})
    assert f"RUNS_FLEET_CLAIM_TTL_S: {value!r} is not a number" in problems


def test_an_infinite_whole_number_in_the_config_file_is_a_problem(tmp_path: Path) -> None:
    config = tmp_path / "runs-fleet.toml"
    config.write_text("max_attempts = inf\n")
    problems = _problems({"RUNS_FLEET_CONFIG_FILE": str(config)})
    assert "RUNS_FLEET_MAX_ATTEMPTS: inf is not a whole number" in problems
