"""Compute ports: where runners come from.

A backend (EC2, Kubernetes, local processes, a third party's cloud) implements
:class:`Provider` for cold starts and, when it supports warm pools, :class:`PoolProvider`.
Adapters over blocking SDKs run their calls in a bounded worker pool with a timeout;
every method may raise :class:`~runs_fleet_core.errors.ProviderError`, whose
``retryable`` flag tells dispatch whether to try again later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import PoolRunner, RunnerResult, RunnerState
from runs_fleet_core.domain.spec import RunnerSpec


@runtime_checkable
class Provider(Protocol):
    """Creates and removes one runner per job."""

    @property
    def name(self) -> str:
        """The backend's name as used in ``backend=`` labels (``ec2``, ``k8s``, ...)."""
        ...

    async def create_runner(self, spec: RunnerSpec, *, runner_name: str) -> RunnerResult:
        """Start a runner for ``spec`` (which has a ``job_id``), registered as ``runner_name``.

        Idempotent: a second call with the same ``runner_name`` (a re-delivered message,
        another replica) returns the runner the first call created and never starts a
        second one. Raises ``ProviderError`` (``retryable=False`` when no capacity can
        ever match the spec).
        """
        ...

    async def terminate_runner(self, runner_id: RunnerId) -> None:
        """Remove the runner. Removing one that is already gone is not an error."""
        ...

    async def describe_runner(self, runner_id: RunnerId) -> RunnerState:
        """The runner's current state; ``NotFoundError`` if the backend never had it,
        or a state with phase ``terminated`` if it is gone."""
        ...

    async def list_runners(self) -> Sequence[RunnerState]:
        """Every runner this deployment manages that is not yet terminated (used to
        find orphans). Paginates internally; returns all pages."""
        ...


@runtime_checkable
class PoolProvider(Protocol):
    """Keeps warm runners: started and idle, or stopped and quick to start."""

    @property
    def name(self) -> str: ...

    async def list_pool_runners(self, pool: str) -> Sequence[PoolRunner]:
        """Every non-terminated runner of ``pool`` (busy or idle: busy is the
        StateStore's business, not the provider's)."""
        ...

    async def create_pool_runners(
        self, pool: PoolConfig, count: int, *, stopped: bool = False
    ) -> Sequence[RunnerId]:
        """Add ``count`` runners to ``pool``; with ``stopped`` they end up stopped once
        ready. Returns the new ids."""
        ...

    async def start_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Start stopped runners. Starting a running one is not an error; an id the
        pool never had (or one already terminated) raises ``NotFoundError``."""
        ...

    async def stop_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Stop runners without removing them. Stopping a stopped one is not an error;
        an unknown or terminated id raises ``NotFoundError``."""
        ...

    async def terminate_runners(self, runner_ids: Sequence[RunnerId]) -> None:
        """Remove runners for good. Removing one already gone is not an error."""
        ...
