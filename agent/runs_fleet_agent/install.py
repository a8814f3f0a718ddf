"""Installing the GitHub Actions runner into an empty runner directory.

A machine image or container that ships the runner needs none of this. One that does not
(a plain AMI, a slim image, a fresh host) downloads GitHub's ``actions/runner`` release
for its OS and architecture, from GitHub or from a mirror, the first time an agent runs.
What runs next receives a JIT config, so the archive is trusted only after its SHA-256
matches the configured one: the checksum is checked before a single member is unpacked,
and members that would land outside the runner directory (absolute paths, ``..``, links
pointing out, device files) refuse the whole archive. The archive is unpacked into a
staging directory and moved into place with ``run.sh`` last, so a ``run.sh`` in the
runner directory always means a complete install, and agents sharing one directory
install it once (behind a file lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import platform
import posixpath
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import IO

EXIT_DOWNLOAD_FAILED = 69
EXIT_BAD_SETUP = 78
MAX_ARCHIVE_BYTES = 1 << 30
VERSION_FILE = Path("bin") / "runnerversion"
_LOCK_NAME = ".runs-fleet-install.lock"
_CHUNK = 1 << 16
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_PLATFORM = re.compile(r"^[A-Za-z0-9]+-[A-Za-z0-9_]+$")
_OS_NAMES = {"linux": "linux", "darwin": "osx"}
_ARCH_NAMES = {
    "x86_64": "x64",
    "amd64": "x64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
}
_log = logging.getLogger("runs_fleet_agent")


class InstallError(Exception):
    """The runner could not be installed. ``exit_code`` is the agent's exit code; the
    message names the setting to fix and never contains a URL's credentials."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class RunnerRelease:
    """Where the runner comes from: ``url_template`` with ``{version}``, ``{os}`` and
    ``{arch}`` placeholders, the release ``version`` and the archive's ``sha256``: one
    digest, or one per platform as ``os-arch=digest`` pairs separated by commas
    (``linux-x64=…,linux-arm64=…``), so one setting serves machines of several
    architectures."""

    url_template: str
    version: str
    sha256: str

    def url(self, os_name: str, arch: str) -> str:
        """The archive's URL for this platform."""
        return self.url_template.format(version=self.version, os=os_name, arch=arch)

    def digest(self, os_name: str, arch: str) -> str:
        """The expected SHA-256 (lower-case hex) of this platform's archive;
        :class:`InstallError` when the setting lists other platforms only."""
        digests = parse_checksums(self.sha256)
        if "" in digests:
            return digests[""]
        platform_name = f"{os_name}-{arch}"
        if platform_name not in digests:
            listed = ", ".join(sorted(digests))
            raise InstallError(
                f"RUNS_FLEET_RUNNER_SHA256 lists the runner archive's SHA-256 for {listed}, "
                f"not for this machine ({platform_name}): add {platform_name}=<SHA-256>",
                EXIT_BAD_SETUP,
            )
        return digests[platform_name]


def parse_checksums(text: str) -> dict[str, str]:
    """``text`` as ``{platform: digest}`` (lower-case), the platform ``""`` for a lone
    digest; ValueError naming what is wrong."""
    text = text.strip()
    if "=" not in text:
        if not _SHA256.match(text):
            raise ValueError("must be 64 hex digits, or os-arch=<64 hex digits> pairs")
        return {"": text.lower()}
    digests: dict[str, str] = {}
    for item in text.split(","):
        name, _, digest = (part.strip() for part in item.partition("="))
        if not _PLATFORM.match(name) or not _SHA256.match(digest):
            raise ValueError(f"{item.strip()!r} is not os-arch=<64 hex digits> (e.g. linux-x64=…)")
        if name.lower() in digests:
            raise ValueError(f"{name} is listed twice")
        digests[name.lower()] = digest.lower()
    return digests


def release_platform(system: str | None = None, machine: str | None = None) -> tuple[str, str]:
    """The ``(os, arch)`` pair in actions/runner's release names (``linux``/``osx``;
    ``x64``/``arm64``/``arm``) for this machine, or for ``system``/``machine``."""
    system = (system or platform.system()).lower()
    machine = (machine or platform.machine()).lower()
    if system not in _OS_NAMES:
        raise InstallError(
            f"actions/runner has no release runs-fleet can install on {system!r}", EXIT_BAD_SETUP
        )
    if machine not in _ARCH_NAMES:
        raise InstallError(
            f"actions/runner has no release for the machine architecture {machine!r}",
            EXIT_BAD_SETUP,
        )
    return _OS_NAMES[system], _ARCH_NAMES[machine]


