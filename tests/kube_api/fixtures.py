"""Pytest fixtures for the fake Kubernetes API server: ``kube_api`` (per test, emptied)
over one server per test session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kube_api.server import FakeKubeServer

NAMESPACE = "runs-fleet"


class KubeApi:
    """What a test gets: where the server is, how to reach it, and its controls."""

    def __init__(self, server: FakeKubeServer, kubeconfig: Path) -> None:
        self.server = server
        self.kubeconfig = kubeconfig
        self.namespace = NAMESPACE
        self._clients: list[Any] = []

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        """The admin token (the orchestrator's service account)."""
        return self.server.admin_token

    def api_client(self, token: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` for the server, with the admin token or
        ``token``; closed when the test ends."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.api_key = {"authorization": token or self.token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        api_client = client.ApiClient(configuration)
        self._clients.append(api_client)
        return api_client

    def env(self) -> dict[str, str]:
        """Settings that point runs-fleet at this server (``RUNS_FLEET_KUBECONFIG``,
        ``RUNS_FLEET_KUBE_NAMESPACE``)."""
        return {
            "RUNS_FLEET_KUBECONFIG": str(self.kubeconfig),
            "RUNS_FLEET_KUBE_NAMESPACE": self.namespace,
        }

    def reset(self) -> None:
        """Empty the cluster again, mid-test."""
        self.server.reset()

    def close(self) -> None:
        for api_client in self._clients:
            api_client.close()
        self._clients.clear()


def write_kubeconfig(path: Path, url: str, token: str, namespace: str = NAMESPACE) -> Path:
    """A kubeconfig whose current context is the fake server, as ``token``, in ``namespace``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "runs-fleet", "user": {"token": token}}],
        "contexts": [
            {
                "name": "fake",
                "context": {"cluster": "fake", "user": "runs-fleet", "namespace": namespace},
            }
        ],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


@pytest.fixture(scope="session")
def kube_api_server() -> Iterator[FakeKubeServer]:
    """The session's fake API server (tests use ``kube_api``, which empties it)."""
    server = FakeKubeServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kube_api(kube_api_server: FakeKubeServer, tmp_path: Path) -> Iterator[KubeApi]:
    """The fake Kubernetes API server, emptied (namespaces ``default`` and
    ``runs-fleet`` exist), with a kubeconfig for it and clients on it."""
    kube_api_server.reset()
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig", kube_api_server.url, kube_api_server.admin_token
    )
    api = KubeApi(kube_api_server, kubeconfig)
    try:
        yield api
    finally:
        api.close()
        kube_api_server.watches.close_all()
        kube_api_server.on_pod_created = None
        kube_api_server.on_pod_deleted = None
    problems = [*kube_api_server.internal_errors, *kube_api_server.callback_errors]
    if problems:
        raise AssertionError(
            "the fake Kubernetes API server had errors during the test "
            "(a bug in the fake, or a failing pod callback): "
            + "; ".join(f"{type(exc).__name__}: {exc}" for exc in problems)
        ) from problems[0]
