"""The settings runner pods are built from, checked once when the deployment starts.

Everything that shapes a runner pod and is the operator's choice (the image, the service
account, where pods may be scheduled, how spot capacity is recognised, Docker-in-Docker)
is read here into one frozen :class:`RunnerPodSettings`. A bad value fails the start
with a :class:`~runs_fleet_core.errors.ConfigError` naming the setting and the fix; it
never reaches the API server as a pod that cannot be created or scheduled.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping
from typing import Any

import attrs

from runs_fleet_core.errors import ConfigError
from runs_fleet_core.settings import Kind, Setting, Settings

NAMESPACE = "RUNS_FLEET_KUBE_NAMESPACE"  # a core setting: read here, declared there
MAX_RUNTIME = "RUNS_FLEET_AGENT_MAX_RUNTIME_S"  # a core setting as well
RUNNER_IMAGE = "RUNS_FLEET_KUBE_RUNNER_IMAGE"
SERVICE_ACCOUNT = "RUNS_FLEET_KUBE_SERVICE_ACCOUNT"
NODE_SELECTOR = "RUNS_FLEET_KUBE_NODE_SELECTOR"
TOLERATIONS = "RUNS_FLEET_KUBE_TOLERATIONS"
SPOT_SCHEDULING = "RUNS_FLEET_KUBE_SPOT_SCHEDULING"
FAMILY_LABEL = "RUNS_FLEET_KUBE_FAMILY_LABEL"
GENERATION_LABEL = "RUNS_FLEET_KUBE_GENERATION_LABEL"
DIND = "RUNS_FLEET_KUBE_DIND"
DIND_IMAGE = "RUNS_FLEET_KUBE_DIND_IMAGE"
JOB_TTL = "RUNS_FLEET_KUBE_JOB_TTL_S"
PULL_SECRETS = "RUNS_FLEET_KUBE_IMAGE_PULL_SECRETS"
RUNNER_UID = "RUNS_FLEET_KUBE_RUNNER_UID"
PLACEHOLDER_CLASS = "RUNS_FLEET_KUBE_PLACEHOLDER_PRIORITY_CLASS"
PLACEHOLDER_IMAGE = "RUNS_FLEET_KUBE_PLACEHOLDER_IMAGE"

DEFAULT_SERVICE_ACCOUNT = "runs-fleet-runner"
DEFAULT_FAMILY_LABEL = "karpenter.k8s.aws/instance-family"
DEFAULT_GENERATION_LABEL = "karpenter.k8s.aws/instance-generation"
DEFAULT_DIND_IMAGE = "docker:27-dind"
DEFAULT_JOB_TTL_S = 300
DEFAULT_RUNNER_UID = 1001
DEFAULT_PLACEHOLDER_CLASS = "runs-fleet-placeholder"
DEFAULT_PLACEHOLDER_IMAGE = "registry.k8s.io/pause:3.10"
DEFAULT_MAX_RUNTIME_S = 6 * 3600.0
"""The agent's own default for ``RUNS_FLEET_AGENT_MAX_RUNTIME_S`` (6 hours)."""

SPOT_CONVENTIONS = ("karpenter", "eks", "gke", "aks", "taint", "none")

SETTINGS: tuple[Setting, ...] = (
    Setting(
        name=RUNNER_IMAGE,
        help="container image of runner pods: the runs-fleet agent with the GitHub Actions "
        "runner, e.g. ghcr.io/OWNER/runs-fleet-runner:1.0",
        required_in=frozenset({"k8s"}),
    ),
    Setting(
        name=SERVICE_ACCOUNT,
        help="service account runner pods run as (its API token is not mounted: the "
        "job's code gets no Kubernetes credentials)",
        default=DEFAULT_SERVICE_ACCOUNT,
    ),
    Setting(
        name=NODE_SELECTOR,
        help='node labels every runner pod requires, e.g. {"workload": "ci"}; the '
        "architecture and OS selectors are added from the label",
        kind=Kind.MAPPING,
        default={},
    ),
    Setting(
        name=TOLERATIONS,
        help="taints runner pods tolerate, as a JSON list of Kubernetes tolerations, e.g. "
        '[{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}]',
        default="[]",
    ),
    Setting(
        name=SPOT_SCHEDULING,
        help="how spot nodes are recognised: karpenter (karpenter.sh/capacity-type), eks "
        "(managed node groups' eks.amazonaws.com/capacityType), gke "
        "(cloud.google.com/gke-spot and its taint), aks "
        "(kubernetes.azure.com/scalesetpriority and its taint), taint (nodes tainted "
        "runs-fleet.io/preemptible) or none (spot= labels change nothing)",
        default="karpenter",
        choices=SPOT_CONVENTIONS,
    ),
    Setting(
        name=FAMILY_LABEL,
        help="node label holding the instance family, which family= labels select on; "
        "set it empty (in the config file) to refuse family= labels",
        default=DEFAULT_FAMILY_LABEL,
    ),
    Setting(
        name=GENERATION_LABEL,
        help="node label holding the instance generation (a number), which gen= labels "
        "select on; set it empty (in the config file) to refuse gen= labels",
        default=DEFAULT_GENERATION_LABEL,
    ),
    Setting(
        name=DIND,
        help="give every runner pod a Docker daemon (a privileged Docker-in-Docker "
        "sidecar) so jobs can run docker commands; the namespace must allow privileged pods",
        kind=Kind.BOOL,
        default=False,
    ),
    Setting(
        name=DIND_IMAGE,
        help="image of the Docker-in-Docker sidecar",
        default=DEFAULT_DIND_IMAGE,
    ),
    Setting(
        name=JOB_TTL,
        help="seconds a finished runner Job (and its pod, config and logs) is kept before "
        "Kubernetes deletes it",
        kind=Kind.INT,
        default=DEFAULT_JOB_TTL_S,
        minimum=0,
    ),
    Setting(
        name=PULL_SECRETS,
        help="names of Secrets (in the runners' namespace) to pull the runner images with",
        kind=Kind.LIST,
        default=[],
    ),
    Setting(
        name=RUNNER_UID,
        help="user and group id runner pods run as (never root); the runner image must "
        "let this user write its work directory",
        kind=Kind.INT,
        default=DEFAULT_RUNNER_UID,
        minimum=1,
    ),
    Setting(
        name=PLACEHOLDER_CLASS,
        help="PriorityClass of warm pools' placeholder pods, which hold node capacity and "
        "give way to any other pod",
        default=DEFAULT_PLACEHOLDER_CLASS,
    ),
    Setting(
        name=PLACEHOLDER_IMAGE,
        help="image of warm pools' placeholder pods (they only sleep)",
        default=DEFAULT_PLACEHOLDER_IMAGE,
    ),
)

