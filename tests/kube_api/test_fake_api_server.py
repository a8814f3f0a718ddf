"""The fake API server answers the official client as Kubernetes does: CRUD, names,
optimistic concurrency, selectors, pagination, the three patch formats and deletion."""

from __future__ import annotations

import base64
import re
from typing import Any, ClassVar

import pytest
from kubernetes.client.exceptions import ApiException

from tests.kube_api.fixtures import KubeApi
from tests.kube_api.samples import IMAGE, NS, deployment_body, failure, job_body


def config_map(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data}


class TestCreateAndRead:
    def test_create_fills_in_server_fields(self, core: Any) -> None:
        created = core.create_namespaced_config_map(NS, config_map("state", k="v"))
        meta = created.metadata
        assert re.fullmatch(r"[0-9a-f-]{36}", meta.uid)
        assert int(meta.resource_version) > 0
        assert meta.creation_timestamp is not None
        assert meta.generation == 1
        assert meta.namespace == NS
        read = core.read_namespaced_config_map("state", NS)
        assert (read.kind, read.api_version) == ("ConfigMap", "v1")
        assert read.data == {"k": "v"}
        assert read.metadata.resource_version == meta.resource_version

    def test_every_write_gets_a_higher_resource_version(self, core: Any) -> None:
        first = core.create_namespaced_config_map(NS, config_map("a"))
        second = core.create_namespaced_config_map(NS, config_map("b"))
        patched = core.patch_namespaced_config_map("a", NS, {"data": {"x": "1"}})
        versions = [int(obj.metadata.resource_version) for obj in (first, second, patched)]
        assert versions == sorted(set(versions))

    def test_generate_name_appends_five_random_characters(self, core: Any) -> None:
        created = core.create_namespaced_config_map(
            NS, {"metadata": {"generateName": "runner-"}, "data": {}}
        )
        assert re.fullmatch(r"runner-[a-z0-9]{5}", created.metadata.name)
        assert core.read_namespaced_config_map(created.metadata.name, NS).metadata.uid

    def test_creating_an_existing_name_is_already_exists(self, batch: Any) -> None:
        batch.create_namespaced_job(NS, job_body("runner-1"))
        with pytest.raises(ApiException) as exc:
            batch.create_namespaced_job(NS, job_body("runner-1"))
        assert exc.value.status == 409
        status = failure(exc)
        assert status["reason"] == "AlreadyExists"
        assert status["message"] == 'jobs.batch "runner-1" already exists'
        assert status["details"] == {"name": "runner-1", "group": "batch", "kind": "jobs"}

    def test_reading_a_missing_object_is_not_found(self, core: Any) -> None:
        with pytest.raises(ApiException) as exc:
            core.read_namespaced_config_map("absent", NS)
        assert exc.value.status == 404
        assert failure(exc)["message"] == 'configmaps "absent" not found'
        assert failure(exc)["reason"] == "NotFound"

    def test_objects_live_in_their_namespace(self, core: Any) -> None:
        core.create_namespaced_config_map("elsewhere", config_map("same"))
        with pytest.raises(ApiException) as exc:
            core.read_namespaced_config_map("same", NS)
        assert exc.value.status == 404

    def test_body_namespace_must_match_the_path(self, core: Any) -> None:
        body = config_map("x")
        body["metadata"]["namespace"] = "other"
        with pytest.raises(ApiException) as exc:
            core.create_namespaced_config_map(NS, body)
        assert exc.value.status == 400
        assert "does not match the namespace" in failure(exc)["message"]

    def test_secret_string_data_is_stored_as_base64_data(self, core: Any) -> None:
        core.create_namespaced_secret(NS, {"metadata": {"name": "s"}, "stringData": {"a": "b"}})
        secret = core.read_namespaced_secret("s", NS)
        assert secret.data == {"a": base64.b64encode(b"b").decode()}
        assert secret.string_data is None
        assert secret.type == "Opaque"

    def test_cluster_scoped_kinds(self, core: Any, scheduling: Any) -> None:
        scheduling.create_priority_class({"metadata": {"name": "runners"}, "value": 1000})
        assert scheduling.read_priority_class("runners").value == 1000
        core.create_namespace({"metadata": {"name": "team-a"}})
        names = [ns.metadata.name for ns in core.list_namespace().items]
        assert names == ["default", "runs-fleet", "team-a"]
        assert core.read_namespace("team-a").status.phase == "Active"

    def test_leases_and_network_policies_round_trip(
        self, coordination: Any, networking: Any
    ) -> None:
        coordination.create_namespaced_lease(
            NS, {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}
        )
        lease = coordination.read_namespaced_lease("leader", NS)
        lease.spec.holder_identity = "b"
        coordination.replace_namespaced_lease("leader", NS, lease)
        assert coordination.read_namespaced_lease("leader", NS).spec.holder_identity == "b"
        networking.create_namespaced_network_policy(
            NS,
            {
                "metadata": {"name": "private"},
                "spec": {"podSelector": {"matchLabels": {"runs-fleet.io/runner": "r1"}}},
            },
        )
        policy = networking.read_namespaced_network_policy("private", NS)
        assert policy.spec.policy_types == ["Ingress"]


