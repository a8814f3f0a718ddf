"""A pytest plugin that fails the session when a secret shows up in the suite's output.

runs-fleet's secrets (webhook secret, App key, installation tokens, JIT configs,
registration and report tokens, admin token, embedded Valkey password) must never reach
logs or errors. This plugin reads everything the suite prints or logs: the captured
stdout, stderr and log records of every phase of every test, failure reports, warnings,
and the log files of the processes the end-to-end stacks start (named with
:func:`watch_file` or :func:`watch_dir`). It looks for the exact values fixtures register
with :func:`register_secret`, and for the shapes of secrets: PEM private keys, GitHub
tokens, encoded JIT configs (also inside other base64), registration tokens,
``Authorization`` header values and passwords in URLs (the search is
:mod:`tests.secret_search`).

Any hit fails the session with a report naming the test or file, the place, the kind and
an excerpt in which every secret is replaced by its kind. Log records count from the
level pytest captures (``log_level = "DEBUG"``: all of them), except the AWS SDK's, held
at INFO as runs-fleet's own logging setup holds them (``SDK_LOGGERS``: they quote whole
requests at debug). A test that must print a secret-looking value says so with
``@pytest.mark.prints_fake_secret(kind, reason=...)``: its hits of that kind are listed
with the reason instead. Stacks import this module before pytest may load it as a
plugin; PYTEST_DONT_REWRITE keeps pytest from warning that it cannot rewrite it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from runs_fleet_server.cli import SDK_LOGGERS
from tests.secret_search import Hit, Secrets, find

__all__ = ["Hit", "Secrets", "find", "register_secret", "watch_dir", "watch_file"]

MARKER = "prints_fake_secret"
MAX_SHOWN = 5
"""Hits shown per place; the rest are counted."""


@attrs.define
class _Watched:
    """A file some process writes during ``test``: scanned up to ``offset`` (``lines``
    lines) so far."""

    path: Path
    test: str
    offset: int = 0
    lines: int = 0


@attrs.define
class Scanner:
    """One session's secrets, watched files, hits and allowances."""

    secrets: Secrets = attrs.field(factory=Secrets)
    hits: list[Hit] = attrs.field(factory=list)
    allowed: list[tuple[Hit, str]] = attrs.field(factory=list)
    current: str = "(collection)"
    sdk_levels: dict[str, int] = attrs.field(factory=dict)
    scanned: int = 0
    allowances: dict[str, dict[str, str]] = attrs.field(factory=dict)
    """By test: the kinds it may print, each with the reason."""
    pending: list[tuple[str, str, str, str]] = attrs.field(factory=list)
    """Output of the running test's phases, scanned once its teardown is over (a secret
    its fixtures register at teardown counts for every phase)."""
    files: dict[Path, _Watched] = attrs.field(factory=dict)
    dirs: list[tuple[Path, str, str]] = attrs.field(factory=list)
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    remote_files: int = 0
    """Log files the pytest-xdist workers watched (each worker scans its own)."""

    def scan(self, text: str, source: str, where: str, test: str, first_line: int = 1) -> None:
        """Record the secrets in ``text``, printed by ``test``."""
        allowances = self.allowances.get(test, {})
        for hit in find(self.secrets, text, source, where, first_line):
            if hit.kind in allowances:
                self.allowed.append((hit, allowances[hit.kind]))
            else:
                self.hits.append(hit)

    def scan_pending(self) -> None:
        pending, self.pending = self.pending, []
        self.scanned += len(pending)
        for text, source, where, test in pending:
            self.scan(text, source, where, test)

    def watch(self, path: Path) -> None:
        with self.lock:
            self.files.setdefault(path.resolve(), _Watched(path.resolve(), self.current))

    def watch_dir(self, directory: Path, pattern: str) -> None:
        with self.lock:
            self.dirs.append((directory, pattern, self.current))

    def scan_files(self, final: bool = False) -> None:
        """Scan what the watched files gained since the last scan (whole lines only,
        unless ``final``)."""
        with self.lock:
            for directory, pattern, test in self.dirs:
                for path in sorted(directory.glob(pattern)) if directory.is_dir() else []:
                    self.files.setdefault(path.resolve(), _Watched(path.resolve(), test))
            watched = list(self.files.values())
        for file in watched:
            self._scan_file(file, final)

    def _scan_file(self, file: _Watched, final: bool) -> None:
        try:
            with file.path.open("rb") as handle:
                if handle.seek(0, 2) < file.offset:  # rewritten: start again
                    file.offset, file.lines = 0, 0
                handle.seek(file.offset)
                chunk = handle.read()
        except OSError:
            return  # gone with its test's directory: it was scanned at that test's end
        if not final:
            chunk = chunk[: chunk.rfind(b"\n") + 1]
        if not chunk:
            return
        text = chunk.decode(errors="replace")
        source = f"{file.path} (written during {file.test})"
        self.scan(text, source, "", file.test, first_line=file.lines + 1)
        file.offset += len(chunk)
        file.lines += text.count("\n")


_active: list[Scanner] = []
"""The scanners of the sessions running in this process, innermost last (``pytester``
runs sessions inside a session)."""


def register_secret(value: str | bytes, kind: str) -> None:
    """Make the running session fail if ``value`` shows up in any output (a no-op when
    the plugin is not loaded). ``kind`` names it in the report ("webhook secret")."""
    if _active:
        _active[-1].secrets.add(value, kind)


def watch_file(path: Path) -> None:
    """Scan ``path`` (a log some process writes) after each test and at the end."""
    if _active:
        _active[-1].watch(Path(path))


