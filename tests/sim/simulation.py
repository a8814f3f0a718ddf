"""Two replicas running the real use cases against one shared state, cycle after cycle.

Each cycle starts, as concurrent asyncio tasks in a shuffled order: the clock moving on
(sometimes past the pool-loop lease, so that a leader can be deposed mid-pass while
the other replica takes over), jobs arriving through intake, each replica's dispatcher
taking deliveries (warm-pool claims included), each replica's scheduler tick (pool
reconcile with the lease as its fence, then housekeeping), jobs starting and ending
(the agent terminates its runner, then GitHub's ``completed`` arrives), and an operator
resizing pools and their schedules. Every adapter call may be preempted
(:mod:`tests.sim.preempt`), and the compute side records who held a job whenever a
runner is stopped or terminated (:mod:`tests.sim.recorder`).

Everything random comes from one seeded generator; on the in-memory store the event
loop's order is deterministic too, so a seed replays the same run. Time is a
``ManualClock``: nothing sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.labels import LabelDefaults
from runs_fleet_core.domain.messages import WorkflowJobAction, WorkflowJobEvent
from runs_fleet_core.domain.pool import PoolConfig, PoolPlan, Schedule
from runs_fleet_core.domain.runner import RunnerPhase
from runs_fleet_core.ports import StateStore
from runs_fleet_core.testing.memory import (
    FakeGitHub,
    ManualClock,
    MemoryConfigStore,
    MemoryPoolProvider,
    MemoryProvider,
    MemoryQueue,
    RecordingMetrics,
)
from runs_fleet_core.usecases.completion import Completion
from runs_fleet_core.usecases.dispatch import Dispatcher
from runs_fleet_core.usecases.housekeeping import Housekeeper
from runs_fleet_core.usecases.intake import Intake
from runs_fleet_core.usecases.leadership import Leadership
from runs_fleet_core.usecases.pools import reconcile_pools
from tests.sim.preempt import Preempting, yield_randomly
from tests.sim.recorder import BusyProbe, Ledger, RecordingPoolProvider, RecordingProvider

BACKEND = "memory"
POOLS = ("alpha", "beta")
REPOSITORY = "octo-org/widgets"
LEASE_S = 60.0
GIVE_UP_S = 900.0
"""A job whose runner never picked it up is cancelled after this long (as a person would)."""
HOUSEKEEPING_SHARE = 0.35
STALL_SHARE = 0.1
"""Share of cycles in which a running pool pass outlives its leader's lease."""
RETENTION_S = 300.0
"""How long a final job's record is kept where the store is told to expire them."""


@attrs.frozen(kw_only=True)
class Summary:
    """What one run did; ``violations`` lists each busy runner stopped or terminated."""

    seed: int
    cycles: int
    jobs_served: int
    warm_claims: int
    stopped: int
    terminated: int
    takeovers: int
    overlapping_passes: int
    fenced_passes: int
    violations: tuple[str, ...]

    def line(self, backend: str) -> str:
        return (
            f"scale-down simulation [{backend}] seed={self.seed}: cycles={self.cycles} "
            f"jobs served={self.jobs_served} warm claims={self.warm_claims} "
            f"runners stopped={self.stopped} terminated={self.terminated} "
            f"leader takeovers={self.takeovers} overlapping passes={self.overlapping_passes} "
            f"fenced passes={self.fenced_passes} violations={len(self.violations)}"
        )


class Replica:
    """One orchestrator process: its own use cases over preemptible shared adapters."""

    def __init__(self, sim: Simulation, name: str, store: StateStore) -> None:
        rng, clock, metrics = sim.rng, sim.clock, sim.metrics
        self.name = name
        self.sim = sim
        state: Any = Preempting(store, rng)
        queue: Any = Preempting(sim.queue, rng)
        configs: Any = Preempting(sim.configs, rng)
        self.pool_providers: Any = {BACKEND: Preempting(sim.pool_provider, rng)}
        providers: Any = {BACKEND: Preempting(sim.provider, rng)}
        self.state: StateStore = state
        self.queue: Any = queue
        self.intake = Intake(
            state=state,
            queue=queue,
            clock=clock,
            metrics=metrics,
            labels=LabelDefaults(backends=frozenset({BACKEND})),
            backends=(BACKEND,),
            default_backend=BACKEND,
        )
        self.dispatcher = Dispatcher(
            state=state,
            queue=queue,
            configs=configs,
            github=sim.github,
            providers=providers,
            pool_providers=self.pool_providers,
            clock=clock,
            metrics=metrics,
            owner=name,
            default_backend=BACKEND,
            claim_ttl_s=120,
            rng=random.Random(rng.random()),
        )
        self.completion = Completion(
            state=state, configs=configs, queue=queue, clock=clock, metrics=metrics
        )
        housekeeper = Housekeeper(
            state=state,
            queue=queue,
            configs=configs,
            providers=providers,
            clock=clock,
            metrics=metrics,
        )
        self.leadership = Leadership(
            state=state, clock=clock, metrics=metrics, owner=name, chores=(), ttl_s=LEASE_S
        )
        self._housekeeper = housekeeper
        self.leadership.chores = [("pools", self.reconcile), ("housekeeping", self.housekeep)]

    async def housekeep(self) -> None:
        """Housekeeping on about one leader tick in three: it lists every job, which the
        memory store pays for by decoding them all."""
        if self.sim.rng.random() < HOUSEKEEPING_SHARE:
            await self._housekeeper.run()

    async def reconcile(self) -> list[PoolPlan]:
        """The pools chore, fenced by this replica's lease; overlapping passes counted."""
        sim = self.sim
        sim.passes_running += 1
        sim.overlapping_passes += sim.passes_running > 1
        try:
            return await reconcile_pools(
                state=self.state,
                pool_providers=self.pool_providers,
                default_backend=BACKEND,
                clock=sim.clock,
                metrics=sim.metrics,
                fence=self.leadership.confirm,
            )
        finally:
            sim.passes_running -= 1


