"""Optional port: proving which runner is asking, for runners that fetch their config.

A warm-pool runner that starts before its job exists cannot have its config mounted
(Kubernetes pods of one Deployment share one template). It asks the orchestrator for it
instead, presenting a credential its platform issued to it alone (a Kubernetes service
account token bound to the pod and to the orchestrator's audience). A backend that can
check such credentials offers a :class:`RunnerIdentity`; the server then answers
``GET /api/agent/config`` with the config of exactly the runner the credential proves.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from runs_fleet_core.domain.ids import RunnerId


@runtime_checkable
class RunnerIdentity(Protocol):
    async def runner_for(self, credential: str) -> RunnerId | None:
        """The runner ``credential`` proves to be, or ``None`` when it proves nothing
        (forged, expired, meant for another audience, or its runner is gone). Raises
        ``AdapterError`` only when the check itself could not be made. ``credential``
        is never logged."""
        ...