def watch_dir(directory: Path, pattern: str = "**/*.log") -> None:
    """Scan every file matching ``pattern`` in ``directory``, including files created
    later (agent logs of runners started during the test)."""
    if _active:
        _active[-1].watch_dir(Path(directory), pattern)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(kind, reason): the test prints a fake value that looks like a secret of "
        "that kind; the secret scanner lists those hits with the reason instead of failing",
    )
    scanner = Scanner()
    for name in SDK_LOGGERS:  # as runs-fleet's own logging setup holds them
        sdk = logging.getLogger(name)
        scanner.sdk_levels[name] = sdk.level
        sdk.setLevel(max(sdk.level, logging.INFO))
    config.stash[_KEY] = scanner
    _active.append(scanner)
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_XdistController(scanner), "secret-scan-controller")


def pytest_unconfigure(config: pytest.Config) -> None:
    scanner = config.stash.get(_KEY, None)
    if scanner in _active:
        _active.remove(scanner)
    for name, level in scanner.sdk_levels.items() if scanner else ():
        logging.getLogger(name).setLevel(level)


_KEY = pytest.StashKey[Scanner]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    scanner = config.stash[_KEY]
    for item in items:
        for mark in item.iter_markers(MARKER):
            kind = mark.args[0] if mark.args else mark.kwargs.get("kind")
            reason = mark.kwargs.get("reason") or (mark.args[1] if len(mark.args) > 1 else "")
            if not kind or not str(reason).strip():
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.{MARKER} needs the kind of secret and a "
                    "reason, e.g. prints_fake_secret('GitHub token', reason='…')"
                )
            scanner.allowances.setdefault(item.nodeid, {})[str(kind)] = str(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    scanner = item.config.stash[_KEY]
    scanner.current = item.nodeid
    try:
        return (yield)
    finally:  # after teardown: every fixture's processes have stopped
        scanner.scan_pending()
        scanner.scan_files()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _pend(report, f"failure report ({report.when})", report.when)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _pend(report, "collection error", None)


def _pend(report: pytest.TestReport | pytest.CollectReport, failed: str, when: str | None) -> None:
    """Queue a report's captured output (of its own phase: a test's report repeats the
    earlier phases') and failure text for the scan at the test's end."""
    if not _active or getattr(report, "node", None) is not None:
        return  # a pytest-xdist worker's report: that worker scanned it already
    source = report.nodeid or "(collection)"
    pending = _active[-1].pending
    for title, content in report.sections:
        if when is None or title.endswith(f" {when}"):
            pending.append((content, source, title, source))
    if report.longrepr is not None:
        pending.append((report.longreprtext, source, failed, source))


def pytest_warning_recorded(warning_message: object, nodeid: str) -> None:
    if _active:
        text = str(getattr(warning_message, "message", warning_message))
        _active[-1].pending.append((text, nodeid or "(session)", "warning", nodeid))


def pytest_sessionfinish(session: pytest.Session) -> None:
    scanner = session.config.stash[_KEY]
    scanner.scan_pending()
    scanner.scan_files(final=True)
    output = getattr(session.config, "workeroutput", None)
    if output is not None:  # a pytest-xdist worker: the controller reports and fails
        output[_OUTPUT] = {
            "hits": [attrs.astuple(hit) for hit in scanner.hits],
            "allowed": [(attrs.astuple(hit), reason) for hit, reason in scanner.allowed],
            "scanned": scanner.scanned,
            "files": len(scanner.files) + scanner.remote_files,
        }
    if scanner.hits and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_OUTPUT = "secret_scan"


class _XdistController:
    """On the pytest-xdist controller: each worker scans what its tests printed and
    logged (it alone knows the secrets its fixtures made); their findings come back with
    the worker's output, and the controller reports them and fails the session."""

    def __init__(self, scanner: Scanner) -> None:
        self.scanner = scanner

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", {}).get(_OUTPUT)
        if not output:
            return
        self.scanner.hits += [Hit(*fields) for fields in output["hits"]]
        self.scanner.allowed += [(Hit(*fields), reason) for fields, reason in output["allowed"]]
        self.scanner.scanned += output["scanned"]
        self.scanner.remote_files += output["files"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    scanner = config.stash[_KEY]
    level = config.getoption("log_level", None) or config.getini("log_level") or "WARNING"
    capture = config.getoption("capture", "fd")
    notes = [
        f"{scanner.scanned} captured outputs and "
        f"{len(scanner.files) + scanner.remote_files} log files checked",
        f"log records from level {level}, {', '.join(SDK_LOGGERS)} from INFO",
    ]
    if capture == "no":
        notes.append("output not captured (-s): only log records and watched files checked")
    if scanner.allowed:
        terminalreporter.section("secret-looking output allowed by a marker")
        for hit, reason in scanner.allowed[:50]:
            terminalreporter.line(f"{hit.describe()}  [allowed: {reason}]")
    if not scanner.hits:
        terminalreporter.line(f"secret scan: no secret in the output ({'; '.join(notes)})")
        return
    terminalreporter.section("secrets in the output", red=True, bold=True)
    for (source, where), hits in _by_place(scanner.hits).items():
        for hit in hits[:MAX_SHOWN]:
            terminalreporter.line(hit.describe(), red=True)
        if len(hits) > MAX_SHOWN:
            terminalreporter.line(f"{source}: {where}: {len(hits) - MAX_SHOWN} more hit(s)")
    terminalreporter.line(
        f"secret scan: {len(scanner.hits)} secret(s) in the output: the session fails "
        f"({'; '.join(notes)})",
        red=True,
    )


def _by_place(hits: list[Hit]) -> dict[tuple[str, str], list[Hit]]:
    places: dict[tuple[str, str], list[Hit]] = {}
    for hit in hits:
        place = hit.where.rpartition("line ")[0].rstrip(", ")
        places.setdefault((hit.source, place), []).append(hit)
    return places
