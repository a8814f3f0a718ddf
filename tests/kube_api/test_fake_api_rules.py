"""What the fake API server refuses and how it fails: validation, deletion with garbage
collection and preconditions, authentication, RBAC denials and injected faults."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from runs_fleet_k8s.client import load_api_client
from tests.kube_api.fixtures import KubeApi
from tests.kube_api.samples import IMAGE, NS, deployment_body, failure, job_body, send


def owner_ref(obj: Any) -> dict[str, Any]:
    return {
        "apiVersion": obj.api_version or "v1",
        "kind": obj.kind or "ConfigMap",
        "name": obj.metadata.name,
        "uid": obj.metadata.uid,
    }


class TestValidation:
    def test_a_job_with_an_unknown_field_is_invalid_and_recorded(
        self, kube_api: KubeApi, batch: Any
    ) -> None:
        body = job_body("runner-1")
        body["spec"]["template"]["spec"]["containers"][0]["imagee"] = IMAGE
        code, status = send(
            kube_api.url, kube_api.token, "POST", f"/apis/batch/v1/namespaces/{NS}/jobs", body
        )
        assert (code, status["reason"]) == (422, "Invalid")
        assert status["message"].startswith('Job.batch "runner-1" is invalid: ')
        assert "'imagee' was unexpected" in status["message"]
        assert status["details"]["causes"][0]["field"] == "spec.template.spec.containers.0"
        assert [bad.name for bad in kube_api.server.invalid_bodies] == ["runner-1"]
        assert kube_api.server.invalid_bodies[0].body == body
        assert kube_api.server.objects("jobs") == []

    def test_valid_requests_leave_no_invalid_body(self, kube_api: KubeApi, batch: Any) -> None:
        batch.create_namespaced_job(NS, job_body("runner-1"))
        batch.patch_namespaced_job("runner-1", NS, {"metadata": {"labels": {"a": "b"}}})
        assert kube_api.server.invalid_bodies == []

    def test_job_pods_may_not_restart_always(self, batch: Any) -> None:
        body = job_body("runner-1")
        del body["spec"]["template"]["spec"]["restartPolicy"]
        with pytest.raises(ApiException) as exc:
            batch.create_namespaced_job(NS, body)
        assert failure(exc)["message"] == (
            'Job.batch "runner-1" is invalid: spec.template.spec.restartPolicy: Required value: '
            'valid values: "OnFailure", "Never"'
        )

    @pytest.mark.parametrize(
        ("name", "problem"),
        [
            ("Runner_1", "a lowercase RFC 1123 subdomain"),
            ("r" * 64, "must be no more than 63 characters"),
        ],
    )
    def test_job_names_are_subdomains_short_enough_for_a_label(
        self, batch: Any, name: str, problem: str
    ) -> None:
        with pytest.raises(ApiException) as exc:
            batch.create_namespaced_job(NS, job_body(name))
        assert exc.value.status == 422
        assert problem in failure(exc)["message"]

    def test_label_keys_and_values_are_checked(self, core: Any) -> None:
        body = {"metadata": {"name": "cm", "labels": {"bad key": "x", "ok": "-bad-"}}}
        with pytest.raises(ApiException) as exc:
            core.create_namespaced_config_map(NS, body)
        message = failure(exc)["message"]
        assert 'metadata.labels: Invalid value: "bad key": name part must consist' in message
        assert 'metadata.labels: Invalid value: "-bad-": a valid label must be' in message

    def test_config_maps_hold_at_most_one_mebibyte(self, core: Any) -> None:
        body = {"metadata": {"name": "big"}, "data": {"blob": "x" * (1024 * 1024)}}
        with pytest.raises(ApiException) as exc:
            core.create_namespaced_config_map(NS, body)
        assert "Too long: must have at most 1048576 bytes" in failure(exc)["message"]

    def test_secret_data_must_be_base64(self, kube_api: KubeApi, core: Any) -> None:
        with pytest.raises(ApiException) as exc:
            core.create_namespaced_secret(
                NS, {"metadata": {"name": "s"}, "data": {"k": "not base64!"}}
            )
        assert exc.value.status == 400
        assert "illegal base64 data in data[k]" in failure(exc)["message"]
        assert len(kube_api.server.invalid_bodies) == 1

    def test_deployment_selector_must_match_its_template(self, apps: Any) -> None:
        body = deployment_body("pool", 1)
        body["spec"]["template"]["metadata"]["labels"] = {"other": "x"}
        with pytest.raises(ApiException) as exc:
            apps.create_namespaced_deployment(NS, body)
        assert "`selector` does not match template `labels`" in failure(exc)["message"]

    def test_a_volume_mount_must_name_a_volume(self, batch: Any) -> None:
        body = job_body("runner-1")
        container = body["spec"]["template"]["spec"]["containers"][0]
        container["volumeMounts"] = [{"name": "config", "mountPath": "/etc/runs-fleet"}]
        with pytest.raises(ApiException) as exc:
            batch.create_namespaced_job(NS, body)
        assert (
            'spec.template.spec.containers[0].volumeMounts[0].name: Not found: "config"'
            in failure(exc)["message"]
        )

    def test_a_patch_result_is_validated(self, kube_api: KubeApi, core: Any) -> None:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}})
        code, status = send(
            kube_api.url,
            kube_api.token,
            "PATCH",
            f"/api/v1/namespaces/{NS}/configmaps/cm",
            {"spec": {"x": 1}},
            "application/merge-patch+json",
        )
        assert (code, status["reason"]) == (422, "Invalid")
        assert kube_api.server.invalid_bodies[0].body == {"spec": {"x": 1}}

    def test_a_pod_spec_cannot_change_but_for_its_images(
        self, kube_api: KubeApi, core: Any
    ) -> None:
        pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": IMAGE}]}}
        core.create_namespaced_pod(NS, pod)
        patch = {"spec": {"containers": [{"name": "c", "image": "other:2"}]}}
        core.patch_namespaced_pod("p", NS, patch)
        with pytest.raises(ApiException) as exc:
            core.patch_namespaced_pod("p", NS, {"spec": {"hostNetwork": True}})
        assert "pod updates may not change fields" in failure(exc)["message"]


class TestDelete:
    def test_delete_answers_a_success_status_and_the_object_is_gone(self, core: Any) -> None:
        created = core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}})
        status = core.delete_namespaced_config_map("cm", NS)
        assert (status["status"], status["details"]["name"]) == ("Success", "cm")
        assert status["details"]["uid"] == created.metadata.uid
        with pytest.raises(ApiException) as exc:
            core.delete_namespaced_config_map("cm", NS)
        assert exc.value.status == 404

    def test_delete_preconditions_guard_against_a_newer_version(self, core: Any) -> None:
        created = core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}})
        core.patch_namespaced_config_map("cm", NS, {"data": {"k": "v"}})
        options = {"preconditions": {"resourceVersion": created.metadata.resource_version}}
        with pytest.raises(ApiException) as exc:
            core.delete_namespaced_config_map("cm", NS, body=options)
        assert (exc.value.status, failure(exc)["reason"]) == (409, "Conflict")
        assert "Precondition failed: ResourceVersion in precondition" in failure(exc)["message"]
        options = {"preconditions": {"uid": created.metadata.uid}}
        core.delete_namespaced_config_map("cm", NS, body=options)

    def test_deleting_an_owner_deletes_its_dependents_recursively(
        self, kube_api: KubeApi, core: Any
    ) -> None:
        owner = core.create_namespaced_config_map(NS, {"metadata": {"name": "owner"}})
        child = core.create_namespaced_secret(
            NS, {"metadata": {"name": "child", "ownerReferences": [owner_ref(owner)]}}
        )
        child_ref = {
            "apiVersion": "v1",
            "kind": "Secret",
            "name": "child",
            "uid": child.metadata.uid,
        }
        core.create_namespaced_config_map(
            NS, {"metadata": {"name": "grandchild", "ownerReferences": [child_ref]}}
        )
        core.create_namespaced_config_map(NS, {"metadata": {"name": "unrelated"}})
        core.delete_namespaced_config_map("owner", NS, propagation_policy="Foreground")
        assert [cm["metadata"]["name"] for cm in kube_api.server.objects("configmaps", NS)] == [
            "unrelated"
        ]
        assert kube_api.server.objects("secrets", NS) == []

    def test_orphan_propagation_keeps_dependents_without_the_reference(
        self, kube_api: KubeApi, core: Any
    ) -> None:
        owner = core.create_namespaced_config_map(NS, {"metadata": {"name": "owner"}})
        core.create_namespaced_secret(
            NS, {"metadata": {"name": "child", "ownerReferences": [owner_ref(owner)]}}
        )
        core.delete_namespaced_config_map("owner", NS, propagation_policy="Orphan")
        assert core.read_namespaced_secret("child", NS).metadata.owner_references is None

    def test_a_dependent_of_a_missing_owner_is_collected(
        self, kube_api: KubeApi, core: Any
    ) -> None:
        ghost = {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "0" * 8}
        core.create_namespaced_secret(NS, {"metadata": {"name": "s", "ownerReferences": [ghost]}})
        assert kube_api.server.get("secrets", NS, "s") is None

    def test_finalizers_hold_an_object_until_they_are_removed(self, core: Any) -> None:
        core.create_namespaced_config_map(
            NS, {"metadata": {"name": "held", "finalizers": ["runs-fleet.io/cleanup"]}}
        )
        core.delete_namespaced_config_map("held", NS)
        held = core.read_namespaced_config_map("held", NS)
        assert held.metadata.deletion_timestamp is not None
        core.patch_namespaced_config_map(
            "held", NS, [{"op": "remove", "path": "/metadata/finalizers"}]
        )
        with pytest.raises(ApiException) as exc:
            core.read_namespaced_config_map("held", NS)
        assert exc.value.status == 404

    def test_delete_collection_by_label(self, kube_api: KubeApi, core: Any) -> None:
        for name, pool in (("a", "x"), ("b", "x"), ("c", "y")):
            core.create_namespaced_config_map(
                NS, {"metadata": {"name": name, "labels": {"pool": pool}}}
            )
        core.delete_collection_namespaced_config_map(NS, label_selector="pool=x")
        assert [cm["metadata"]["name"] for cm in kube_api.server.objects("configmaps")] == ["c"]

    def test_deleting_a_namespace_deletes_what_is_in_it(self, kube_api: KubeApi, core: Any) -> None:
        core.create_namespace({"metadata": {"name": "team-a"}})
        core.create_namespaced_config_map("team-a", {"metadata": {"name": "cm"}})
        core.delete_namespace("team-a")
        assert kube_api.server.objects("configmaps", "team-a") == []


class TestAccess:
    def test_a_request_without_a_token_is_unauthorized(self, kube_api: KubeApi) -> None:
        configuration = client.Configuration()
        configuration.host = kube_api.url
        with client.ApiClient(configuration) as anonymous, pytest.raises(ApiException) as exc:
            client.CoreV1Api(anonymous).list_namespace()
        assert (exc.value.status, failure(exc)["reason"]) == (401, "Unauthorized")

    def test_a_wrong_token_is_unauthorized(self, kube_api: KubeApi) -> None:
        with pytest.raises(ApiException) as exc:
            client.CoreV1Api(kube_api.api_client(token="guess")).list_namespace()
        assert exc.value.status == 401

    def test_forbid_denies_with_rbac_wording(self, kube_api: KubeApi, batch: Any) -> None:
        kube_api.server.forbid("create", "jobs", namespace=NS)
        with pytest.raises(ApiException) as exc:
            batch.create_namespaced_job(NS, job_body("runner-1"))
        assert (exc.value.status, failure(exc)["reason"]) == (403, "Forbidden")
        assert failure(exc)["message"] == (
            'jobs.batch is forbidden: User "system:serviceaccount:runs-fleet:runs-fleet" cannot '
            'create resource "jobs" in API group "batch" in the namespace "runs-fleet"'
        )
        batch.create_namespaced_job("elsewhere", job_body("runner-1"))
        batch.read_namespaced_job("runner-1", "elsewhere")

    def test_forbid_a_subresource(self, kube_api: KubeApi, apps: Any) -> None:
        apps.create_namespaced_deployment(NS, deployment_body("pool", 0))
        kube_api.server.forbid("patch", "deployments/scale")
        with pytest.raises(ApiException) as exc:
            apps.patch_namespaced_deployment_scale("pool", NS, {"spec": {"replicas": 1}})
        assert (
            'cannot patch resource "deployments/scale" in API group "apps"'
            in failure(exc)["message"]
        )
        apps.patch_namespaced_deployment("pool", NS, {"spec": {"replicas": 1}})

    def test_fail_next_fails_that_many_matching_requests(
        self, kube_api: KubeApi, core: Any
    ) -> None:
        kube_api.server.fail_next("list", "configmaps", status=503, times=2)
        for _ in range(2):
            with pytest.raises(ApiException) as exc:
                core.list_namespaced_config_map(NS)
            assert (exc.value.status, failure(exc)["reason"]) == (503, "ServiceUnavailable")
        core.list_namespaced_config_map(NS)
        core.list_namespaced_secret(NS)

    def test_fail_next_throttles_with_retry_after(self, kube_api: KubeApi, batch: Any) -> None:
        kube_api.server.fail_next("create", "jobs", status=429, retry_after=2)
        with pytest.raises(ApiException) as exc:
            batch.create_namespaced_job(NS, job_body("runner-1"))
        assert exc.value.status == 429
        assert (exc.value.headers or {})["Retry-After"] == "2"
        assert failure(exc)["reason"] == "TooManyRequests"

    def test_fail_next_can_report_an_exceeded_quota(self, kube_api: KubeApi, batch: Any) -> None:
        message = (
            'jobs.batch "runner-1" is forbidden: exceeded quota: runners, '
            "requested: count/jobs.batch=1"
        )
        kube_api.server.fail_next("create", "jobs", status=403, message=message)
        with pytest.raises(ApiException) as exc:
            batch.create_namespaced_job(NS, job_body("runner-1"))
        assert failure(exc)["message"] == message
        assert kube_api.server.objects("jobs") == []

    def test_requests_are_logged_by_verb_and_resource(
        self, kube_api: KubeApi, core: Any, apps: Any
    ) -> None:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}})
        core.read_namespaced_config_map("cm", NS)
        apps.create_namespaced_deployment(NS, deployment_body("pool", 0))
        apps.read_namespaced_deployment_scale("pool", NS)
        server = kube_api.server
        assert server.requests[0] == (
            "POST",
            f"/api/v1/namespaces/{NS}/configmaps",
            "create",
            "configmaps",
        )
        assert server.request_count() == 4
        assert server.request_count("get", "deployments/scale") == 1
        assert server.request_count(resource="configmaps") == 2

    def test_the_kubeconfig_reaches_the_server(self, kube_api: KubeApi, core: Any) -> None:
        core.create_namespaced_secret(
            NS, {"metadata": {"name": "s"}, "data": {"k": base64.b64encode(b"v").decode()}}
        )
        new_client: Any = config.new_client_from_config
        with new_client(config_file=str(kube_api.kubeconfig)) as api_client:
            assert client.CoreV1Api(api_client).read_namespaced_secret("s", NS).data
        api_client = load_api_client(kubeconfig=kube_api.kubeconfig)
        try:
            core_api: Any = client.CoreV1Api(api_client)
            names = [n.metadata.name for n in core_api.list_namespace().items]
        finally:
            api_client.close()
        assert NS in names
