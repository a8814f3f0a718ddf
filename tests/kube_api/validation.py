"""What a real API server refuses: bodies that do not match the Kubernetes OpenAPI schema
in strict mode (an unknown or misplaced field), bad names and labels, oversized
ConfigMaps and Secrets, and the per-kind rules (a Job's pods may not restart ``Always``,
a Deployment's selector must match its template, a volume mount names a volume).

The schemas are those ``kubernetes-validate --strict`` uses, for the newest Kubernetes
version the installed package ships. Validators are built once per kind and cached, and
every problem is listed (``kubernetes_validate.validate`` stops at the first), because
an adapter test should say everything that is wrong with a body at once.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

from tests.kube_api.errors import ApiError, bad_request, invalid
from tests.kube_api.podspec import pod_spec_problems, pod_update_problems
from tests.kube_api.resources import ResourceType
from tests.kube_api.selectors import match_label_selector

Obj = dict[str, Any]
Problems = list[tuple[str, str]]

KUBERNETES_VERSION: str = kubernetes_validate.utils.latest_version()
MAX_DATA_BYTES = 1024 * 1024
MAX_ANNOTATION_BYTES = 256 * 1024

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
LABEL_RE = re.compile(_LABEL)
SUBDOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
DATA_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")

SUBDOMAIN_HELP = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
    "[a-z0-9])?)*')"
)
LABEL_HELP = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
NAME_PART_HELP = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
LABEL_VALUE_HELP = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


@functools.cache
def _validator(kind: str, api_version: str) -> jsonschema.protocols.Validator | None:
    schema_dir = f"v{KUBERNETES_VERSION}-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv_utils.schema_contents(
            f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{api}.json", KUBERNETES_VERSION
        )
    except FileNotFoundError:
        return None
    definitions = kv_utils.schema_contents(
        f"kubernetes-json-schema/{schema_dir}/_definitions.json", KUBERNETES_VERSION
    )
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def schema_problems(obj: Obj) -> Problems:
    """Every way ``obj`` breaks its kind's strict schema."""
    validator = _validator(str(obj.get("kind")), str(obj.get("apiVersion")))
    if validator is None:
        return [("kind", f"no schema for {obj.get('apiVersion')} {obj.get('kind')}")]
    problems = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.path]):
        field = ".".join(str(part) for part in error.path)
        problems.append((field, error.message))
    return problems


def name_problems(rt: ResourceType, name: str, field: str = "metadata.name") -> Problems:
    if rt.name_rule == "label":
        if len(name) > 63:
            return [(field, f'Invalid value: "{name}": must be no more than 63 characters')]
        if not LABEL_RE.fullmatch(name):
            return [(field, f'Invalid value: "{name}": {LABEL_HELP}')]
        return []
    problems: Problems = []
    if not SUBDOMAIN_RE.fullmatch(name):
        problems.append((field, f'Invalid value: "{name}": {SUBDOMAIN_HELP}'))
    limit = 63 if rt.name_rule == "label-value" else 253
    if len(name) > limit:
        problems.append(
            (field, f'Invalid value: "{name}": must be no more than {limit} characters')
        )
    return problems


def _qualified_name_problems(key: str, field: str) -> Problems:
    prefix, _, name = key.rpartition("/")
    problems: Problems = []
    if "/" in key and (not prefix or len(prefix) > 253 or not SUBDOMAIN_RE.fullmatch(prefix)):
        problems.append((field, f'Invalid value: "{key}": prefix part {SUBDOMAIN_HELP}'))
    if not name or not QUALIFIED_NAME_RE.fullmatch(name):
        problems.append((field, f'Invalid value: "{key}": {NAME_PART_HELP}'))
    elif len(name) > 63:
        problems.append(
            (field, f'Invalid value: "{key}": name part must be no more than 63 characters')
        )
    return problems


def label_problems(labels: Any, field: str) -> Problems:
    if not isinstance(labels, Mapping):
        return []
    problems: Problems = []
    for key, value in labels.items():
        problems += _qualified_name_problems(str(key), field)
        if not isinstance(value, str):
            continue
        if len(value) > 63:
            problems.append(
                (field, f'Invalid value: "{value}": must be no more than 63 characters')
            )
        elif not LABEL_VALUE_RE.fullmatch(value):
            problems.append((field, f'Invalid value: "{value}": {LABEL_VALUE_HELP}'))
    return problems


def metadata_problems(meta: Any, field: str = "metadata") -> Problems:
    if not isinstance(meta, Mapping):
        return []
    problems = label_problems(meta.get("labels"), f"{field}.labels")
    annotations = meta.get("annotations")
    if isinstance(annotations, Mapping):
        for key in annotations:
            problems += _qualified_name_problems(str(key), f"{field}.annotations")
        size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
        if size > MAX_ANNOTATION_BYTES:
            problems.append(
                (
                    f"{field}.annotations",
                    f"Too long: must have at most {MAX_ANNOTATION_BYTES} bytes",
                )
            )
    return problems


