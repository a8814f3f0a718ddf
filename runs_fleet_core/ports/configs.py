"""The ConfigStore: where a runner finds the (secret) config for its one job.

Adapters store it with the narrowest access the backend offers (SSM SecureString, a
Kubernetes Secret, a 0600 file) and never log its contents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.runner import RunnerConfig


@runtime_checkable
class ConfigStore(Protocol):
    async def put(self, runner_id: RunnerId, config: RunnerConfig) -> None:
        """Store (or overwrite) the config of ``runner_id``, durably, before returning.

        Runner ids are what providers hand out (instance ids, pod names) and runner
        names (``runs-fleet-<job>-<attempt>``): letters, digits, ``.``, ``_`` and ``-``.
        An adapter refuses anything else with ``ValueError`` before touching storage."""
        ...

    async def get(self, runner_id: RunnerId) -> RunnerConfig | None:
        """The config, or ``None`` when there is none."""
        ...

    async def delete(self, runner_id: RunnerId) -> None:
        """Remove the config. Deleting a missing one is not an error."""
        ...

    async def list_ids(self) -> Sequence[RunnerId]:
        """Ids of every stored config (housekeeping removes stale ones)."""
        ...
