"""The ``/scale`` subresource of Deployments: an ``autoscaling/v1`` ``Scale`` view of
``spec.replicas`` (and the selector, as a string), read, replaced and patched on its own,
with the Deployment's ``resourceVersion`` as its precondition."""

from __future__ import annotations

import copy
from typing import Any

from tests.kube_api import errors, validation
from tests.kube_api.errors import ApiError
from tests.kube_api.patching import apply_patch
from tests.kube_api.resources import DEPLOYMENTS
from tests.kube_api.selectors import selector_string
from tests.kube_api.store import Obj
from tests.kube_api.verbs import Verbs, check_versions


class Scaling:
    def __init__(self, verbs: Verbs) -> None:
        self.verbs = verbs

    def get(self, ns: str | None, name: str) -> Obj:
        return scale_of(self.verbs.existing(DEPLOYMENTS, ns, name))

    def replace(
        self, ns: str | None, name: str, body: Any, *, verb: str = "update", dry_run: bool = False
    ) -> Obj:
        with self.verbs.store.transaction():
            old = self.verbs.existing(DEPLOYMENTS, ns, name)
            scale = copy.deepcopy(body) if isinstance(body, dict) else {}
            scale.setdefault("kind", "Scale")
            scale.setdefault("apiVersion", "autoscaling/v1")
            problems = validation.schema_problems(scale)
            replicas = (scale.get("spec") or {}).get("replicas", 0)
            if isinstance(replicas, int) and replicas < 0:
                problems.append(
                    (
                        "spec.replicas",
                        f"Invalid value: {replicas}: must be greater than or equal to 0",
                    )
                )
            if problems:
                exc = errors.invalid(DEPLOYMENTS, name, problems)
                exc.details = {**(exc.details or {}), "kind": "Scale", "group": "autoscaling"}
                exc.message = exc.message.replace("Deployment.apps", "Scale.autoscaling", 1)
                raise self.verbs.reject(verb, DEPLOYMENTS, ns, name, body, exc)
            check_versions(DEPLOYMENTS, old, scale.get("metadata") or {})
            new = copy.deepcopy(old)
            new["spec"]["replicas"] = int(replicas or 0)
            written = self.verbs.write(
                verb, DEPLOYMENTS, old, new, body, status=False, dry_run=dry_run
            )
            return scale_of(written)

    def patch(
        self, ns: str | None, name: str, content_type: str, body: Any, *, dry_run: bool = False
    ) -> Obj:
        with self.verbs.store.transaction():
            current = self.get(ns, name)
            try:
                patched = apply_patch(content_type, current, body)
            except ApiError as exc:
                raise self.verbs.reject("patch", DEPLOYMENTS, ns, name, body, exc) from None
            return self.replace(ns, name, patched, verb="patch", dry_run=dry_run)


def scale_of(deployment: Obj) -> Obj:
    """A Deployment seen through its ``autoscaling/v1`` ``Scale`` subresource."""
    meta = deployment["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in meta
        },
        "spec": {"replicas": deployment["spec"].get("replicas", 0)},
        "status": {
            "replicas": (deployment.get("status") or {}).get("replicas", 0),
            "selector": selector_string(deployment["spec"].get("selector")),
        },
    }