def _data_problems(rt: ResourceType, obj: Obj) -> Problems:
    problems: Problems = []
    data = obj.get("data") or {}
    binary = obj.get("binaryData") or {}
    size = 0
    for section, values in (("data", data), ("binaryData", binary)):
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            if not DATA_KEY_RE.fullmatch(str(key)) or len(str(key)) > 253:
                problems.append(
                    (
                        f"{section}[{key}]",
                        f'Invalid value: "{key}": a valid config key must consist of '
                        "alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
                        "'KEY_NAME',  or 'key-name', regex used for validation is "
                        "'[-._a-zA-Z0-9]+')",
                    )
                )
            text_value = section == "data" and rt.kind == "ConfigMap"
            size += len(str(key)) + (len(str(value)) if text_value else _decoded_length(value))
    if rt.kind == "ConfigMap":
        for key in set(data) & set(binary):
            problems.append(
                (f"data[{key}]", f'Invalid value: "{key}": duplicate of key present in binaryData')
            )
    if size > MAX_DATA_BYTES:
        where = "[]" if rt.kind == "ConfigMap" else "data"
        problems.append((where, f"Too long: must have at most {MAX_DATA_BYTES} bytes"))
    return problems


def _decoded_length(value: Any) -> int:
    try:
        return len(base64.b64decode(str(value), validate=True))
    except (binascii.Error, ValueError):
        return len(str(value))


def check_base64(rt: ResourceType, obj: Obj) -> None:
    """Secret ``data`` (and ConfigMap ``binaryData``) values must be base64: Kubernetes
    fails to decode the body otherwise, before any validation (a 400)."""
    section = "data" if rt.kind == "Secret" else "binaryData"
    for key, value in (obj.get(section) or {}).items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"illegal base64 data in {section}[{key}]"
            ) from None


def _kind_problems(rt: ResourceType, obj: Obj) -> Problems:
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    if rt.kind in ("ConfigMap", "Secret"):
        return _data_problems(rt, obj)
    if rt.kind == "Pod":
        return pod_spec_problems(spec, "spec", restart_policies=None)
    if rt.kind == "Job":
        return _job_problems(spec)
    if rt.kind == "Deployment":
        return _deployment_problems(spec)
    return []


def _template_problems(template: Any, restart_policies: tuple[str, ...]) -> Problems:
    if not isinstance(template, Mapping):
        return []
    problems = metadata_problems(template.get("metadata"), "spec.template.metadata")
    problems += pod_spec_problems(
        template.get("spec") or {}, "spec.template.spec", restart_policies=restart_policies
    )
    return problems


def _job_problems(spec: Mapping[str, Any]) -> Problems:
    problems = _template_problems(spec.get("template"), ("OnFailure", "Never"))
    for field in ("backoffLimit", "ttlSecondsAfterFinished", "activeDeadlineSeconds"):
        value = spec.get(field)
        if isinstance(value, int) and value < 0:
            problems.append(
                (f"spec.{field}", f"Invalid value: {value}: must be greater than or equal to 0")
            )
    return problems


def _deployment_problems(spec: Mapping[str, Any]) -> Problems:
    problems = _template_problems(spec.get("template"), ("Always",))
    selector = spec.get("selector")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if isinstance(selector, Mapping):
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            problems.append(
                ("spec.selector", "Invalid value: {}: empty selector is invalid for deployment")
            )
        elif not match_label_selector(selector, labels):
            problems.append(
                (
                    "spec.template.metadata.labels",
                    f"Invalid value: {json.dumps(labels)}: "
                    "`selector` does not match template `labels`",
                )
            )
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        problems.append(
            ("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")
        )
    return problems


def object_problems(rt: ResourceType, obj: Obj) -> Problems:
    """Everything Kubernetes would refuse in ``obj`` (a whole object, as stored)."""
    problems = schema_problems(obj)
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if name:
        problems += name_problems(rt, str(name))
    problems += metadata_problems(meta)
    problems += _kind_problems(rt, obj)
    return problems


def _immutable(field: str, value: Any) -> tuple[str, str]:
    return (field, f"Invalid value: {json.dumps(value)}: field is immutable")


def update_problems(rt: ResourceType, old: Obj, new: Obj) -> Problems:
    """Changes Kubernetes forbids from ``old`` to ``new``."""
    problems: Problems = []
    if rt.kind in ("ConfigMap", "Secret") and old.get("immutable"):
        for field in ("data", "binaryData", "immutable"):
            if old.get(field) != new.get(field):
                problems.append((field, "Forbidden: field is immutable when `immutable` is set"))
    if rt.kind == "Secret" and old.get("type") != new.get("type"):
        problems.append(_immutable("type", new.get("type")))
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    if rt.kind == "Job":
        for field in ("selector", "completions", "completionMode"):
            if old_spec.get(field) != new_spec.get(field):
                problems.append(_immutable(f"spec.{field}", new_spec.get(field)))
        if old_spec.get("template") != new_spec.get("template") and not old_spec.get("suspend"):
            problems.append(_immutable("spec.template", "…"))
    if rt.kind == "Deployment" and old_spec.get("selector") != new_spec.get("selector"):
        problems.append(_immutable("spec.selector", new_spec.get("selector")))
    if rt.kind == "Pod":
        problems += pod_update_problems(old_spec, new_spec)
    return problems


def check(rt: ResourceType, obj: Obj, old: Obj | None = None) -> None:
    """Raise the 422 ``Invalid`` Kubernetes would answer for ``obj`` (replacing ``old``)."""
    problems = object_problems(rt, obj)
    if old is not None:
        problems += update_problems(rt, old, obj)
    if problems:
        raise invalid(rt, str((obj.get("metadata") or {}).get("name", "")), problems)


__all__ = ["ApiError", "check", "check_base64", "object_problems", "schema_problems"]
