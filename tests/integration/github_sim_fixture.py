"""pytest fixtures for tests that need GitHub: the simulated GitHub served by uvicorn on
127.0.0.1, a GitHub App client bound to it, and a webhook receiver that records what it
gets; plus checks of REST answers and webhooks against GitHub's published schemas
(``check_rest_answer``, ``check_webhook``). Import the fixtures into a test module with
``pytest_plugins = ["tests.integration.github_sim_fixture"]``.

The simulator and the client share one :class:`ShiftableClock`, so a test can move time
(token expiry) for both. The client's retries are configured to wait almost nothing,
and every wait it asks for is recorded in :class:`RecordingSleep`.

Test modules also import this module's constants and helpers, so it is imported before
pytest sees ``pytest_plugins``; PYTEST_DONT_REWRITE keeps pytest from warning that it
cannot rewrite it (its few asserts carry their own messages instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from jsonschema import Draft7Validator
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4, DRAFT7
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runs_fleet_github.client import GitHubAppClient
from runs_fleet_github.transport import RetryPolicy
from runs_fleet_github_simulator import (
    AppKeyPair,
    GitHubSimulator,
    SimulatorServer,
    generate_app_key,
)
from tests import secret_scan

APP_ID = 4242
WEBHOOK_SECRET = "It's a Secret to Everybody"
ORG_REPO = "octo-org/octo-repo"
USER_REPO = "octocat/hello-world"
TEST_RETRY = RetryPolicy(max_attempts=4, base_s=0.001, cap_s=0.005, max_wait_s=5.0)


class ShiftableClock:
    """The real time plus an offset that a test can advance; both a core ``Clock``
    (``now()``) and the simulator's clock (called for epoch seconds)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class RecordingSleep:
    """Records every wait the client asks for and sleeps a token amount instead."""

    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(min(seconds, 0.001))


@dataclass
class ReceivedWebhook:
    headers: dict[str, str]
    body: bytes


class _QuietServer(uvicorn.Server):
    """uvicorn that leaves the test process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebhookReceiver:
    """A tiny Starlette app on 127.0.0.1 that answers 202 and records each request."""

    def __init__(self) -> None:
        self.received: list[ReceivedWebhook] = []
        self.status = 202
        self._arrived = asyncio.Event()
        app = Starlette(routes=[Route("/webhook", self._receive, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def _receive(self, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.received.append(ReceivedWebhook(headers, await request.body()))
        self._arrived.set()
        return Response(status_code=self.status)

    async def wait_for(self, count: int, within_s: float = 10.0) -> list[ReceivedWebhook]:
        """Wait until ``count`` webhooks have arrived; all received so far."""
        async with asyncio.timeout(within_s):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.received)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                await self._task
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/webhook"

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


@pytest.fixture(scope="session")
def app_keys() -> AppKeyPair:
    """The simulated App's RSA key pair (generated once per session)."""
    keys = generate_app_key()
    secret_scan.register_secret(keys.private_pem, "App private key")
    return keys


@pytest.fixture
def clock() -> ShiftableClock:
    return ShiftableClock()


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """A running webhook receiver; ``receiver.url`` is where to send webhooks."""
    receiver = WebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def github_server(
    app_keys: AppKeyPair, clock: ShiftableClock
) -> AsyncIterator[SimulatorServer]:
    """The simulated GitHub, served on 127.0.0.1: App ``APP_ID`` installed on an
    organization (``ORG_REPO``) and a user (``USER_REPO``); webhooks signed with
    ``WEBHOOK_SECRET`` and not sent until a test sets ``sim.webhook_url``."""
    secret_scan.register_secret(WEBHOOK_SECRET, "webhook secret")
    sim = GitHubSimulator(
        app_id=APP_ID,
        app_public_key=app_keys.public_pem,
        webhook_secret=WEBHOOK_SECRET,
        clock=clock,
    )
    sim.add_repository(ORG_REPO)
    sim.add_repository(USER_REPO, owner_type="User")
    async with SimulatorServer(sim) as server:
        yield server


@pytest.fixture
def github_sim(github_server: SimulatorServer) -> GitHubSimulator:
    return github_server.sim


@pytest.fixture
async def github_client(
    github_server: SimulatorServer,
    app_keys: AppKeyPair,
    clock: ShiftableClock,
    sleeps: RecordingSleep,
) -> AsyncIterator[GitHubAppClient]:
    """A GitHub App client bound to the simulator, with tiny recorded retry waits."""
    client = GitHubAppClient(
        app_id=APP_ID,
        private_key=app_keys.private_pem,
        api_url=github_server.url,
        retry=TEST_RETRY,
        clock=clock,
        sleep=sleeps,
        timeout_s=5.0,
    )
    yield client
    await client.aclose()


