"""Who may call the fake API server, and the service account tokens it issues and
reviews.

Requests carry ``Authorization: Bearer <token>``: the fixture's admin token stands for the
orchestrator's service account (``system:serviceaccount:runs-fleet:runs-fleet``), and
tokens from the TokenRequest subresource stand for theirs. Every caller may do anything
except what a test has forbidden, answered with the authorizer's own wording. TokenReview
tells the orchestrator who a runner's token belongs to: the audiences must match, the
token must be unexpired, and a pod-bound token dies with its pod.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from typing import Any

import attrs

from tests.kube_api import errors, validation
from tests.kube_api.errors import ApiError
from tests.kube_api.resources import PODS, SERVICEACCOUNTS, ResourceType
from tests.kube_api.store import Obj, Store, format_time

ADMIN_USER = "system:serviceaccount:runs-fleet:runs-fleet"
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
ISSUER = "https://kubernetes.default.svc.cluster.local"
MIN_EXPIRATION_S = 600
DEFAULT_EXPIRATION_S = 3600


@attrs.frozen
class Identity:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ("system:authenticated",)
    extra: dict[str, list[str]] = attrs.field(factory=dict)


@attrs.frozen
class IssuedToken:
    namespace: str
    account: str
    account_uid: str
    audiences: tuple[str, ...]
    expires: dt.datetime
    pod_name: str | None = None
    pod_uid: str | None = None


def _b64(data: Obj) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class Auth:
    def __init__(self, store: Store, admin_token: str) -> None:
        self.store = store
        self.admin_token = admin_token
        self.forbidden: set[tuple[str, str, str | None]] = set()
        self.tokens: dict[str, IssuedToken] = {}

    def reset(self) -> None:
        self.forbidden.clear()
        self.tokens.clear()

    # -- authentication -----------------------------------------------------------

    def _check(self, token: str, audiences: tuple[str, ...]) -> tuple[Identity, tuple[str, ...]]:
        """Who ``token`` is, and the audiences it is valid for among ``audiences``;
        raises ``ValueError`` saying why it is not valid."""
        if token == self.admin_token:
            return Identity(ADMIN_USER), audiences
        issued = self.tokens.get(token)
        if issued is None:
            raise ValueError("invalid bearer token")
        matched = tuple(a for a in audiences if a in issued.audiences)
        if not matched:
            raise ValueError(
                "invalid bearer token, token audiences "
                f"{json.dumps(list(issued.audiences))} is invalid for the target audiences "
                f"{json.dumps(list(audiences))}"
            )
        if self.store.clock.now() >= issued.expires:
            raise ValueError("invalid bearer token, service account token has expired")
        account = self.store.peek(SERVICEACCOUNTS, issued.namespace, issued.account)
        if account is None or account["metadata"]["uid"] != issued.account_uid:
            raise ValueError(
                f"invalid bearer token, service account {issued.namespace}/{issued.account} "
                "has been deleted"
            )
        extra: dict[str, list[str]] = {}
        if issued.pod_name is not None:
            pod = self.store.peek(PODS, issued.namespace, issued.pod_name)
            if pod is None or pod["metadata"]["uid"] != issued.pod_uid:
                raise ValueError(
                    f'invalid bearer token, pod "{issued.pod_name}" (uid {issued.pod_uid}) '
                    "has been deleted or recreated"
                )
            extra = {
                "authentication.kubernetes.io/pod-name": [issued.pod_name],
                "authentication.kubernetes.io/pod-uid": [str(issued.pod_uid)],
            }
        identity = Identity(
            f"system:serviceaccount:{issued.namespace}:{issued.account}",
            uid=issued.account_uid,
            groups=(
                "system:serviceaccounts",
                f"system:serviceaccounts:{issued.namespace}",
                "system:authenticated",
            ),
            extra=extra,
        )
        return identity, matched

    def authenticate(self, header: str | None) -> Identity:
        """The caller of a request, from its ``Authorization`` header (401 otherwise)."""
        if not header or not header.startswith("Bearer "):
            raise errors.unauthorized()
        try:
            identity, _ = self._check(header[len("Bearer ") :].strip(), (API_AUDIENCE,))
        except ValueError:
            raise errors.unauthorized() from None
        return identity

    # -- authorization ------------------------------------------------------------

    def forbid(self, verb: str, resource: str, namespace: str | None = None) -> None:
        self.forbidden.add((verb, resource, namespace))

    def authorize(
        self,
        identity: Identity,
        verb: str,
        rt: ResourceType,
        resource: str,
        namespace: str | None,
        name: str | None,
    ) -> None:
        for rule_verb, rule_resource, rule_namespace in self.forbidden:
            if rule_verb not in ("*", verb) or rule_resource not in ("*", resource):
                continue
            if rule_namespace is not None and rule_namespace != namespace:
                continue
            raise errors.forbidden(rt, verb, resource, identity.username, namespace, name)

    # -- TokenRequest and TokenReview ----------------------------------------------

    def token_request(self, namespace: str, account_name: str, body: Any) -> Obj:
        """Issue a token for a service account, optionally bound to a pod."""
        request = dict(body) if isinstance(body, dict) else {}
        request.setdefault("kind", "TokenRequest")
        request.setdefault("apiVersion", "authentication.k8s.io/v1")
        spec = request.setdefault("spec", {})
        problems = validation.schema_problems(request)
        seconds = spec.get("expirationSeconds") or DEFAULT_EXPIRATION_S
        if isinstance(seconds, int) and seconds < MIN_EXPIRATION_S:
            problems.append(
                (
                    "spec.expirationSeconds",
                    f"Invalid value: {seconds}: may not specify a duration less than 10 minutes",
                )
            )
        bound = spec.get("boundObjectRef")
        if bound and bound.get("kind") != "Pod":
            problems.append(
                (
                    "spec.boundObjectRef.kind",
                    f'Unsupported value: "{bound.get("kind")}": supported values: "Pod"',
                )
            )
        if problems:
            raise errors.invalid(SERVICEACCOUNTS, account_name, problems)
        account = self.store.peek(SERVICEACCOUNTS, namespace, account_name)
        if account is None:
            raise errors.not_found(SERVICEACCOUNTS, account_name)
        pod_name = pod_uid = None
        if bound:
            pod = self.store.peek(PODS, namespace, str(bound.get("name")))
            if pod is None:
                raise errors.not_found(PODS, str(bound.get("name")))
            pod_name, pod_uid = str(bound["name"]), str(pod["metadata"]["uid"])
            if bound.get("uid") and bound["uid"] != pod_uid:
                raise ApiError(
                    409,
                    "Conflict",
                    f"the UID in the bound object reference ({bound['uid']}) does not match the "
                    "UID in record. The object might have been deleted and then recreated",
                )
        audiences = tuple(spec.get("audiences") or (API_AUDIENCE,))
        now = self.store.clock.now()
        expires = now + dt.timedelta(seconds=int(seconds))
        claims: Obj = {
            "aud": list(audiences),
            "exp": int(expires.timestamp()),
            "iat": int(now.timestamp()),
            "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{account_name}",
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": account_name, "uid": account["metadata"]["uid"]},
            },
        }
        if pod_name:
            claims["kubernetes.io"]["pod"] = {"name": pod_name, "uid": pod_uid}
        signature = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        token = f"{_b64({'alg': 'RS256', 'kid': 'fake'})}.{_b64(claims)}.{signature}"
        self.tokens[token] = IssuedToken(
            namespace,
            account_name,
            str(account["metadata"]["uid"]),
            audiences,
            expires,
            pod_name,
            pod_uid,
        )
        spec = {**spec, "audiences": list(audiences), "expirationSeconds": int(seconds)}
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {
                "name": account_name,
                "namespace": namespace,
                "creationTimestamp": format_time(now),
            },
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": format_time(expires)},
        }

    def token_review(self, rt: ResourceType, body: Any) -> Obj:
        """Answer a TokenReview: who the token is, for which of the requested audiences."""
        review = dict(body) if isinstance(body, dict) else {}
        review.setdefault("kind", "TokenReview")
        review.setdefault("apiVersion", "authentication.k8s.io/v1")
        problems = validation.schema_problems(review)
        spec = review.get("spec") or {}
        if not spec.get("token"):
            problems.append(("spec.token", "Required value"))
        if problems:
            raise errors.invalid(rt, "", problems)
        audiences = tuple(spec.get("audiences") or (API_AUDIENCE,))
        try:
            identity, matched = self._check(str(spec["token"]), audiences)
        except ValueError as exc:
            status: Obj = {"user": {}, "error": f"[{exc}]"}
        else:
            user: Obj = {"username": identity.username, "groups": list(identity.groups)}
            if identity.uid:
                user["uid"] = identity.uid
            if identity.extra:
                user["extra"] = identity.extra
            status = {"authenticated": True, "user": user, "audiences": list(matched)}
        return {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }
