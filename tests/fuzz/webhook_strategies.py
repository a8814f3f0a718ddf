"""Hypothesis strategies for whole ``POST /webhook`` deliveries: headers present, absent
or garbage, bodies of random bytes, random JSON, GitHub's example payloads bent in
random places, payloads generated from GitHub's schemas, form-encoded and oversized
bodies, and ``runs-on`` labels from the label strategies.

Hypothesis draws what kind of body and which signature a delivery has (so a failure
shrinks to the simplest kind); a ``random.Random`` whose seed it draws builds the rest,
which keeps each of the 10,000 examples cheap.
"""

from __future__ import annotations

import json
import random
import urllib.parse
from pathlib import Path
from typing import Any

import attrs
from hypothesis import strategies as st

from runs_fleet_core.webhooks import SIGNATURE_HEADER, signature
from runs_fleet_server.webhook import BODY_LIMIT
from tests.fuzz.label_strategies import good_label, near_valid_label, randoms, runs_on_list
from tests.fuzz.schema_payloads import ACTIONS, instance, schema

SECRET = "fuzz-webhook-secret"
WEBHOOKS = Path(__file__).parents[1] / "fixtures" / "github" / "webhooks"
FIXTURES = {path.name: path.read_text() for path in sorted(WEBHOOKS.glob("*.json"))}
"""GitHub's example payloads, as text: ``json.loads`` makes a fresh copy faster than
``copy.deepcopy`` would."""

GOOD = "good"
"""The one signing that is right: ``X-Hub-Signature-256`` of this body under the secret.
Two deliveries in three are signed right, so most reach the parser and intake."""
SIGNINGS = [GOOD] * 22 + [
    "missing", "empty", "wrong-secret", "other-body", "upper-case", "sha1", "truncated",
    "no-prefix", "garbage", "bad-then-good", "good-then-bad",
]  # fmt: skip
BODY_KINDS = (
    ["fixture"] * 16 + ["schema"] * 12 + ["json"] * 4 + ["bytes"] * 3 + ["form"] * 3
    + ["nested"] * 2 + ["oversize"]
)  # fmt: skip
"""Weights by repetition: mostly payloads close to GitHub's, about 2 % over the limit.
Most of those are then signed right, so intake sees thousands of them per run."""

_EVENTS = [b"workflow_job"] * 8 + [b"ping", b"push", b"", b"WORKFLOW_JOB", b"check_run", None]
_CONTENT_TYPES = [b"application/json"] * 6 + [
    b"application/json; charset=utf-8", b"application/x-www-form-urlencoded", b"text/plain",
    b"multipart/form-data; boundary=x", b"", None,
]  # fmt: skip
_ACTIONS = [*ACTIONS, *ACTIONS, "requested", "", "QUEUED", None, 1, ["queued"]]
_REPOSITORIES = ["Codertocat/Hello-World", "o/r", "", "owner", "a/b/c", "/r", "o/", "\ud800/x"]
_HEADER_BYTES = bytes([*range(0x21, 0x7F), *range(0x80, 0x100)])
"""What an HTTP server lets through in a header value (no controls, no line breaks)."""
_ODD_STRINGS = ["", " ", "\x00", "\ud800", "\U0001f680", "\u202e", "NaN", "x" * 2000, "null"]


@attrs.frozen
class Delivery:
    """One request to ``POST /webhook``; ``headers`` carries every header but the
    signature, which :meth:`headers_for` adds according to ``signing``."""

    body: bytes
    signing: str
    headers: tuple[tuple[bytes, bytes], ...]

    @property
    def signed(self) -> bool:
        """Whether the first ``X-Hub-Signature-256`` is this body's right signature."""
        return self.signing in (GOOD, "good-then-bad")

    @property
    def oversized(self) -> bool:
        return len(self.body) > BODY_LIMIT

    def headers_for(self, secret: str) -> list[tuple[bytes, bytes]]:
        name = SIGNATURE_HEADER.lower().encode()
        return [*self.headers, *((name, value.encode()) for value in self._signatures(secret))]

    def _signatures(self, secret: str) -> list[str]:
        zeros = "sha256=" + "0" * 64
        match self.signing:
            case "missing":
                return []
            case "empty":
                return [""]
            case "wrong-secret":
                return [signature(secret + "x", self.body)]
            case "other-body":
                return [signature(secret, self.body + b" ")]
            case "garbage":
                return ["sha256=" + "z" * 64]
        right = signature(secret, self.body)
        return {
            GOOD: [right],
            "upper-case": [right.upper()],
            "sha1": ["sha1=" + right.removeprefix("sha256=")[:40]],
            "truncated": [right[:-1]],
            "no-prefix": [right.removeprefix("sha256=")],
            "bad-then-good": [zeros, right],
            "good-then-bad": [right, zeros],
        }[self.signing]


def _garbage(rnd: random.Random) -> bytes:
    return bytes(rnd.choice(_HEADER_BYTES) for _ in range(rnd.randint(1, 40)))


def _pick(rnd: random.Random, choices: list[bytes | None]) -> bytes | None:
    return _garbage(rnd) if rnd.random() < 0.05 else rnd.choice(choices)


