"""Minimal valid bodies for the fake API server's own tests."""

from __future__ import annotations

from typing import Any

NS = "runs-fleet"
IMAGE = "ghcr.io/runs-fleet/runner:1"


def job_body(name: str, **spec: Any) -> dict[str, Any]:
    """A minimal valid runner-like Job."""
    return {
        "metadata": {"name": name, "labels": {"runs-fleet.io/component": "runner"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"runs-fleet.io/component": "runner"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "runner", "image": IMAGE}],
                },
            },
            **spec,
        },
    }


def deployment_body(name: str, replicas: int) -> dict[str, Any]:
    labels = {"runs-fleet.io/pool": name, "runs-fleet.io/pool-member": "true"}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "runner", "image": IMAGE}]},
            },
        },
    }


def send(
    url: str,
    token: str,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    """A request the official client would refuse to send (it checks bodies against its
    models first), to show that the server refuses it too: ``(status, JSON body)``."""
    import json

    import urllib3

    response = urllib3.PoolManager().request(
        method,
        url + path,
        body=None if body is None else json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )
    return response.status, json.loads(response.data or b"null")


def failure(exc: Any) -> dict[str, Any]:
    """The ``Status`` body of a failed call (``exc`` is a ``pytest.ExceptionInfo`` of an
    ``ApiException``)."""
    import json

    body: dict[str, Any] = json.loads(exc.value.body or "{}")
    return body


def new_watch() -> Any:
    """A ``kubernetes.watch.Watch`` (the class is untyped)."""
    from kubernetes import watch

    watch_class: Any = watch.Watch
    return watch_class()