class TestUpdate:
    def test_stale_resource_version_is_a_conflict(self, core: Any) -> None:
        core.create_namespaced_config_map(NS, config_map("state", k="1"))
        mine = core.read_namespaced_config_map("state", NS)
        theirs = core.read_namespaced_config_map("state", NS)
        theirs.data = {"k": "2"}
        core.replace_namespaced_config_map("state", NS, theirs)
        mine.data = {"k": "3"}
        with pytest.raises(ApiException) as exc:
            core.replace_namespaced_config_map("state", NS, mine)
        assert exc.value.status == 409
        assert failure(exc)["reason"] == "Conflict"
        assert failure(exc)["message"] == (
            'Operation cannot be fulfilled on configmaps "state": the object has been '
            "modified; please apply your changes to the latest version and try again"
        )
        assert core.read_namespaced_config_map("state", NS).data == {"k": "2"}

    def test_replace_without_resource_version_is_unconditional(self, core: Any) -> None:
        core.create_namespaced_config_map(NS, config_map("state", k="1"))
        core.replace_namespaced_config_map("state", NS, config_map("state", k="2"))
        assert core.read_namespaced_config_map("state", NS).data == {"k": "2"}

    def test_replacing_a_missing_object_is_not_found(self, core: Any) -> None:
        with pytest.raises(ApiException) as exc:
            core.replace_namespaced_config_map("ghost", NS, config_map("ghost"))
        assert exc.value.status == 404

    def test_an_unchanged_update_keeps_the_resource_version(self, core: Any) -> None:
        created = core.create_namespaced_config_map(NS, config_map("state", k="1"))
        again = core.replace_namespaced_config_map("state", NS, config_map("state", k="1"))
        assert again.metadata.resource_version == created.metadata.resource_version

    def test_main_resource_ignores_status_and_status_ignores_the_rest(
        self, kube_api: KubeApi, batch: Any
    ) -> None:
        kube_api.server.controllers_enabled = False
        batch.create_namespaced_job(NS, job_body("j"))
        batch.patch_namespaced_job(
            "j", NS, {"metadata": {"labels": {"a": "b"}}, "status": {"active": 5}}
        )
        job = batch.read_namespaced_job("j", NS)
        assert job.metadata.labels["a"] == "b"
        assert job.status.active is None
        batch.patch_namespaced_job_status(
            "j", NS, {"metadata": {"labels": {"a": "c"}}, "status": {"active": 1}}
        )
        job = batch.read_namespaced_job_status("j", NS)
        assert (job.status.active, job.metadata.labels["a"]) == (1, "b")

    def test_generation_counts_spec_changes_only(self, kube_api: KubeApi, apps: Any) -> None:
        kube_api.server.controllers_enabled = False
        apps.create_namespaced_deployment(NS, deployment_body("pool", 1))
        apps.patch_namespaced_deployment("pool", NS, {"metadata": {"labels": {"x": "y"}}})
        assert apps.read_namespaced_deployment("pool", NS).metadata.generation == 1
        apps.patch_namespaced_deployment("pool", NS, {"spec": {"replicas": 2}})
        assert apps.read_namespaced_deployment("pool", NS).metadata.generation == 2

    def test_immutable_config_map_refuses_new_data(self, core: Any) -> None:
        body = config_map("frozen", k="1")
        body["immutable"] = True
        core.create_namespaced_config_map(NS, body)
        with pytest.raises(ApiException) as exc:
            core.patch_namespaced_config_map("frozen", NS, {"data": {"k": "2"}})
        assert exc.value.status == 422
        assert "field is immutable when `immutable` is set" in failure(exc)["message"]