_NAME_PART = r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
_LABEL_KEY_RE = re.compile(rf"({_PREFIX}/)?{_NAME_PART}")
_LABEL_VALUE_RE = re.compile(rf"({_NAME_PART})?")
_SUBDOMAIN_RE = re.compile(_PREFIX)
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_TOLERATION_FIELDS = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _frozen(value: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class RunnerPodSettings:
    """What every runner pod of the deployment shares.

    Build it with :meth:`from_settings`, which checks every value and reports all
    problems at once; constructing it directly (tests, tools) skips the checks.
    """

    image: str
    namespace: str = "default"
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    node_selector: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen, hash=False)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    spot_scheduling: str = "karpenter"
    family_label: str = DEFAULT_FAMILY_LABEL
    generation_label: str = DEFAULT_GENERATION_LABEL
    dind: bool = False
    dind_image: str = DEFAULT_DIND_IMAGE
    job_ttl_s: int = DEFAULT_JOB_TTL_S
    image_pull_secrets: tuple[str, ...] = ()
    runner_uid: int = DEFAULT_RUNNER_UID
    placeholder_priority_class: str = DEFAULT_PLACEHOLDER_CLASS
    placeholder_image: str = DEFAULT_PLACEHOLDER_IMAGE
    max_runtime_s: float = DEFAULT_MAX_RUNTIME_S

    @classmethod
    def from_settings(
        cls, settings: Settings, *, default_image: str | None = None
    ) -> RunnerPodSettings:
        """The runner pod settings of a deployment; ``ConfigError`` listing every invalid
        value. ``default_image`` stands in for an unset runner image (previews only: in
        k8s mode the image is required)."""
        problems: list[str] = []
        image = str(settings.get(RUNNER_IMAGE, "") or default_image or "")
        if not image:
            problems.append(
                f"{RUNNER_IMAGE} is not set: name the runner image (the runs-fleet agent "
                "with the GitHub Actions runner), e.g. ghcr.io/OWNER/runs-fleet-runner:1.0"
            )
        tolerations = parse_tolerations(str(settings.get(TOLERATIONS, "[]")), problems)
        pod = cls(
            image=image,
            namespace=str(settings.get(NAMESPACE, "default")),
            service_account=str(settings.get(SERVICE_ACCOUNT, DEFAULT_SERVICE_ACCOUNT)),
            node_selector=settings.get(NODE_SELECTOR, {}),
            tolerations=tolerations,
            spot_scheduling=str(settings.get(SPOT_SCHEDULING, "karpenter")),
            family_label=str(settings.get(FAMILY_LABEL, DEFAULT_FAMILY_LABEL)),
            generation_label=str(settings.get(GENERATION_LABEL, DEFAULT_GENERATION_LABEL)),
            dind=bool(settings.get(DIND, False)),
            dind_image=str(settings.get(DIND_IMAGE, DEFAULT_DIND_IMAGE)),
            job_ttl_s=int(settings.get(JOB_TTL, DEFAULT_JOB_TTL_S)),
            image_pull_secrets=tuple(settings.get(PULL_SECRETS, [])),
            runner_uid=int(settings.get(RUNNER_UID, DEFAULT_RUNNER_UID)),
            placeholder_priority_class=str(
                settings.get(PLACEHOLDER_CLASS, DEFAULT_PLACEHOLDER_CLASS)
            ),
            placeholder_image=str(settings.get(PLACEHOLDER_IMAGE, DEFAULT_PLACEHOLDER_IMAGE)),
            max_runtime_s=float(settings.get(MAX_RUNTIME, DEFAULT_MAX_RUNTIME_S)),
        )
        problems += pod.problems()
        if problems:
            raise ConfigError(problems)
        return pod

    def problems(self) -> list[str]:
        """Every value the API server or the scheduler would refuse, one message each."""
        problems = [f"{NODE_SELECTOR}: {problem}" for problem in label_problems(self.node_selector)]
        for setting, label in (
            (FAMILY_LABEL, self.family_label),
            (GENERATION_LABEL, self.generation_label),
        ):
            if label and not _LABEL_KEY_RE.fullmatch(label):
                problems.append(
                    f"{setting}: {label!r} is not a node label key such as "
                    "karpenter.k8s.aws/instance-family (or leave it empty)"
                )
        if not _SUBDOMAIN_RE.fullmatch(self.service_account):
            problems.append(
                f"{SERVICE_ACCOUNT}: {self.service_account!r} is not a service account name "
                "(lower-case letters, digits, '-' and '.')"
            )
        if not _SUBDOMAIN_RE.fullmatch(self.placeholder_priority_class):
            problems.append(
                f"{PLACEHOLDER_CLASS}: {self.placeholder_priority_class!r} is not a "
                "PriorityClass name (lower-case letters, digits, '-' and '.')"
            )
        problems += [
            f"{PULL_SECRETS}: {name!r} is not a Secret name (lower-case letters, digits, "
            "'-' and '.')"
            for name in self.image_pull_secrets
            if not _SUBDOMAIN_RE.fullmatch(name)
        ]
        if not _DNS_LABEL_RE.fullmatch(self.namespace):
            problems.append(
                f"{NAMESPACE}: {self.namespace!r} is not a namespace name (at most 63 "
                "lower-case letters, digits and '-')"
            )
        return problems


