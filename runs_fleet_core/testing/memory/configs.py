"""An in-memory ConfigStore for runner configs.

Configs carry a JIT config (a secret); the fake keeps them as JSON through the config
converter, the same bytes a real store would hold, and never shows them in its repr.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from runs_fleet_core.converters import dumps, loads, make_config_converter
from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.runner import RunnerConfig


class MemoryConfigStore:
    """The :class:`~runs_fleet_core.ports.ConfigStore` port, in memory."""

    def __init__(self) -> None:
        self._converter = make_config_converter()
        self._configs: dict[RunnerId, str] = {}

    async def put(self, runner_id: RunnerId, config: RunnerConfig) -> None:
        """Store (or overwrite) the config of ``runner_id``."""
        payload = dumps(self._converter, config)
        await asyncio.sleep(0)
        self._configs[runner_id] = payload

    async def get(self, runner_id: RunnerId) -> RunnerConfig | None:
        """The config of ``runner_id``, or ``None``."""
        await asyncio.sleep(0)
        payload = self._configs.get(runner_id)
        return None if payload is None else loads(self._converter, payload, RunnerConfig)

    async def delete(self, runner_id: RunnerId) -> None:
        """Remove the config; removing a missing one is not an error."""
        await asyncio.sleep(0)
        self._configs.pop(runner_id, None)

    async def list_ids(self) -> Sequence[RunnerId]:
        """Ids of every stored config, sorted."""
        await asyncio.sleep(0)
        return sorted(self._configs)

    def __repr__(self) -> str:
        return f"MemoryConfigStore({len(self._configs)} configs)"