class TestSelectorsAndPages:
    LABELS: ClassVar[dict[str, dict[str, str]]] = {
        "web-prod": {"tier": "web", "env": "prod"},
        "web-dev": {"tier": "web", "env": "dev"},
        "db-prod": {"tier": "db", "env": "prod"},
        "plain": {},
    }

    @pytest.mark.parametrize(
        ("selector", "expected"),
        [
            ("tier=web", ["web-dev", "web-prod"]),
            ("tier==db", ["db-prod"]),
            ("tier!=web", ["db-prod", "plain"]),
            ("tier in (web, db)", ["db-prod", "web-dev", "web-prod"]),
            ("env notin (prod)", ["plain", "web-dev"]),
            ("tier", ["db-prod", "web-dev", "web-prod"]),
            ("!tier", ["plain"]),
            ("tier=web,env=prod", ["web-prod"]),
            ("tier=web,!env", []),
        ],
    )
    def test_label_selectors(self, core: Any, selector: str, expected: list[str]) -> None:
        for name, labels in self.LABELS.items():
            core.create_namespaced_config_map(NS, config_map(name, labels))
        found = core.list_namespaced_config_map(NS, label_selector=selector).items
        assert [item.metadata.name for item in found] == expected

    def test_a_malformed_selector_is_a_bad_request(self, core: Any) -> None:
        with pytest.raises(ApiException) as exc:
            core.list_namespaced_config_map(NS, label_selector="tier in web")
        assert exc.value.status == 400

    def test_field_selectors(self, kube_api: KubeApi, core: Any) -> None:
        kube_api.server.controllers_enabled = False
        for name in ("p1", "p2"):
            core.create_namespaced_pod(
                NS,
                {
                    "metadata": {"name": name},
                    "spec": {"containers": [{"name": "c", "image": IMAGE}]},
                },
            )
        kube_api.server.set_pod_phase(NS, "p2", "Running")
        running = core.list_namespaced_pod(NS, field_selector="status.phase=Running").items
        assert [pod.metadata.name for pod in running] == ["p2"]
        by_name = core.list_namespaced_pod(NS, field_selector="metadata.name!=p2").items
        assert [pod.metadata.name for pod in by_name] == ["p1"]
        with pytest.raises(ApiException) as exc:
            core.list_namespaced_pod(NS, field_selector="spec.image=x")
        assert failure(exc)["message"] == "field label not supported: spec.image"

    def test_cluster_wide_lists(self, core: Any) -> None:
        core.create_namespaced_config_map("team-a", config_map("x", {"app": "a"}))
        core.create_namespaced_config_map("team-b", config_map("x", {"app": "a"}))
        found = core.list_config_map_for_all_namespaces(label_selector="app=a").items
        assert [item.metadata.namespace for item in found] == ["team-a", "team-b"]

    def test_limit_and_continue_page_through_a_list(self, core: Any) -> None:
        for index in range(5):
            core.create_namespaced_config_map(NS, config_map(f"cm-{index}"))
        names: list[str] = []
        page = core.list_namespaced_config_map(NS, limit=2)
        assert page.metadata.remaining_item_count == 3
        names += [item.metadata.name for item in page.items]
        while page.metadata._continue:
            page = core.list_namespaced_config_map(NS, limit=2, _continue=page.metadata._continue)
            names += [item.metadata.name for item in page.items]
        assert names == [f"cm-{index}" for index in range(5)]

    def test_list_carries_the_current_resource_version(self, core: Any) -> None:
        created = core.create_namespaced_config_map(NS, config_map("a"))
        listed = core.list_namespaced_config_map(NS)
        assert listed.metadata.resource_version == created.metadata.resource_version