def json_value(rnd: random.Random, depth: int = 0) -> Any:
    """Any JSON value (and NaN and infinities, which Python's json writes and reads)."""
    roll = rnd.random()
    if depth < 3 and roll < 0.2:
        return [json_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    if depth < 3 and roll < 0.35:
        keys = ["id", "labels", "action", "workflow_job", "", "\ud800", "run_id", "x"]
        return {rnd.choice(keys): json_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}
    return rnd.choice(
        [
            None, True, False, 0, -1, 1, rnd.randint(-(10**20), 10**20), 2**63, 10**4000,
            rnd.random(), 1e308, float("nan"), float("inf"), 5.0, -0.0,
            rnd.choice(_ODD_STRINGS), near_valid_label(rnd),
        ]
    )  # fmt: skip


def _job_id(rnd: random.Random) -> Any:
    """Mostly a fresh id, often one seen before (a redelivery), sometimes not an id."""
    roll = rnd.random()
    if roll < 0.5:
        return rnd.randint(1, 2**53)
    if roll < 0.8:
        return rnd.randint(1, 60)
    return rnd.choice([0, -3, 2**63, 2**64 + 1, 7.0, 7.5, "7", True, None, [], 10**30])


def bend(payload: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
    """``payload`` with the fields runs-fleet reads set to random, mostly plausible,
    values (a ``runs-on`` of runs-fleet labels most of the time)."""
    job = payload.get("workflow_job")
    roll = rnd.random()
    if roll < 0.5:
        payload["action"] = "queued"  # the action that queues: the one to fuzz most
    elif roll < 0.6:
        payload["action"] = rnd.choice(_ACTIONS)
    if isinstance(job, dict):
        job["id"] = _job_id(rnd)
        if rnd.random() < 0.8:
            job.update(run_id=rnd.randint(1, 10**10), run_attempt=rnd.randint(1, 3))
        job["labels"] = rnd.choice(
            [
                [good_label(rnd)], [good_label(rnd)], [good_label(rnd)],
                ["self-hosted", good_label(rnd)], runs_on_list(rnd), runs_on_list(rnd),
                [near_valid_label(rnd)], ["linux"], json_value(rnd),
            ]
        )  # fmt: skip
        if rnd.random() < 0.1:
            job[rnd.choice(["run_id", "run_attempt", "runner_name", "conclusion"])] = json_value(
                rnd
            )
    repository = payload.get("repository")
    if isinstance(repository, dict):
        roll = rnd.random()
        if roll < 0.8:
            repository["full_name"] = "Codertocat/Hello-World"
        elif roll < 0.95:
            repository["full_name"] = rnd.choice(_REPOSITORIES)
        else:
            repository["full_name"] = json_value(rnd)
    if rnd.random() < 0.1:
        payload["installation"] = rnd.choice([None, {}, {"id": "1"}, {"id": 5}, [], 3])
    return payload


def mutate(node: Any, rnd: random.Random, depth: int = 0) -> Any:
    """``node`` with one random place in it deleted or set to another value (rarely the
    whole payload)."""
    if not isinstance(node, dict | list) or not node or rnd.random() < 0.05 + 0.1 * depth:
        return json_value(rnd)
    key = rnd.choice(list(node)) if isinstance(node, dict) else rnd.randrange(len(node))
    if rnd.random() < 0.2:
        del node[key]
    else:
        node[key] = mutate(node[key], rnd, depth + 1)
    return node


def _payload(kind: str, fixture: str, rnd: random.Random) -> Any:
    if kind == "fixture":
        payload = json.loads(FIXTURES[fixture])
        if "workflow_job" in payload and rnd.random() < 0.8:
            payload = bend(payload, rnd)
        for _ in range(rnd.choice([0, 0, 0, 1, 1, 2])):
            payload = mutate(payload, rnd)
        return payload
    if kind == "schema":
        payload = instance(schema(rnd.choice(ACTIONS)), rnd)
        return bend(payload, rnd) if rnd.random() < 0.9 else payload
    return json_value(rnd)


def _encode(payload: Any, rnd: random.Random) -> bytes:
    text = json.dumps(payload, ensure_ascii=rnd.random() < 0.7, indent=rnd.choice([None, 2]))
    roll = rnd.random()
    if roll < 0.85:
        return text.encode("utf-8", "surrogatepass")  # a lone surrogate: invalid UTF-8
    if roll < 0.9:
        return b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass")
    if roll < 0.95:
        return text.encode("utf-16", "surrogatepass")
    return text.encode("utf-8", "surrogatepass")[: rnd.randint(0, len(text))]


def _body(kind: str, fixture: str, rnd: random.Random) -> bytes:
    if kind == "bytes":
        return bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 200)))
    if kind == "nested":
        depth = rnd.choice([50, 5000, 200_000])
        return rnd.choice(
            [b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth, b"9" * depth]
        )
    if kind == "oversize":
        return b'{"action": "queued", "pad": "' + b"x" * (BODY_LIMIT + rnd.randint(-30, 5)) + b'"}'
    encoded = _encode(_payload("fixture" if kind == "form" else kind, fixture, rnd), rnd)
    if kind == "form":
        return b"payload=" + urllib.parse.quote_plus(encoded).encode()
    return encoded


def _delivery(kind: str, signing: str, rnd: random.Random) -> Delivery:
    fixture = rnd.choice(sorted(FIXTURES))
    usual = b"ping" if kind == "fixture" and fixture.startswith("ping") else b"workflow_job"
    event = _pick(rnd, _EVENTS) if rnd.random() < 0.3 else usual
    content_type = b"application/x-www-form-urlencoded" if kind == "form" else None
    headers = [
        (b"x-github-event", event),
        (b"x-github-delivery", _pick(rnd, [str(rnd.getrandbits(64)).encode(), b"", None])),
        (b"content-type", content_type or _pick(rnd, _CONTENT_TYPES)),
    ]
    present = tuple((name, value) for name, value in headers if value is not None)
    return Delivery(body=_body(kind, fixture, rnd), signing=signing, headers=present)


deliveries = st.builds(
    _delivery,
    st.sampled_from(BODY_KINDS),
    st.sampled_from(SIGNINGS),
    randoms,
)
"""Any delivery GitHub, a misconfigured sender or an attacker could make."""
