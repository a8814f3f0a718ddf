"""Dispatch: one job message becomes exactly one runner bound to that job.

Steps: read the job → claim it (a conditional write with an expiring claim) → take a
warm-pool runner if the label names a pool and one is idle (an atomic assignment) or
else get a JIT config (or, where GitHub has none, a registration token), store it, and
create a runner through the Provider → record the runner → acknowledge. Every step is
idempotent and guarded by the job's stored state, so a crash anywhere leaves a state
that the re-delivered message completes without a second runner: runner names derive
from job id and attempt, and providers treat a second create with the same name as the
first.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import random
from collections.abc import Callable, Mapping
from datetime import timedelta

import attrs

from runs_fleet_core.domain.ids import JobId, RunnerId, runner_name_for
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.messages import JobMessage
from runs_fleet_core.domain.runner import RegistrationMode, RunnerConfig, RunnerPhase
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import AdapterError, ConflictError, NotFoundError
from runs_fleet_core.ports import (
    Clock,
    ConfigStore,
    Delivery,
    GitHub,
    Metrics,
    PoolProvider,
    Provider,
    Queue,
    StateStore,
)
from runs_fleet_core.usecases.ephemeral import ensure_pool_for

_log = logging.getLogger(__name__)


class DispatchOutcome(enum.StrEnum):
    LAUNCHED = "launched"
    WARM = "warm"
    ALREADY_DONE = "already_done"
    BUSY = "busy"
    RETRY = "retry"
    DEAD_LETTERED = "dead_lettered"
    FAILED = "failed"


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(n-1))]."""
    return rng.uniform(0, min(cap_s, base_s * 2 ** max(attempt - 1, 0)))