def redact(url: str) -> str:
    """``url`` without user info, query or fragment: a mirror's URL may carry a token."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def ensure_installed(
    runner_dir: Path,
    release: RunnerRelease,
    *,
    timeout_s: float = 30.0,
    deadline_s: float = 900.0,
    max_bytes: int = MAX_ARCHIVE_BYTES,
    platform_names: tuple[str, str] | None = None,
) -> bool:
    """Install ``release`` into ``runner_dir`` unless it holds a ``run.sh``: ``True`` when
    this call installed it. ``timeout_s`` bounds each network read, ``deadline_s`` the
    whole download. Raises :class:`InstallError`."""
    if (runner_dir / "run.sh").exists():
        return False
    os_name, arch = platform_names or release_platform()
    url = release.url(os_name, arch)
    expected = release.digest(os_name, arch)
    try:
        runner_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InstallError(
            f"cannot create the runner directory {runner_dir}: {exc.strerror}", EXIT_BAD_SETUP
        ) from None
    with _install_lock(runner_dir):
        if (runner_dir / "run.sh").exists():  # another agent installed it meanwhile
            return False
        _log.info("installing actions/runner %s from %s", release.version, redact(url))
        with tempfile.TemporaryFile(dir=runner_dir) as archive:
            digest = _download(url, archive, timeout_s, deadline_s, max_bytes)
            if digest != expected:
                raise InstallError(
                    f"the runner archive from {redact(url)} has SHA-256 {digest}, not the "
                    f"expected {expected} (RUNS_FLEET_RUNNER_SHA256): "
                    "refusing to run it",
                    EXIT_BAD_SETUP,
                )
            archive.seek(0)
            _unpack(archive, runner_dir)
    _log.info("installed actions/runner %s in %s", release.version, runner_dir)
    return True


@contextlib.contextmanager
def _install_lock(runner_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the runner directory's install lock file."""
    fd = os.open(runner_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects (GitHub's downloads redirect to a CDN) to http(s) only."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        """The redirected request, or URLError for a scheme other than http(s)."""
        if not newurl.lower().startswith(("http://", "https://")):
            raise urllib.error.URLError("redirected to a URL that is not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(url: str, sink: IO[bytes], timeout_s: float, deadline_s: float, limit: int) -> str:
    """Stream ``url`` into ``sink``; the hex SHA-256 of what arrived."""
    shown = redact(url)
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": "runs-fleet-agent"})  # noqa: S310
    digest = hashlib.sha256()
    received = 0
    deadline = time.monotonic() + deadline_s
    try:
        with opener.open(request, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise InstallError(
                    f"the runner archive at {shown} is {int(length)} bytes, over the "
                    f"{limit}-byte limit",
                    EXIT_DOWNLOAD_FAILED,
                )
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > limit:
                    raise InstallError(
                        f"the runner archive at {shown} is over the {limit}-byte limit",
                        EXIT_DOWNLOAD_FAILED,
                    )
                if time.monotonic() > deadline:
                    raise InstallError(
                        f"downloading the runner archive from {shown} took over {deadline_s:g}s",
                        EXIT_DOWNLOAD_FAILED,
                    )
                digest.update(chunk)
                sink.write(chunk)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise InstallError(
            f"cannot download the runner from {shown}: HTTP {exc.code} "
            "(check RUNS_FLEET_RUNNER_URL and RUNS_FLEET_RUNNER_VERSION)",
            EXIT_DOWNLOAD_FAILED,
        ) from None
    except urllib.error.URLError as exc:
        raise InstallError(
            f"cannot download the runner from {shown}: {_reason(exc.reason)}",
            EXIT_DOWNLOAD_FAILED,
        ) from None
    except (TimeoutError, OSError) as exc:
        raise InstallError(
            f"cannot download the runner from {shown}: {_reason(exc)}", EXIT_DOWNLOAD_FAILED
        ) from None
    return digest.hexdigest()


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return reason if isinstance(reason, str) else type(reason).__name__


def _unpack(archive: IO[bytes], runner_dir: Path) -> None:
    """Check every member of the gzip'd tar ``archive``, then unpack it into
    ``runner_dir`` through a staging directory, ``run.sh`` last."""
    try:
        with tarfile.open(fileobj=archive, mode="r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
            if not any(posixpath.normpath(m.name) == "run.sh" and m.isfile() for m in members):
                raise InstallError(
                    "the runner archive has no run.sh: is RUNS_FLEET_RUNNER_URL an "
                    "actions/runner release?",
                    EXIT_BAD_SETUP,
                )
            staging = Path(tempfile.mkdtemp(prefix=".runs-fleet-unpack-", dir=runner_dir))
            try:
                if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
                    tar.extractall(staging, members=members, filter="data")
                else:  # every member was checked above
                    tar.extractall(staging, members=members)  # noqa: S202
                _move_into_place(staging, runner_dir)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError) as exc:
        raise InstallError(
            f"the runner archive cannot be unpacked: {exc}", EXIT_BAD_SETUP
        ) from None
    except OSError as exc:
        raise InstallError(
            f"cannot unpack the runner into {runner_dir}: {exc.strerror}", EXIT_DOWNLOAD_FAILED
        ) from None


def _check_member(member: tarfile.TarInfo) -> None:
    """Refuse a member that would escape the runner directory or is not a plain file,
    directory or link inside it."""
    name = member.name
    if _escapes(name):
        raise InstallError(
            f"the runner archive has a member outside its directory ({name!r}): refusing it",
            EXIT_BAD_SETUP,
        )
    if member.issym():
        target = posixpath.join(posixpath.dirname(name), member.linkname)
        if member.linkname.startswith("/") or _escapes(target):
            raise InstallError(
                f"the runner archive has a link pointing outside its directory ({name!r}): "
                "refusing it",
                EXIT_BAD_SETUP,
            )
    elif member.islnk():
        if _escapes(member.linkname):
            raise InstallError(
                f"the runner archive has a hard link to outside its directory ({name!r}): "
                "refusing it",
                EXIT_BAD_SETUP,
            )
    elif not (member.isfile() or member.isdir()):
        raise InstallError(
            f"the runner archive has a device or special file ({name!r}): refusing it",
            EXIT_BAD_SETUP,
        )


def _escapes(name: str) -> bool:
    """Whether the archive path ``name`` is absolute or climbs above the archive's root."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    normal = posixpath.normpath(name)
    return normal == ".." or normal.startswith("../")


def _move_into_place(staging: Path, runner_dir: Path) -> None:
    """Move the staged entries into ``runner_dir`` (replacing leftovers of an install
    that never finished), ``run.sh`` last."""
    entries = sorted(staging.iterdir(), key=lambda entry: entry.name == "run.sh")
    for entry in entries:
        target = runner_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(entry, target)
