"""Names and labels of the Kubernetes objects runs-fleet creates.

Every name is derived, never random, so that creating an object twice (a re-delivered
message, a second replica) meets ``AlreadyExists`` instead of making a second one.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "runs-fleet.io/"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "runs-fleet"
JOB_ID = PREFIX + "job-id"
RUN_ID = PREFIX + "run-id"
POOL = PREFIX + "pool"
ARCH = PREFIX + "arch"
SPOT = PREFIX + "spot"
RUNNER = PREFIX + "runner"
"""On a runner's config objects: the runner id they belong to."""
COMPONENT = PREFIX + "component"
"""What an object is: ``runner``, ``runner-config``, ``pool-runner``, ``job-record``,
``pool-config``, ``assignment``."""
POOL_MEMBER = PREFIX + "pool-member"
"""``"true"`` on an idle pool pod: the pool Deployment's selector includes it, so
turning it off (when the pod takes a job) takes the pod out of the Deployment."""

_INVALID = re.compile(r"[^a-z0-9-]+")
_MAX_LABEL = 63


def dns_label(name: str, *, max_length: int = _MAX_LABEL) -> str:
    """``name`` as an RFC 1123 label (lower-case letters, digits and ``-``, starting and
    ending alphanumeric, at most ``max_length``); a name that had to be shortened or
    changed ends in a hash of the original, so two names never collide."""
    cleaned = _INVALID.sub("-", name.lower()).strip("-")
    if cleaned == name and len(name) <= max_length:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    head = cleaned[: max_length - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}" if head else f"r-{digest}"


def label_value(value: str) -> str:
    """``value`` usable as a label value (at most 63 of ``[A-Za-z0-9._-]``, alphanumeric
    at both ends); changed values end in a hash of the original."""
    if re.fullmatch(r"([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?", value):
        return value
    return dns_label(value)


def runner_object_name(runner_name: str) -> str:
    """The Job (and pod name prefix) of a cold-started runner. Job names stay short
    enough for the pod names the Job controller derives from them."""
    return dns_label(runner_name, max_length=52)


def config_secret_name(runner_id: str) -> str:
    """The Secret holding the secret part of ``runner_id``'s config."""
    return dns_label(f"{runner_id}-config", max_length=253)


def config_map_name(runner_id: str) -> str:
    """The ConfigMap holding the non-secret part of ``runner_id``'s config."""
    return dns_label(f"{runner_id}-settings", max_length=253)


def pool_deployment_name(pool: str) -> str:
    """The Deployment of idle agent pods of warm pool ``pool``."""
    return dns_label(f"runs-fleet-pool-{pool}", max_length=47)


def selector(labels: dict[str, str]) -> str:
    """A ``labelSelector`` matching every one of ``labels``."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