@attrs.define(kw_only=True)
class Dispatcher:
    """Handles deliveries of job messages. ``owner`` identifies this worker in claims."""

    state: StateStore
    queue: Queue
    configs: ConfigStore
    github: GitHub
    providers: Mapping[str, Provider]
    pool_providers: Mapping[str, PoolProvider]
    clock: Clock
    metrics: Metrics
    owner: str
    default_backend: str
    claim_ttl_s: float = 120.0
    max_attempts: int = 3
    retry_base_s: float = 5.0
    retry_cap_s: float = 300.0
    rng: random.Random = attrs.field(factory=random.Random)
    ephemeral_pool_max_size: int = 10
    """Cap of the ephemeral pool made for a ``pool=`` naming no pool (0: make none)."""
    registration: RegistrationMode = RegistrationMode.JIT
    """How runners register: a JIT config per runner, or a registration token with
    which the runner's ``config.sh`` registers it (where GitHub has no JIT configs)."""
    runner_settings: Callable[[Job, str], Mapping[str, str]] = attrs.field(
        default=lambda job, runner_name: {}
    )
    """Extra settings for the agent (where to report, its report token), called with the
    job and the runner name; stored in the runner config, which is secret as a whole."""

    async def handle(self, delivery: Delivery) -> DispatchOutcome:
        """Process one delivery; acknowledges, retries or dead-letters it before returning."""
        message = delivery.message
        job = await self._current_job(message)
        if job is None or self._done(job, message):
            await self.queue.ack(delivery)
            return DispatchOutcome.ALREADY_DONE
        now = self.clock.now()
        if job.claim_active(now) and job.claim_owner != self.owner:
            assert job.claim_expires_at is not None
            wait = (job.claim_expires_at - now).total_seconds()
            await self.queue.retry(delivery, max(wait, 1.0))
            return DispatchOutcome.BUSY
        try:
            job = await self._claim(job)
            outcome = await self._launch(job)
        except ConflictError:
            await self.queue.retry(delivery, self._delay(delivery))
            return DispatchOutcome.BUSY
        except AdapterError as exc:
            return await self._failed(delivery, message.job_id, exc)
        await self.queue.ack(delivery)
        return outcome

    async def _current_job(self, message: JobMessage) -> Job | None:
        job = await self.state.get_job(message.job_id)
        if job is not None:
            return job
        created = Job.new(
            job_id=message.job_id,
            run_id=message.run_id,
            repository=message.repository,
            at=self.clock.now(),
            spec=message.spec,
        )
        try:
            return await self.state.put_job(created, expect_version=None)
        except ConflictError:
            return await self.state.get_job(message.job_id)

    @staticmethod
    def _done(job: Job, message: JobMessage) -> bool:
        """Nothing left to do: final, superseded, running, or launched already."""
        if job.final or job.attempt > message.attempt or job.status is JobStatus.RUNNING:
            return True
        return job.status is JobStatus.LAUNCHING and job.runner_id is not None

    async def _claim(self, job: Job) -> Job:
        now = self.clock.now()
        expires = now + timedelta(seconds=self.claim_ttl_s)
        if job.status in (JobStatus.QUEUED, JobStatus.REQUEUED):
            claimed = job.transition(
                JobStatus.CLAIMED, at=now, claim_owner=self.owner, claim_expires_at=expires
            )
        else:  # claimed or launching by an owner whose claim expired (or by us)
            claimed = attrs.evolve(job, claim_owner=self.owner, claim_expires_at=expires)
        return await self.state.put_job(claimed, expect_version=job.version)

    async def _launch(self, job: Job) -> DispatchOutcome:
        spec = job.spec
        assert spec is not None
        backend = job.backend or spec.backend or self.default_backend
        if spec.pool and (warm := await self._take_warm(job, backend)) is not None:
            return warm
        if spec.pool and backend in self.pool_providers:
            await self._ensure_pool(job)
        provider = self.providers.get(backend)
        if provider is None:
            raise AdapterError(
                f"backend {backend!r} is not available in this deployment", retryable=False
            )
        name = runner_name_for(job.job_id, job.attempt)
        if job.status is JobStatus.LAUNCHING and await self._taken_at_github(job):
            return DispatchOutcome.ALREADY_DONE
        await self._store_config(job, spec, RunnerId(name), name)
        if job.status is JobStatus.CLAIMED:
            job = await self._save(
                job.transition(
                    JobStatus.LAUNCHING, at=self.clock.now(), runner_name=name, backend=backend
                ),
                job,
            )
        result = await provider.create_runner(spec, runner_name=name)
        await self._save(attrs.evolve(job, runner_id=result.runner_id), job)
        self.metrics.increment("runners_launched", labels={"backend": backend})
        return DispatchOutcome.LAUNCHED

    async def _taken_at_github(self, job: Job) -> bool:
        """Whether GitHub already gave ``job`` to a runner. Asked only when a launch was
        interrupted after the runner may have been created (no runner id recorded):
        that runner may have run the job and been cleaned up since, and creating it again
        would start a second runner for a job that ran. GitHub's ``in_progress`` and
        ``completed`` webhooks (or healing) settle such a job; when GitHub cannot be
        asked, the launch goes on (creating a runner is idempotent while it exists)."""
        try:
            seen = await self.github.get_job(job.repository, job.job_id)
        except (AdapterError, NotFoundError):
            return False
        if seen.status in ("in_progress", "completed"):
            _log.info("job %s: GitHub gave it to a runner already; not launched again", job.job_id)
            return True
        return False

    async def _take_warm(self, job: Job, backend: str) -> DispatchOutcome | None:
        """Bind an idle pool runner to the job; ``None`` when none is free."""
        assert job.spec is not None and job.spec.pool is not None
        pools = self.pool_providers.get(backend)
        if pools is None:
            return None
        runner_id = await self._find_assignment(job.job_id)
        if runner_id is None:
            runner_id = await self._assign_idle(pools, job)
        if runner_id is None:
            self.metrics.increment("pool_misses", labels={"pool": job.spec.pool, "reason": "busy"})
            return None
        name = runner_name_for(job.job_id, job.attempt)
        await self._store_config(job, job.spec, runner_id, name)
        try:
            await pools.start_runners([runner_id])
        except (NotFoundError, AdapterError) as exc:
            await self._give_back(pools, job, runner_id, exc)
            return None
        launching = (
            job.transition(
                JobStatus.LAUNCHING,
                at=self.clock.now(),
                runner_name=name,
                runner_id=runner_id,
                backend=backend,
            )
            if job.status is JobStatus.CLAIMED
            else attrs.evolve(job, runner_id=runner_id)
        )
        await self._save(launching, job)
        self.metrics.increment("pool_hits", labels={"pool": job.spec.pool})
        return DispatchOutcome.WARM

    async def _ensure_pool(self, job: Job) -> None:
        """A ``pool=`` naming no configured pool gets an ephemeral one, sized from demand
        by the pool loop; this job cold-starts. A failure here never holds the job up."""
        try:
            await ensure_pool_for(
                job,
                state=self.state,
                clock=self.clock,
                metrics=self.metrics,
                max_size=self.ephemeral_pool_max_size,
            )
        except AdapterError as exc:
            _log.warning("job %s: no ephemeral pool made: %s", job.job_id, exc)

    async def _give_back(
        self, pools: PoolProvider, job: Job, runner_id: RunnerId, exc: Exception
    ) -> None:
        """A warm runner would not start (it vanished since it was listed, or the
        backend refused to start it, e.g. no capacity for a stopped instance's type):
        remove its config, release the claim and stop it again, so the pool keeps it
        and the job falls back to a cold start."""
        assert job.spec is not None and job.spec.pool is not None
        _log.warning(
            "job %s: warm runner %s did not start (%s); cold start", job.job_id, runner_id, exc
        )
        await self.configs.delete(runner_id)
        if not isinstance(exc, NotFoundError):  # stopped while still ours: none can take it
            with contextlib.suppress(NotFoundError, AdapterError):
                await pools.stop_runners([runner_id])
        await self.state.release_runner(runner_id, job.job_id)
        reason = "gone" if isinstance(exc, NotFoundError) else "start_failed"
        self.metrics.increment("pool_misses", labels={"pool": job.spec.pool, "reason": reason})

    async def _find_assignment(self, job_id: JobId) -> RunnerId | None:
        """The runner already bound to ``job_id`` (after a crash mid-dispatch)."""
        for assignment in await self.state.list_assignments():
            if assignment.job_id == job_id:
                return assignment.runner_id
        return None

    async def _assign_idle(self, pools: PoolProvider, job: Job) -> RunnerId | None:
        assert job.spec is not None and job.spec.pool is not None
        runners = await pools.list_pool_runners(job.spec.pool)
        order = {RunnerPhase.RUNNING: 0, RunnerPhase.STOPPED: 1}
        for runner in sorted(
            (r for r in runners if r.phase in order), key=lambda r: (order[r.phase], r.runner_id)
        ):
            if await self.state.assign_runner(runner.runner_id, job.job_id, self.clock.now()):
                return runner.runner_id
        return None

    async def _store_config(self, job: Job, spec: RunnerSpec, key: RunnerId, name: str) -> None:
        """Store the runner's JIT config (or registration token), reusing one an
        interrupted attempt stored."""
        existing = await self.configs.get(key)
        if existing is not None and (existing.job_id, existing.runner_name) == (job.job_id, name):
            return
        labels = spec.labels or (spec.label,)
        config = RunnerConfig(
            runner_name=name,
            job_id=job.job_id,
            repository=job.repository,
            jit_config="",
            labels=spec.labels,
            settings=dict(self.runner_settings(job, name)),
        )
        if self.registration is RegistrationMode.TOKEN:
            registration = await self.github.registration_token(job.repository)
            config = attrs.evolve(
                config,
                labels=labels,
                registration_token=registration.token,
                registration_url=registration.url,
            )
        else:
            jit = await self.github.create_jit_config(
                job.repository, runner_name=name, labels=labels
            )
            config = attrs.evolve(config, jit_config=jit.encoded)
        await self.configs.put(key, config)

    async def _save(self, new: Job, old: Job) -> Job:
        return await self.state.put_job(new, expect_version=old.version)

    def _delay(self, delivery: Delivery) -> float:
        return backoff_delay(
            delivery.attempt, base_s=self.retry_base_s, cap_s=self.retry_cap_s, rng=self.rng
        )

    async def _failed(
        self, delivery: Delivery, job_id: JobId, exc: AdapterError
    ) -> DispatchOutcome:
        """Undo what the failed attempt left, then retry, dead-letter or fail the job;
        the log says which, with the error (it names what to fix)."""
        job = await self.state.get_job(job_id)
        repository = delivery.message.repository
        self.metrics.increment("dispatch_errors", labels={"retryable": str(exc.retryable)})
        if exc.retryable and delivery.attempt < self.max_attempts:
            _log.warning("job %s of %s: attempt %d failed, retrying: %s",
                         job_id, repository, delivery.attempt, exc)  # fmt: skip
            await self._release(job, f"attempt {delivery.attempt} failed, retrying: {exc}")
            await self.queue.retry(delivery, self._delay(delivery))
            return DispatchOutcome.RETRY
        if exc.retryable:
            why = f"gave up after {delivery.attempt} attempts: {exc}"
            _log.error("job %s of %s: dead-lettered, %s", job_id, repository, why)
            await self._release(job, f"dead-lettered, {why}")
            await self.queue.dead_letter(delivery, why)
            return DispatchOutcome.DEAD_LETTERED
        _log.error("job %s of %s: could not get a runner: %s", job_id, repository, exc)
        await self._release(job, None)
        if job is not None and job.can_become(JobStatus.FAILED):
            job = await self.state.get_job(job_id) or job
            failed = job.transition(
                JobStatus.FAILED, at=self.clock.now(), reason=f"could not get a runner: {exc}"
            )
            await self.state.put_job(failed, expect_version=job.version)
        await self.queue.ack(delivery)
        return DispatchOutcome.FAILED

    async def _release(self, job: Job | None, reason: str | None) -> None:
        """Return a half-dispatched job to the queue state: config deleted, warm runner
        released, claim dropped (failed paths must not leave an old config behind).
        ``reason`` (the failure, with the backend's error code) is kept on the job, so
        the jobs API shows why it is still queued."""
        if job is None or job.final or job.runner_id is not None:
            return
        await self.configs.delete(RunnerId(runner_name_for(job.job_id, job.attempt)))
        if (warm := await self._find_assignment(job.job_id)) is not None:
            await self.configs.delete(warm)
            await self.state.release_runner(warm, job.job_id)
        if job.status in (JobStatus.CLAIMED, JobStatus.LAUNCHING):
            queued = job.transition(
                JobStatus.QUEUED,
                at=self.clock.now(),
                claim_owner=None,
                claim_expires_at=None,
                reason=reason,
            )
            with contextlib.suppress(ConflictError):
                await self.state.put_job(queued, expect_version=job.version)
