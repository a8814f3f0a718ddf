"""The agent's checks before a job: settings, disk, memory and the runner's version."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from runs_fleet_agent.install import InstallError, RunnerRelease, redact, release_platform
from runs_fleet_agent.preflight import (
    EXIT_LOW_RESOURCES,
    GIB,
    MIB,
    SETTINGS,
    Readers,
    Setup,
    SetupError,
    available_memory_bytes,
    check_resources,
    check_version,
    free_disk_bytes,
    parse_setup,
    parse_version,
    prepare,
)

SHA = "ab" * 32
URL = (
    "https://github.com/actions/runner/releases/download/"
    "v{version}/actions-runner-{os}-{arch}-{version}.tar.gz"
)


class CountingReaders:
    """Readers that answer fixed figures and count how often they were asked."""

    def __init__(self, disk: int, memory: int | None) -> None:
        self.disk, self.memory = disk, memory
        self.calls: list[str] = []

    def readers(self) -> Readers:
        return Readers(free_disk_bytes=self._disk, available_memory_bytes=self._memory)

    def _disk(self, path: Path) -> int:
        self.calls.append(f"disk {path}")
        return self.disk

    def _memory(self) -> int | None:
        self.calls.append("memory")
        return self.memory


def test_nothing_is_checked_or_installed_by_default() -> None:
    assert parse_setup({}) == Setup()
    assert parse_setup(dict.fromkeys(SETTINGS, "  ")) == Setup()


def test_a_complete_release_and_minimums_are_parsed() -> None:
    setup = parse_setup(
        {
            "RUNS_FLEET_RUNNER_URL": URL,
            "RUNS_FLEET_RUNNER_VERSION": "v2.320.0",
            "RUNS_FLEET_RUNNER_SHA256": SHA.upper(),
            "RUNS_FLEET_MIN_RUNNER_VERSION": "2.311",
            "RUNS_FLEET_MIN_FREE_DISK_GIB": "10",
            "RUNS_FLEET_MIN_FREE_MEMORY_MIB": "512.5",
        }
    )
    assert setup.release == RunnerRelease(URL, "2.320.0", SHA.upper())
    assert setup.release.url("linux", "arm64").endswith(
        "/v2.320.0/actions-runner-linux-arm64-2.320.0.tar.gz"
    )
    assert (setup.min_runner_version, setup.min_free_disk_gib, setup.min_free_memory_mib) == (
        (2, 311),
        10.0,
        512.5,
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"RUNS_FLEET_MIN_FREE_DISK_GIB": "lots"},
            "RUNS_FLEET_MIN_FREE_DISK_GIB (--min-free-disk-gib)",
        ),
        ({"RUNS_FLEET_MIN_FREE_MEMORY_MIB": "-1"}, "RUNS_FLEET_MIN_FREE_MEMORY_MIB"),
        ({"RUNS_FLEET_MIN_FREE_MEMORY_MIB": "nan"}, "RUNS_FLEET_MIN_FREE_MEMORY_MIB"),
        ({"RUNS_FLEET_MIN_RUNNER_VERSION": "latest"}, "RUNS_FLEET_MIN_RUNNER_VERSION"),
        ({"RUNS_FLEET_RUNNER_URL": URL}, "RUNS_FLEET_RUNNER_VERSION (--runner-version) is needed"),
        ({"RUNS_FLEET_RUNNER_URL": URL, "RUNS_FLEET_RUNNER_VERSION": "2.320.0"}, "unverified"),
        (
            {"RUNS_FLEET_RUNNER_URL": URL, "RUNS_FLEET_RUNNER_VERSION": "2.3.x"},
            "RUNS_FLEET_RUNNER_VERSION (--runner-version) must be a version",
        ),
        (
            {
                "RUNS_FLEET_RUNNER_URL": URL,
                "RUNS_FLEET_RUNNER_VERSION": "2.320.0",
                "RUNS_FLEET_RUNNER_SHA256": "abc",
            },
            "RUNS_FLEET_RUNNER_SHA256 (--runner-sha256) must be 64 hex digits",
        ),
        (
            {
                "RUNS_FLEET_RUNNER_URL": URL,
                "RUNS_FLEET_RUNNER_VERSION": "2.320.0",
                "RUNS_FLEET_RUNNER_SHA256": f"linux-x64={SHA},linux-arm64=abc",
            },
            "RUNS_FLEET_RUNNER_SHA256 (--runner-sha256) 'linux-arm64=abc' is not "
            "os-arch=<64 hex digits>",
        ),
        (
            {
                "RUNS_FLEET_RUNNER_URL": URL,
                "RUNS_FLEET_RUNNER_VERSION": "2.320.0",
                "RUNS_FLEET_RUNNER_SHA256": f"linux-x64={SHA},LINUX-X64={SHA}",
            },
            "RUNS_FLEET_RUNNER_SHA256 (--runner-sha256) LINUX-X64 is listed twice",
        ),
        (
            {
                "RUNS_FLEET_RUNNER_URL": "ftp://mirror/runner.tar.gz",
                "RUNS_FLEET_RUNNER_VERSION": "2.320.0",
                "RUNS_FLEET_RUNNER_SHA256": SHA,
            },
            "RUNS_FLEET_RUNNER_URL (--runner-url) must be an http(s) URL",
        ),
        (
            {
                "RUNS_FLEET_RUNNER_URL": "https://mirror/{release}.tar.gz",
                "RUNS_FLEET_RUNNER_VERSION": "2.320.0",
                "RUNS_FLEET_RUNNER_SHA256": SHA,
            },
            "only the placeholders",
        ),
    ],
)
def test_a_bad_setting_is_named_with_its_option(values: dict[str, str], expected: str) -> None:
    with pytest.raises(SetupError) as caught:
        parse_setup(values)
    assert expected in str(caught.value)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(SetupError) as caught:
        parse_setup({"RUNS_FLEET_MIN_FREE_DISK_GIB": "x", "RUNS_FLEET_MIN_FREE_MEMORY_MIB": "y"})
    assert "DISK" in str(caught.value) and "MEMORY" in str(caught.value)


def test_versions_compare_as_numbers() -> None:
    assert parse_version("2.99.0") < parse_version("2.100.0") < parse_version("v3")
    with pytest.raises(ValueError):
        parse_version("2.x")


def test_met_minimums_pass_and_unset_ones_read_nothing(tmp_path: Path) -> None:
    figures = CountingReaders(disk=20 * GIB, memory=2048 * MIB)
    assert check_resources(tmp_path, Setup(), figures.readers()) == []
    assert figures.calls == []
    setup = Setup(min_free_disk_gib=20, min_free_memory_mib=2048)
    assert check_resources(tmp_path, setup, figures.readers()) == []
    assert figures.calls == [f"disk {tmp_path}", "memory"]


def test_unmet_minimums_are_reported_with_their_figures(tmp_path: Path) -> None:
    figures = CountingReaders(disk=3 * GIB // 2, memory=300 * MIB)
    setup = Setup(min_free_disk_gib=10, min_free_memory_mib=512)
    code, detail = prepare(tmp_path, setup, figures.readers())
    assert code == EXIT_LOW_RESOURCES == 70
    assert "1.50 GiB of disk free" in detail and "minimum 10 GiB" in detail
    assert "300 MiB of memory available" in detail and "minimum 512 MiB" in detail
    assert "RUNS_FLEET_MIN_FREE_DISK_GIB" in detail and "RUNS_FLEET_MIN_FREE_MEMORY_MIB" in detail


def test_low_resources_stop_before_any_download(tmp_path: Path) -> None:
    release = RunnerRelease("http://127.0.0.1:9/{version}.tar.gz", "2.320.0", SHA)
    figures = CountingReaders(disk=0, memory=None)
    code, _ = prepare(tmp_path, Setup(release=release, min_free_disk_gib=1), figures.readers())
    assert code == EXIT_LOW_RESOURCES
    assert list(tmp_path.iterdir()) == []


def test_unknown_memory_is_not_a_reason_to_refuse(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    figures = CountingReaders(disk=GIB, memory=None)
    with caplog.at_level(logging.WARNING, logger="runs_fleet_agent"):
        assert check_resources(tmp_path, Setup(min_free_memory_mib=1), figures.readers()) == []
    assert "cannot read the available memory" in caplog.text


def test_available_memory_comes_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    1048576 kB\n")
    assert available_memory_bytes(meminfo) == GIB
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:    1 kB\n")
    assert available_memory_bytes(meminfo) is None
    assert available_memory_bytes(tmp_path / "absent") is None


def test_free_disk_of_a_directory_not_created_yet_is_its_parents(tmp_path: Path) -> None:
    assert free_disk_bytes(tmp_path / "runner" / "not-yet") == free_disk_bytes(tmp_path) > 0


@pytest.mark.parametrize(
    ("installed", "minimum", "refused"),
    [
        (None, None, None),
        ("2.280.0", None, None),
        ("2.320.0", (2, 320), None),
        ("2.321.1", (2, 320, 5), None),
        ("2.319.9", (2, 320), "older than the minimum 2.320"),
        (None, (2, 320), "version is unknown"),
        ("garbage", (2, 320), "holds no version"),
    ],
)
def test_the_runner_version_is_read_from_bin_runnerversion(
    tmp_path: Path, installed: str | None, minimum: tuple[int, ...] | None, refused: str | None
) -> None:
    if installed is not None:
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "runnerversion").write_text(installed + "\n")
    problem = check_version(tmp_path, minimum)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem


def test_release_names_follow_actions_runner() -> None:
    assert release_platform("Linux", "x86_64") == ("linux", "x64")
    assert release_platform("Linux", "aarch64") == ("linux", "arm64")
    assert release_platform("Darwin", "arm64") == ("osx", "arm64")
    with pytest.raises(InstallError, match="s390x"):
        release_platform("Linux", "s390x")


def test_urls_are_shown_without_credentials() -> None:
    shown = redact("https://user:pass@mirror.example:8443/runner.tar.gz?token=abc#x")
    assert shown == "https://mirror.example:8443/runner.tar.gz"
