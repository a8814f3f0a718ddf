"""Webhook signature checks and ``workflow_job`` parsing, against GitHub's own payloads.

Every example payload in tests/fixtures/github goes through the parser; malformed variants
and random bodies must end in the one documented error (the server's 400), never in
anything else. The per-source limit on badly signed requests is counted on a manual clock.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runs_fleet_core.domain.messages import WorkflowJobAction, WorkflowJobEvent
from runs_fleet_core.testing.memory import ManualClock
from runs_fleet_core.webhooks import (
    WebhookPayloadError,
    load_payload,
    parse_workflow_job,
    signature,
    verify_signature,
)
from runs_fleet_server.limits import BadSignatureLimit, Verdict

FIXTURES = Path(__file__).parents[1] / "fixtures" / "github" / "webhooks"
PAYLOADS = sorted(FIXTURES.glob("*.json"))
SECRET = "It's a Secret to Everybody"


def _load(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return payload


def test_the_fixtures_are_there() -> None:
    assert len(PAYLOADS) == 10


# -- signatures ------------------------------------------------------------------------


def test_githubs_documented_example_signature_verifies() -> None:
    # From GitHub's "Validating webhook deliveries" documentation.
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature(SECRET, b"Hello, World!") == expected
    assert verify_signature(SECRET, b"Hello, World!", expected)


@pytest.mark.parametrize("path", PAYLOADS, ids=lambda p: p.name)
def test_every_fixture_body_verifies_with_its_signature(path: Path) -> None:
    body = path.read_bytes()
    header = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert verify_signature(SECRET, body, header)
    assert not verify_signature(SECRET, body + b" ", header)
    assert not verify_signature("another secret", body, header)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + hashlib.sha1(b"x").hexdigest(),
        signature(SECRET, b"body").removeprefix("sha256="),
        signature(SECRET, b"body").upper(),
        signature(SECRET, b"body") + "0",
        signature(SECRET, b"body")[:-1],
        "sha256=" + "é" * 64,
        " " + signature(SECRET, b"body"),
    ],
    ids=[
        "missing",
        "empty",
        "no-digest",
        "sha1",
        "no-prefix",
        "upper-case",
        "too-long",
        "too-short",
        "non-ascii",
        "leading-space",
    ],
)
def test_a_wrong_or_odd_signature_header_does_not_verify(header: str | None) -> None:
    assert verify_signature(SECRET, b"body", header) is False


def test_an_empty_secret_verifies_nothing() -> None:
    assert not verify_signature("", b"body", signature("", b"body"))


# -- the fixtures ----------------------------------------------------------------------


@pytest.mark.parametrize("path", PAYLOADS, ids=lambda p: p.name)
def test_every_fixture_parses_as_documented(path: Path) -> None:
    payload = load_payload(path.read_bytes())
    if "workflow_job" not in payload:  # ping: the server answers it before parsing
        with pytest.raises(WebhookPayloadError, match="'action' must be a string"):
            parse_workflow_job(payload, delivery_id="d-1")
        return
    event = parse_workflow_job(payload, delivery_id="d-1")
    if payload["action"] == "waiting":
        assert event is None
        return
    assert isinstance(event, WorkflowJobEvent)
    job = payload["workflow_job"]
    assert event.action is WorkflowJobAction(payload["action"])
    assert (event.job_id, event.run_id, event.run_attempt) == (
        job["id"],
        job["run_id"],
        job["run_attempt"],
    )
    assert event.labels == tuple(job["labels"])
    assert event.repository == payload["repository"]["full_name"]
    assert (event.runner_name, event.conclusion) == (job["runner_name"], job["conclusion"])
    assert event.installation_id == payload.get("installation", {}).get("id")
    assert event.delivery_id == "d-1"


def test_queued_fields_are_read_exactly() -> None:
    event = parse_workflow_job(_load("queued.payload.json"), delivery_id="abc")
    assert event == WorkflowJobEvent(
        action=WorkflowJobAction.QUEUED,
        job_id=289782451,  # type: ignore[arg-type]
        run_id=2202229078,
        run_attempt=1,
        repository="Codertocat/Hello-World",
        labels=("ubuntu-latest",),
        delivery_id="abc",
        runner_name="GitHub Actions 5",
        conclusion=None,
        installation_id=3456996,
    )


def test_a_queued_job_that_waits_for_an_environment_is_still_queued() -> None:
    event = parse_workflow_job(_load("queued.with-deployment.payload.json"), delivery_id="")
    assert event is not None and event.action is WorkflowJobAction.QUEUED
    assert event.labels == ("self-hosted", "k8s") and event.runner_name is None


def test_completed_carries_the_conclusion() -> None:
    failed = parse_workflow_job(
        _load("completed.failure.with-organization.payload.json"), delivery_id=""
    )
    assert failed is not None and failed.conclusion == "failure"
    assert failed.installation_id is None


@pytest.mark.parametrize("action", ["waiting", "requested", "something_new", ""])
def test_actions_runs_fleet_does_not_act_on_give_none(action: str) -> None:
    payload = _load("queued.payload.json") | {"action": action}
    assert parse_workflow_job(payload, delivery_id="") is None


def test_an_ignored_action_needs_no_other_field() -> None:
    assert parse_workflow_job({"action": "waiting"}, delivery_id="") is None


# -- malformed payloads -----------------------------------------------------------------


def _queued_with(path: tuple[str, ...], value: object) -> dict[str, Any]:
    payload = copy.deepcopy(_load("queued.payload.json"))
    target = payload
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return payload


_DELETE = object()
MALFORMED = [
    (("action",), _DELETE, "'action' must be a string"),
    (("action",), 3, "'action' must be a string"),
    (("workflow_job",), _DELETE, "'workflow_job' must be an object"),
    (("workflow_job",), [1, 2], "'workflow_job' must be an object, got a JSON array"),
    (("workflow_job", "id"), _DELETE, "'workflow_job.id' must be a positive integer"),
    (("workflow_job", "id"), "289782451", "'workflow_job.id' must be a positive integer"),
    (("workflow_job", "id"), True, "'workflow_job.id' must be a positive integer"),
    (("workflow_job", "id"), 0, "got 0"),
    (("workflow_job", "id"), -5, "got -5"),
    (("workflow_job", "id"), 1.5, "got 1.5"),
    (("workflow_job", "run_id"), None, "'workflow_job.run_id' must be a positive integer"),
    (("workflow_job", "run_attempt"), "1", "'workflow_job.run_attempt'"),
    (("workflow_job", "labels"), _DELETE, "'workflow_job.labels' must be a list of strings"),
    (("workflow_job", "labels"), "ubuntu-latest", "'workflow_job.labels'"),
    (("workflow_job", "labels"), ["ok", 7], "'workflow_job.labels'"),
    (("workflow_job", "runner_name"), 5, "'workflow_job.runner_name' must be a string or null"),
    (("workflow_job", "conclusion"), {"a": 1}, "'workflow_job.conclusion'"),
    (("repository",), _DELETE, "'repository' must be an object"),
    (("repository", "full_name"), _DELETE, "'repository.full_name' must be a non-empty string"),
    (("repository", "full_name"), "", "'repository.full_name' must be a non-empty string"),
    (("repository", "full_name"), "no-slash", "must look like owner/name"),
    (("repository", "full_name"), "a/b/c", "must look like owner/name"),
    (("repository", "full_name"), "/name", "must look like owner/name"),
    (("installation",), "3456996", "'installation' must be an object or absent"),
    (("installation", "id"), "3456996", "'installation.id' must be an integer"),
]


@pytest.mark.parametrize(("path", "value", "message"), MALFORMED)
def test_a_malformed_payload_names_the_field(
    path: tuple[str, ...], value: object, message: str
) -> None:
    with pytest.raises(WebhookPayloadError, match=message.replace(".", r"\.")):
        parse_workflow_job(_queued_with(path, value), delivery_id="")


def test_a_long_bad_value_is_not_echoed_in_full() -> None:
    with pytest.raises(WebhookPayloadError) as caught:
        parse_workflow_job(_queued_with(("workflow_job", "id"), "x" * 5000), delivery_id="")
    assert len(str(caught.value)) < 200


def test_integral_floats_are_accepted_as_ids() -> None:
    event = parse_workflow_job(_queued_with(("workflow_job", "run_id"), 42.0), delivery_id="")
    assert event is not None and event.run_id == 42 and isinstance(event.run_id, int)


def test_run_attempt_defaults_to_one() -> None:
    event = parse_workflow_job(
        _queued_with(("workflow_job", "run_attempt"), _DELETE), delivery_id=""
    )
    assert event is not None and event.run_attempt == 1


def test_installation_may_be_absent_or_null() -> None:
    assert parse_workflow_job(_queued_with(("installation",), None), delivery_id="") is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"{'a': 1}", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got a JSON array"),
        (b'"text"', "got a JSON string"),
        (b"null", "got a JSON null"),
        (b"3", "got a JSON number"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
    ids=[
        "empty",
        "truncated",
        "python-dict",
        "binary",
        "array",
        "string",
        "null",
        "number",
        "deep",
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(WebhookPayloadError, match=message):
        load_payload(body)


# -- properties --------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    ("action",),
    ("workflow_job",),
    ("workflow_job", "id"),
    ("workflow_job", "run_id"),
    ("workflow_job", "run_attempt"),
    ("workflow_job", "labels"),
    ("workflow_job", "runner_name"),
    ("workflow_job", "conclusion"),
    ("repository",),
    ("repository", "full_name"),
    ("installation",),
    ("installation", "id"),
]


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300), header=st.none() | st.text(max_size=80), secret=st.text())
def test_random_bodies_and_headers_never_raise_anything_else(
    body: bytes, header: str | None, secret: str
) -> None:
    assert verify_signature(secret, body, header) in (True, False)
    with contextlib.suppress(WebhookPayloadError):
        parse_workflow_job(load_payload(body), delivery_id="d")


@settings(max_examples=300, deadline=None)
@given(value=JSON, field=st.sampled_from(FIELDS), action=st.sampled_from(["queued", "completed"]))
def test_random_field_values_give_an_event_or_the_documented_error(
    value: object, field: tuple[str, ...], action: str
) -> None:
    payload = _queued_with(field, value)
    if field != ("action",):
        payload["action"] = action
    body = json.dumps(payload).encode()
    message = ""
    try:
        event = parse_workflow_job(load_payload(body), delivery_id="d")
    except WebhookPayloadError as exc:
        event, message = None, str(exc)
    assert event is None or isinstance(event, WorkflowJobEvent)
    assert len(message) < 300


@settings(max_examples=100, deadline=None)
@given(secret=st.text(min_size=1), body=st.binary(), flip=st.integers(min_value=0))
def test_only_the_exact_signature_verifies(secret: str, body: bytes, flip: int) -> None:
    good = signature(secret, body)
    assert verify_signature(secret, body, good)
    position = len("sha256=") + flip % 64
    changed = "0" if good[position] != "0" else "1"
    assert not verify_signature(secret, body, good[:position] + changed + good[position + 1 :])


# -- the limit on badly signed requests --------------------------------------------------


def _limit(limit: int = 3, window_s: float = 60, max_sources: int = 100) -> BadSignatureLimit:
    return BadSignatureLimit(
        limit=limit, window_s=window_s, clock=ManualClock(), max_sources=max_sources
    )


def test_a_source_is_limited_after_limit_bad_signatures_until_its_window_ends() -> None:
    limit = _limit(limit=3, window_s=60)
    assert [limit.count("203.0.113.1").limited for _ in range(3)] == [False] * 3
    clock = limit.clock
    assert isinstance(clock, ManualClock)
    clock.advance(20.5)
    first = limit.count("203.0.113.1")
    assert first == Verdict(count=4, limited=True, first=True, retry_after_s=40)
    clock.advance(39)
    again = limit.count("203.0.113.1")
    assert again == Verdict(count=5, limited=True, first=False, retry_after_s=1)
    clock.advance(0.5)
    assert limit.count("203.0.113.1") == Verdict(count=1)


def test_each_source_has_its_own_count() -> None:
    limit = _limit(limit=1)
    assert not limit.count("203.0.113.1").limited
    assert limit.count("203.0.113.1").limited
    assert not limit.count("203.0.113.2").limited


def test_a_limit_of_zero_counts_nothing() -> None:
    limit = _limit(limit=0)
    assert not any(limit.count("203.0.113.1").limited for _ in range(1000))
    assert limit.tracked == 0


def test_a_clock_set_back_starts_a_new_window() -> None:
    limit = _limit(limit=1)
    limit.count("203.0.113.1")
    assert limit.count("203.0.113.1").limited
    clock = limit.clock
    assert isinstance(clock, ManualClock)
    clock.set(clock.now() - timedelta(hours=1))
    assert limit.count("203.0.113.1") == Verdict(count=1)


def test_the_least_recently_seen_source_is_forgotten_first() -> None:
    limit = _limit(limit=1, max_sources=2)
    for source in ("a", "b", "a"):  # a is now limited, and seen after b
        limit.count(source)
    limit.count("c")  # forgets b, the least recently seen
    assert limit.tracked == 2
    assert limit.count("a").limited
    assert limit.count("b") == Verdict(count=1)  # b starts over; c is forgotten now
    assert limit.count("c") == Verdict(count=1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcdefgh"), max_size=60))
def test_memory_stays_bounded_whatever_the_sources(sources: list[str]) -> None:
    limit = _limit(limit=2, max_sources=3)
    for source in sources:
        limit.count(source)
        assert limit.tracked <= 3
