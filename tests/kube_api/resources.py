"""The resource types the fake API server serves, with what the rest of it needs to know
about each: REST location, kind, scope, subresources and naming rule."""

from __future__ import annotations

import attrs


@attrs.frozen
class ResourceType:
    plural: str
    kind: str
    group: str
    version: str
    namespaced: bool = True
    has_status: bool = False
    """Served with a ``/status`` subresource: the main resource ignores ``status`` and
    ``/status`` changes nothing else."""
    name_rule: str = "subdomain"
    """``subdomain`` (RFC 1123 subdomain, 253), ``label`` (RFC 1123 label, 63) or
    ``label-value`` (a subdomain short enough to be a label value: Jobs, whose name
    becomes the ``job-name`` label of their pods)."""
    creatable: bool = True
    stored: bool = True
    """False for virtual resources (TokenReview) that are answered, never kept."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``jobs.batch`` or ``configmaps``: how messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def kind_qualified(self) -> str:
        """``Job.batch`` or ``ConfigMap``: how validation messages name the kind."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(self, namespace: str | None, name: str | None = None) -> str:
        """The REST path of the collection or of one object."""
        path = self.prefix
        if self.namespaced and namespace is not None:
            path += f"/namespaces/{namespace}"
        path += f"/{self.plural}"
        return f"{path}/{name}" if name else path


CONFIGMAPS = ResourceType("configmaps", "ConfigMap", "", "v1")
SECRETS = ResourceType("secrets", "Secret", "", "v1")
PODS = ResourceType("pods", "Pod", "", "v1", has_status=True)
SERVICEACCOUNTS = ResourceType("serviceaccounts", "ServiceAccount", "", "v1")
NAMESPACES = ResourceType(
    "namespaces", "Namespace", "", "v1", namespaced=False, has_status=True, name_rule="label"
)
JOBS = ResourceType("jobs", "Job", "batch", "v1", has_status=True, name_rule="label-value")
DEPLOYMENTS = ResourceType("deployments", "Deployment", "apps", "v1", has_status=True)
NETWORKPOLICIES = ResourceType("networkpolicies", "NetworkPolicy", "networking.k8s.io", "v1")
LEASES = ResourceType("leases", "Lease", "coordination.k8s.io", "v1")
PRIORITYCLASSES = ResourceType(
    "priorityclasses", "PriorityClass", "scheduling.k8s.io", "v1", namespaced=False
)
TOKENREVIEWS = ResourceType(
    "tokenreviews", "TokenReview", "authentication.k8s.io", "v1", namespaced=False, stored=False
)

ALL: tuple[ResourceType, ...] = (
    CONFIGMAPS,
    SECRETS,
    PODS,
    SERVICEACCOUNTS,
    NAMESPACES,
    JOBS,
    DEPLOYMENTS,
    NETWORKPOLICIES,
    LEASES,
    PRIORITYCLASSES,
    TOKENREVIEWS,
)
BY_PLURAL: dict[str, ResourceType] = {rt.plural: rt for rt in ALL}
BY_KIND: dict[str, ResourceType] = {rt.kind: rt for rt in ALL}
_BY_LOCATION: dict[tuple[str, str, str], ResourceType] = {
    (rt.group, rt.version, rt.plural): rt for rt in ALL
}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    """The resource served at ``/api[s]/<group>/<version>/.../<plural>``, if any."""
    return _BY_LOCATION.get((group, version, plural))


def resource(name: str) -> ResourceType:
    """The resource called ``name`` (``jobs``, ``configmaps``…), for the control API."""
    try:
        return BY_PLURAL[name]
    except KeyError:
        known = ", ".join(sorted(BY_PLURAL))
        raise ValueError(f"unknown resource {name!r}; the fake API server serves {known}") from None
