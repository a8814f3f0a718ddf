"""The Kubernetes objects runs-fleet builds for a label, without an API server.

These pin down what a cluster is asked for: requests and limits from ``cpu=``/``ram=``/
``disk=``, where pods may be scheduled (architecture, spot conventions, families,
generations), how locked down they are, how the agent finds its config, and the shapes
of Jobs, NetworkPolicies and warm pool Deployments. Every manifest is checked against
the Kubernetes OpenAPI schema in strict mode, as the API server would check it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubernetes_validate
import pytest

from runs_fleet_core.catalog import CORE_SETTINGS
from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.labels import parse_label
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import ConfigError, ProviderError
from runs_fleet_core.settings import Settings, inspect_settings, load_settings
from runs_fleet_k8s import manifests, names
from runs_fleet_k8s.manifests import MountedConfig, RunnerPodSettings, ServerConfig

IMAGE = "ghcr.io/octo-org/runs-fleet-runner:1.0"
RUNNER = "runs-fleet-7001-1"
VERSION = kubernetes_validate.latest_version()
LABELS = (
    "runs-fleet=9/cpu=2",
    "runs-fleet=9/cpu=4+8/ram=16+32/arch=arm64/disk=80/pool=default",
    "runs-fleet=9/runner=4cpu-linux-x64/spot=false/private=true",
    "runs-fleet=9/cpu=16/family=c7g+m7g/gen=7/arch=arm64/spot=false",
)


def spec_for(label: str) -> RunnerSpec:
    return parse_label(label).for_job(JobId(7001), "octo-org/app")


def pod_settings(**changes: Any) -> RunnerPodSettings:
    return RunnerPodSettings(**{"image": IMAGE, "namespace": "runs-fleet", **changes})


def settings_from(env: Mapping[str, str]) -> Settings:
    definitions = {s.name: s for s in (*CORE_SETTINGS, *manifests.SETTINGS)}
    return load_settings(env, definitions, require=False)


def pod_of(label: str, **changes: Any) -> dict[str, Any]:
    return manifests.runner_job(spec_for(label), RUNNER, pod_settings(**changes))["spec"][
        "template"
    ]["spec"]


def runner_container(pod: Mapping[str, Any]) -> dict[str, Any]:
    (runner,) = [c for c in pod["containers"] if c["name"] == "runner"]
    return dict(runner)


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def node_affinity(pod: Mapping[str, Any]) -> dict[str, Any]:
    return dict(pod.get("affinity", {}).get("nodeAffinity", {}))


def required_expressions(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    required = node_affinity(pod).get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return []
    (term,) = required["nodeSelectorTerms"]
    return list(term["matchExpressions"])


def preferred_expressions(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    preferred = node_affinity(pod).get("preferredDuringSchedulingIgnoredDuringExecution", [])
    return [e for p in preferred for e in p["preference"]["matchExpressions"]]


# -- every manifest is valid ----------------------------------------------------------


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("dind", [False, True])
@pytest.mark.parametrize("convention", ["karpenter", "gke", "taint", "none"])
def test_every_manifest_passes_strict_schema_validation(
    label: str, dind: bool, convention: str
) -> None:
    settings = pod_settings(
        dind=dind,
        spot_scheduling=convention,
        image_pull_secrets=("registry",),
        node_selector={"workload": "ci"},
        tolerations=({"key": "ci", "operator": "Exists", "effect": "NoSchedule"},),
    )
    spec = spec_for(label)
    pool = PoolConfig(name="default", label=label)
    documents = [
        manifests.runner_job(spec, RUNNER, settings),
        manifests.network_policy(RUNNER, {names.JOB_ID: "7001"}),
        manifests.pool_deployment(
            pool, spec, settings, replicas=3, config_url="http://runs-fleet:8080"
        ),
        manifests.placeholder_deployment(pool, spec, settings, replicas=2),
        manifests.placeholder_priority_class(settings),
    ]
    for document in documents:
        kubernetes_validate.validate(document, VERSION, strict=True)


# -- resources --------------------------------------------------------------------------


def test_cpu_ram_and_disk_become_requests_and_limits() -> None:
    resources = runner_container(pod_of("runs-fleet=9/cpu=4+8/ram=16+32/disk=80"))["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "80Gi"}
    assert resources["limits"] == {"cpu": "8", "memory": "32Gi", "ephemeral-storage": "80Gi"}


def test_without_ram_two_gib_per_cpu_are_requested_and_memory_is_still_limited() -> None:
    resources = runner_container(pod_of("runs-fleet=9/cpu=3"))["resources"]
    assert resources["requests"]["memory"] == "6Gi"
    assert resources["limits"]["memory"] == "6Gi"
    assert resources["requests"]["ephemeral-storage"] == "40Gi"  # the default disk


def test_a_ram_minimum_without_maximum_is_also_the_memory_limit() -> None:
    resources = runner_container(pod_of("runs-fleet=9/cpu=2/ram=16"))["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == "16Gi"


# -- scheduling -------------------------------------------------------------------------


def test_arch_and_os_become_node_selectors_next_to_the_configured_ones() -> None:
    pod = pod_of("runs-fleet=9/arch=x64", node_selector={"workload": "ci"})
    assert pod["nodeSelector"] == {
        "workload": "ci",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
    }
    assert "kubernetes.io/arch" not in pod_of("runs-fleet=9/cpu=2")["nodeSelector"]


def test_spot_prefers_karpenter_spot_nodes_without_excluding_on_demand() -> None:
    pod = pod_of("runs-fleet=9/cpu=2")
    assert preferred_expressions(pod) == [
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}
    ]
    assert required_expressions(pod) == []


def test_spot_false_requires_nodes_that_are_not_spot() -> None:
    pod = pod_of("runs-fleet=9/cpu=2/spot=false")
    assert required_expressions(pod) == [
        {"key": "karpenter.sh/capacity-type", "operator": "NotIn", "values": ["spot"]}
    ]
    assert preferred_expressions(pod) == []


@pytest.mark.parametrize(
    ("convention", "label", "value", "tainted"),
    [
        ("eks", "eks.amazonaws.com/capacityType", "SPOT", False),
        ("gke", "cloud.google.com/gke-spot", "true", True),
        ("aks", "kubernetes.azure.com/scalesetpriority", "spot", True),
    ],
)
def test_each_cloud_convention_names_its_spot_label_and_taint(
    convention: str, label: str, value: str, tainted: bool
) -> None:
    spot = pod_of("runs-fleet=9/cpu=2", spot_scheduling=convention)
    assert preferred_expressions(spot) == [{"key": label, "operator": "In", "values": [value]}]
    tolerations = spot.get("tolerations", [])
    assert bool(tolerations) is tainted
    if tainted:
        assert tolerations == [
            {"key": label, "operator": "Equal", "value": value, "effect": "NoSchedule"}
        ]
    on_demand = pod_of("runs-fleet=9/cpu=2/spot=false", spot_scheduling=convention)
    assert required_expressions(on_demand) == [
        {"key": label, "operator": "NotIn", "values": [value]}
    ]
    assert "tolerations" not in on_demand


def test_the_taint_convention_only_tolerates_the_preemptible_taint() -> None:
    spot = pod_of("runs-fleet=9/cpu=2", spot_scheduling="taint")
    assert spot["tolerations"] == [{"key": "runs-fleet.io/preemptible", "operator": "Exists"}]
    assert "affinity" not in spot
    on_demand = pod_of("runs-fleet=9/cpu=2/spot=false", spot_scheduling="taint")
    assert "tolerations" not in on_demand
    assert "affinity" not in on_demand


def test_no_spot_convention_leaves_scheduling_to_the_configured_tolerations() -> None:
    configured = {"key": "ci", "operator": "Exists", "effect": "NoSchedule"}
    pod = pod_of("runs-fleet=9/cpu=2", spot_scheduling="none", tolerations=(configured,))
    assert pod["tolerations"] == [configured]
    assert "affinity" not in pod


def test_families_and_generation_are_required_in_one_term_with_the_spot_exclusion() -> None:
    pod = pod_of("runs-fleet=9/cpu=2/family=c7g+m7g/gen=7/spot=false")
    assert required_expressions(pod) == [
        {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["c7g", "m7g"]},
        {"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": ["6"]},
        {"key": "karpenter.sh/capacity-type", "operator": "NotIn", "values": ["spot"]},
    ]


@pytest.mark.parametrize(
    ("label", "setting", "change"),
    [
        ("runs-fleet=9/family=c7g", "RUNS_FLEET_KUBE_FAMILY_LABEL", {"family_label": ""}),
        ("runs-fleet=9/gen=7", "RUNS_FLEET_KUBE_GENERATION_LABEL", {"generation_label": ""}),
    ],
)
def test_family_or_gen_without_a_node_label_is_refused_for_good(
    label: str, setting: str, change: dict[str, str]
) -> None:
    with pytest.raises(ProviderError) as caught:
        pod_of(label, **change)
    assert caught.value.retryable is False
    assert setting in str(caught.value)
    assert label in str(caught.value)


# -- isolation --------------------------------------------------------------------------


def test_the_runner_runs_unprivileged_without_api_credentials() -> None:
    pod = pod_of("runs-fleet=9/cpu=2", runner_uid=2000)
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "runs-fleet-runner"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 2000,
        "runAsGroup": 2000,
        "fsGroup": 2000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    runner = runner_container(pod)
    assert runner["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": False,
    }
    assert runner["command"] == ["runs-fleet", "k8s", "agent"]
    assert (pod["restartPolicy"], pod["terminationGracePeriodSeconds"]) == ("Never", 60)
    assert "initContainers" not in pod


def test_docker_in_docker_is_a_privileged_sidecar_listening_on_loopback_only() -> None:
    pod = pod_of("runs-fleet=9/cpu=2/disk=100", dind=True, dind_image="docker:28-dind")
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: the Job still completes
    assert sidecar["image"] == "docker:28-dind"
    assert sidecar["securityContext"]["privileged"] is True
    assert all("--host=tcp://0.0.0.0" not in arg for arg in sidecar["args"])
    assert "--host=tcp://127.0.0.1:2375" in sidecar["args"]
    assert env_of(sidecar)["DOCKER_TLS_CERTDIR"] == ""
    assert env_of(runner_container(pod))["DOCKER_HOST"] == "tcp://127.0.0.1:2375"
    (docker_data,) = [v for v in pod["volumes"] if v["name"] == "docker-data"]
    assert docker_data["emptyDir"] == {"sizeLimit": "100Gi"}
    privileged = [
        c["name"]
        for c in [*pod["containers"], *pod["initContainers"]]
        if c.get("securityContext", {}).get("privileged")
    ]
    assert privileged == ["dind"]


# -- config sources ---------------------------------------------------------------------


def test_a_cold_runner_mounts_its_configmap_and_secret_read_only() -> None:
    pod = manifests.runner_pod_spec(
        spec_for("runs-fleet=9/cpu=2"), pod_settings(), config=MountedConfig(RUNNER)
    )
    (volume,) = pod["volumes"]
    assert volume["projected"] == {
        "defaultMode": 0o440,
        "sources": [
            {"configMap": {"name": names.config_map_name(RUNNER)}},
            {"secret": {"name": names.config_secret_name(RUNNER)}},
        ],
    }
    runner = runner_container(pod)
    assert runner["volumeMounts"] == [
        {"name": volume["name"], "mountPath": "/etc/runs-fleet", "readOnly": True}
    ]
    assert env_of(runner) == {
        "RUNS_FLEET_RUNNER_ID": {"fieldRef": {"fieldPath": "metadata.name"}},
        "RUNS_FLEET_CONFIG_DIR": "/etc/runs-fleet",
    }


def test_a_pool_runner_gets_an_audience_bound_token_and_the_config_url_instead() -> None:
    pod = manifests.runner_pod_spec(
        spec_for("runs-fleet=9/cpu=2"),
        pod_settings(),
        config=ServerConfig("http://runs-fleet.runs-fleet.svc:8080"),
    )
    (volume,) = pod["volumes"]
    (source,) = volume["projected"]["sources"]
    assert source == {
        "serviceAccountToken": {
            "audience": "runs-fleet",
            "expirationSeconds": 3600,
            "path": "token",
        }
    }
    runner = runner_container(pod)
    assert runner["volumeMounts"] == [
        {"name": volume["name"], "mountPath": "/var/run/secrets/runs-fleet", "readOnly": True}
    ]
    assert env_of(runner)["RUNS_FLEET_CONFIG_URL"] == "http://runs-fleet.runs-fleet.svc:8080"
    assert pod["automountServiceAccountToken"] is False


# -- the Job ----------------------------------------------------------------------------


def test_the_runner_job_is_named_and_labelled_for_its_runner_and_job() -> None:
    job = manifests.runner_job(
        spec_for("runs-fleet=9/cpu=2/arch=arm64/pool=default"),
        RUNNER,
        pod_settings(job_ttl_s=120, max_runtime_s=3600, image_pull_secrets=("registry",)),
    )
    metadata = job["metadata"]
    assert (metadata["name"], metadata["namespace"]) == (RUNNER, "runs-fleet")
    assert metadata["labels"] == {
        "app.kubernetes.io/managed-by": "runs-fleet",
        "runs-fleet.io/component": "runner",
        "runs-fleet.io/job-id": "7001",
        "runs-fleet.io/run-id": "9",
        "runs-fleet.io/pool": "default",
        "runs-fleet.io/arch": "arm64",
        "runs-fleet.io/spot": "true",
    }
    assert metadata["annotations"] == {"runs-fleet.io/runner-name": RUNNER}
    assert job["spec"]["template"]["metadata"]["labels"] == metadata["labels"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 120
    assert job["spec"]["activeDeadlineSeconds"] == 3600 + 600
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "registry"}]


def test_a_job_without_pool_or_arch_has_no_such_labels() -> None:
    labels = manifests.runner_job(spec_for("runs-fleet=9/cpu=2"), RUNNER, pod_settings())[
        "metadata"
    ]["labels"]
    assert names.POOL not in labels
    assert names.ARCH not in labels


def test_the_job_deadline_follows_the_agents_default_maximum_runtime() -> None:
    settings = RunnerPodSettings.from_settings(
        settings_from({"RUNS_FLEET_KUBE_RUNNER_IMAGE": IMAGE})
    )
    job = manifests.runner_job(spec_for("runs-fleet=9/cpu=2"), RUNNER, settings)
    assert job["spec"]["activeDeadlineSeconds"] == 6 * 3600 + 600


def test_a_runner_job_needs_a_job() -> None:
    with pytest.raises(ValueError, match="no job_id"):
        manifests.runner_job(parse_label("runs-fleet=9/cpu=2"), RUNNER, pod_settings())


# -- network policy, pools, owners ------------------------------------------------------


def test_a_private_runner_may_reach_public_https_and_cluster_dns_only() -> None:
    policy = manifests.network_policy("runs-fleet-7001-1", {names.JOB_ID: "7001"})
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {names.JOB_ID: "7001"}}
    assert spec["policyTypes"] == ["Egress"]
    web, dns = spec["egress"]
    (block,) = web["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert set(block["ipBlock"]["except"]) == {
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
    }
    assert sorted(p["port"] for p in web["ports"]) == [80, 443]
    (peer,) = dns["to"]
    assert peer["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
    }
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]


def test_a_pool_deployment_selects_idle_members_and_restarts_its_pods() -> None:
    pool = PoolConfig(name="default", label="runs-fleet=0/cpu=4/arch=arm64")
    spec = parse_label(pool.label)
    deployment = manifests.pool_deployment(
        pool, spec, pod_settings(), replicas=3, config_url="http://runs-fleet:8080"
    )
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {
        "runs-fleet.io/pool": "default",
        "runs-fleet.io/pool-member": "true",
        "runs-fleet.io/component": "pool-runner",
    }
    template = deployment["spec"]["template"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["labels"]["runs-fleet.io/arch"] == "arm64"
    assert deployment["metadata"]["name"] == names.pool_deployment_name("default")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert template["spec"]["restartPolicy"] == "Always"
    assert env_of(runner_container(template["spec"]))["RUNS_FLEET_CONFIG_URL"] == (
        "http://runs-fleet:8080"
    )


def test_placeholders_reserve_a_runners_room_at_a_priority_that_yields() -> None:
    pool = PoolConfig(name="default", label="runs-fleet=0/cpu=4/ram=8/arch=arm64/spot=false")
    spec = parse_label(pool.label)
    settings = pod_settings(placeholder_image="registry.example/pause:3.10")
    deployment = manifests.placeholder_deployment(pool, spec, settings, replicas=2)
    pod = deployment["spec"]["template"]["spec"]
    runner_pod = manifests.runner_pod_spec(spec, settings, config=ServerConfig("http://x"))
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/pause:3.10"
    assert (
        container["resources"]["requests"] == runner_container(runner_pod)["resources"]["requests"]
    )
    assert pod["nodeSelector"] == runner_pod["nodeSelector"]
    assert pod["affinity"] == runner_pod["affinity"]
    assert pod["priorityClassName"] == "runs-fleet-placeholder"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["runs-fleet.io/component"] == "placeholder"
    assert deployment["metadata"]["name"] != names.pool_deployment_name("default")
    priority = manifests.placeholder_priority_class(settings)
    assert (priority["value"], priority["preemptionPolicy"], priority["globalDefault"]) == (
        -10,
        "Never",
        False,
    )
    assert priority["metadata"]["name"] == "runs-fleet-placeholder"


def test_an_owner_reference_names_the_owner_without_controlling_it() -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": RUNNER, "uid": "0b5e0f3c-1111-2222-3333-444455556666"},
    }
    assert manifests.owner_reference(job) == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": RUNNER,
        "uid": "0b5e0f3c-1111-2222-3333-444455556666",
        "blockOwnerDeletion": True,
        "controller": False,
    }


# -- settings ---------------------------------------------------------------------------


def test_settings_from_the_environment() -> None:
    settings = RunnerPodSettings.from_settings(
        settings_from(
            {
                "RUNS_FLEET_KUBE_RUNNER_IMAGE": IMAGE,
                "RUNS_FLEET_KUBE_NAMESPACE": "ci",
                "RUNS_FLEET_KUBE_NODE_SELECTOR": '{"workload": "ci"}',
                "RUNS_FLEET_KUBE_TOLERATIONS": '[{"key": "ci", "operator": "Exists"}]',
                "RUNS_FLEET_KUBE_SPOT_SCHEDULING": "gke",
                "RUNS_FLEET_KUBE_DIND": "true",
                "RUNS_FLEET_KUBE_IMAGE_PULL_SECRETS": "registry,mirror",
                "RUNS_FLEET_KUBE_JOB_TTL_S": "60",
                "RUNS_FLEET_AGENT_MAX_RUNTIME_S": "7200",
            }
        )
    )
    assert (settings.image, settings.namespace, settings.spot_scheduling) == (IMAGE, "ci", "gke")
    assert dict(settings.node_selector) == {"workload": "ci"}
    assert [dict(t) for t in settings.tolerations] == [{"key": "ci", "operator": "Exists"}]
    assert settings.dind is True
    assert settings.image_pull_secrets == ("registry", "mirror")
    assert (settings.job_ttl_s, settings.max_runtime_s) == (60, 7200.0)
    assert (settings.service_account, settings.runner_uid) == ("runs-fleet-runner", 1001)


def test_the_runner_image_is_required_in_kubernetes_mode() -> None:
    definitions = {s.name: s for s in (*CORE_SETTINGS, *manifests.SETTINGS)}
    _, problems = inspect_settings({"RUNS_FLEET_MODE": "k8s"}, definitions)
    assert any(p.startswith("RUNS_FLEET_KUBE_RUNNER_IMAGE is required") for p in problems)
    with pytest.raises(ConfigError, match="RUNS_FLEET_KUBE_RUNNER_IMAGE is not set"):
        RunnerPodSettings.from_settings(settings_from({}))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RUNS_FLEET_KUBE_TOLERATIONS": "[{"}, "RUNS_FLEET_KUBE_TOLERATIONS: not JSON"),
        ({"RUNS_FLEET_KUBE_TOLERATIONS": '{"key": "ci"}'}, "must be a JSON list of tolerations"),
        (
            {"RUNS_FLEET_KUBE_TOLERATIONS": '[{"key": "ci", "operator": "Maybe"}]'},
            "entry 0: operator must be Equal or Exists",
        ),
        (
            {"RUNS_FLEET_KUBE_TOLERATIONS": '[{"key": "ci", "effect": "NoSchedule", "x": 1}]'},
            "entry 0: unknown field(s) x",
        ),
        (
            {"RUNS_FLEET_KUBE_TOLERATIONS": '[{"operator": "Exists", "value": "v"}]'},
            "operator Exists takes no value",
        ),
        (
            {"RUNS_FLEET_KUBE_TOLERATIONS": '[{"key": "a", "tolerationSeconds": 5}]'},
            "tolerationSeconds must be a whole number and needs effect NoExecute",
        ),
        ({"RUNS_FLEET_KUBE_NODE_SELECTOR": '{"bad key!": "x"}'}, "'bad key!' is not a label key"),
        (
            {"RUNS_FLEET_KUBE_NODE_SELECTOR": '{"workload": "not ok"}'},
            "the value 'not ok' of 'workload' is not a label value",
        ),
        ({"RUNS_FLEET_KUBE_FAMILY_LABEL": "no spaces"}, "RUNS_FLEET_KUBE_FAMILY_LABEL"),
        ({"RUNS_FLEET_KUBE_IMAGE_PULL_SECRETS": "Upper"}, "'Upper' is not a Secret name"),
        ({"RUNS_FLEET_KUBE_SERVICE_ACCOUNT": "CI"}, "'CI' is not a service account name"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting_and_the_rule(
    env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        RunnerPodSettings.from_settings(
            settings_from({"RUNS_FLEET_KUBE_RUNNER_IMAGE": IMAGE, **env})
        )
    assert expected in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        RunnerPodSettings.from_settings(
            settings_from(
                {
                    "RUNS_FLEET_KUBE_TOLERATIONS": "[1]",
                    "RUNS_FLEET_KUBE_NODE_SELECTOR": '{"a b": "c"}',
                }
            )
        )
    assert len(caught.value.problems) == 3  # no image, a bad toleration, a bad selector


def test_a_preview_may_stand_in_an_image() -> None:
    settings = RunnerPodSettings.from_settings(settings_from({}), default_image="example:1")
    assert settings.image == "example:1"
