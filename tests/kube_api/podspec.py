"""Pod spec rules a schema cannot express, for pods and for the pod templates of Jobs and
Deployments: container and volume names, mounts that name a volume, the restart policies
each controller allows, and which fields of a running pod may change."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

LABEL_HELP_SHORT = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric "
    "characters or '-', and must start and end with an alphanumeric character"
)
POD_UPDATE_FORBIDDEN = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
    "set to 1 if it was previously negative)"
)

Problems = list[tuple[str, str]]
_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _label_ok(name: str) -> bool:
    return len(name) <= 63 and _LABEL_RE.fullmatch(name) is not None


def _container_problems(spec: Mapping[str, Any], field: str, volumes: set[str]) -> Problems:
    problems: Problems = []
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            if not isinstance(container, Mapping):
                continue
            where = f"{field}.{group}[{index}]"
            name = str(container.get("name", ""))
            if not _label_ok(name):
                problems.append((f"{where}.name", f'Invalid value: "{name}": {LABEL_HELP_SHORT}'))
            elif name in seen:
                problems.append((f"{where}.name", f'Duplicate value: "{name}"'))
            seen.add(name)
            mounts: set[str] = set()
            for m_index, mount in enumerate(container.get("volumeMounts") or []):
                if not isinstance(mount, Mapping):
                    continue
                volume = str(mount.get("name", ""))
                if volume not in volumes:
                    problems.append(
                        (f"{where}.volumeMounts[{m_index}].name", f'Not found: "{volume}"')
                    )
                path = str(mount.get("mountPath", ""))
                if path in mounts:
                    problems.append(
                        (
                            f"{where}.volumeMounts[{m_index}].mountPath",
                            f'Invalid value: "{path}": must be unique',
                        )
                    )
                mounts.add(path)
    return problems


def pod_spec_problems(
    spec: Mapping[str, Any], field: str, *, restart_policies: tuple[str, ...] | None
) -> Problems:
    """Problems of a pod spec at ``field``; ``restart_policies`` are those the owning
    controller allows (``None`` for a bare pod: any)."""
    problems: Problems = []
    volumes: set[str] = set()
    for index, volume in enumerate(spec.get("volumes") or []):
        if not isinstance(volume, Mapping):
            continue
        name = str(volume.get("name", ""))
        if not _label_ok(name):
            problems.append(
                (f"{field}.volumes[{index}].name", f'Invalid value: "{name}": {LABEL_HELP_SHORT}')
            )
        elif name in volumes:
            problems.append((f"{field}.volumes[{index}].name", f'Duplicate value: "{name}"'))
        volumes.add(name)
    problems += _container_problems(spec, field, volumes)
    if restart_policies is not None:
        policy = spec.get("restartPolicy")
        allowed = ", ".join(f'"{p}"' for p in restart_policies)
        if policy is None and "Always" not in restart_policies:
            problems.append((f"{field}.restartPolicy", f"Required value: valid values: {allowed}"))
        elif policy is not None and policy not in restart_policies:
            problems.append(
                (
                    f"{field}.restartPolicy",
                    f'Unsupported value: "{policy}": supported values: {allowed}',
                )
            )
    return problems


def _mutable_stripped(spec: Mapping[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(dict(spec))
    for group in ("containers", "initContainers"):
        for container in stripped.get(group) or []:
            if isinstance(container, dict):
                container.pop("image", None)
    for field in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        stripped.pop(field, None)
    return stripped


def pod_update_problems(old: Mapping[str, Any], new: Mapping[str, Any]) -> Problems:
    """A pod's spec is fixed once created, but for images, deadlines and new tolerations."""
    if _mutable_stripped(old) != _mutable_stripped(new):
        return [("spec", POD_UPDATE_FORBIDDEN)]
    old_tolerations = list(old.get("tolerations") or [])
    new_tolerations = list(new.get("tolerations") or [])
    if any(toleration not in new_tolerations for toleration in old_tolerations):
        return [("spec.tolerations", POD_UPDATE_FORBIDDEN)]
    return []
