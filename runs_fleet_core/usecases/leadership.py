"""One leader among replicas for the loops that must run once: pools and housekeeping.

Every replica calls :meth:`Leadership.tick` on a timer. A tick takes or renews the
StateStore lease; only the holder runs the chores. The lease expires on its own when a
leader dies, so another replica takes over within one TTL. A leader paused past its TTL
may wake up mid-tick after another replica took over: the lease is confirmed (renewed
under its fencing token, which the StateStore refuses once another holding began) before
each chore after the first, and a chore that acts on shared resources takes
:meth:`Leadership.confirm` as its fence and confirms right before each action.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import attrs

from runs_fleet_core.domain.lease import Lease
from runs_fleet_core.errors import AdapterError
from runs_fleet_core.ports import Clock, Metrics, StateStore

Chore = Callable[[], Awaitable[object]]
DEFAULT_LEASE_S = 180.0

_log = logging.getLogger(__name__)


@attrs.define(kw_only=True)
class Leadership:
    """Runs ``chores`` on the replica holding the lease ``name``."""

    state: StateStore
    clock: Clock
    metrics: Metrics
    owner: str
    chores: Sequence[tuple[str, Chore]]
    name: str = "runs-fleet-scheduler"
    ttl_s: float = DEFAULT_LEASE_S
    lease: Lease | None = None

    @property
    def leading(self) -> bool:
        return self.lease is not None and self.lease.valid_at(self.clock.now())

    async def tick(self) -> bool:
        """Take or keep the lease, then run every chore if leading. One failing chore
        is counted and does not stop the others. Returns whether this replica leads."""
        try:
            await self._hold()
        except AdapterError as exc:
            # the state store is unreachable: a lease held stays valid until it expires
            self.metrics.increment("scheduler_lease_errors")
            _log.warning("scheduler lease %s not taken or renewed: %s", self.name, exc)
        self.metrics.gauge("scheduler_leader", 1.0 if self.leading else 0.0)
        if not self.leading:
            return False
        for index, (chore_name, chore) in enumerate(self.chores):
            if index and not await self._still_leading():
                self.metrics.increment("scheduler_lease_lost", labels={"chore": chore_name})
                return False
            try:
                await chore()
            except AdapterError as exc:
                self.metrics.increment("scheduler_chore_errors", labels={"chore": chore_name})
                _log.warning("scheduler: %s failed, next round tries again: %s", chore_name, exc)
        return True

    async def _still_leading(self) -> bool:
        """:meth:`confirm`, where a state store that cannot answer means "no"."""
        try:
            return await self.confirm()
        except AdapterError as exc:
            _log.warning("scheduler lease %s not confirmed: %s", self.name, exc)
            return False

    async def confirm(self) -> bool:
        """Whether this replica still holds the lease, as the StateStore decides now.

        The lease is renewed under its fencing token, so the answer is ``False`` as soon
        as another replica has taken the lease (or it was released), whatever this
        replica's clock says; this replica then leads no more until a tick acquires the
        lease again. Pass it as the ``fence`` of a chore that must stop acting then.
        """
        if self.lease is None:
            return False
        self.lease = await self.state.renew_lease(self.lease, self.ttl_s, self.clock.now())
        return self.lease is not None

    async def _hold(self) -> None:
        now = self.clock.now()
        if self.lease is not None:
            self.lease = await self.state.renew_lease(self.lease, self.ttl_s, now)
        if self.lease is None:
            self.lease = await self.state.acquire_lease(self.name, self.owner, self.ttl_s, now)

    async def resign(self) -> None:
        """Give the lease up (on shutdown) so another replica takes over at once."""
        if self.lease is not None:
            await self.state.release_lease(self.lease)
            self.lease = None