class Simulation:
    """``cycles`` cycles of two replicas over ``state`` (probed by ``probe``)."""

    def __init__(
        self,
        *,
        seed: int,
        state: StateStore,
        probe: BusyProbe,
        cycles: int,
        replica_states: Sequence[StateStore] = (),
        retention: Callable[[datetime], None] | None = None,
    ) -> None:
        """``replica_states``: each replica's own client of the shared store (default:
        both use ``state``); ``retention`` expires final jobs ended before a time."""
        self.seed = seed
        self._retention = retention
        self.cycles = cycles
        self.rng = random.Random(seed)
        self.clock = ManualClock()
        self.state = state
        self.queue = MemoryQueue(self.clock, max_attempts=20, visibility_timeout_s=300)
        self.configs = MemoryConfigStore()
        self.github = FakeGitHub()
        self.metrics = RecordingMetrics()
        self.ledger = Ledger(seed=seed)
        self.cloud_pools = MemoryPoolProvider(self.clock, name=BACKEND)
        self.cloud = MemoryProvider(self.clock, name=BACKEND)
        self.pool_provider = RecordingPoolProvider(self.cloud_pools, probe, self.ledger)
        self.provider = RecordingProvider(self.cloud, probe, self.ledger)
        self.passes_running = 0
        self.overlapping_passes = 0
        self.served = 0
        self._leader: str | None = None
        self._takeovers = 0
        self._job_ids = itertools.count(1001)
        self._busy = True
        self._ends: dict[JobId, datetime] = {}
        stores = list(replica_states) or [state, state]
        self.replicas = [Replica(self, f"replica-{n}", store) for n, store in enumerate(stores, 1)]

    async def run(self) -> Summary:
        for pool in POOLS:
            await self.state.put_pool(PoolConfig(name=pool, desired_running=2, idle_timeout_s=60))
        for cycle in range(1, self.cycles + 1):
            self.ledger.cycle = cycle
            work: list[Coroutine[Any, Any, None]] = [
                self._advance_clock(),
                self._arrive(),
                self._reconfigure(),
                self._progress(),
            ]
            for replica in self.replicas:
                work += [self._dispatch(replica), self._tick(replica)]
            self.rng.shuffle(work)
            await asyncio.gather(*work)
            if self._retention is not None:
                self._retention(self.clock.now() - timedelta(seconds=RETENTION_S))
        return Summary(
            seed=self.seed,
            cycles=self.cycles,
            jobs_served=self.served,
            warm_claims=int(self.metrics.count("pool_hits")),
            stopped=int(self.metrics.count("pool_runners_stopped")),
            terminated=int(self.metrics.count("pool_runners_terminated")),
            takeovers=self._takeovers,
            overlapping_passes=self.overlapping_passes,
            fenced_passes=int(self.metrics.count("pool_reconcile_fenced")),
            violations=tuple(str(v) for v in self.ledger.violations),
        )

    def _replica(self) -> Replica:
        return self.rng.choice(self.replicas)

    async def _advance_clock(self) -> None:
        """A few steps of time, now and then one long enough for a lease to run out; in
        some cycles that one comes while a pool pass is running, as if its leader had
        paused past its lease (the other replica may then take over mid-pass)."""
        if self.rng.random() < STALL_SHARE:
            for _ in range(200):
                if self.passes_running:
                    self.clock.advance(self.rng.uniform(LEASE_S, LEASE_S * 1.5))
                    break
                await asyncio.sleep(0)
        for _ in range(self.rng.randint(1, 3)):
            await yield_randomly(self.rng, 25)
            long = self.rng.random() < 0.15
            self.clock.advance(self.rng.uniform(40, 70) if long else self.rng.uniform(1, 20))

    async def _arrive(self) -> None:
        """``queued`` webhooks for new jobs, most of them asking for a warm pool."""
        if self.ledger.cycle % 40 == 0:
            self._busy = not self._busy
        weights = (2, 4, 3, 1) if self._busy else (8, 2, 0, 0)
        count = self.rng.choices((0, 1, 2, 3), weights=weights)[0]
        for _ in range(count):
            await yield_randomly(self.rng, 10)
            job_id = next(self._job_ids)
            label = f"runs-fleet={job_id}/cpu=2"
            if self.rng.random() < 0.85:
                label += f"/pool={self.rng.choice(POOLS)}"
            await self._replica().intake.take(
                self._event(job_id, WorkflowJobAction.QUEUED, labels=(label,))
            )

    async def _reconfigure(self) -> None:
        """An operator resizing a pool, sometimes with a schedule for part of the day."""
        if self.rng.random() >= 0.3:
            return
        await yield_randomly(self.rng, 25)
        schedules: tuple[Schedule, ...] = ()
        if self.rng.random() < 0.3:
            start = self.rng.randint(0, 23)
            schedules = (
                Schedule(
                    start_hour=start,
                    end_hour=(start + self.rng.randint(1, 6)) % 24,
                    desired_running=self.rng.randint(0, 4),
                    desired_stopped=self.rng.randint(0, 2),
                ),
            )
        config = PoolConfig(
            name=self.rng.choice(POOLS),
            desired_running=self.rng.randint(0, 5),
            desired_stopped=self.rng.randint(0, 3),
            idle_timeout_s=self.rng.choice((0, 30, 120)),
            schedules=schedules,
        )
        await self._replica().state.put_pool(config)

    async def _dispatch(self, replica: Replica) -> None:
        await yield_randomly(self.rng, 25)
        deliveries = await replica.queue.receive(self.rng.randint(1, 4), 0)
        await asyncio.gather(*(replica.dispatcher.handle(d) for d in deliveries))

    async def _tick(self, replica: Replica) -> None:
        if self.rng.random() >= 0.75:
            return
        await yield_randomly(self.rng, 25)
        if await replica.leadership.tick() and self._leader != replica.name:
            self._takeovers += self._leader is not None
            self._leader = replica.name

    async def _progress(self) -> None:
        """GitHub and the agents: launched jobs start on their runner, running ones end."""
        await yield_randomly(self.rng, 25)
        jobs = [
            *await self.state.list_jobs(status=JobStatus.LAUNCHING),
            *await self.state.list_jobs(status=JobStatus.RUNNING),
        ]
        await asyncio.gather(*(self._advance_job(job, self._replica()) for job in jobs))

    async def _advance_job(self, job: Job, replica: Replica) -> None:
        await yield_randomly(self.rng, 10)
        now = self.clock.now()
        if job.status is JobStatus.RUNNING:
            if now >= self._ends.setdefault(job.job_id, now):
                await self._finish(job, replica, "success")
            return
        if job.runner_id is None:
            return
        if await self._runs(job.runner_id) and self.rng.random() < 0.6:
            await replica.completion.job_started(
                self._event(job.job_id, WorkflowJobAction.IN_PROGRESS, runner=job.runner_name)
            )
            self._ends[job.job_id] = now + timedelta(seconds=self.rng.uniform(30, 400))
            return
        launched = job.entered(JobStatus.LAUNCHING) or now
        if (now - launched).total_seconds() > GIVE_UP_S:
            await self._finish(job, replica, "cancelled")

    async def _finish(self, job: Job, replica: Replica, conclusion: str) -> None:
        """The agent terminates its own runner, then GitHub says the job completed."""
        if job.runner_id is not None:
            await self._self_terminate(job.runner_id)
        outcome = await replica.completion.job_finished(
            self._event(job.job_id, WorkflowJobAction.COMPLETED, conclusion=conclusion)
        )
        self.served += outcome == "updated" and conclusion == "success"

    async def _runs(self, runner_id: RunnerId) -> bool:
        """Whether the runner is up in the cloud, able to pick its job up."""
        for pool in POOLS:
            for runner in await self.cloud_pools.list_pool_runners(pool):
                if runner.runner_id == runner_id:
                    return runner.phase is RunnerPhase.RUNNING
        return any(r.runner_id == runner_id for r in await self.cloud.list_runners())

    async def _self_terminate(self, runner_id: RunnerId) -> None:
        """The agent ending its runner: straight to the cloud, not a scale-down."""
        if runner_id.startswith("mem-pool-"):
            await self.cloud_pools.terminate_runners([runner_id])
        else:
            await self.cloud.terminate_runner(runner_id)

    def _event(
        self,
        job_id: int,
        action: WorkflowJobAction,
        *,
        labels: tuple[str, ...] = (),
        runner: str | None = None,
        conclusion: str | None = None,
    ) -> WorkflowJobEvent:
        return WorkflowJobEvent(
            action=action,
            job_id=JobId(job_id),
            run_id=job_id,
            run_attempt=1,
            repository=REPOSITORY,
            labels=labels,
            delivery_id=f"{action.value}-{job_id}-{self.rng.random()}",
            runner_name=runner,
            conclusion=conclusion,
        )
