"""Signed webhook deliveries, sent one at a time in the order they were made.

GitHub signs the raw body with HMAC-SHA256 and the webhook secret
(``X-Hub-Signature-256: sha256=<hex>``), names the event and a delivery GUID in
headers, gives the receiver about 10 s, and never retries on its own. The simulator
does the same; a redelivery (as from GitHub's UI) re-sends the same body with the same
delivery id. Deliveries go out sequentially so that ``in_progress`` never overtakes
``completed`` in tests. :class:`Deliveries` keeps every delivery made, to inspect and
re-send.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from runs_fleet_github_simulator.records import Delivery, DeliveryAttempt

log = logging.getLogger(__name__)


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def make_delivery(
    event: str,
    payload: dict[str, Any],
    secret: bytes,
    *,
    job_id: int | None = None,
    installation_id: int | None = None,
) -> Delivery:
    """A new delivery of ``payload`` with a fresh GUID and GitHub's headers."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    delivery_id = str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/simulator",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id,
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": sign(secret, body),
    }
    if installation_id is not None:
        headers["X-GitHub-Hook-Installation-Target-Type"] = "integration"
        headers["X-GitHub-Hook-Installation-Target-ID"] = str(installation_id)
    return Delivery(
        delivery_id=delivery_id,
        event=event,
        action=str(payload.get("action", "")),
        job_id=job_id,
        body=body,
        headers=headers,
    )


def copy_with_new_id(delivery: Delivery) -> Delivery:
    """The same body and signature under a new delivery GUID (a duplicate delivery)."""
    fresh = str(uuid.uuid4())
    return Delivery(
        delivery_id=fresh,
        event=delivery.event,
        action=delivery.action,
        job_id=delivery.job_id,
        body=delivery.body,
        headers=delivery.headers | {"X-GitHub-Delivery": fresh},
    )


_Item = tuple[Delivery, "asyncio.Future[DeliveryAttempt]"]


class WebhookSender:
    """POSTs deliveries to ``url`` one at a time, recording an attempt on each.

    ``url=None`` (or ``drop=True``) records the attempt as not sent, as when GitHub
    has no webhook configured or a delivery is lost.
    """

    def __init__(
        self, url: str | None, *, clock: Callable[[], float], timeout_s: float = 10.0
    ) -> None:
        self.url = url
        self.drop = False
        self._clock = clock
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[_Item | None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def submit(self, delivery: Delivery) -> asyncio.Future[DeliveryAttempt]:
        """Queue ``delivery`` for sending; the future resolves with the attempt."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue))
        future: asyncio.Future[DeliveryAttempt] = loop.create_future()
        self._queue.put_nowait((delivery, future))
        return future

    async def drain(self) -> None:
        """Wait until every queued delivery has been attempted."""
        if self._queue is not None:
            await self._queue.join()

    async def aclose(self) -> None:
        """Send what is queued, then stop the worker and close the HTTP client."""
        if self._queue is not None and self._worker is not None and not self._worker.done():
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._worker = self._queue = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self, queue: asyncio.Queue[_Item | None]) -> None:
        while True:
            item = await queue.get()
            try:
                if item is None:
                    return
                delivery, future = item
                attempt = await self._attempt(delivery)
                delivery.attempts.append(attempt)
                if not future.done():
                    future.set_result(attempt)
            finally:
                queue.task_done()

    async def _attempt(self, delivery: Delivery) -> DeliveryAttempt:
        at = self._clock()
        if self.url is None or self.drop:
            return DeliveryAttempt(at=at, status_code=None, error="not sent (dropped)")
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s, trust_env=False)
        try:
            response = await self._client.post(
                self.url, content=delivery.body, headers=delivery.headers
            )
        except httpx.HTTPError as exc:
            log.warning("webhook %s to %s failed: %s", delivery.delivery_id, self.url, exc)
            return DeliveryAttempt(at=at, status_code=None, error=f"{type(exc).__name__}")
        return DeliveryAttempt(at=at, status_code=response.status_code)


class Deliveries:
    """Every webhook delivery made, oldest first, and re-sending them (mixed into the
    simulator, which makes the deliveries)."""

    def __init__(self, url: str | None, *, clock: Callable[[], float]) -> None:
        self.deliveries: list[Delivery] = []
        self._webhooks = WebhookSender(url, clock=clock)

    @property
    def webhook_url(self) -> str | None:
        """Where webhooks go (None: recorded, never sent)."""
        return self._webhooks.url

    @webhook_url.setter
    def webhook_url(self, url: str | None) -> None:
        self._webhooks.url = url

    @property
    def drop_webhooks(self) -> bool:
        """While true, deliveries are recorded but lost, like a missed webhook."""
        return self._webhooks.drop

    @drop_webhooks.setter
    def drop_webhooks(self, drop: bool) -> None:
        self._webhooks.drop = drop

    def delivery(self, delivery_id: str) -> Delivery:
        """The latest delivery with that id (``KeyError`` if none)."""
        for delivery in reversed(self.deliveries):
            if delivery.delivery_id == delivery_id:
                return delivery
        raise KeyError(delivery_id)

    def deliveries_for(self, job_id: int, action: str | None = None) -> list[Delivery]:
        """Deliveries about ``job_id`` (of ``action`` if given), in sending order."""
        return [
            d
            for d in self.deliveries
            if d.job_id == job_id and (action is None or d.action == action)
        ]

    async def redeliver(self, delivery_id: str) -> Delivery:
        """Send a delivery again as-is: same id, same body, same signature."""
        delivery = self.delivery(delivery_id)
        await self._webhooks.submit(delivery)
        return delivery

    async def duplicate(self, delivery_id: str) -> Delivery:
        """Send a delivery's body again under a new delivery id."""
        copy = copy_with_new_id(self.delivery(delivery_id))
        self.deliveries.append(copy)
        await self._webhooks.submit(copy)
        return copy

    async def drain(self) -> None:
        """Wait until every webhook made so far has been attempted."""
        await self._webhooks.drain()
