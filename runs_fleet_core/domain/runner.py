"""What the core knows about runners: results of creation, observed state, config.

These are the values that cross the Provider, PoolProvider and ConfigStore ports.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from runs_fleet_core.domain.ids import JobId, RunnerId


class RunnerPhase(enum.StrEnum):
    """A runner's life as the provider sees it, the same words for every backend."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"


@attrs.frozen(kw_only=True)
class RunnerResult:
    """A runner a provider created (or found already created for the same job)."""

    runner_id: RunnerId
    provider: str
    details: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class RunnerState:
    """A runner as a provider observed it.

    ``job_id`` is what the runner was launched for (from its tags or labels), ``None``
    for a warm-pool runner that has no job yet. ``runner_name`` is the name it registers
    with GitHub, when the provider knows it.
    """

    runner_id: RunnerId
    phase: RunnerPhase
    provider: str
    launched_at: datetime | None = None
    job_id: JobId | None = None
    pool: str | None = None
    runner_name: str | None = None
    details: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class PoolRunner:
    """One member of a warm pool.

    ``idle_since`` is when it last became free (``None`` when unknown); whether it is
    busy is never taken from here but from the StateStore's runner assignments.
    """

    runner_id: RunnerId
    pool: str
    phase: RunnerPhase
    idle_since: datetime | None = None
    instance_type: str | None = None


class RegistrationMode(enum.StrEnum):
    """How runners register with GitHub: a just-in-time config bound to one runner
    (``jit``), or a registration token the runner's ``config.sh`` uses (``token``)."""

    JIT = "jit"
    TOKEN = "token"  # noqa: S105 (a mode's name, not a password)


@attrs.frozen(kw_only=True, repr=False)
class RunnerConfig:
    """What an agent needs to register and run exactly one job.

    ``jit_config`` is GitHub's just-in-time runner configuration: a secret. Where JIT
    configs are unavailable it is ``""`` and the runner registers itself instead, with
    ``registration_token`` (a secret too) at ``registration_url`` (the repository's or
    organization's web URL, as ``config.sh --url`` wants it). ``repr`` is redacted so
    that logging a config never prints either secret.
    """

    runner_name: str
    job_id: JobId
    repository: str
    jit_config: str
    labels: tuple[str, ...] = ()
    settings: dict[str, str] = attrs.field(factory=dict)
    registration_token: str | None = None
    registration_url: str | None = None

    @property
    def registers_with_token(self) -> bool:
        """Whether the runner registers itself with a registration token."""
        return bool(self.registration_token)

    def __repr__(self) -> str:
        secret = "registration_token='***'" if self.registers_with_token else "jit_config='***'"
        return (
            f"RunnerConfig(runner_name={self.runner_name!r}, job_id={self.job_id!r}, "
            f"repository={self.repository!r}, {secret})"
        )


@attrs.frozen(kw_only=True)
class RunnerAssignment:
    """The StateStore's record that ``runner_id`` serves ``job_id``: the busy signal."""

    runner_id: RunnerId
    job_id: JobId
    assigned_at: datetime
