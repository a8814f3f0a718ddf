"""``GET /api/agent/config``: a warm-pool runner fetches the config of the job it got.

Pods of one pool Deployment share one template, so their job configs cannot be mounted;
each pod's agent asks here instead, presenting a credential its platform issued to that
pod alone (a Kubernetes service account token bound to the pod, for the ``runs-fleet``
audience). The backend's :class:`~runs_fleet_core.ports.RunnerIdentity` says which
runner the credential proves, and only that runner's config is served. Answers: 200 the
config, 204 no job for this runner yet (ask again after ``Retry-After``), 401 a missing
credential or one that proves no runner, 404 no backend of this deployment serves
configs this way, 503 the check or the config store is unavailable.
"""

from __future__ import annotations

import logging

import attrs
import cattrs
from starlette.requests import Request
from starlette.responses import Response

from runs_fleet_core.converters import dumps, make_config_converter
from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_server.bootstrap import Services
from runs_fleet_server.common import UNAVAILABLE, bearer_token, error

_log = logging.getLogger(__name__)

CONFIG_PATH = "/api/agent/config"
POLL_AFTER_S = 1


@attrs.define
class AgentConfigEndpoint:
    """The ``GET /api/agent/config`` handler, bound to the process's services."""

    services: Services
    converter: cattrs.Converter = attrs.field(factory=make_config_converter, init=False)

    async def handle(self, request: Request) -> Response:
        identities = self.services.adapters.runner_identities
        if not identities:
            return error(404, "runners of this deployment get their config another way")
        credential = bearer_token(request)
        if credential is None:
            return error(401, "an 'Authorization: Bearer <runner credential>' header is required")
        try:
            runner_id = await self._runner(credential)
            if runner_id is None:
                return error(401, "the credential proves no runner of this deployment")
            config = await self.services.adapters.configs.get(runner_id)
        except UNAVAILABLE as exc:
            _log.warning("runner config not served: %s", exc)
            return error(503, "the runner config cannot be read now; ask again later")
        if config is None:
            return Response(
                status_code=204,
                headers={"Retry-After": str(POLL_AFTER_S), "Cache-Control": "no-store"},
            )
        _log.info("runner %s fetched its config for job %s", runner_id, config.job_id)
        return Response(
            dumps(self.converter, config),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def _runner(self, credential: str) -> RunnerId | None:
        for identity in self.services.adapters.runner_identities.values():
            if (runner_id := await identity.runner_for(credential)) is not None:
                return runner_id
        return None