class TestPatch:
    def template_with_env(self) -> dict[str, Any]:
        body = deployment_body("pool", 0)
        body["spec"]["template"]["spec"]["containers"] = [
            {"name": "runner", "image": IMAGE, "env": [{"name": "A", "value": "1"}]},
            {"name": "sidecar", "image": IMAGE},
        ]
        return body

    def test_strategic_merge_patch_merges_containers_and_env_by_name(self, apps: Any) -> None:
        apps.create_namespaced_deployment(NS, self.template_with_env())
        patch = {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "runner", "image": "x:2", "env": [{"name": "B", "value": "2"}]}
                        ]
                    }
                }
            }
        }
        apps.patch_namespaced_deployment("pool", NS, patch)
        containers = apps.read_namespaced_deployment("pool", NS).spec.template.spec.containers
        assert [(c.name, c.image) for c in containers] == [("runner", "x:2"), ("sidecar", IMAGE)]
        assert [(e.name, e.value) for e in containers[0].env] == [("A", "1"), ("B", "2")]

    def test_strategic_merge_delete_directive(self, apps: Any) -> None:
        apps.create_namespaced_deployment(NS, self.template_with_env())
        patch = {
            "spec": {
                "template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}
            }
        }
        apps.patch_namespaced_deployment("pool", NS, patch)
        containers = apps.read_namespaced_deployment("pool", NS).spec.template.spec.containers
        assert [c.name for c in containers] == ["runner"]

    def test_merge_patch_replaces_lists_and_null_deletes(self, apps: Any) -> None:
        apps.create_namespaced_deployment(NS, self.template_with_env())
        patch = {
            "metadata": {"labels": {"gone": None, "new": "yes"}},
            "spec": {"template": {"spec": {"containers": [{"name": "only", "image": IMAGE}]}}},
        }
        apps.patch_namespaced_deployment(
            "pool", NS, patch, _content_type="application/merge-patch+json"
        )
        deployment = apps.read_namespaced_deployment("pool", NS)
        assert [c.name for c in deployment.spec.template.spec.containers] == ["only"]
        assert deployment.metadata.labels == {"new": "yes"}

    def test_json_patch_operations(self, core: Any) -> None:
        core.create_namespaced_config_map(NS, config_map("state", {"a": "1"}, k="v"))
        core.patch_namespaced_config_map(
            "state",
            NS,
            [
                {"op": "test", "path": "/data/k", "value": "v"},
                {"op": "replace", "path": "/data/k", "value": "w"},
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "remove", "path": "/metadata/labels/a"},
            ],
        )
        state = core.read_namespaced_config_map("state", NS)
        assert (state.data, state.metadata.labels) == ({"k": "w"}, {"b": "2"})
        with pytest.raises(ApiException) as exc:
            core.patch_namespaced_config_map(
                "state", NS, [{"op": "test", "path": "/data/k", "value": "v"}]
            )
        assert exc.value.status == 422

    def test_resource_version_in_a_patch_is_a_precondition(self, core: Any) -> None:
        created = core.create_namespaced_config_map(NS, config_map("state", k="1"))
        core.patch_namespaced_config_map("state", NS, {"data": {"k": "2"}})
        stale = {
            "metadata": {"resourceVersion": created.metadata.resource_version},
            "data": {"k": "3"},
        }
        with pytest.raises(ApiException) as exc:
            core.patch_namespaced_config_map("state", NS, stale)
        assert (exc.value.status, failure(exc)["reason"]) == (409, "Conflict")
        assert core.read_namespaced_config_map("state", NS).data == {"k": "2"}

    def test_patching_a_missing_object_is_not_found(self, core: Any) -> None:
        with pytest.raises(ApiException) as exc:
            core.patch_namespaced_config_map("ghost", NS, {"data": {"k": "1"}})
        assert exc.value.status == 404

    def test_json_patch_move_and_copy(self, core: Any) -> None:
        core.create_namespaced_config_map(NS, config_map("state", k="v"))
        core.patch_namespaced_config_map(
            "state",
            NS,
            [
                {"op": "copy", "from": "/data/k", "path": "/data/copied"},
                {"op": "move", "from": "/data/k", "path": "/data/moved"},
            ],
        )
        assert core.read_namespaced_config_map("state", NS).data == {"copied": "v", "moved": "v"}

    def test_a_json_patch_applies_all_or_nothing(self, core: Any) -> None:
        core.create_namespaced_config_map(NS, config_map("state", k="v"))
        with pytest.raises(ApiException) as exc:
            core.patch_namespaced_config_map(
                "state",
                NS,
                [
                    {"op": "replace", "path": "/data/k", "value": "w"},
                    {"op": "remove", "path": "/data/missing"},
                ],
            )
        assert exc.value.status == 422
        assert core.read_namespaced_config_map("state", NS).data == {"k": "v"}

    def test_server_side_apply_creates_then_merges(self, apps: Any) -> None:
        body = {"apiVersion": "apps/v1", "kind": "Deployment", **deployment_body("pool", 1)}
        apply = "application/apply-patch+yaml"
        apps.patch_namespaced_deployment(
            "pool", NS, body, field_manager="runs-fleet", _content_type=apply
        )
        body["spec"]["replicas"] = 3
        apps.patch_namespaced_deployment(
            "pool", NS, body, field_manager="runs-fleet", _content_type=apply
        )
        assert apps.read_namespaced_deployment("pool", NS).spec.replicas == 3
        with pytest.raises(ApiException) as exc:
            apps.patch_namespaced_deployment("pool", NS, body, _content_type=apply)
        assert exc.value.status == 400


def test_a_client_gone_before_its_whole_body_came_is_not_an_error_of_the_fake(
    kube_api: KubeApi,
) -> None:
    """A killed process or a reset connection leaves a request half sent: nothing is
    created, and the fake does not count it as a fault of its own."""
    import socket
    import time
    from urllib.parse import urlsplit

    server = kube_api.server
    address = urlsplit(server.url)
    path = f"/api/v1/namespaces/{NS}/configmaps"
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {address.netloc}\r\n"
        f"authorization: Bearer {server.admin_token}\r\ncontent-type: application/json\r\n"
        "content-length: 1000\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port)) as raw:
        raw.sendall(head.encode() + b'{"metadata": {"name": "half')
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while not any(r.path == path for r in server.requests) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert server.internal_errors == []
    from kubernetes import client

    core = client.CoreV1Api(kube_api.api_client())
    assert core.list_namespaced_config_map(NS).items == []
