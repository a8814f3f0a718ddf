"""Which pool pod is asking for its config: Kubernetes TokenReview of the pod's token.

A pool pod presents a service account token that the kubelet projected into it for the
``runs-fleet`` audience; such a token is bound to the pod (it stops being valid when the
pod is deleted) and names it. The API server's TokenReview checks signature, expiry,
audience and binding; runs-fleet then accepts only the runner service account of its own
namespace and takes the pod name from the review. Answers are cached for a short while
(by a hash of the token, never the token itself) so a polling agent costs one review per
:data:`CACHE_S`, not one per request.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.ports import Clock
from runs_fleet_core.settings import Setting
from runs_fleet_k8s.client import KubeCaller

AUDIENCE = "runs-fleet"
"""The audience of the token projected into pool pods (see the pool pod template)."""
POD_NAME = "authentication.kubernetes.io/pod-name"
CACHE_S = 30.0
MAX_CACHED = 4096
SERVICE_ACCOUNT_SETTING = "RUNS_FLEET_KUBE_SERVICE_ACCOUNT"
DEFAULT_SERVICE_ACCOUNT = "runs-fleet-runner"
SETTINGS: tuple[Setting, ...] = ()


class TokenReviewIdentity:
    """:class:`~runs_fleet_core.ports.RunnerIdentity` for pods of ``caller.namespace``
    running as ``service_account``."""

    def __init__(
        self, caller: KubeCaller, *, clock: Clock, service_account: str = DEFAULT_SERVICE_ACCOUNT
    ) -> None:
        self.caller = caller
        self.clock = clock
        self.username = f"system:serviceaccount:{caller.namespace}:{service_account}"
        self._cache: dict[str, tuple[datetime, RunnerId | None]] = {}

    async def runner_for(self, credential: str) -> RunnerId | None:
        key = hashlib.sha256(credential.encode()).hexdigest()
        now = self.clock.now()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": credential, "audiences": [AUDIENCE]},
        }
        answer = await self.caller.call(self.caller.authentication.create_token_review, review)
        runner = self._runner(self.caller.api_client.sanitize_for_serialization(answer))
        if len(self._cache) >= MAX_CACHED:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[key] = (now + timedelta(seconds=CACHE_S), runner)
        return runner

    def _runner(self, review: dict[str, Any]) -> RunnerId | None:
        status = review.get("status") or {}
        if not status.get("authenticated") or AUDIENCE not in (status.get("audiences") or ()):
            return None
        user = status.get("user") or {}
        if user.get("username") != self.username:
            return None
        names = (user.get("extra") or {}).get(POD_NAME) or []
        return RunnerId(names[0]) if len(names) == 1 and names[0] else None


def from_context(context: AdapterContext, caller: KubeCaller) -> TokenReviewIdentity:
    account = str(context.settings.get(SERVICE_ACCOUNT_SETTING, None) or DEFAULT_SERVICE_ACCOUNT)
    return TokenReviewIdentity(caller, clock=context.clock, service_account=account)
