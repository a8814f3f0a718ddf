"""Shipping an EC2 runner's logs: PutLogEvents batches within CloudWatch's limits, stream
names, and a shipper that never holds up or fails the job (against a fake logs client)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError

from runs_fleet_ec2.logship import (
    CUT_MARK,
    EVENT_OVERHEAD_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_BATCH_SPAN_MS,
    MAX_EVENT_BYTES,
    CloudWatchLogShipper,
    LogEvent,
    batches,
    log_event,
    rejected_count,
    stream_name,
)

HOUR_MS = 3600 * 1000
JIT = "eyJKSVQtQ09ORklHIjoic2VjcmV0In0="


def events(count: int, *, size: int = 10, start_ms: int = 0, step_ms: int = 1) -> list[LogEvent]:
    return [log_event(start_ms + i * step_ms, "m" * size) for i in range(count)]


# ------------------------------------------------------------------------------------------
# batches
# ------------------------------------------------------------------------------------------


def test_a_batch_holds_at_most_ten_thousand_events() -> None:
    found = batches(events(25_000))
    assert [len(batch) for batch in found] == [MAX_BATCH_EVENTS, MAX_BATCH_EVENTS, 5_000]
    assert MAX_BATCH_EVENTS == 10_000


def test_a_batch_holds_at_most_a_mebibyte_counting_26_bytes_per_event() -> None:
    # 1,048,576 bytes hold exactly 16 events of 65,510 bytes (65,536 with the overhead)
    size = 65_536 - EVENT_OVERHEAD_BYTES
    found = batches(events(40, size=size))
    assert [len(batch) for batch in found] == [16, 16, 8]
    for batch in found:
        assert sum(len(e.message.encode()) + 26 for e in batch) <= MAX_BATCH_BYTES
    # one byte more each and only 15 fit
    assert [len(b) for b in batches(events(40, size=size + 1))] == [15, 15, 10]


def test_events_come_out_in_timestamp_order_equal_ones_in_their_order() -> None:
    given = [log_event(5, "c"), log_event(1, "a"), log_event(5, "d"), log_event(3, "b")]
    (batch,) = batches(given)
    assert [e.message for e in batch] == ["a", "b", "c", "d"]
    split = batches(given, max_events=2)
    assert [[e.message for e in b] for b in split] == [["a", "b"], ["c", "d"]]


def test_a_batch_spans_at_most_24_hours() -> None:
    given = [log_event(0, "a"), log_event(24 * HOUR_MS, "b"), log_event(24 * HOUR_MS + 1, "c")]
    assert [[e.message for e in b] for b in batches(given)] == [["a", "b"], ["c"]]
    assert MAX_BATCH_SPAN_MS == 24 * HOUR_MS


def test_no_events_no_batches() -> None:
    assert batches([]) == []


def test_an_event_is_cut_to_the_largest_size_cloudwatch_takes() -> None:
    event = log_event(1, "é" * MAX_EVENT_BYTES)
    data = event.message.encode()
    assert len(data) <= MAX_EVENT_BYTES
    assert len(data) + EVENT_OVERHEAD_BYTES <= 256 * 1024
    assert event.message.endswith(CUT_MARK)
    assert event.size == len(data) + EVENT_OVERHEAD_BYTES
    assert log_event(1, "short").size == 5 + EVENT_OVERHEAD_BYTES


@pytest.mark.parametrize(
    ("runner", "instance", "expected"),
    [
        ("runs-fleet-7-1", "i-0abc", "runs-fleet-7-1/i-0abc"),
        (None, "i-0abc", "pool/i-0abc"),
        ("odd:name*", "i-0abc", "odd-name-/i-0abc"),
    ],
)
def test_stream_names_are_runner_and_instance_without_forbidden_characters(
    runner: str | None, instance: str, expected: str
) -> None:
    assert stream_name(runner, instance) == expected
    assert len(stream_name("r" * 600, "i-0abc")) == 512


def test_rejected_events_are_counted_from_the_answer() -> None:
    assert rejected_count({}, 10) == 0
    assert rejected_count({"tooOldLogEventEndIndex": 3}, 10) == 3
    assert rejected_count({"tooNewLogEventStartIndex": 8}, 10) == 2
    assert rejected_count({"expiredLogEventEndIndex": 2, "tooNewLogEventStartIndex": 9}, 10) == 3


# ------------------------------------------------------------------------------------------
# the shipper, against a fake client
# ------------------------------------------------------------------------------------------


def client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"}}, operation)


class FakeLogs:
    """create_log_stream and put_log_events that record their calls and raise the errors
    queued in ``create_errors`` and ``put_errors`` first."""

    def __init__(self) -> None:
        self.streams: list[str] = []
        self.puts: list[list[dict[str, Any]]] = []
        self.create_errors: list[Exception] = []
        self.put_errors: list[Exception] = []
        self.answer: dict[str, Any] = {}
        self.put_calls = 0
        self.in_put = threading.Event()
        self.hold = threading.Event()
        self.hold.set()

    def create_log_stream(self, *, logGroupName: str, logStreamName: str) -> dict[str, Any]:
        if self.create_errors:
            raise self.create_errors.pop(0)
        self.streams.append(f"{logGroupName}:{logStreamName}")
        return {}

    def put_log_events(
        self, *, logGroupName: str, logStreamName: str, logEvents: list[dict[str, Any]]
    ) -> dict[str, Any]:
        self.put_calls += 1
        self.in_put.set()
        self.hold.wait(10)
        if self.put_errors:
            raise self.put_errors.pop(0)
        timestamps = [e["timestamp"] for e in logEvents]
        assert timestamps == sorted(timestamps)
        self.puts.append(logEvents)
        return self.answer

    @property
    def messages(self) -> list[str]:
        return [e["message"] for batch in self.puts for e in batch]


def shipper(client: FakeLogs, **options: Any) -> CloudWatchLogShipper:
    options.setdefault("backoff_s", 0.01)
    return CloudWatchLogShipper(client, "/runs-fleet/runners", "r-1/i-0abc", **options)


def test_lines_are_shipped_redacted_and_in_order_at_close() -> None:
    client = FakeLogs()
    ship = shipper(client).start()
    ship.redactor.add(JIT)
    ship.write_line(f"run.sh --jitconfig {JIT}")
    ship.write_line("token ghs_16C7e42F292c6912E7710c838347Ae178B4a here")
    ship.write_line("")
    ship.write_line("x" * 50 + JIT[:8], cut=True)
    ship.close(5)
    assert client.streams == ["/runs-fleet/runners:r-1/i-0abc"]
    assert client.messages == [
        "run.sh --jitconfig ***",
        "token *** here",
        "x" * 50 + "***" + CUT_MARK,
    ]
    assert (ship.shipped, ship.dropped, ship.failed) == (3, 0, 0)


def test_an_existing_stream_is_used() -> None:
    client = FakeLogs()
    client.create_errors = [client_error("ResourceAlreadyExistsException", "CreateLogStream")]
    ship = shipper(client).start()
    ship.write_line("hello")
    ship.close(5)
    assert client.messages == ["hello"]


def test_a_missing_group_turns_shipping_off_with_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeLogs()
    client.create_errors = [client_error("ResourceNotFoundException", "CreateLogStream")]
    ship = shipper(client).start()
    ship.write_line("hello")
    ship.close(5)
    assert not ship.enabled
    assert client.puts == []
    assert "log group /runs-fleet/runners does not exist" in caplog.text
    ship.write_line("after the end")  # neither raises nor ships


def test_a_full_buffer_drops_lines_counts_them_and_says_so_once() -> None:
    client = FakeLogs()
    client.hold.clear()  # the first put hangs until released
    ship = shipper(client, max_buffered_events=5, flush_interval_s=0.01).start()
    ship.write_line("first")
    assert client.in_put.wait(5)  # the shipper took "first" and hangs in its put
    for i in range(8):
        ship.write_line(f"line {i}")
    assert ship.dropped == 3
    client.hold.set()
    ship.close(5)
    assert client.messages[:6] == ["first", "line 0", "line 1", "line 2", "line 3", "line 4"]
    assert client.messages[6].startswith("runs-fleet-agent WARNING 3 lines were not shipped")
    assert (ship.shipped, ship.dropped) == (7, 3)


def test_a_failing_put_is_retried_a_bounded_number_of_times() -> None:
    client = FakeLogs()
    client.put_errors = [client_error("ServiceUnavailableException", "PutLogEvents")] * 2
    client.put_errors.insert(0, client_error("ThrottlingException", "PutLogEvents"))
    ship = shipper(client, put_attempts=3).start()
    ship.write_line("lost")
    ship.close(5)
    assert client.puts == []
    assert client.put_calls == 3
    assert (ship.shipped, ship.failed) == (0, 1)

    client = FakeLogs()
    client.put_errors = [client_error("ThrottlingException", "PutLogEvents")]
    ship = shipper(client, put_attempts=3).start()
    ship.write_line("kept")
    ship.close(5)
    assert client.messages == ["kept"]


def test_denied_access_stops_shipping_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeLogs()
    client.put_errors = [client_error("AccessDeniedException", "PutLogEvents")]
    ship = shipper(client).start()
    ship.write_line("one")
    ship.close(5)
    assert not ship.enabled and ship.failed == 1
    assert "AccessDeniedException" in caplog.text


def test_rejected_events_count_as_failed() -> None:
    client = FakeLogs()
    client.answer = {"rejectedLogEventsInfo": {"tooOldLogEventEndIndex": 1}}
    ship = shipper(client).start()
    ship.write_line("old")
    ship.write_line("new")
    ship.close(5)
    assert (ship.shipped, ship.failed) == (1, 1)


def test_the_shippers_own_log_never_holds_a_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    client = FakeLogs()
    client.put_errors = [client_error("InvalidParameterException", "PutLogEvents")]
    ship = shipper(client).start()
    ship.redactor.add(JIT)
    ship.write_line(f"--jitconfig {JIT}")
    ship.close(5)
    assert ship.failed == 1
    assert JIT not in caplog.text
