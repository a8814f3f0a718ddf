"""An EC2 runner's logs in CloudWatch Logs, shipped before its instance ends.

A runner instance terminates itself after its job, and its journal goes with it. With a
log group named (``--log-group``, ``$RUNS_FLEET_EC2_LOG_GROUP``) the EC2 agent ships
its own log and the runner's output to the stream ``<runner name or "pool">/<instance
id>`` of that group while it runs, and whatever is left before the instance ends.

Nothing here may hold up or fail the job. Lines wait in a bounded buffer (what does not
fit is dropped and counted); a background thread creates the stream and puts the lines
every few seconds in batches within CloudWatch's limits; a failed put is retried a few
times and then given up; every error is logged and never raised. Secrets are masked
(:class:`~runs_fleet_agent.output.Redactor`) before a line enters the buffer.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from runs_fleet_agent.output import Redactor, SinkHandler, config_secrets
from runs_fleet_aws.calls import TRANSIENT_CODES, AwsCaller, aws_error, error_code
from runs_fleet_core.domain.runner import RunnerConfig

LOG_GROUP_VAR = "RUNS_FLEET_EC2_LOG_GROUP"
EVENT_OVERHEAD_BYTES = 26
"""What CloudWatch adds to the UTF-8 size of each message when it sizes a batch."""
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
MAX_EVENT_BYTES = 256 * 1024 - EVENT_OVERHEAD_BYTES
MAX_BATCH_SPAN_MS = 24 * 3600 * 1000
CLOSE_TIMEOUT_S = 15.0
"""How long the end of a job may wait for the last lines to be shipped."""
CUT_MARK = " [cut]"
_FLUSH_AT_EVENTS = 1_000
_FLUSH_AT_BYTES = 512 * 1024
_RETRY_CODES = TRANSIENT_CODES | {"ServiceUnavailableException", "OperationAbortedException"}
_GIVE_UP_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
    }
)
_GROUP_NAME = re.compile(r"[.\-_/#A-Za-z0-9]{1,512}")
_log = logging.getLogger("runs_fleet_agent.ec2.logs")


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One line as CloudWatch Logs takes it; ``size`` counts its per-event overhead."""

    timestamp_ms: int
    message: str
    size: int


def log_event(timestamp_ms: int, message: str) -> LogEvent:
    """The event of ``message`` at ``timestamp_ms``, cut to :data:`MAX_EVENT_BYTES`."""
    data = message.encode("utf-8", "replace")
    if len(data) > MAX_EVENT_BYTES:
        data = data[: MAX_EVENT_BYTES - len(CUT_MARK)] + CUT_MARK.encode()
        message = data.decode("utf-8", "ignore")
        data = message.encode()
    return LogEvent(timestamp_ms, message, len(data) + EVENT_OVERHEAD_BYTES)


def batches(
    events: Iterable[LogEvent],
    *,
    max_events: int = MAX_BATCH_EVENTS,
    max_bytes: int = MAX_BATCH_BYTES,
    max_span_ms: int = MAX_BATCH_SPAN_MS,
) -> list[list[LogEvent]]:
    """``events`` in timestamp order (equal timestamps keep their order), split into
    PutLogEvents batches: at most ``max_events`` events and ``max_bytes`` bytes (sizes
    with their overhead) each, none spanning more than ``max_span_ms``."""
    found: list[list[LogEvent]] = []
    batch: list[LogEvent] = []
    size = 0
    for event in sorted(events, key=lambda e: e.timestamp_ms):
        if batch and (
            len(batch) >= max_events
            or size + event.size > max_bytes
            or event.timestamp_ms - batch[0].timestamp_ms > max_span_ms
        ):
            found.append(batch)
            batch, size = [], 0
        batch.append(event)
        size += event.size
    if batch:
        found.append(batch)
    return found


def stream_name(runner_name: str | None, instance_id: str) -> str:
    """``<runner name or "pool">/<instance id>``, with the characters CloudWatch refuses
    in a stream name (``:`` and ``*``) turned into ``-``, at most 512 characters."""
    name = f"{runner_name or 'pool'}/{instance_id}"
    return re.sub(r"[:*]", "-", name)[-512:]


def logs_client(caller: AwsCaller) -> Any:
    """The CloudWatch Logs client of ``caller`` (its region, timeouts and retries)."""
    return caller.client("logs")


