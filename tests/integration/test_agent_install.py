"""The agent's setup before a job: installing the runner, refusing a bad one, checking room.

Each test runs ``python -m runs_fleet_agent`` for real. Runner archives are built in the
test and served by an HTTP server on 127.0.0.1; reports go to the recording receiver of
``test_agent``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runs_fleet_agent.install import release_platform
from runs_fleet_core.domain.messages import AgentEvent
from tests.integration.test_agent import JIT, RECORDING_RUN_SH, TOKEN, Agents, Receiver

VERSION = "2.320.0"
TEMPLATE = "/v{version}/actions-runner-{os}-{arch}-{version}.tar.gz"
MIRROR_SECRET = "MIRROR-TOKEN-SECRET-42"


def build_archive(extra: list[tarfile.TarInfo] | None = None, *, version: str = VERSION) -> bytes:
    """A gzip'd tar shaped like an actions/runner release (``./run.sh``, ``./bin/…``)
    whose run.sh records its arguments, plus ``extra`` members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        files = {
            "./run.sh": (RECORDING_RUN_SH.encode(), 0o755),
            "./bin/runnerversion": (f"{version}\n".encode(), 0o644),
            "./bin/Runner.Listener": (b"#!/bin/sh\nexit 0\n", 0o755),
        }
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