# --- GitHub's published schemas, as checks ------------------------------------------

FIXTURES = Path(__file__).parents[1] / "fixtures" / "github"
SPEC = json.loads((FIXTURES / "rest-api-subset.json").read_text())
SPEC_URI = "urn:github-rest"


def _with_nullable_enums(node: Any) -> Any:
    """The description with ``null`` added to each ``nullable`` enum: GitHub writes
    nullable enums that way (a queued job's ``conclusion`` is ``null``), which the
    validator's strict OAS 3.0.3 reading would refuse."""
    if isinstance(node, list):
        return [_with_nullable_enums(item) for item in node]
    if not isinstance(node, dict):
        return node
    copy = {key: _with_nullable_enums(value) for key, value in node.items()}
    if copy.get("nullable") is True and None not in copy.get("enum", [None]):
        copy["enum"] = [*copy["enum"], None]
    return copy


REST_REGISTRY = Registry().with_resource(
    SPEC_URI, Resource.from_contents(_with_nullable_enums(SPEC), default_specification=DRAFT4)
)
WEBHOOK_REGISTRY: Registry[Any] = Registry().with_resources(
    (
        path.relative_to(FIXTURES / "webhook-schemas").as_posix(),
        Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT7),
    )
    for path in (FIXTURES / "webhook-schemas").rglob("*.schema.json")
)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _template(method: str, path: str) -> str:
    """The OpenAPI path template that ``path`` matches (the most literal one)."""
    matches = [
        template
        for template, item in SPEC["paths"].items()
        if method.lower() in item and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path)
    ]
    assert matches, f"{method} {path} is not in the REST API description"
    return str(max(matches, key=lambda t: len(re.sub(r"\{[^}]+\}", "", t))))


def _response_schema(method: str, template: str, status: int) -> dict[str, Any] | None:
    """A ``$ref`` to the documented schema of that answer (``basic-error`` for an
    undocumented error); None when the answer has no body. A 304 to a ``GET`` is
    GitHub's ``not_modified`` answer even where the description leaves it out: GitHub
    answers conditional requests on every ``GET``."""
    responses = SPEC["paths"][template][method.lower()]["responses"]
    answer = responses.get(str(status))
    if answer is None and status == 304 and method.upper() == "GET":
        answer = {"$ref": "#/components/responses/not_modified"}
    if answer is None:
        assert status >= 400, f"{method} {template} does not document {status}"
        return {"$ref": f"{SPEC_URI}#/components/schemas/basic-error"}
    pointer = "#" + "/" + _pointer("paths", template, method.lower(), "responses", str(status))
    if "$ref" in answer:
        pointer = answer["$ref"]
        answer = SPEC["components"]["responses"][pointer.rsplit("/", 1)[1]]
    if "content" not in answer:
        return None
    return {"$ref": f"{SPEC_URI}{pointer}/content/application~1json/schema"}


def check_rest_answer(response: httpx.Response) -> str:
    """Validate one answer of the simulator; the operation it belongs to."""
    method, path = response.request.method, response.request.url.path
    template = _template(method, path)
    schema = _response_schema(method, template, response.status_code)
    if schema is None:
        assert response.content == b""
    else:
        OAS30Validator(schema, registry=REST_REGISTRY).validate(response.json())
    for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert response.headers[header].isdigit(), header
    return f"{method} {template}"


def check_webhook(webhook: ReceivedWebhook) -> dict[str, Any]:
    """Validate one received webhook (headers, signature, schema); its payload."""
    expected = (
        "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), webhook.body, hashlib.sha256).hexdigest()
    )
    assert hmac.compare_digest(webhook.headers["x-hub-signature-256"], expected)
    assert webhook.headers["x-github-event"] == "workflow_job"
    assert webhook.headers["content-type"] == "application/json"
    uuid.UUID(webhook.headers["x-github-delivery"])
    payload: dict[str, Any] = json.loads(webhook.body)
    schema_file = FIXTURES / "webhook-schemas" / "workflow_job" / f"{payload['action']}.schema.json"
    schema = json.loads(schema_file.read_text())
    Draft7Validator(schema, registry=WEBHOOK_REGISTRY).validate(payload)
    return payload
