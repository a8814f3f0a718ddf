"""Clients of the fake API server for its own tests."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.kube_api.fixtures import KubeApi


@pytest.fixture
def core(kube_api: KubeApi) -> Any:
    return client.CoreV1Api(kube_api.api_client())


@pytest.fixture
def batch(kube_api: KubeApi) -> Any:
    return client.BatchV1Api(kube_api.api_client())


@pytest.fixture
def apps(kube_api: KubeApi) -> Any:
    return client.AppsV1Api(kube_api.api_client())


@pytest.fixture
def coordination(kube_api: KubeApi) -> Any:
    return client.CoordinationV1Api(kube_api.api_client())


@pytest.fixture
def networking(kube_api: KubeApi) -> Any:
    return client.NetworkingV1Api(kube_api.api_client())


@pytest.fixture
def authentication(kube_api: KubeApi) -> Any:
    return client.AuthenticationV1Api(kube_api.api_client())


@pytest.fixture
def scheduling(kube_api: KubeApi) -> Any:
    return client.SchedulingV1Api(kube_api.api_client())
