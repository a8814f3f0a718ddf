"""Warm pools: their configuration and the actions that keep them at size.

The planning itself lives in ``planning.py`` as a pure function; this module holds the
values it reads and returns.

Scale-down reserves each runner in the StateStore before stopping or terminating it, by
binding it to :data:`SCALE_DOWN_RESERVATION` through the same atomic assignment that
dispatch uses to claim a runner for a job: a runner holding a job cannot be reserved,
and a reserved one cannot be claimed until the reservation is released.
"""

from __future__ import annotations

import re

import attrs

from runs_fleet_core.domain.ids import JobId, RunnerId

POOL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

SCALE_DOWN_RESERVATION = JobId(0)
"""The job a runner is bound to while the pool loop stops or terminates it. GitHub's job
ids start at 1, so no real job ever has it; every store can hold it (a Kubernetes label
value, a DynamoDB number, a Valkey field) where a negative id would not."""


@attrs.frozen(kw_only=True)
class Schedule:
    """Sizes that apply on ``weekdays`` (0 = Monday) from ``start_hour`` to ``end_hour``.

    Hours are in UTC, ``start_hour`` inclusive and ``end_hour`` exclusive (0..24). A
    window with ``start_hour > end_hour`` wraps past midnight.
    """

    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    start_hour: int = 0
    end_hour: int = 24
    desired_running: int = 0
    desired_stopped: int = 0


@attrs.frozen(kw_only=True)
class PoolConfig:
    """One warm pool: how many idle runners to keep started and stopped, and for what.

    ``label`` is the ``runs-on`` label whose spec the pool's runners are built from.
    ``idle_timeout_s``: an idle runner above the desired count is scaled down only after
    being idle this long. ``ephemeral`` pools have no fixed size: their running size
    follows recent demand, capped by ``desired_running``.
    """

    name: str
    label: str = ""
    desired_running: int = 0
    desired_stopped: int = 0
    idle_timeout_s: int = 600
    schedules: tuple[Schedule, ...] = ()
    ephemeral: bool = False
    backend: str | None = None


@attrs.frozen(kw_only=True)
class PoolPlan:
    """What to do to one pool now. Never names a runner that holds a job."""

    pool: str
    start: tuple[RunnerId, ...] = ()
    stop: tuple[RunnerId, ...] = ()
    terminate: tuple[RunnerId, ...] = ()
    create_running: int = 0
    create_stopped: int = 0

    @property
    def empty(self) -> bool:
        return not (
            self.start or self.stop or self.terminate or self.create_running or self.create_stopped
        )
