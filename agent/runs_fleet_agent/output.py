"""The runner's output on its way out of the agent, for an agent that keeps its logs
somewhere else as well (EC2 mode: CloudWatch Logs, because the instance and its journal
end with the job).

:class:`OutputCopier` reads the runner's stdout and stderr from one pipe, copies every
byte unchanged to the agent's own stdout (so ``kubectl logs`` and journald see what they
always saw) and hands each line to a :class:`LineSink`. A sink must never make the
runner wait: it keeps what it can and drops the rest. :class:`SinkHandler` hands the
agent's own log records to the same sink. :class:`Redactor` is what a sink masks secrets
with before it keeps a line: the values it is given (the JIT config or registration
token, the report token) and the shapes of GitHub tokens and AWS credentials.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import threading
import time
from collections.abc import Iterable
from typing import BinaryIO, Protocol

from runs_fleet_core.domain.runner import RunnerConfig

MASK = "***"
DEFAULT_MAX_LINE_BYTES = 64 * 1024
"""The longest line a sink gets; the rest of a longer line is copied but not kept."""
LOG_FORMAT = "runs-fleet-agent %(levelname)s %(message)s"
"""How :class:`SinkHandler` writes a record (the sink keeps the time itself)."""

_READ_BYTES = 64 * 1024
_PARTIAL_MIN_CHARS = 4
_SECRET_SETTING_WORDS = ("token", "secret", "password", "key")
_TOKEN_SHAPES = (
    # GitHub: installation (ghs_), personal (ghp_, github_pat_), OAuth (gho_), user to
    # server (ghu_) and refresh (ghr_) tokens
    re.compile(r"(?<![A-Za-z0-9])(?:gh[pousr]_|github_pat_)[A-Za-z0-9_]{16,}"),
    # AWS access key ids, long-term (AKIA) and temporary (ASIA)
    re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}"),
)
_AWS_SECRET = re.compile(
    r"(?i)((?:aws_?)?secret_?access_?key|aws_?session_?token)([\"']?\s*[:=]\s*[\"']?)"
    r"[^\s\"',;]+"
)
_TOKEN_START_AT_END = re.compile(
    r"(?<![A-Za-z0-9])(?:gh[pousr]_|github_pat_|AKIA|ASIA)[A-Za-z0-9_]*\Z"
)


class LineSink(Protocol):
    """Where lines of output go besides the agent's stdout."""

    def write_line(self, line: str, *, cut: bool = False) -> None:
        """Take one line, without its line break; ``cut``: the line went on beyond the
        copier's limit and this is its start. Must return at once, never waiting for I/O
        (a sink that cannot keep up drops lines), and must not raise."""
        ...


class Redactor:
    """Masks secrets in text with ``***``: the exact values it is given, and whatever
    looks like a GitHub token (``ghs_…``, ``ghp_…``, ``gho_…``, ``ghu_…``, ``ghr_…``,
    ``github_pat_…``), an AWS access key id (``AKIA…``, ``ASIA…``) or the value of an
    AWS secret access key or session token setting (``aws_secret_access_key=…``).
    Values may be added from any thread while another one redacts."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Mask these values from now on (empty ones are ignored)."""
        with self._lock:
            known = set(self._secrets) | {s for s in secrets if s}
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def redact(self, text: str, *, cut: bool = False) -> str:
        """``text`` with every secret masked. ``cut``: ``text`` is the start of a longer
        line, so a secret may begin at its end and be cut short: such a beginning is
        masked too."""
        secrets = self._secrets
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for shape in _TOKEN_SHAPES:
            text = shape.sub(MASK, text)
        text = _AWS_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        if cut:
            text = _mask_secret_start_at_end(text, secrets)
        return text


def _mask_secret_start_at_end(text: str, secrets: Iterable[str]) -> str:
    """``text`` with the longest beginning of a secret at its very end masked."""
    for secret in secrets:
        start = secret[:_PARTIAL_MIN_CHARS]
        if len(start) < _PARTIAL_MIN_CHARS:
            continue
        at = text.find(start, max(0, len(text) - len(secret) + 1))
        while at != -1:
            if secret.startswith(text[at:]):
                text = text[:at] + MASK
                break
            at = text.find(start, at + 1)
    return _TOKEN_START_AT_END.sub(MASK, text)


def config_secrets(config: RunnerConfig) -> list[str]:
    """The secrets of a runner config: its JIT config or registration token, and the
    values of the settings whose names mention a token, secret, password or key
    (``report_token``); empty ones left out."""
    settings = config.settings
    hidden = [v for k, v in settings.items() if any(w in k.lower() for w in _SECRET_SETTING_WORDS)]
    return [s for s in (config.jit_config, config.registration_token, *hidden) if s]


class SinkHandler(logging.Handler):
    """Hands the agent's log records to a sink, one formatted record each (see
    :data:`LOG_FORMAT`)."""

    def __init__(self, sink: LineSink, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.sink = sink
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` and hand it to the sink."""
        try:
            self.sink.write_line(self.format(record))
        except Exception:
            self.handleError(record)


class OutputCopier:
    """Copies a pipe to ``echo`` byte for byte and hands its lines to ``sink``, in a
    thread of its own; lines longer than ``max_line_bytes`` reach the sink cut.

    :meth:`start` it once the writer (the runner) is running; :meth:`finish` it once the
    writer has exited: whatever is still in the pipe is copied until the pipe closes, or
    until a timeout when something outside the writer's process group still holds it.
    """

    def __init__(
        self,
        source: int,
        sink: LineSink,
        *,
        echo: BinaryIO | None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self._source = source
        self._sink = sink
        self._echo = echo
        self._max_line_bytes = max_line_bytes
        self._line = bytearray()
        self._line_bytes = 0
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._copy, name="runner-output", daemon=True)

    def start(self) -> None:
        """Start copying."""
        self._thread.start()

    def finish(self, timeout_s: float) -> bool:
        """Copy what the pipe still holds for at most ``timeout_s``, then stop; whether
        copying is over (``False``: the sink or the agent's stdout still holds it up)."""
        self._deadline = time.monotonic() + timeout_s
        self._thread.join(timeout_s + 1.0)
        return not self._thread.is_alive()

    def _copy(self) -> None:
        try:
            while self._deadline is None or time.monotonic() < self._deadline:
                ready, _, _ = select.select([self._source], [], [], 0.1)
                if not ready:
                    continue
                chunk = os.read(self._source, _READ_BYTES)
                if not chunk:
                    break
                self._write_through(chunk)
                self._split(chunk)
        except (OSError, ValueError):
            pass
        if self._line_bytes:
            self._hand_over()

    def _write_through(self, chunk: bytes) -> None:
        if self._echo is None:
            return
        try:
            self._echo.write(chunk)
            self._echo.flush()
        except (OSError, ValueError):
            self._echo = None

    def _split(self, chunk: bytes) -> None:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            self._keep(chunk[start:end])
            self._hand_over()
            start = end + 1
        self._keep(chunk[start:])

    def _keep(self, data: bytes) -> None:
        room = self._max_line_bytes - len(self._line)
        if room > 0:
            self._line += data[:room]
        self._line_bytes += len(data)

    def _hand_over(self) -> None:
        cut = self._line_bytes > self._max_line_bytes
        raw = bytes(self._line)
        self._line.clear()
        self._line_bytes = 0
        if raw.endswith(b"\r") and not cut:
            raw = raw[:-1]
        with contextlib.suppress(Exception):  # a sink must not raise; the copy goes on
            self._sink.write_line(raw.decode("utf-8", "replace"), cut=cut)
