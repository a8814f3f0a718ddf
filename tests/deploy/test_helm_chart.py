"""Offline checks of the Helm chart ``charts/runs-fleet`` with the real helm binary.

- ``helm lint --strict`` on every example values file;
- ``helm template`` of the examples and of a matrix of mode x feature switches, every
  document checked with ``kubernetes-validate --strict`` for the oldest and the newest
  Kubernetes version the chart claims (CRDs it has no schema for are checked by hand);
- wrong values fail with the schema's message;
- the environment the chart gives the orchestrator is read by the real settings loader:
  every ``RUNS_FLEET_*`` variable is a setting, and every setting the mode requires is set;
- RBAC per mode, security contexts, probes, graceful shutdown, secrets never in plain text.
"""

from __future__ import annotations

import ast
import functools
import itertools
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from runs_fleet_core.plugins import PluginManager
from runs_fleet_core.settings import ENV_ONLY_VARS
from runs_fleet_core.wiring import inspect_deployment, setting_definitions
from tests.deploy.helm_tool import CHART, REPO, render, run_helm

EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
EXAMPLE_NAMES = [p.stem for p in EXAMPLES]
NAMESPACE = "ci-runners"
SECRETS_DIR = "/var/run/secrets/runs-fleet"
# Variables the chart sets that are not runs-fleet settings but read by the code's libraries.
NON_SETTING_ENV = {"AWS_REGION"}
CRD_KINDS = {
    ("karpenter.sh/v1", "NodePool"),
    ("karpenter.k8s.aws/v1", "EC2NodeClass"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
SENTINEL_KEY = "-----BEGIN RSA PRIVATE KEY-----\nSENTINELKEY0123\n-----END RSA PRIVATE KEY-----"
SENTINEL_WEBHOOK = "SENTINELWEBHOOK4567"
SENTINEL_ADMIN = "SENTINELADMIN89"


# --------------------------------------------------------------------------- helpers


def _kube_versions() -> list[str]:
    """Oldest and newest Kubernetes versions of the chart's kubeVersion that
    kubernetes-validate has schemas for."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    spec = SpecifierSet(chart["kubeVersion"].replace("-0", ""))
    claimed = [v for v in all_versions() if Version(v) in spec]
    assert claimed, f"kubernetes-validate has no schema within {chart['kubeVersion']}"
    return [claimed[0], claimed[-1]]


KUBE_VERSIONS = _kube_versions()


def _overlay(tmp_dir: Path, name: str, values: dict[str, Any]) -> Path:
    path = tmp_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


@functools.cache
def _overlay_dir() -> Path:
    path = REPO / ".cache" / "tools" / "helm-test-values"
    path.mkdir(parents=True, exist_ok=True)
    return path


HYBRID_BASE: dict[str, Any] = {
    "mode": "ec2",
    "aws": {
        "region": "eu-west-1",
        "privateSubnetIds": ["subnet-0a1b2c3d4e5f60718"],
        "securityGroupId": "sg-0123456789abcdef0",
        "instanceProfileArn": "arn:aws:iam::123456789012:instance-profile/runner",
        "queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo",
    },
    "orchestrator": {"publicUrl": "https://runs-fleet.example.com"},
}
K8S_BASE: dict[str, Any] = {
    "mode": "k8s",
    "orchestrator": {"publicUrl": "https://runs-fleet.example.com"},
    "runner": {"image": "ghcr.io/example/runner:1.0"},
}
INLINE_GITHUB = {"appId": 4242, "privateKey": SENTINEL_KEY, "webhookSecret": SENTINEL_WEBHOOK}
EXISTING_GITHUB = {"appId": "4343", "existingSecret": "gh-app"}
KARPENTER_ON = {
    "enabled": True,
    "nodeClass": {
        "role": "KarpenterNodeRole-c1",
        "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "c1"}}],
        "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "c1"}}],
    },
}


def _merge(base: dict[str, Any], *overlays: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for overlay in overlays:
        for key, value in overlay.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _merge(out[key], value)
            else:
                out[key] = value
    return out


def _matrix() -> dict[str, dict[str, Any]]:
    """Mode x feature switches, as full values overlays."""
    scenarios: dict[str, dict[str, Any]] = {}
    # Every switch is met on and off, and with the others on and off; not the full product
    # (each render is validated twice, which is what takes the time).
    for github, inserver, switches in itertools.product(
        ("inline", "existing"), (False, True), (False, True)
    ):
        ingress = monitor = admin = switches
        where = "insrv" if inserver else "sched"
        on = int(switches)
        name = f"ec2-{github}-{where}-ing{on}-sm{on}-adm{on}"
        scenarios[name] = _merge(
            HYBRID_BASE,
            {
                "github": INLINE_GITHUB if github == "inline" else EXISTING_GITHUB,
                "scheduler": {"inServer": inserver},
                "ingress": {"enabled": ingress, "host": "runs-fleet.example.com"},
                "metrics": {"serviceMonitor": {"enabled": monitor}},
                "orchestrator": {"adminToken": {"value": SENTINEL_ADMIN if admin else ""}},
                # valkey.enabled is ignored in ec2 mode and must render nothing.
                "valkey": {"enabled": ingress},
            },
        )
    for valkey, karpenter, placeholders in itertools.product(
        ("chart", "external", "existing"), (False, True), (False, True)
    ):
        valkey_values = {
            "chart": {"enabled": True},
            "external": {"externalUrl": "rediss://:pw@valkey.example.com:6380/0"},
            "existing": {"existingSecret": "valkey-conn"},
        }[valkey]
        inserver = karpenter != placeholders
        github = "existing" if valkey == "existing" else "inline"
        scenarios[f"k8s-{valkey}-karp{int(karpenter)}-ph{int(placeholders)}"] = _merge(
            K8S_BASE,
            {
                "valkey": valkey_values,
                "karpenter": KARPENTER_ON if karpenter else {"enabled": False},
                "warmPool": {"placeholders": placeholders},
                "scheduler": {"inServer": inserver},
                "github": INLINE_GITHUB if github == "inline" else EXISTING_GITHUB,
                "ingress": {"enabled": placeholders, "host": "runs-fleet.example.com"},
                "metrics": {"serviceMonitor": {"enabled": karpenter}},
                "kubernetes": {"stateBackend": "valkey" if inserver else "configmap"},
                "runner": {"dind": {"enabled": karpenter}},
                "orchestrator": {"adminToken": {"value": SENTINEL_ADMIN if karpenter else ""}},
            },
        )
    scenarios["ec2-single-replica"] = _merge(
        HYBRID_BASE,
        {"github": INLINE_GITHUB, "orchestrator": {"replicas": 1}, "scheduler": {"replicas": 1}},
    )
    return scenarios


MATRIX = _matrix()


@functools.cache
def _render_example(name: str) -> list[dict]:
    return render([CHART / "examples" / f"{name}.yaml"], namespace=NAMESPACE)


@functools.cache
def _render_scenario(name: str) -> list[dict]:
    return render([_overlay(_overlay_dir(), name, MATRIX[name])], namespace=NAMESPACE)


def _docs(kind: str | None = None, *, example: str | None = None, scenario: str | None = None):
    docs = _render_example(example) if example else _render_scenario(scenario or "")
    return [d for d in docs if kind is None or d["kind"] == kind]


def _one(docs: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def _deployments(docs: list[dict]) -> dict[str, dict]:
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in docs
        if d["kind"] == "Deployment"
    }


ALL_RENDERS = [("example", n) for n in EXAMPLE_NAMES] + [("scenario", n) for n in MATRIX]


def _rendered(which: tuple[str, str]) -> list[dict]:
    kind, name = which
    return _render_example(name) if kind == "example" else _render_scenario(name)


def _values(which: tuple[str, str]) -> dict[str, Any]:
    kind, name = which
    if kind == "example":
        defaults = yaml.safe_load((CHART / "values.yaml").read_text())
        return _merge(defaults, yaml.safe_load((CHART / "examples" / f"{name}.yaml").read_text()))
    return _merge(yaml.safe_load((CHART / "values.yaml").read_text()), MATRIX[name])


# --------------------------------------------------------------------------- lint, render


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_lint_strict_passes_for_each_example(example: str) -> None:
    proc = run_helm(
        "lint", "--strict", str(CHART), "-f", str(CHART / "examples" / f"{example}.yaml")
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_every_required_example_exists() -> None:
    assert set(EXAMPLE_NAMES) >= {
        "hybrid-minimal",
        "hybrid-full",
        "k8s-karpenter",
        "k8s-existing-nodes",
    }


def test_chart_claims_a_version_range_that_renders_at_both_ends() -> None:
    for version in KUBE_VERSIONS:
        docs = render([CHART / "examples" / "hybrid-minimal.yaml"], kube_version=version)
        assert any(d["kind"] == "Deployment" for d in docs)
    too_old = render(
        [CHART / "examples" / "hybrid-minimal.yaml"], kube_version="1.27.0", expect_fail=True
    )
    assert "kubeVersion" in too_old or "incompatible" in too_old


@pytest.mark.parametrize("which", ALL_RENDERS, ids=lambda w: w[1])
def test_every_document_passes_kubernetes_validate_strict(which: tuple[str, str]) -> None:
    docs = _rendered(which)
    assert docs
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_KINDS:
            _check_crd(doc)
            continue
        for version in KUBE_VERSIONS:
            problem = _validate(json.dumps(doc, sort_keys=True), version)
            assert problem is None, (
                f"{doc['kind']}/{doc['metadata']['name']} @ {version}: {problem}"
            )


@functools.cache
def _validate(doc_json: str, version: str) -> str | None:
    """kubernetes-validate --strict of one document, once per distinct document."""
    try:
        kubernetes_validate.validate(json.loads(doc_json), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return exc.message
    return None


def _check_crd(doc: dict) -> None:
    """The fields the Karpenter and Prometheus operator CRDs require."""
    meta = doc["metadata"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]) and len(meta["name"]) <= 63
    spec = doc["spec"]
    if doc["kind"] == "NodePool":
        template = spec["template"]["spec"]
        ref = template["nodeClassRef"]
        assert ref == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": ref["name"]}
        assert template["requirements"], "a NodePool needs requirements"
        for req in template["requirements"]:
            assert req["operator"] in {"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"}
            assert set(req) <= {"key", "operator", "values", "minValues"}
        for taint in template.get("taints", []):
            assert taint["effect"] in {"NoSchedule", "PreferNoSchedule", "NoExecute"}
        assert spec["disruption"]["consolidationPolicy"] in {
            "WhenEmpty",
            "WhenEmptyOrUnderutilized",
        }
        assert re.fullmatch(r"(\d+(s|m|h))+|Never", spec["disruption"]["consolidateAfter"])
    elif doc["kind"] == "EC2NodeClass":
        assert spec["role"] or spec.get("instanceProfile")
        for field in ("amiSelectorTerms", "subnetSelectorTerms", "securityGroupSelectorTerms"):
            assert spec[field], f"EC2NodeClass needs {field}"
        assert spec["metadataOptions"]["httpTokens"] == "required"
        assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
        assert all(b["ebs"]["encrypted"] for b in spec["blockDeviceMappings"])
    elif doc["kind"] == "ServiceMonitor":
        assert spec["selector"]["matchLabels"]
        assert spec["endpoints"] and all(
            e["port"] and e["path"] == "/metrics" for e in spec["endpoints"]
        )


def test_crd_kinds_only_when_asked_and_only_in_k8s_mode() -> None:
    karpenter_in_ec2 = _merge(
        MATRIX["ec2-inline-sched-ing0-sm0-adm0"],
        {"karpenter": KARPENTER_ON, "warmPool": {"placeholders": True}},
    )
    docs = render([_overlay(_overlay_dir(), "ec2-with-karpenter", karpenter_in_ec2)])
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"NodePool", "EC2NodeClass", "PriorityClass", "StatefulSet"}
    assert {d["kind"] for d in _docs(scenario="k8s-chart-karp1-ph1")} >= {
        "NodePool",
        "EC2NodeClass",
        "PriorityClass",
        "StatefulSet",
        "ServiceMonitor",
        "Ingress",
    }
    assert not {"NodePool", "EC2NodeClass", "PriorityClass"} & {
        d["kind"] for d in _docs(scenario="k8s-chart-karp0-ph0")
    }


# --------------------------------------------------------------------------- schema


FAILURES = {
    "no public url": (
        _merge(HYBRID_BASE, {"github": INLINE_GITHUB, "orchestrator": {"publicUrl": ""}}),
        "orchestrator.publicUrl is required",
    ),
    "public url without scheme": (
        _merge(
            HYBRID_BASE, {"github": INLINE_GITHUB, "orchestrator": {"publicUrl": "example.com"}}
        ),
        "orchestrator.publicUrl is required",
    ),
    "no github credentials": (
        _merge(HYBRID_BASE, {"github": {"appId": 1, "privateKey": "k"}}),
        "github needs existingSecret, or privateKey and webhookSecret",
    ),
    "no github app id": (
        _merge(HYBRID_BASE, {"github": {"existingSecret": "gh-app"}}),
        "github.appId is required",
    ),
    "ec2 without region": (
        _merge(HYBRID_BASE, {"github": EXISTING_GITHUB, "aws": {"region": ""}}),
        "mode ec2 requires aws.region",
    ),
    "ec2 without queue url": (
        _merge(HYBRID_BASE, {"github": EXISTING_GITHUB, "aws": {"queueUrl": ""}}),
        "mode ec2 requires aws.queueUrl",
    ),
    "ec2 without subnets": (
        _merge(HYBRID_BASE, {"github": EXISTING_GITHUB, "aws": {"privateSubnetIds": []}}),
        "mode ec2 requires aws.privateSubnetIds",
    ),
    "ec2 without security group": (
        _merge(HYBRID_BASE, {"github": EXISTING_GITHUB, "aws": {"securityGroupId": ""}}),
        "mode ec2 requires aws.securityGroupId",
    ),
    "ec2 without instance profile": (
        _merge(HYBRID_BASE, {"github": EXISTING_GITHUB, "aws": {"instanceProfileArn": ""}}),
        "mode ec2 requires aws.instanceProfileArn",
    ),
    "k8s without valkey": (
        _merge(K8S_BASE, {"github": EXISTING_GITHUB}),
        "mode k8s requires Valkey",
    ),
    "k8s without runner image": (
        _merge(
            K8S_BASE,
            {"github": EXISTING_GITHUB, "valkey": {"enabled": True}, "runner": {"image": ""}},
        ),
        "mode k8s requires runner.image",
    ),
    "karpenter without node class": (
        _merge(
            K8S_BASE,
            {
                "github": EXISTING_GITHUB,
                "valkey": {"enabled": True},
                "karpenter": {"enabled": True},
            },
        ),
        "karpenter.enabled requires karpenter.nodeClass.role",
    ),
    "unknown mode": (
        _merge(HYBRID_BASE, {"github": EXISTING_GITHUB, "mode": "lambda"}),
        "value must be one of 'ec2', 'k8s'",
    ),
    "misspelt key": (
        _merge(HYBRID_BASE, {"github": EXISTING_GITHUB, "aws": {"queueURL": "x"}}),
        "queueURL",
    ),
    "bad spot scheduling": (
        _merge(
            K8S_BASE,
            {
                "github": EXISTING_GITHUB,
                "valkey": {"enabled": True},
                "runner": {"spotScheduling": "aws"},
            },
        ),
        "/runner/spotScheduling",
    ),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_wrong_values_fail_with_the_schema_message(case: str, tmp_path: Path) -> None:
    values, message = FAILURES[case]
    error = render([_overlay(tmp_path, "bad", values)], expect_fail=True)
    assert "values don't meet the specifications of the schema" in error, error
    assert message in error, error


def test_a_mode_only_requires_its_own_values(tmp_path: Path) -> None:
    """k8s mode needs no aws.*, ec2 mode needs neither Valkey nor a runner image."""
    k8s = _merge(K8S_BASE, {"github": EXISTING_GITHUB, "valkey": {"enabled": True}})
    assert render([_overlay(tmp_path, "k8s", k8s)])
    assert render([_overlay(tmp_path, "ec2", _merge(HYBRID_BASE, {"github": EXISTING_GITHUB}))])


def test_the_hybrid_plans_value_names_are_accepted(tmp_path: Path) -> None:
    """Keys of the hybrid plan that the code has no setting for are accepted and ignored."""
    values = _merge(
        HYBRID_BASE,
        {
            "github": {
                "appId": "123",
                "privateKey": "k",
                "webhookSecret": "w",
                "existingSecret": "",
            },
            "aws": {
                "vpcId": "vpc-1",
                "publicSubnetIds": [],
                "poolQueueUrl": "",
                "housekeepingQueueUrl": "",
                "cacheBucket": "",
                "configBucket": "",
                "runnerImage": "",
            },
            "orchestrator": {"image": {"repository": "runs-fleet", "tag": "latest"}},
            "serviceAccount": {
                "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/r"}
            },
            "valkey": {"enabled": False},
        },
    )
    docs = render([_overlay(tmp_path, "plan", values)])
    data = _one(docs, "ConfigMap")["data"]
    assert not {
        "RUNS_FLEET_VPC_ID",
        "RUNS_FLEET_PUBLIC_SUBNET_IDS",
        "RUNS_FLEET_RUNNER_IMAGE",
    } & set(data)


# --------------------------------------------------------------------------- environment


def _container_env(docs: list[dict], deployment: dict, files: dict[str, str]) -> dict[str, str]:
    """The environment one orchestrator container sees, with the mounted secret files
    redirected to ``files`` (path -> local copy) the test wrote."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        cm = _one(docs, "ConfigMap", source["configMapRef"]["name"])
        env.update(cm["data"])
    for item in container.get("env", []):
        if "valueFrom" in item:  # only extraEnv may take values from elsewhere
            env[item["name"]] = "stand-in"
        else:
            env[item["name"]] = files.get(item["value"], item["value"])
    return env


def _secret_files(docs: list[dict], deployment: dict, tmp_path: Path) -> dict[str, str]:
    """Write what the projected secret volume would hold; existing Secrets get stand-ins."""
    import base64

    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "secrets")[
        "mountPath"
    ]
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    files = {}
    for source in volume["projected"]["sources"]:
        secret = secrets.get(source["secret"]["name"])
        for item in source["secret"]["items"]:
            if secret is not None:
                value = base64.b64decode(secret["data"][item["key"]]).decode()
            elif item["path"] == "valkey/url":
                value = "redis://:pw@valkey:6379/0"
            else:
                value = "stand-in"
            local = tmp_path / item["path"].replace("/", "__")
            local.write_text(value + "\n")
            files[f"{mount}/{item['path']}"] = str(local)
    return files


@pytest.fixture(scope="module")
def definitions() -> dict:
    return setting_definitions(PluginManager())


@pytest.mark.parametrize("which", ALL_RENDERS, ids=lambda w: w[1])
def test_environment_is_exactly_settings_the_code_reads(
    which: tuple[str, str], definitions: dict, tmp_path: Path
) -> None:
    docs = _rendered(which)
    values = _values(which)
    mode = values["mode"]
    secret_file_vars = {f"{n}_FILE" for n, s in definitions.items() if s.secret}
    for component, deployment in _deployments(docs).items():
        files = _secret_files(docs, deployment, tmp_path)
        env = _container_env(docs, deployment, files)
        unknown = {
            name
            for name in env
            if name not in definitions
            and name not in secret_file_vars
            and name not in ENV_ONLY_VARS
            and name not in NON_SETTING_ENV
        }
        assert not unknown, f"{component}: not settings the code reads: {sorted(unknown)}"
        for name, setting in definitions.items():
            if mode in setting.required_in:
                assert env.get(name) or env.get(f"{name}_FILE"), f"{component}: {name} unset"
            if setting.secret:
                assert name not in env, f"{component}: secret {name} given as a plain value"
        # The server itself needs these in every mode it is deployed in.
        assert env["RUNS_FLEET_PUBLIC_URL"].startswith(("http://", "https://"))
        assert env["RUNS_FLEET_GITHUB_WEBHOOK_SECRET_FILE"]
        assert env["RUNS_FLEET_MODE"] == mode
        if mode == "k8s":
            assert env["RUNS_FLEET_KUBE_NAMESPACE"] == NAMESPACE
            assert "AWS_REGION" not in env and "RUNS_FLEET_QUEUE_URL" not in env
        else:
            assert env["AWS_REGION"] == values["aws"]["region"]
            assert not any(n.startswith("RUNS_FLEET_KUBE_") for n in env)
            assert "RUNS_FLEET_VALKEY_URL_FILE" not in env
        # The real settings loader: no problem, no warning about unknown variables.
        settings, problems = inspect_deployment(env, PluginManager())
        assert problems == [], f"{component}: {problems}"
        assert settings.warnings == (), f"{component}: {settings.warnings}"
        assert settings.mode == mode


def test_settings_reach_the_code_with_their_values(definitions: dict, tmp_path: Path) -> None:
    docs = _render_example("hybrid-full")
    deployment = _deployments(docs)["server"]
    env = _container_env(docs, deployment, _secret_files(docs, deployment, tmp_path))
    settings, problems = inspect_deployment(env, PluginManager())
    assert problems == []
    assert settings["RUNS_FLEET_PRIVATE_SUBNET_IDS"] == [
        "subnet-0a1b2c3d4e5f60718",
        "subnet-0f1e2d3c4b5a69788",
        "subnet-0123abcd4567ef890",
    ]
    assert settings["RUNS_FLEET_EC2_TAGS"] == {"team": "platform", "cost-center": "ci"}
    assert settings["RUNS_FLEET_PRESETS"]["big-arm"] == "cpu=16/ram=64/arch=arm64"
    assert settings["RUNS_FLEET_SPOT_ENABLED"] is True
    assert settings["RUNS_FLEET_GITHUB_APP_ID"] == 123456
    assert settings["RUNS_FLEET_MAX_ATTEMPTS"] == 5
    assert settings.sources["RUNS_FLEET_GITHUB_APP_PRIVATE_KEY"].endswith("_FILE")

    docs = _render_example("k8s-karpenter")
    deployment = _deployments(docs)["server"]
    env = _container_env(docs, deployment, _secret_files(docs, deployment, tmp_path))
    settings, problems = inspect_deployment(env, PluginManager())
    assert problems == []
    assert settings["RUNS_FLEET_KUBE_NODE_SELECTOR"] == {"runs-fleet.io/node": "runner"}
    assert json.loads(settings["RUNS_FLEET_KUBE_TOLERATIONS"]) == [
        {
            "effect": "NoSchedule",
            "key": "runs-fleet.io/runner",
            "operator": "Equal",
            "value": "true",
        }
    ]
    assert settings["RUNS_FLEET_VALKEY_URL"].startswith("redis://:")
    assert settings["RUNS_FLEET_KUBE_POOL_PLACEHOLDERS"] is True
    priority = _one(docs, "PriorityClass")
    assert settings["RUNS_FLEET_KUBE_PLACEHOLDER_PRIORITY_CLASS"] == priority["metadata"]["name"]
    assert priority["value"] < 0 and priority["preemptionPolicy"] == "Never"
    assert (
        settings["RUNS_FLEET_KUBE_SERVICE_ACCOUNT"]
        == _one(docs, "ServiceAccount", "-runner")["metadata"]["name"]
    )


# --------------------------------------------------------------------------- RBAC


def _plugin_api_calls() -> set[tuple[str, str]]:
    """(resource, verb) of every Kubernetes API method the k8s plugin calls."""
    verbs = {
        "create": "create",
        "read": "get",
        "list": "list",
        "patch": "patch",
        "replace": "update",
        "delete": "delete",
        "delete_collection": "deletecollection",
    }
    resources = {
        "job": "jobs",
        "pod": "pods",
        "deployment": "deployments",
        "deployment_scale": "deployments/scale",
        "config_map": "configmaps",
        "secret": "secrets",
        "network_policy": "networkpolicies",
        "lease": "leases",
        "priority_class": "priorityclasses",
        "token_review": "tokenreviews",
    }
    pattern = re.compile(
        r"^(create|read|list|patch|replace|delete_collection|delete)_(namespaced_)?("
        + "|".join(sorted(resources, key=len, reverse=True))
        + r")$"
    )
    calls = set()
    src = REPO / "plugins" / "k8s" / "src" / "runs_fleet_k8s"
    for path in src.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and (m := pattern.match(node.attr)):
                calls.add((resources[m.group(3)], verbs[m.group(1)]))
    return calls


def _rules(doc: dict) -> set[tuple[str, str]]:
    return {(r, v) for rule in doc["rules"] for r in rule["resources"] for v in rule["verbs"]}


@pytest.mark.parametrize(
    "name", [n for n in MATRIX if n.startswith("ec2")] + ["hybrid-full", "hybrid-minimal"]
)
def test_ec2_mode_has_no_kubernetes_rights(name: str) -> None:
    docs = _render_example(name) if name.startswith("hybrid") else _render_scenario(name)
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    sa = _one(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    for deployment in _deployments(docs).values():
        assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    "name", [n for n in MATRIX if n.startswith("k8s")] + ["k8s-karpenter", "k8s-existing-nodes"]
)
def test_k8s_mode_rbac_is_what_the_plugin_calls(name: str) -> None:
    docs = _render_example(name) if name in EXAMPLE_NAMES else _render_scenario(name)
    role = _one(docs, "Role")
    cluster_role = _one(docs, "ClusterRole")
    assert role["metadata"]["namespace"] == NAMESPACE
    granted = _rules(role) | _rules(cluster_role)
    needed = _plugin_api_calls()
    placeholders = any(d["kind"] == "PriorityClass" for d in docs)
    if not placeholders:
        needed.discard(("priorityclasses", "create"))
    assert needed <= granted, f"missing: {sorted(needed - granted)}"
    # Exactly the resources the plugin uses, namespaced ones in the Role only.
    assert {r for r, _ in _rules(role)} == {r for r, _ in needed} - {
        "tokenreviews",
        "priorityclasses",
    }
    assert {r for r, _ in _rules(cluster_role)} == {"tokenreviews"} | (
        {"priorityclasses"} if placeholders else set()
    )
    # Nothing beyond the documented verbs (operations.md "Kubernetes mode").
    documented = {
        "jobs": {"create", "get", "list", "patch"},
        "pods": {"get", "list", "patch", "delete", "deletecollection"},
        "deployments": {"create", "get", "list", "patch", "update"},
        "deployments/scale": {"create", "get", "list", "patch", "update"},
        "configmaps": {"create", "get", "list", "update", "patch", "delete"},
        "secrets": {"create", "get", "list", "update", "patch", "delete"},
        "networkpolicies": {"create", "patch", "delete"},
        "leases": {"get", "create", "update", "delete"},
        "tokenreviews": {"create"},
        "priorityclasses": {"create"},
    }
    for resource, verb in granted:
        assert verb in documented[resource], (resource, verb)
    assert "*" not in json.dumps(role["rules"]) and "*" not in json.dumps(cluster_role["rules"])
    for binding_kind, role_doc in (("RoleBinding", role), ("ClusterRoleBinding", cluster_role)):
        binding = _one(docs, binding_kind)
        assert binding["roleRef"]["name"] == role_doc["metadata"]["name"]
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": _deployments(docs)["server"]["spec"]["template"]["spec"][
                    "serviceAccountName"
                ],
                "namespace": NAMESPACE,
            }
        ]
    runner_sa = _one(docs, "ServiceAccount", "-runner")
    assert runner_sa["automountServiceAccountToken"] is False
    assert not any(
        s["name"] == runner_sa["metadata"]["name"]
        for d in docs
        if d["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        for s in d["subjects"]
    )


# --------------------------------------------------------------------------- workloads


@pytest.mark.parametrize("which", ALL_RENDERS, ids=lambda w: w[1])
def test_orchestrator_pods_are_hardened_and_shut_down_gracefully(which: tuple[str, str]) -> None:
    docs = _rendered(which)
    values = _values(which)
    deployments = _deployments(docs)
    server = deployments["server"]
    in_server = values["scheduler"]["inServer"]
    args = server["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["serve", "--listen", "0.0.0.0:8080"]
    assert args[3] == ("--scheduler" if in_server else "--no-scheduler")
    if in_server:
        assert "scheduler" not in deployments
    else:
        scheduler = deployments["scheduler"]
        assert scheduler["spec"]["template"]["spec"]["containers"][0]["args"] == ["scheduler"]
        assert scheduler["spec"]["replicas"] == values["scheduler"]["replicas"]
    assert server["spec"]["replicas"] == values["orchestrator"]["replicas"]
    shutdown_delay = values["orchestrator"]["shutdownDelaySeconds"]
    for component, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert {"checksum/config", "checksum/secret"} <= set(annotations)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["enableServiceLinks"] is False
        # SIGTERM: shutdown delay, then up to 20 s of requests in flight, and GitHub gives a
        # webhook delivery 10 s: the kubelet must wait longer than all of it.
        assert pod["terminationGracePeriodSeconds"] > shutdown_delay + 20 + 10
        (container,) = pod["containers"]
        assert container["command"] == ["runs-fleet"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["runAsNonRoot"] is True
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert volumes[mounts[SECRETS_DIR]]["projected"]
        if component == "server":
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports == {"http": 8080}
            assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
            assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    configmap = _one(docs, "ConfigMap")
    assert float(configmap["data"]["RUNS_FLEET_SHUTDOWN_DELAY_S"]) == shutdown_delay > 0

    service = _one(docs, "Service", "runs-fleet")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == server["spec"]["selector"]["matchLabels"]

    pdbs = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in docs
        if d["kind"] == "PodDisruptionBudget"
    }
    for component, deployment in deployments.items():
        if deployment["spec"]["replicas"] > 1:
            assert pdbs[component]["spec"]["minAvailable"] == 1
            assert pdbs[component]["spec"]["selector"] == deployment["spec"]["selector"]
        else:
            assert component not in pdbs


def test_scheduler_runs_in_its_own_deployment_by_default() -> None:
    docs = _render_example("hybrid-minimal")
    deployments = _deployments(docs)
    assert deployments["scheduler"]["spec"]["replicas"] == 2
    assert deployments["server"]["spec"]["replicas"] == 2
    assert (
        "--no-scheduler"
        in deployments["server"]["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert "scheduler" not in _deployments(_render_example("k8s-existing-nodes"))


def test_single_replica_gets_no_disruption_budget() -> None:
    docs = _render_scenario("ec2-single-replica")
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]


def test_secret_values_only_in_secrets() -> None:
    for name in ("ec2-inline-sched-ing1-sm1-adm1", "k8s-chart-karp0-ph0"):
        docs = _render_scenario(name)
        for doc in docs:
            text = yaml.safe_dump(doc)
            if doc["kind"] == "Secret":
                continue
            for sentinel in (SENTINEL_WEBHOOK, "SENTINELKEY0123", SENTINEL_ADMIN):
                assert sentinel not in text, (
                    f"{sentinel} in {doc['kind']}/{doc['metadata']['name']}"
                )
        secrets = "".join(yaml.safe_dump(d) for d in docs if d["kind"] == "Secret")
        assert "SENTINEL" not in secrets  # base64-encoded, never in clear
    docs = _render_scenario("k8s-chart-karp0-ph0")
    cm = _one(docs, "ConfigMap")
    assert not any("redis://" in v or "VALKEY_URL" in k for k, v in cm["data"].items())


def test_existing_secret_renders_no_github_secret() -> None:
    docs = _render_scenario("ec2-existing-sched-ing0-sm0-adm0")
    assert not [d for d in docs if d["kind"] == "Secret"]
    pod = _deployments(docs)["server"]["spec"]["template"]["spec"]
    source = pod["volumes"][1]["projected"]["sources"][0]["secret"]
    assert source["name"] == "gh-app"
    assert [i["key"] for i in source["items"]] == ["private-key", "webhook-secret"]
    assert not any("valueFrom" in e for e in pod["containers"][0]["env"])


def test_chart_valkey_is_persistent_authenticated_and_fenced() -> None:
    docs = _render_scenario("k8s-chart-karp0-ph0")
    sts = _one(docs, "StatefulSet", "-valkey")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--dir") + 1] == "/data"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/data"}
    service = _one(docs, "Service", "-valkey")
    assert service["spec"]["ports"][0]["port"] == 6379
    policy = _one(docs, "NetworkPolicy", "-valkey")
    assert policy["spec"]["podSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    secret = _one(docs, "Secret", "-valkey")
    assert {"valkey-url", "valkey-password", "valkey-auth.conf"} <= set(secret["data"])
    # No chart Valkey when an external one is named.
    for name in ("k8s-external-karp0-ph0", "k8s-existing-karp0-ph0"):
        assert not [d for d in _docs(scenario=name) if d["kind"] == "StatefulSet"]


def test_ingress_exposes_only_what_github_and_runners_call() -> None:
    docs = _render_example("hybrid-full")
    ingress = _one(docs, "Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "runs-fleet.example.com"
    paths = {p["path"] for p in rule["http"]["paths"]}
    assert paths == {"/webhook", "/api/agent"}
    assert all(p["backend"]["service"]["port"] == {"name": "http"} for p in rule["http"]["paths"])


def test_metrics_annotations_or_service_monitor() -> None:
    plain = _deployments(_render_scenario("ec2-inline-sched-ing0-sm0-adm0"))["server"]
    annotations = plain["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    docs = _render_scenario("ec2-inline-sched-ing1-sm1-adm1")
    monitored = _deployments(docs)["server"]
    assert "prometheus.io/scrape" not in monitored["spec"]["template"]["metadata"]["annotations"]
    monitor = _one(docs, "ServiceMonitor")
    service = _one(docs, "Service", "runs-fleet")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def test_notes_give_the_webhook_url_and_health_check() -> None:
    proc = run_helm(
        "install",
        "rf",
        str(CHART),
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        "-f",
        str(CHART / "examples" / "hybrid-full.yaml"),
    )
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "https://runs-fleet.example.com/webhook" in notes
    assert "port-forward" in notes and "/ready" in notes
    assert "runs-fleet config check" in notes
    assert "Workflow job" in notes


def test_grace_period_shorter_than_the_shutdown_is_refused(tmp_path: Path) -> None:
    values = _merge(
        HYBRID_BASE,
        {
            "github": EXISTING_GITHUB,
            "orchestrator": {"shutdownDelaySeconds": 10, "terminationGracePeriodSeconds": 40},
        },
    )
    error = render([_overlay(tmp_path, "short", values)], expect_fail=True)
    assert "orchestrator.terminationGracePeriodSeconds (40) must be more than" in error
    values["orchestrator"]["terminationGracePeriodSeconds"] = 41
    assert render([_overlay(tmp_path, "long", values)])
