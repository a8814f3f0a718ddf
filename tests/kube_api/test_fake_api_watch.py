"""Watches through ``kubernetes.watch.Watch``: initial state, resuming from a resource
version, selectors on both sides of a change, live events, expiry and time-outs."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.kube_api.fixtures import KubeApi
from tests.kube_api.samples import NS, new_watch


def config_map(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def events(func: Any, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
    """``(type, name)`` of every event until the watch's time-out."""
    return [
        (event["type"], event["raw_object"]["metadata"].get("name", ""))
        for event in new_watch().stream(func, *args, timeout_seconds=1, **kwargs)
    ]


def test_a_watch_without_a_version_starts_with_the_existing_objects(core: Any) -> None:
    core.create_namespaced_config_map(NS, config_map("a"))
    core.create_namespaced_config_map(NS, config_map("b"))
    core.create_namespaced_config_map("elsewhere", config_map("c"))
    assert events(core.list_namespaced_config_map, NS) == [("ADDED", "a"), ("ADDED", "b")]


def test_a_watch_from_a_version_replays_what_happened_since(core: Any) -> None:
    created = core.create_namespaced_config_map(NS, config_map("a"))
    core.patch_namespaced_config_map("a", NS, {"data": {"k": "v"}})
    core.create_namespaced_config_map(NS, config_map("b"))
    core.delete_namespaced_config_map("a", NS)
    seen = events(
        core.list_namespaced_config_map, NS, resource_version=created.metadata.resource_version
    )
    assert seen == [("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]


def test_event_objects_carry_their_resource_version(core: Any) -> None:
    created = core.create_namespaced_config_map(NS, config_map("a"))
    patched = core.patch_namespaced_config_map("a", NS, {"data": {"k": "v"}})
    stream = new_watch().stream(
        core.list_namespaced_config_map,
        NS,
        resource_version=created.metadata.resource_version,
        timeout_seconds=1,
    )
    first = next(iter(stream))
    assert first["object"].metadata.resource_version == patched.metadata.resource_version
    assert first["object"].data == {"k": "v"}


def test_a_selector_applies_to_both_sides_of_a_change(core: Any) -> None:
    start = core.create_namespaced_config_map(NS, config_map("a", pool="x"))
    core.patch_namespaced_config_map("a", NS, {"metadata": {"labels": {"pool": "y"}}})
    core.patch_namespaced_config_map("a", NS, {"metadata": {"labels": {"pool": "x"}}})
    core.create_namespaced_config_map(NS, config_map("b", pool="y"))
    seen = events(
        core.list_namespaced_config_map,
        NS,
        label_selector="pool=x",
        resource_version=start.metadata.resource_version,
    )
    assert seen == [("DELETED", "a"), ("ADDED", "a")]


def test_a_watch_streams_events_as_they_happen(kube_api: KubeApi, core: Any) -> None:
    def write() -> None:
        time.sleep(0.2)
        core.create_namespaced_config_map(NS, config_map("live"))
        core.delete_namespaced_config_map("live", NS)

    start = core.list_namespaced_config_map(NS).metadata.resource_version
    writer = threading.Thread(target=write)
    writer.start()
    seen = []
    watcher = new_watch()
    began = time.monotonic()
    for event in watcher.stream(
        core.list_namespaced_config_map, NS, resource_version=start, timeout_seconds=5
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 2:
            watcher.stop()
    writer.join()
    assert seen == [("ADDED", "live"), ("DELETED", "live")]
    assert time.monotonic() - began < 3


def test_a_cluster_wide_watch_sees_every_namespace(core: Any) -> None:
    core.create_namespaced_config_map("team-a", config_map("a"))
    core.create_namespaced_config_map("team-b", config_map("b"))
    assert events(core.list_config_map_for_all_namespaces) == [("ADDED", "a"), ("ADDED", "b")]


def test_a_version_older_than_the_history_is_gone(kube_api: KubeApi, core: Any) -> None:
    kube_api.server.history_limit = 2
    first = core.create_namespaced_config_map(NS, config_map("a"))
    for value in ("1", "2", "3"):
        core.patch_namespaced_config_map("a", NS, {"data": {"k": value}})
    with pytest.raises(ApiException) as exc:
        events(
            core.list_namespaced_config_map, NS, resource_version=first.metadata.resource_version
        )
    assert exc.value.status == 410
    assert "Expired: too old resource version" in str(exc.value.reason)


def test_a_watch_ends_after_its_timeout(core: Any) -> None:
    now = core.list_namespaced_config_map(NS).metadata.resource_version
    began = time.monotonic()
    assert events(core.list_namespaced_config_map, NS, resource_version=now) == []
    assert 0.9 < time.monotonic() - began < 3


def test_bookmarks_carry_the_latest_version(core: Any) -> None:
    created = core.create_namespaced_config_map(NS, config_map("a"))
    seen = list(
        new_watch().stream(
            core.list_namespaced_config_map,
            NS,
            allow_watch_bookmarks=True,
            timeout_seconds=1,
        )
    )
    assert [event["type"] for event in seen] == ["ADDED", "BOOKMARK"]
    bookmark = seen[-1]["raw_object"]
    assert int(bookmark["metadata"]["resourceVersion"]) >= int(created.metadata.resource_version)


def test_pod_watches_see_controller_writes(kube_api: KubeApi, core: Any, batch: Any) -> None:
    from tests.kube_api.samples import job_body

    start = core.list_namespaced_pod(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job_body("runner-1"))
    seen = events(
        core.list_namespaced_pod, NS, resource_version=start, label_selector="job-name=runner-1"
    )
    assert [kind for kind, _ in seen] == ["ADDED"]
    assert seen[0][1].startswith("runner-1-")