def label_problems(labels: Mapping[str, str]) -> list[str]:
    """Why each of ``labels`` cannot be a Kubernetes label (empty when all can)."""
    problems = []
    for key, value in labels.items():
        if not _LABEL_KEY_RE.fullmatch(key):
            problems.append(
                f"{key!r} is not a label key (an optional DNS prefix and '/', then at most "
                "63 letters, digits, '-', '_' and '.')"
            )
        if not _LABEL_VALUE_RE.fullmatch(value):
            problems.append(
                f"the value {value!r} of {key!r} is not a label value (at most 63 letters, "
                "digits, '-', '_' and '.', starting and ending with a letter or digit)"
            )
    return problems


def parse_tolerations(text: str, problems: list[str]) -> tuple[Mapping[str, Any], ...]:
    """The tolerations of ``RUNS_FLEET_KUBE_TOLERATIONS`` (a JSON list); every problem
    found is appended to ``problems`` and the invalid entries are left out."""
    try:
        value = json.loads(text or "[]")
    except json.JSONDecodeError as exc:
        problems.append(f"{TOLERATIONS}: not JSON ({exc.msg} at character {exc.pos})")
        return ()
    if not isinstance(value, list):
        problems.append(
            f"{TOLERATIONS}: must be a JSON list of tolerations, e.g. "
            '[{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}]'
        )
        return ()
    tolerations = []
    for index, item in enumerate(value):
        why = _toleration_problem(item)
        if why:
            problems.append(f"{TOLERATIONS}: entry {index}: {why}")
        else:
            tolerations.append(types.MappingProxyType(dict(item)))
    return tuple(tolerations)


def _toleration_problem(item: object) -> str:
    """Why ``item`` is not a toleration the API server accepts ("" when it is one)."""
    if not isinstance(item, dict):
        return "a toleration is a JSON object with key, operator, value and effect"
    unknown = sorted(set(item) - _TOLERATION_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(_TOLERATION_FIELDS))
        return f"unknown field(s) {', '.join(unknown)}; allowed: {allowed}"
    operator = item.get("operator", "Equal")
    if operator not in ("Equal", "Exists"):
        return f"operator must be Equal or Exists, not {operator!r}"
    key, value, effect = item.get("key", ""), item.get("value", ""), item.get("effect", "")
    if not all(isinstance(field, str) for field in (key, value, effect)):
        return "key, value and effect must be strings"
    if key and not _LABEL_KEY_RE.fullmatch(key):
        return f"key {key!r} is not a taint key"
    if not key and operator != "Exists":
        return "a toleration without a key must use operator Exists"
    if operator == "Exists" and value:
        return "operator Exists takes no value"
    if effect and effect not in _EFFECTS:
        return f"effect must be one of {', '.join(_EFFECTS)}, not {effect!r}"
    seconds = item.get("tolerationSeconds")
    if seconds is not None and (type(seconds) is not int or effect != "NoExecute"):
        return "tolerationSeconds must be a whole number and needs effect NoExecute"
    return ""