class ArchiveServer:
    """Serves ``archives`` (path → bytes) on 127.0.0.1 and records every path asked for."""

    def __init__(self) -> None:
        self.archives: dict[str, bytes] = {}
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                body = server.archives.get(self.path.partition("?")[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def publish(self, archive: bytes) -> str:
        """Serve ``archive`` as this machine's release of :data:`VERSION`; its SHA-256."""
        os_name, arch = release_platform()
        self.archives[TEMPLATE.format(version=VERSION, os=os_name, arch=arch)] = archive
        return hashlib.sha256(archive).hexdigest()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


@pytest.fixture
def mirror() -> Iterator[ArchiveServer]:
    server = ArchiveServer()
    yield server
    server.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    agents = Agents(tmp_path)
    yield agents
    agents.kill_all()


def install_args(mirror: ArchiveServer, sha256: str, *extra: str) -> list[str]:
    url = mirror.base + TEMPLATE + f"?token={MIRROR_SECRET}"
    return ["--runner-url", url, "--runner-version", VERSION, "--runner-sha256", sha256, *extra]


def unpacked(runner_dir: Path) -> list[str]:
    """What the runner directory holds besides the install lock."""
    return sorted(p.name for p in runner_dir.iterdir() if p.name != ".runs-fleet-install.lock")


def test_a_missing_runner_is_downloaded_verified_installed_and_run(
    agents: Agents, receiver: Receiver, mirror: ArchiveServer
) -> None:
    sha256 = mirror.publish(build_archive())
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    code, output = agents.run(*install_args(mirror, sha256, "--min-runner-version", "2.300"))
    assert code == 0, output
    os_name, arch = release_platform()
    assert mirror.paths == [
        f"/v{VERSION}/actions-runner-{os_name}-{arch}-{VERSION}.tar.gz?token={MIRROR_SECRET}"
    ]
    assert unpacked(agents.runner_dir) == ["bin", "run.sh"]
    assert (agents.work / "args").read_text().split() == ["--jitconfig", JIT]
    assert [r.event for r in receiver.reports()] == [AgentEvent.STARTED, AgentEvent.FINISHED]
    assert JIT not in output and TOKEN not in output and MIRROR_SECRET not in output

    agents.write_config()
    code, _ = agents.run(*install_args(mirror, sha256))
    assert code == 0
    assert len(mirror.paths) == 1  # installed once, then used as it is


def test_a_checksum_mismatch_refuses_to_run_and_unpacks_nothing(
    agents: Agents, receiver: Receiver, mirror: ArchiveServer
) -> None:
    mirror.publish(build_archive())
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    code, output = agents.run(*install_args(mirror, "0" * 64))
    assert code == 78
    assert unpacked(agents.runner_dir) == []
    assert not (agents.work / "args").exists()
    [report] = receiver.reports()  # no "started": the job never started
    assert (report.event, report.exit_code) == (AgentEvent.FAILED, 78)
    assert report.detail and "SHA-256" in report.detail and "refusing" in report.detail
    assert "RUNS_FLEET_RUNNER_SHA256" in report.detail
    assert JIT not in output and TOKEN not in output and MIRROR_SECRET not in output
    assert MIRROR_SECRET not in report.detail


def test_one_checksum_setting_serves_several_platforms(
    agents: Agents, receiver: Receiver, mirror: ArchiveServer
) -> None:
    """``os-arch=digest`` pairs: the agent checks its own platform's archive against its
    own digest, so machines of several architectures share one setting."""
    sha256 = mirror.publish(build_archive())
    here = "-".join(release_platform())
    other = "osx-arm" if here != "osx-arm" else "linux-arm"
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    code, output = agents.run(*install_args(mirror, f"{other}={'0' * 64}, {here}={sha256}"))
    assert code == 0, output
    assert unpacked(agents.runner_dir) == ["bin", "run.sh"]


def test_a_checksum_list_without_this_platform_refuses_to_install(
    agents: Agents, receiver: Receiver, mirror: ArchiveServer
) -> None:
    sha256 = mirror.publish(build_archive())
    here = "-".join(release_platform())
    other = "osx-arm" if here != "osx-arm" else "linux-arm"
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    code, _ = agents.run(*install_args(mirror, f"{other}={sha256}"))
    assert code == 78
    assert unpacked(agents.runner_dir) == []
    [report] = receiver.reports()
    assert report.event is AgentEvent.FAILED and report.detail
    assert f"not for this machine ({here}): add {here}=<SHA-256>" in report.detail
    assert "RUNS_FLEET_RUNNER_SHA256" in report.detail


@pytest.mark.parametrize(
    "bad",
    [
        member("../escaped"),
        member("bin/../../escaped"),
        member("/tmp/runs-fleet-absolute-member"),
        member("bin/escaped", tarfile.SYMTYPE, "../../escaped"),
        member("bin/passwd", tarfile.SYMTYPE, "/etc/passwd"),
        member("bin/hard", tarfile.LNKTYPE, "../escaped"),
        member("bin/null", tarfile.CHRTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "absolute-link", "hardlink", "dev"],
)
def test_an_archive_with_a_member_outside_the_runner_dir_is_refused_whole(
    agents: Agents, receiver: Receiver, mirror: ArchiveServer, bad: tarfile.TarInfo
) -> None:
    sha256 = mirror.publish(build_archive([bad]))
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    code, _ = agents.run(*install_args(mirror, sha256))
    assert code == 78
    assert unpacked(agents.runner_dir) == []
    assert not (agents.work / "escaped").exists()
    assert not Path("/tmp/runs-fleet-absolute-member").exists()
    [report] = receiver.reports()
    assert (report.event, report.exit_code) == (AgentEvent.FAILED, 78)
    assert report.detail and "refusing" in report.detail


def test_a_release_the_mirror_does_not_have_is_a_download_failure(
    agents: Agents, receiver: Receiver, mirror: ArchiveServer
) -> None:
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    code, _ = agents.run(*install_args(mirror, "0" * 64))
    assert code == 69
    [report] = receiver.reports()
    assert (report.event, report.exit_code) == (AgentEvent.FAILED, 69)
    assert (
        report.detail and "HTTP 404" in report.detail and "RUNS_FLEET_RUNNER_URL" in report.detail
    )


def test_a_runner_url_from_the_environment_without_a_checksum_is_refused(
    agents: Agents, receiver: Receiver, mirror: ArchiveServer
) -> None:
    mirror.publish(build_archive())
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    env = {"RUNS_FLEET_RUNNER_URL": mirror.base + TEMPLATE, "RUNS_FLEET_RUNNER_VERSION": VERSION}
    code, output = agents.run(env=env)
    assert code == 78
    assert mirror.paths == []
    [report] = receiver.reports()
    assert report.detail and "RUNS_FLEET_RUNNER_SHA256 (--runner-sha256)" in report.detail
    assert "unverified" in output


@pytest.mark.parametrize(
    ("version_file", "minimum", "expected"),
    [
        ("2.300.0\n", "2.310.0", "older than the minimum 2.310.0"),
        (None, "2.310.0", "version is unknown"),
        ("2.310.0\n", "2.310.0", None),
        (None, None, None),
    ],
)
def test_a_runner_older_than_the_minimum_is_refused(
    agents: Agents,
    receiver: Receiver,
    version_file: str | None,
    minimum: str | None,
    expected: str | None,
) -> None:
    agents.run_sh(RECORDING_RUN_SH)
    if version_file is not None:
        (agents.runner_dir / "bin").mkdir()
        (agents.runner_dir / "bin" / "runnerversion").write_text(version_file)
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    env = {"RUNS_FLEET_MIN_RUNNER_VERSION": minimum} if minimum else {}
    code, _ = agents.run(env=env)
    if expected is None:
        assert code == 0
        assert (agents.work / "args").exists()
        return
    assert code == 78
    assert not (agents.work / "args").exists()
    [report] = receiver.reports()
    assert report.event == AgentEvent.FAILED
    assert report.detail and expected in report.detail


def test_too_little_free_disk_is_reported_with_the_figures(
    agents: Agents, receiver: Receiver
) -> None:
    agents.run_sh(RECORDING_RUN_SH)
    agents.write_config(report_url=receiver.url, report_token=TOKEN)
    code, output = agents.run("--min-free-disk-gib", "1000000000")
    assert code == 70
    assert not (agents.work / "args").exists()
    [report] = receiver.reports()
    assert (report.event, report.exit_code) == (AgentEvent.FAILED, 70)
    assert report.detail and "GiB of disk free" in report.detail
    assert "below the minimum 1e+09 GiB (RUNS_FLEET_MIN_FREE_DISK_GIB)" in report.detail
    assert "GiB of disk free" in output


def test_agents_sharing_an_empty_runner_dir_download_it_once(
    agents: Agents, mirror: ArchiveServer
) -> None:
    sha256 = mirror.publish(build_archive())
    agents.write_config()
    second = agents.config_file.with_name("second.json")
    os.link(agents.config_file, second)
    both = [
        agents.start(*install_args(mirror, sha256)),
        agents.start(*install_args(mirror, sha256), "--config-file", str(second)),
    ]
    for child in both:
        child.communicate(timeout=60)
    assert [child.returncode for child in both] == [0, 0]
    assert len(mirror.paths) == 1
