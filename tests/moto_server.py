"""A real moto server on 127.0.0.1 for the AWS adapters' tests.

One server per test session (starting one takes about a second); each test that asks for
``aws`` gets the server emptied (moto's reset API), fake credentials, a region, and
``AWS_ENDPOINT_URL`` pointing at it, so boto3 anywhere in the process (or in a child
process that inherits the environment) talks to moto and never to AWS.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.testing.memory import RecordingMetrics

REGION = "us-east-1"


@attrs.frozen
class MotoServer:
    url: str
    region: str = REGION

    def reset(self) -> None:
        """Forget every resource, as a fresh account would be."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            response.read()

    def env(self) -> dict[str, str]:
        """The environment that points boto3 at this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _idempotent_create_fleet() -> None:
    """Make moto's CreateFleet honour ``ClientToken`` as EC2 does: a request repeating
    a token gets the first request's answer and launches nothing (moto ignores the
    token, so a retried launch would start a second instance that EC2 never would)."""
    from moto.ec2.responses.fleets import Fleets

    original = Fleets.create_fleet
    if getattr(original, "honours_client_token", False):
        return
    lock = threading.Lock()

    def create_fleet(self: Any) -> Any:
        token = self._get_param("ClientToken")
        if not token:
            return original(self)
        with lock:  # per backend, so moto's reset forgets the tokens with the fleets
            answers = self.ec2_backend.__dict__.setdefault("_client_tokens", {})
            if token not in answers:
                answers[token] = original(self)
            return answers[token]

    create_fleet.honours_client_token = True  # type: ignore[attr-defined]
    Fleets.create_fleet = create_fleet  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    from moto.server import ThreadedMotoServer

    _idempotent_create_fleet()
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield MotoServer(url=f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """The test run's moto server, emptied, with the environment pointing at it."""
    moto_server.reset()
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in moto_server.env().items():
        monkeypatch.setenv(name, value)
    return moto_server


@pytest.fixture
def aws_metrics() -> RecordingMetrics:
    """Where ``aws_caller`` counts its API calls (``aws_api_calls`` by operation)."""
    return RecordingMetrics()


@pytest.fixture
def aws_caller(aws: MotoServer, aws_metrics: RecordingMetrics) -> Iterator[AwsCaller]:
    """An AWS caller on the emptied moto server, counting its calls in ``aws_metrics``."""
    caller = AwsCaller(metrics=aws_metrics)
    yield caller
    caller.close()