class CloudWatchLogShipper:
    """Ships lines to one log stream from a background thread (a
    :class:`~runs_fleet_agent.output.LineSink`); :meth:`start` it, :meth:`close` it.

    ``shipped`` counts the lines CloudWatch took, ``dropped`` those the full buffer
    turned away, ``failed`` those that could not be put or that CloudWatch rejected.
    """

    def __init__(
        self,
        client: Any,
        group: str,
        stream: str,
        *,
        redactor: Redactor | None = None,
        flush_interval_s: float = 5.0,
        max_buffered_events: int = 20_000,
        max_buffered_bytes: int = 16 * 1024 * 1024,
        put_attempts: int = 3,
        backoff_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.group = group
        self.stream = stream
        self.redactor = redactor or Redactor()
        self.shipped = 0
        self.dropped = 0
        self.failed = 0
        self._client = client
        self._interval_s = flush_interval_s
        self._max_events = max_buffered_events
        self._max_bytes = max_buffered_bytes
        self._attempts = max(1, put_attempts)
        self._backoff_s = backoff_s
        self._clock = clock
        self._buffer: list[LogEvent] = []
        self._buffered_bytes = 0
        self._changed = threading.Condition()
        self._closing = False
        self._deadline = math.inf
        self._disabled = False
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)

    @property
    def enabled(self) -> bool:
        """Whether lines are still shipped (``False`` once the group proved unusable)."""
        return not self._disabled

    def start(self) -> CloudWatchLogShipper:
        """Create the stream and ship from now on, in the background; returns ``self``."""
        self._thread.start()
        return self

    def write_line(self, line: str, *, cut: bool = False) -> None:
        """Mask the secrets of ``line`` and buffer it, or drop it when the buffer is
        full; never waits for CloudWatch. Empty lines are left out."""
        if self._disabled or self._closing:
            return
        text = self.redactor.redact(line, cut=cut) + (CUT_MARK if cut else "")
        if text:
            self._offer(log_event(int(self._clock() * 1000), text))

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Ship what is buffered (with a line saying how many were dropped, if any),
        within ``timeout_s``, stop, and log what was shipped, dropped and failed."""
        with self._changed:
            if self._closing:
                return
            self._closing = True
            self._deadline = time.monotonic() + timeout_s
            if self.dropped and not self._disabled:
                note = (
                    f"runs-fleet-agent WARNING {self.dropped} lines were not shipped: they "
                    "came faster than CloudWatch Logs took them"
                )
                self._offer(log_event(int(self._clock() * 1000), note), force=True)
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            _log.warning("the last lines were not shipped within %gs", timeout_s)
        level = logging.WARNING if self.dropped or self.failed else logging.INFO
        _log.log(
            level,
            "log stream %s of %s: %d lines shipped, %d dropped (buffer full), %d failed",
            self.stream,
            self.group,
            self.shipped,
            self.dropped,
            self.failed,
        )

    def _offer(self, event: LogEvent, *, force: bool = False) -> None:
        with self._changed:
            full = (
                len(self._buffer) >= self._max_events
                or self._buffered_bytes + event.size > self._max_bytes
            )
            if full and not force:
                self.dropped += 1
                return
            self._buffer.append(event)
            self._buffered_bytes += event.size
            if len(self._buffer) >= _FLUSH_AT_EVENTS or self._buffered_bytes >= _FLUSH_AT_BYTES:
                self._changed.notify_all()

    def _take(self) -> tuple[list[LogEvent], bool]:
        """Wait for the next flush; the buffered events, and whether it is the last."""
        with self._changed:
            self._changed.wait_for(
                lambda: (
                    self._closing
                    or len(self._buffer) >= _FLUSH_AT_EVENTS
                    or self._buffered_bytes >= _FLUSH_AT_BYTES
                ),
                timeout=self._interval_s,
            )
            events, self._buffer, self._buffered_bytes = self._buffer, [], 0
            return events, self._closing

    def _run(self) -> None:
        try:
            if not self._create_stream():
                return
            last = False
            while not last:
                events, last = self._take()
                for batch in batches(events):
                    if self._disabled:
                        self.failed += len(batch)
                    else:
                        self._put(batch)
        except Exception as exc:
            self._give_up(f"log shipping stopped: {type(exc).__name__}: {exc}")

    def _create_stream(self) -> bool:
        why = ""
        for attempt in range(1, self._attempts + 1):
            try:
                self._call("create_log_stream", logGroupName=self.group, logStreamName=self.stream)
                return True
            except Exception as exc:
                code = error_code(exc)
                if code == "ResourceAlreadyExistsException":
                    return True
                if code == "ResourceNotFoundException":
                    self._give_up(
                        f"log group {self.group} does not exist: not shipping this instance's "
                        f"logs (create the group, or unset {LOG_GROUP_VAR})"
                    )
                    return False
                why = self._describe(exc, "create_log_stream")
                if code and code not in _RETRY_CODES:
                    break
            if not self._pause(attempt):
                break
        self._give_up(f"cannot create log stream {self.stream} in {self.group}: {why}")
        return False

    def _put(self, batch: list[LogEvent]) -> None:
        events = [{"timestamp": e.timestamp_ms, "message": e.message} for e in batch]
        why = ""
        for attempt in range(1, self._attempts + 1):
            try:
                answer = self._call(
                    "put_log_events",
                    logGroupName=self.group,
                    logStreamName=self.stream,
                    logEvents=events,
                )
            except Exception as exc:
                code = error_code(exc)
                why = self._describe(exc, "put_log_events")
                if code in _GIVE_UP_CODES:
                    self.failed += len(batch)
                    self._give_up(f"not shipping to {self.group} any more: {why}")
                    return
                if code and code not in _RETRY_CODES:
                    break
            else:
                rejected = rejected_count(answer.get("rejectedLogEventsInfo") or {}, len(batch))
                if rejected:
                    _log.warning(
                        "CloudWatch Logs rejected %d lines as too old or too new", rejected
                    )
                self.shipped += len(batch) - rejected
                self.failed += rejected
                return
            if not self._pause(attempt):
                break
        self.failed += len(batch)
        _log.warning("could not ship %d lines: %s", len(batch), why)

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        answer: dict[str, Any] = getattr(self._client, operation)(**params)
        return answer

    @staticmethod
    def _describe(exc: Exception, operation: str) -> str:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            return str(aws_error(f"logs.{operation}", exc))
        return f"{type(exc).__name__}: {exc}"

    def _pause(self, attempt: int) -> bool:
        """Wait before another attempt; ``False`` when there is none left in time."""
        delay = self._backoff_s * 2 ** (attempt - 1)
        if attempt >= self._attempts or time.monotonic() + delay >= self._deadline:
            return False
        time.sleep(delay)
        return True

    def _give_up(self, why: str) -> None:
        self._disabled = True
        with self._changed:
            self._buffer, self._buffered_bytes = [], 0
        _log.error("%s", why)


def rejected_count(info: dict[str, Any], total: int) -> int:
    """How many of ``total`` events PutLogEvents' ``rejectedLogEventsInfo`` turned away:
    those before ``tooOldLogEventEndIndex`` and ``expiredLogEventEndIndex`` (exclusive),
    and those from ``tooNewLogEventStartIndex`` on."""
    old = max(
        int(info.get("tooOldLogEventEndIndex", 0)), int(info.get("expiredLogEventEndIndex", 0))
    )
    new_from = int(info.get("tooNewLogEventStartIndex", total))
    return min(total, max(0, old) + max(0, total - max(new_from, old)))


@contextmanager
def shipping_logs(
    caller: AwsCaller, group: str | None, *, runner_name: str | None, instance_id: str
) -> Iterator[CloudWatchLogShipper | None]:
    """For the ``with`` block, the agent's log records (logger ``runs_fleet_agent``) go
    to ``group`` as well, and the shipper it yields takes the runner's output; ``None``
    (nothing shipped) without a group or with a name CloudWatch cannot have."""
    if not group:
        yield None
        return
    if not _GROUP_NAME.fullmatch(group):
        _log.error(
            "not shipping logs: %r is no log group name (1-512 letters, digits and . - _ / #)",
            group,
        )
        yield None
        return
    stream = stream_name(runner_name, instance_id)
    shipper = CloudWatchLogShipper(logs_client(caller), group, stream).start()
    handler = SinkHandler(shipper)
    agent_log = logging.getLogger("runs_fleet_agent")
    agent_log.addHandler(handler)
    _log.info("shipping this instance's logs to CloudWatch Logs %s, stream %s", group, stream)
    try:
        yield shipper
    finally:
        agent_log.removeHandler(handler)
        shipper.close()


def hide_secrets_of(shipper: CloudWatchLogShipper | None, config: RunnerConfig) -> None:
    """Mask the secrets of ``config`` (its JIT config, its report token) in every line
    ``shipper`` takes from now on."""
    if shipper is not None:
        shipper.redactor.add(*config_secrets(config))
