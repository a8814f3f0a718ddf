"""The server as GitHub, runners and operators meet it: real uvicorn on 127.0.0.1.

Each test starts the real app with its in-process worker in memory mode on a random
port and drives it over HTTP with httpx, using GitHub's own example payloads (labels and
job id changed, checked against GitHub's schemas) signed the way GitHub signs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from functools import cache
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from jsonschema import Draft7Validator
from prometheus_client.parser import text_string_to_metric_families
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from starlette.applications import Starlette
from starlette.routing import Route

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.domain.tokens import report_token
from runs_fleet_core.errors import AdapterError
from runs_fleet_core.testing.memory import ManualClock, MemoryProvider, MemoryQueue
from runs_fleet_core.webhooks import parse_workflow_job, signature
from runs_fleet_server.app import create_app
from runs_fleet_server.bootstrap import Services, build_services
from runs_fleet_server.serve import listen, serve, work, work_only
from runs_fleet_server.webhook import WebhookEndpoint
from tests import secret_scan

SECRET = "integration-webhook-secret"
GITHUB = Path(__file__).parents[1] / "fixtures" / "github"
WEBHOOKS = GITHUB / "webhooks"
SCHEMAS = GITHUB / "webhook-schemas"
TIMEOUT_S = 15.0
LABEL = "runs-fleet=2202229078/cpu=2"


# -- payloads ----------------------------------------------------------------------------


@cache
def _validator(action: str) -> Draft7Validator:
    registry: Registry[Any] = Registry(  # type: ignore[call-arg]  # attrs alias
        retrieve=lambda uri: Resource.from_contents(
            json.loads((SCHEMAS / uri).read_text()), default_specification=DRAFT7
        )
    )
    schema = json.loads((SCHEMAS / "workflow_job" / f"{action}.schema.json").read_text())
    return Draft7Validator(schema, registry=registry)


def job_payload(
    fixture: str, job_id: int, *, label: str = LABEL, runner_name: str | None = None
) -> dict[str, Any]:
    """A GitHub example payload for ``job_id`` with our label, checked against its schema."""
    payload: dict[str, Any] = copy.deepcopy(json.loads((WEBHOOKS / fixture).read_text()))
    payload["workflow_job"]["id"] = job_id
    payload["workflow_job"]["labels"] = [label, "linux"]
    if runner_name is not None:
        payload["workflow_job"]["runner_name"] = runner_name
    _validator(payload["action"]).validate(payload)
    return payload


# -- a running server --------------------------------------------------------------------


@attrs.define
class Server:
    services: Services
    client: httpx.AsyncClient
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def provider(self) -> MemoryProvider:
        provider = self.services.adapters.providers["memory"]
        assert isinstance(provider, MemoryProvider)
        return provider

    @property
    def queue(self) -> MemoryQueue:
        queue = self.services.adapters.queue
        assert isinstance(queue, MemoryQueue)
        return queue

    async def webhook(
        self,
        payload: dict[str, Any] | bytes,
        *,
        event: str | None = "workflow_job",
        delivery: str | None = None,
        sign: str | None = SECRET,
    ) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        }
        if event is not None:
            headers["X-GitHub-Event"] = event
        if sign is not None:
            headers["X-Hub-Signature-256"] = signature(sign, body)
        return await self.client.post("/webhook", content=body, headers=headers)

    async def job(self, job_id: int, **headers: str) -> httpx.Response:
        return await self.client.get(f"/api/jobs/{job_id}", headers=headers)

    async def status_of(self, job_id: int) -> str | None:
        response = await self.job(job_id)
        return str(response.json()["status"]) if response.status_code == 200 else None


@contextlib.asynccontextmanager
async def running(*, with_worker: bool = True, **env: str) -> AsyncIterator[Server]:
    """The app and its worker on 127.0.0.1 (random port), memory mode, Prometheus sink."""
    environ = {
        "RUNS_FLEET_MODE": "memory",
        "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": SECRET,
        "RUNS_FLEET_METRICS_ADAPTER": "prometheus",
        "RUNS_FLEET_LISTEN": "127.0.0.1:0",
    } | env
    secret_scan.register_secret(environ["RUNS_FLEET_GITHUB_WEBHOOK_SECRET"], "webhook secret")
    if environ.get("RUNS_FLEET_ADMIN_TOKEN"):
        secret_scan.register_secret(environ["RUNS_FLEET_ADMIN_TOKEN"], "admin token")
    services = build_services(environ)
    services.worker_wait_s = 0.1  # stop within 0.1 s instead of 1 s: faster tests
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        serve(services, host="127.0.0.1", port=0, with_worker=with_worker, stop=stop, ready=ready)
    )
    await _until(lambda: ready.is_set() or task.done())
    if task.done():
        task.result()
    assert services.address is not None
    host, port = services.address
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=TIMEOUT_S) as client:
        try:
            yield Server(services=services, client=client, stop=stop, task=task)
        finally:
            stop.set()
            await asyncio.wait_for(task, TIMEOUT_S)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(int(TIMEOUT_S / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not come true in time")


async def _until_status(server: Server, job_id: int, *statuses: str) -> None:
    for _ in range(int(TIMEOUT_S / 0.02)):
        if await server.status_of(job_id) in statuses:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {statuses}: {await server.status_of(job_id)}")


async def _launched(server: Server, job_id: int) -> str:
    """Queue ``job_id``, wait until the worker launched it; its runner name."""
    response = await server.webhook(job_payload("queued.payload.json", job_id))
    assert response.status_code == 202, response.text
    await _until_status(server, job_id, "launching")
    return f"runs-fleet-{job_id}-1"


# -- webhooks ----------------------------------------------------------------------------


async def test_a_queued_job_is_queued_then_dispatched_by_the_worker() -> None:
    async with running() as server:
        response = await server.webhook(job_payload("queued.payload.json", 1001))
        assert response.status_code == 202
        assert response.json() == {"outcome": "queued", "job_id": 1001}
        await _until_status(server, 1001, "launching")
        assert len(server.provider.created) == 1
        job = (await server.job(1001)).json()
        assert job["runner_id"] == server.provider.created[0].runner_id
        assert job["runner_name"] == "runs-fleet-1001-1"
        assert job["spec"]["cpu_min"] == 2 and job["repository"] == "Codertocat/Hello-World"
        assert [step["status"] for step in job["timeline"]] == ["queued", "claimed", "launching"]
        assert all(step["at"] for step in job["timeline"])
        config = await server.services.adapters.configs.get(RunnerId("runs-fleet-1001-1"))
        assert isinstance(config, RunnerConfig)
        port = server.services.address[1]  # type: ignore[index]
        assert config.settings["report_url"] == f"http://127.0.0.1:{port}/api/agent/reports"


async def test_repeated_deliveries_of_one_job_queue_one_message_and_start_one_runner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running() as server:
        sent: list[int] = []
        real_send = server.queue.send_nowait

        def counting_send(message: Any) -> None:  # every send, outbox or not, ends here
            sent.append(message.job_id)
            real_send(message)

        monkeypatch.setattr(server.queue, "send_nowait", counting_send)
        payload = job_payload("queued.payload.json", 1002)
        answers = [await server.webhook(payload, delivery="delivery-1") for _ in range(3)]
        answers.append(await server.webhook(payload, delivery="delivery-2"))
        assert [a.status_code for a in answers] == [202, 202, 202, 202]
        assert [a.json()["outcome"] for a in answers] == ["queued", *["duplicate"] * 3]
        await _until_status(server, 1002, "launching")
        await asyncio.sleep(0.2)  # room for a second message, if there were one
        assert sent == [1002]
        assert len(server.provider.created) == 1
        again = await server.webhook(payload, delivery="delivery-3")
        assert again.json()["outcome"] == "duplicate" and len(server.provider.created) == 1


@pytest.mark.parametrize("sign", [None, "not-the-secret"], ids=["unsigned", "wrong-secret"])
async def test_a_bad_signature_is_refused_and_nothing_is_recorded(sign: str | None) -> None:
    async with running() as server:
        response = await server.webhook(job_payload("queued.payload.json", 1003), sign=sign)
        assert response.status_code == 401
        assert "X-Hub-Signature-256" in response.json()["error"]
        assert (await server.job(1003)).status_code == 404
        assert server.queue.pending_count() == 0


async def test_a_body_over_one_mebibyte_is_refused_with_413() -> None:
    async with running() as server:
        big = b'{"a": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        response = await server.webhook(big)
        assert response.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: streamed
            for _ in range(32):
                yield b"y" * 65536

        streamed = await server.client.post("/webhook", content=chunks())
        assert streamed.status_code == 413
        assert (await server.client.get("/health")).status_code == 200


@pytest.mark.parametrize(
    ("body", "event", "message"),
    [
        (b"{not json", "workflow_job", "not valid JSON"),
        (b"[]", "workflow_job", "must be a JSON object"),
        (b'{"action": "queued"}', "workflow_job", "'workflow_job' must be an object"),
        (b"{}", None, "X-GitHub-Event header is missing"),
    ],
    ids=["not-json", "array", "no-job", "no-event"],
)
async def test_a_malformed_webhook_is_a_400_that_says_why(
    body: bytes, event: str | None, message: str
) -> None:
    async with running() as server:
        response = await server.webhook(body, event=event)
        assert response.status_code == 400
        assert message in response.json()["error"]


async def test_a_form_encoded_webhook_is_told_to_use_json() -> None:
    async with running() as server:
        body = b"payload=%7B%7D"
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-GitHub-Event": "workflow_job",
            "X-Hub-Signature-256": signature(SECRET, body),
        }
        response = await server.client.post("/webhook", content=body, headers=headers)
        assert response.status_code == 400
        assert "content type to application/json" in response.json()["error"]


@pytest.mark.parametrize("fixture", sorted(p.name for p in WEBHOOKS.glob("ping.*")))
async def test_ping_is_answered_200(fixture: str) -> None:
    async with running() as server:
        response = await server.webhook((WEBHOOKS / fixture).read_bytes(), event="ping")
        assert response.status_code == 200 and response.json() == {"outcome": "pong"}


async def test_connections_to_the_server_send_small_writes_at_once() -> None:
    """uvicorn writes a response's headers and body apart; with Nagle's algorithm on,
    the body waits for the client's delayed ACK of the headers (about 40 ms per response
    on a kept-open connection). The server's listener must give its connections
    TCP_NODELAY, which asyncio sets only on sockets that say they are TCP."""
    listener = listen("127.0.0.1", 0)
    nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        nodelay.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accepted, sock=listener)
    async with server:
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        assert await asyncio.wait_for(nodelay, 5) != 0
        writer.close()


async def test_other_events_actions_and_jobs_are_acknowledged_and_ignored() -> None:
    async with running() as server:
        github_hosted = (WEBHOOKS / "queued.payload.json").read_bytes()  # runs-on ubuntu-latest
        waiting = (WEBHOOKS / "waiting.payload.json").read_bytes()
        for body, event in [
            (github_hosted, "workflow_job"),
            (waiting, "workflow_job"),
            (b"{}", "push"),
        ]:
            response = await server.webhook(body, event=event)
            assert response.status_code == 200
            assert response.json()["outcome"] == "ignored"
        assert (await server.client.get("/api/jobs")).json()["jobs"] == []


async def test_a_bad_label_is_a_422_with_the_reason_and_a_rejected_job() -> None:
    async with running() as server:
        payload = job_payload("queued.payload.json", 1004, label="runs-fleet=1/cpu=banana")
        response = await server.webhook(payload)
        assert response.status_code == 422
        body = response.json()
        assert body["outcome"] == "rejected" and body["job_id"] == 1004
        assert "cpu" in body["error"]
        job = (await server.job(1004)).json()
        assert job["status"] == "rejected" and job["reason"] == body["error"]
        assert server.queue.pending_count() == 0 and server.provider.created == []


async def test_in_progress_and_completed_webhooks_complete_the_job() -> None:
    async with running() as server:
        name = await _launched(server, 1005)
        started = job_payload("in_progress.payload.json", 1005, runner_name=name)
        response = await server.webhook(started)
        assert response.status_code == 200 and response.json()["outcome"] == "updated"
        assert await server.status_of(1005) == "running"
        finished = job_payload(
            "completed.success.with-organization.payload.json", 1005, runner_name=name
        )
        response = await server.webhook(finished)
        assert response.status_code == 200 and response.json()["outcome"] == "updated"
        job = (await server.job(1005)).json()
        assert job["status"] == "completed" and job["reason"] == "conclusion: success"
        assert await server.services.adapters.configs.get(RunnerId(name)) is None
        repeat = await server.webhook(finished)
        assert repeat.json()["outcome"] == "unchanged"


async def test_a_failing_backend_answers_503_and_records_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running() as server:

        async def unavailable(*args: Any) -> None:
            raise AdapterError("the queue is unreachable")

        state = server.services.adapters.state
        real_write = state.create_job_and_send  # type: ignore[attr-defined]
        monkeypatch.setattr(state, "create_job_and_send", unavailable)
        payload = job_payload("queued.payload.json", 1006)
        response = await server.webhook(payload, delivery="d-1006")
        assert response.status_code == 503
        assert "redeliver" in response.json()["error"]
        assert (await server.job(1006)).status_code == 404
        assert server.queue.pending_count() == 0
        monkeypatch.setattr(state, "create_job_and_send", real_write)
        redelivered = await server.webhook(payload, delivery="d-1006")
        assert redelivered.status_code == 202 and redelivered.json()["outcome"] == "queued"
        await _until_status(server, 1006, "launching")
        assert len(server.provider.created) == 1


# -- agent reports ---------------------------------------------------------------------


async def test_agent_reports_need_the_token_from_the_runner_config() -> None:
    async with running() as server:
        name = await _launched(server, 1007)
        config = await server.services.adapters.configs.get(RunnerId(name))
        assert config is not None
        token = config.settings["report_token"]
        report = {
            "job_id": 1007,
            "runner_name": name,
            "event": "started",
            "at": "2026-01-05T09:00:00Z",
        }
        url = "/api/agent/reports"

        async def post(body: Any, token: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return await server.client.post(url, json=body, headers=headers)

        assert (await post(report, None)).status_code == 401
        assert (await post(report, "0" * 64)).status_code == 401
        assert (await post(report | {"job_id": 1008}, token)).status_code == 401
        assert (await post({"job_id": "x"}, token)).status_code == 400
        accepted = await post(report, token)
        assert accepted.status_code == 202 and accepted.json()["outcome"] == "updated"
        assert await server.status_of(1007) == "running"
        unknown = report | {"job_id": 9999, "runner_name": "runs-fleet-9999-1"}
        unknown_token = report_token(SECRET, JobId(9999), "runs-fleet-9999-1")
        assert (await post(unknown, unknown_token)).status_code == 404


# -- jobs API ----------------------------------------------------------------------------


async def test_the_jobs_api_needs_the_admin_token_when_one_is_set() -> None:
    async with running(RUNS_FLEET_ADMIN_TOKEN="admin-token-1") as server:
        await server.webhook(job_payload("queued.payload.json", 1010))
        assert (await server.client.get("/api/jobs")).status_code == 401
        wrong = {"Authorization": "Bearer admin-token-2"}
        assert (await server.client.get("/api/jobs", headers=wrong)).status_code == 401
        assert (await server.job(1010, Authorization="Bearer admin-token-2")).status_code == 401
        right = {"Authorization": "Bearer admin-token-1"}
        listed = await server.client.get("/api/jobs", headers=right)
        assert listed.status_code == 200 and [j["job_id"] for j in listed.json()["jobs"]] == [1010]
        assert (await server.job(1010, Authorization="Bearer admin-token-1")).status_code == 200


async def test_without_an_admin_token_the_jobs_api_answers_loopback_clients_only() -> None:
    async with running() as server:
        assert (await server.client.get("/api/jobs")).status_code == 200
        transport = httpx.ASGITransport(
            app=create_app(server.services), client=("203.0.113.7", 4242)
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://runs-fleet") as remote:
            response = await remote.get("/api/jobs")
            assert response.status_code == 403
            assert "RUNS_FLEET_ADMIN_TOKEN" in response.json()["error"]
            assert (await remote.get("/api/jobs/1")).status_code == 403


async def test_the_jobs_api_filters_and_pages() -> None:
    async with running() as server:
        for job_id in (2001, 2002, 2003, 2004):
            await server.webhook(job_payload("queued.payload.json", job_id))
        await server.webhook(
            job_payload("queued.payload.json", 2005, label="runs-fleet=1/arch=sparc")
        )
        rejected = (await server.client.get("/api/jobs", params={"status": "rejected"})).json()
        assert [j["job_id"] for j in rejected["jobs"]] == [2005]
        assert rejected["jobs"][0]["reason"].startswith("label not accepted")
        seen, cursor = [], None
        while True:
            params = {"limit": "2", "repo": "codertocat/hello-world"} | (
                {"cursor": cursor} if cursor else {}
            )
            page = (await server.client.get("/api/jobs", params=params)).json()
            seen += [j["job_id"] for j in page["jobs"]]
            if not (cursor := page["next_cursor"]):
                break
        assert seen == [2001, 2002, 2003, 2004, 2005]
        other_repo = await server.client.get("/api/jobs", params={"repo": "someone/else"})
        assert other_repo.json()["jobs"] == []
        for bad in ({"status": "sleeping"}, {"limit": "0"}, {"limit": "many"}, {"cursor": "-1"}):
            response = await server.client.get("/api/jobs", params=bad)
            assert response.status_code == 400, bad
        assert (await server.job(424242)).status_code == 404


async def test_the_api_never_shows_secrets() -> None:
    async with running(RUNS_FLEET_ADMIN_TOKEN="admin-token-3") as server:
        server.client.headers["Authorization"] = "Bearer admin-token-3"
        name = await _launched(server, 1011)
        config = await server.services.adapters.configs.get(RunnerId(name))
        assert config is not None
        headers = {"Authorization": "Bearer admin-token-3"}
        texts = [
            (await server.client.get("/api/jobs", headers=headers)).text,
            (await server.job(1011, **headers)).text,
            (await server.client.get("/metrics")).text,
        ]
        for secret in (SECRET, "admin-token-3", config.jit_config, config.settings["report_token"]):
            assert all(secret not in text for text in texts)


# -- probes ------------------------------------------------------------------------------


async def test_health_and_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running() as server:
        assert (await server.client.get("/health")).json() == {"status": "ok"}
        assert (await server.client.get("/ready")).status_code == 200

        async def broken(job_id: JobId) -> None:
            raise ConnectionError("redis://user:pa55word@db:6379 refused")

        monkeypatch.setattr(server.services.adapters.state, "get_job", broken)
        response = await server.client.get("/ready")
        assert response.status_code == 503
        assert response.json()["problems"] == {"state store": "unavailable (ConnectionError)"}
        assert "pa55word" not in response.text
        assert (await server.client.get("/health")).status_code == 200


async def test_metrics_show_runs_fleet_counters_and_gauges() -> None:
    async with running() as server:
        await _launched(server, 1012)
        await server.webhook(b"{}", sign="wrong")
        response = await server.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }
        queued = (
            "runs_fleet_webhooks_received_total",
            (("event", "workflow_job"), ("outcome", "queued")),
        )
        assert samples[queued] == 1
        refused = (
            "runs_fleet_webhooks_received_total",
            (("event", "unknown"), ("outcome", "bad_signature")),
        )
        assert samples[refused] == 1
        assert samples[("runs_fleet_jobs_queued_total", (("backend", "memory"),))] == 1
        assert samples[("runs_fleet_runners_launched_total", (("backend", "memory"),))] == 1
        assert samples[("runs_fleet_jobs_by_status", (("status", "launching"),))] == 1
        assert samples[("runs_fleet_queue_depth", ())] == 0
        assert samples[("runs_fleet_queue_dead_letters", ())] == 0


async def test_metrics_are_404_when_the_sink_cannot_render() -> None:
    async with running(RUNS_FLEET_METRICS_ADAPTER="memory") as server:
        response = await server.client.get("/metrics")
        assert response.status_code == 404 and "prometheus" in response.json()["error"]


# -- shutdown ----------------------------------------------------------------------------


async def test_stopping_finishes_requests_in_flight_then_everything_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running() as server:
        state = server.services.adapters.state
        real_put = state.put_job
        entered = asyncio.Event()

        async def slow_put(job: Any, *, expect_version: int | None) -> Any:
            entered.set()
            await asyncio.sleep(0.3)
            return await real_put(job, expect_version=expect_version)

        monkeypatch.setattr(state, "put_job", slow_put)
        request = asyncio.create_task(server.webhook(job_payload("queued.payload.json", 1013)))
        await asyncio.wait_for(entered.wait(), TIMEOUT_S)
        server.stop.set()
        await _until(lambda: server.services.draining)
        response = await request
        assert response.status_code == 202, "the request in flight was answered"
        await asyncio.wait_for(server.task, TIMEOUT_S)
        assert server.task.exception() is None
        with pytest.raises(httpx.ConnectError):
            await server.client.get("/health")
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == []


async def test_ready_is_503_while_draining() -> None:
    async with running(RUNS_FLEET_SHUTDOWN_DELAY_S="0.5") as server:
        server.stop.set()
        await _until(lambda: server.services.draining)
        response = await server.client.get("/ready")
        assert response.status_code == 503 and response.json()["status"] == "shutting down"
        assert (await server.client.get("/health")).status_code == 200
        await asyncio.wait_for(server.task, TIMEOUT_S)


async def test_without_the_worker_jobs_wait_in_the_queue_for_a_separate_worker() -> None:
    async with running(with_worker=False) as server:
        response = await server.webhook(job_payload("queued.payload.json", 1014))
        assert response.status_code == 202
        await asyncio.sleep(0.3)
        assert server.queue.pending_count() == 1 and server.provider.created == []
        stop = asyncio.Event()
        worker = asyncio.create_task(work_only(server.services, stop))
        await _until_status(server, 1014, "launching")
        stop.set()
        report = await asyncio.wait_for(worker, TIMEOUT_S)
        assert report.handled == 1 and len(server.provider.created) == 1


async def test_work_runs_the_worker_alone_and_closes_the_adapters() -> None:
    services = build_services(
        {"RUNS_FLEET_MODE": "memory", "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": SECRET}
    )
    services.worker_wait_s = 0.05
    payload = job_payload("queued.payload.json", 1015)
    event = parse_workflow_job(payload, delivery_id="d-1015")
    assert event is not None
    assert (await services.intake.take(event)).outcome == "queued"
    closed: list[str] = []

    async def aclose() -> None:
        closed.append("queue")

    services.adapters.queue.aclose = aclose  # type: ignore[attr-defined]
    provider = services.adapters.providers["memory"]
    assert isinstance(provider, MemoryProvider)
    stop = asyncio.Event()
    task = asyncio.create_task(work(services, stop))
    await _until(lambda: len(provider.created) == 1)
    stop.set()
    report = await asyncio.wait_for(task, TIMEOUT_S)
    assert report.handled == 1 and closed == ["queue"]


# -- the command line --------------------------------------------------------------------


def _cli_env(**env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")}
    return environ | {"RUNS_FLEET_MODE": "memory"} | env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        ([], {}, "RUNS_FLEET_GITHUB_WEBHOOK_SECRET"),
        (
            ["--listen", "nowhere"],
            {"RUNS_FLEET_GITHUB_WEBHOOK_SECRET": SECRET},
            "RUNS_FLEET_LISTEN",
        ),
    ],
    ids=["no-secret", "bad-listen"],
)
def test_serve_with_a_configuration_problem_exits_2_naming_it(
    args: list[str], env: dict[str, str], named: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "runs_fleet_cli", "serve", *args],
        env=_cli_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert named in result.stderr and "Traceback" not in result.stderr


def test_serve_runs_until_sigterm_and_exits_0() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "runs_fleet_cli", "serve", "--listen", f"127.0.0.1:{port}"],
        env=_cli_env(RUNS_FLEET_GITHUB_WEBHOOK_SECRET=SECRET),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "shutting down" in stderr and "Traceback" not in stderr


# -- what fuzzing found ------------------------------------------------------------------


async def test_a_label_with_a_lone_surrogate_or_a_control_sequence_is_a_422_not_a_500() -> None:
    """Quoted raw in the reason, a lone surrogate made the 422 unencodable (a 500)."""
    async with running() as server:
        for job_id, label in [(1101, "runs-fleet=1/cpu=\ud800"), (1102, "runs-fleet=1\x1b[2J")]:
            response = await server.webhook(job_payload("queued.payload.json", job_id, label=label))
            assert response.status_code == 422, response.text
            reason = response.json()["error"]
            assert reason.isprintable() and ("\\ud800" in reason or "\\x1b[2J" in reason)
            assert (await server.job(job_id)).json()["reason"] == reason


async def test_a_redelivered_rejected_job_is_refused_again_not_acknowledged() -> None:
    """A redelivery of a rejected job was answered 202 "duplicate", as if it were queued."""
    async with running() as server:
        payload = job_payload("queued.payload.json", 1103, label="runs-fleet=1/arch=sparc")
        first = await server.webhook(payload, delivery="d-1103-a")
        again = await server.webhook(payload, delivery="d-1103-b")
        assert first.status_code == again.status_code == 422
        assert again.json() == first.json()
        assert server.queue.pending_count() == 0


# -- the limit on badly signed webhooks --------------------------------------------------


def _as(app: Any, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 4242))
    return httpx.AsyncClient(transport=transport, base_url="http://runs-fleet")


async def _badly_signed(client: httpx.AsyncClient, count: int) -> list[httpx.Response]:
    headers = {"X-GitHub-Event": "workflow_job", "X-Hub-Signature-256": "sha256=" + "0" * 64}
    return [await client.post("/webhook", content=b"{}", headers=headers) for _ in range(count)]


def _signed_headers(body: bytes) -> dict[str, str]:
    return {"X-GitHub-Event": "workflow_job", "X-Hub-Signature-256": signature(SECRET, body)}


async def test_an_address_sending_too_many_bad_signatures_gets_429_but_signed_ones_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running(RUNS_FLEET_WEBHOOK_BAD_SIGNATURE_LIMIT="3") as server:
        refused = [await server.webhook(b"{}", sign=sign) for sign in (None, "wrong", None)]
        assert [r.status_code for r in refused] == [401, 401, 401]
        limited = [await server.webhook(b"{}", sign="wrong") for _ in range(2)]
        assert [r.status_code for r in limited] == [429, 429]
        assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in limited)
        assert "X-Hub-Signature-256" in limited[0].json()["error"]
        signed = await server.webhook(job_payload("queued.payload.json", 1104))
        assert signed.status_code == 202, "a signed request is never limited"
        metrics = (await server.client.get("/metrics")).text
    samples = {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "runs_fleet_webhooks_received_total"
    }
    assert (samples["bad_signature"], samples["rate_limited"], samples["queued"]) == (3, 2, 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "runs_fleet_server.webhook"]
    assert len([line for line in lines if "refused" in line]) == 3
    starts = [line for line in lines if "get 429" in line]
    assert len(starts) == 1 and "127.0.0.1" in starts[0] and ": 4 with" in starts[0]
    assert not any("sha256=" in line for line in caplog.messages)


async def test_the_limit_counts_each_address_apart() -> None:
    services = build_services(
        {
            "RUNS_FLEET_MODE": "memory",
            "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": SECRET,
            "RUNS_FLEET_WEBHOOK_BAD_SIGNATURE_LIMIT": "2",
        }
    )
    app = create_app(services)
    async with _as(app, "203.0.113.7") as attacker, _as(app, "198.51.100.1") as other:
        assert [r.status_code for r in await _badly_signed(attacker, 3)] == [401, 401, 429]
        assert [r.status_code for r in await _badly_signed(other, 2)] == [401, 401]
        body = json.dumps(job_payload("queued.payload.json", 1105)).encode()
        response = await attacker.post("/webhook", content=body, headers=_signed_headers(body))
        assert response.status_code == 202
        assert (await _badly_signed(attacker, 1))[0].status_code == 429


async def test_the_limit_lifts_when_its_window_ends() -> None:
    services = build_services(
        {
            "RUNS_FLEET_MODE": "memory",
            "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": SECRET,
            "RUNS_FLEET_WEBHOOK_BAD_SIGNATURE_LIMIT": "2",
            "RUNS_FLEET_WEBHOOK_BAD_SIGNATURE_WINDOW_S": "60",
        }
    )
    clock = ManualClock()
    endpoint = WebhookEndpoint(services, clock=clock)
    app = Starlette(routes=[Route("/webhook", endpoint.handle, methods=["POST"])])
    async with _as(app, "203.0.113.8") as client:
        answers = await _badly_signed(client, 3)
        assert [r.status_code for r in answers] == [401, 401, 429]
        assert answers[2].headers["Retry-After"] == "60"
        clock.advance(59.5)
        assert (await _badly_signed(client, 1))[0].headers["Retry-After"] == "1"
        clock.advance(0.5)
        assert [r.status_code for r in await _badly_signed(client, 2)] == [401, 401]


async def test_a_limit_of_zero_never_limits() -> None:
    services = build_services(
        {
            "RUNS_FLEET_MODE": "memory",
            "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": SECRET,
            "RUNS_FLEET_WEBHOOK_BAD_SIGNATURE_LIMIT": "0",
        }
    )
    async with _as(create_app(services), "203.0.113.9") as client:
        assert {r.status_code for r in await _badly_signed(client, 50)} == {401}


@pytest.mark.parametrize(
    ("limit", "window", "expected"),
    [
        ("-1", "0", ["LIMIT: must be at least 0 (got -1)", "WINDOW_S: must be at least 1 (got 0)"]),
        ("lots", "1.5", ["LIMIT: 'lots' is not a whole number", "WINDOW_S: '1.5' is not a whole"]),
    ],
    ids=["out-of-range", "not-whole-numbers"],
)
def test_config_check_refuses_bad_limit_settings_naming_them(
    limit: str, window: str, expected: list[str]
) -> None:
    env = _cli_env(
        RUNS_FLEET_GITHUB_WEBHOOK_SECRET=SECRET,
        RUNS_FLEET_WEBHOOK_BAD_SIGNATURE_LIMIT=limit,
        RUNS_FLEET_WEBHOOK_BAD_SIGNATURE_WINDOW_S=window,
    )
    result = subprocess.run(
        [sys.executable, "-m", "runs_fleet_cli", "config", "check", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    problems = json.loads(result.stdout)["problems"]
    for fragment in expected:
        assert any(f"RUNS_FLEET_WEBHOOK_BAD_SIGNATURE_{fragment}" in p for p in problems), problems
