"""The simulated GitHub's behaviour, without HTTP: runners, jobs and webhooks (the
identity side is :mod:`~runs_fleet_github_simulator.directory`'s, the call log and
fault injection :mod:`~runs_fleet_github_simulator.traffic`'s).

This is a simulator for tests and demos, not GitHub. It keeps GitHub's rules where
runs-fleet depends on them: a JIT config registers an offline ephemeral runner and a
second one with the same name is refused (409); a runner takes the oldest queued job
of its repository (an organization runner: of its organization) whose labels it all
has (a test may hold a job back, or offer it to one runner); ``queued``,
``in_progress`` and ``completed`` webhooks are signed and sent as GitHub sends them;
an ephemeral runner is removed once its job completes; a runner that stops
communicating while it runs a job fails that job; a job is re-run only once its
workflow run has completed (workflow runs are :mod:`~runs_fleet_github_simulator.runs`'s).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from runs_fleet_github_simulator import payloads, webhooks
from runs_fleet_github_simulator.bodies import runner_labels
from runs_fleet_github_simulator.organizations import Organizations
from runs_fleet_github_simulator.records import (
    USER,
    Delivery,
    Job,
    Runner,
    TokenRegistration,
)
from runs_fleet_github_simulator.runs import WorkflowRuns
from runs_fleet_github_simulator.traffic import Traffic
from runs_fleet_github_simulator.webhooks import Deliveries

CONCLUSIONS = ("success", "failure", "cancelled")
RUN_STILL_RUNNING = "The workflow run containing this job is already running"
"""GitHub's answer (403) to re-running a job whose workflow run has not completed."""


class ApiError(Exception):
    """A refusal the REST layer turns into GitHub's error answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class GitHubSimulator(Organizations, Traffic, WorkflowRuns, Deliveries):
    """A simulated GitHub (not GitHub) holding one App, for runs-fleet's tests and demo.

    ``app_public_key``: PEM of the App's RSA public key (its JWTs are checked with it).
    ``webhook_url``/``webhook_secret``: where signed ``workflow_job`` webhooks go.
    ``token_ttl_s``: lifetime of installation tokens. ``clock``: seconds since the
    epoch, injectable to move time. Serve it over HTTP with
    :class:`~runs_fleet_github_simulator.SimulatorServer`; use it from one event loop.
    """

    def __init__(
        self,
        *,
        app_public_key: str | bytes,
        app_id: int = 1,
        app_slug: str = "runs-fleet-sim",
        webhook_url: str | None = None,
        webhook_secret: str | bytes = b"",
        token_ttl_s: float = 3600.0,
        rate_limit: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        Organizations.__init__(self, token_ttl_s=token_ttl_s, rate_limit=rate_limit, clock=clock)
        Traffic.__init__(self)
        WorkflowRuns.__init__(self)
        Deliveries.__init__(self, webhook_url, clock=clock)
        self._init_organizations()
        self.app = self.add_app(app_id, app_public_key, slug=app_slug)
        secret = webhook_secret.encode() if isinstance(webhook_secret, str) else webhook_secret
        self.webhook_secret = secret
        self.api_url = "http://127.0.0.1"
        self.sender = self.account("simulated-user", USER)
        self.runners: dict[int, Runner] = {}
        self.token_registrations: list[TokenRegistration] = []
        self.jobs: dict[int, Job] = {}
        self.closed = False
        self._changed: asyncio.Condition | None = None

    # --- runners -------------------------------------------------------------------

    def register_jit_runner(
        self,
        repository: str,
        *,
        name: str,
        labels: Sequence[str],
        runner_group_id: int = 1,
        work_folder: str = "_work",
    ) -> Runner:
        """Register an offline ephemeral runner; ``ApiError(409)`` if the name exists."""
        if self.runner_named(repository, name) is not None:
            raise ApiError(409, f"Already exists - A runner with the name {name} already exists.")
        runner = Runner(
            runner_id=self.next_id(),
            name=name,
            repository=self._canonical(repository),
            labels=list(labels),
            runner_group_id=runner_group_id,
            work_folder=work_folder,
            secret=secrets.token_urlsafe(24),
        )
        self.runners[runner.runner_id] = runner
        return runner

    def encode_jit_config(self, runner: Runner) -> str:
        """The runner's encoded JIT config: base64 of :meth:`runner_document`'s JSON
        (GitHub's is opaque)."""
        return base64.b64encode(json.dumps(self.runner_document(runner)).encode()).decode()

    def runner_document(self, runner: Runner) -> dict[str, Any]:
        """What a simulated runner needs to run: its id, name, labels, repository (or
        organization), the simulator's URL and its secret."""
        return {
            "runner_id": runner.runner_id,
            "runner_name": runner.name,
            "repository": runner.repository or runner.org,
            "labels": runner_labels(runner),
            "url": self.api_url,
            "secret": runner.secret,
        }

    def runners_of(self, repository: str) -> list[Runner]:
        """The runners registered in ``repository``, oldest first."""
        key = repository.lower()
        return [r for r in self.runners.values() if r.repository.lower() == key]

    def runner_named(self, repository: str, name: str) -> Runner | None:
        """The runner called ``name`` in ``repository``, if any."""
        return next((r for r in self.runners_of(repository) if r.name == name), None)

    def remove_runner(self, repository: str, runner_id: int) -> None:
        """Deregister a runner: ``ApiError`` 404 if unknown, 422 while it runs a job."""
        runner = self.runners.get(runner_id)
        if runner is None or runner.repository.lower() != repository.lower():
            raise ApiError(404, "Not Found")
        if runner.busy:
            raise ApiError(422, f"Bad request - Runner {runner.name} is still running a job")
        del self.runners[runner_id]

    # --- jobs and webhooks ---------------------------------------------------------

    async def queue_job(
        self,
        repository: str,
        labels: Sequence[str],
        *,
        run_id: int | None = None,
        name: str = "build",
        workflow_name: str = "CI",
        head_branch: str = "main",
        conclusion: str = "success",
        duration_s: float | None = None,
        held: bool = False,
    ) -> int:
        """Queue a job in ``repository`` and send its ``queued`` webhook (awaiting the
        delivery attempt). ``conclusion``/``duration_s``: what a simulated runner
        reports when it runs the job. ``held``: no runner takes it until
        :meth:`release_job`. A job joining an existing run shares its commit and
        attempt. Returns the job id."""
        if conclusion not in CONCLUSIONS:
            raise ValueError(f"conclusion must be one of {', '.join(CONCLUSIONS)}")
        repo = self.add_repository(repository, installed=False)
        job_id = self.next_id()
        run = self.workflow_run(repo.full_name, run_id) if run_id is not None else None
        job = Job(
            job_id=job_id,
            run_id=run_id if run_id is not None else self.next_id(),
            repository=repo.full_name,
            labels=list(labels),
            name=name,
            workflow_name=workflow_name,
            head_branch=head_branch,
            head_sha=run.first.head_sha if run else payloads.head_sha(job_id),
            created_at=self.clock(),
            run_attempt=run.attempt if run else 1,
            planned_conclusion=conclusion,
            duration_s=duration_s,
            held=held,
        )
        await self._enqueue(job)
        return job_id

    async def rerun_job(self, job_id: int) -> int:
        """Re-run a job as GitHub does: a new job (new id) in the next attempt of its
        run, with the same name, labels, workflow, branch and commit, queued (its
        ``queued`` webhook is sent). Re-running a job that was re-run already re-runs
        its latest execution. ``ApiError`` 404 for an unknown job, 403 while the run
        has a job not completed. Recorded in ``reruns``; returns the new job's id
        without waiting for the webhook's delivery, which may be behind others."""
        old = self.jobs.get(self.latest_execution(job_id))
        run = self.workflow_run(old.repository, old.run_id) if old is not None else None
        if old is None or run is None:
            raise ApiError(404, "Not Found")
        if run.status != "completed":
            raise ApiError(403, RUN_STILL_RUNNING)
        job = Job(
            job_id=self.next_id(),
            run_id=old.run_id,
            repository=old.repository,
            labels=list(old.labels),
            name=old.name,
            workflow_name=old.workflow_name,
            head_branch=old.head_branch,
            head_sha=old.head_sha,
            created_at=self.clock(),
            run_attempt=run.attempt + 1,
        )
        self.reruns.append((old.job_id, job.job_id))
        self.jobs[job.job_id] = job
        await self._notify()
        self._emit_later("queued", job)  # GitHub answers the API call before its webhook
        return job.job_id

    def set_job_result(self, job_id: int, conclusion: str, duration_s: float | None = None) -> None:
        """Preset what the simulated runner reports for ``job_id``."""
        if conclusion not in CONCLUSIONS:
            raise ValueError(f"conclusion must be one of {', '.join(CONCLUSIONS)}")
        self.jobs[job_id].planned_conclusion = conclusion
        self.jobs[job_id].duration_s = duration_s

    async def release_job(self, job_id: int, runner_name: str | None = None) -> None:
        """Let runners take a held job, or with ``runner_name`` only the runner of that
        name: which runner GitHub gives a job to, among those whose labels match, is
        GitHub's choice (runners launched for two jobs of one run may swap them)."""
        job = self.jobs[job_id]
        job.held, job.offered_to = False, runner_name
        await self._notify()

    async def cancel_job(self, job_id: int) -> None:
        """Cancel a job that is not completed and send its ``completed`` webhook."""
        job = self.jobs[job_id]
        if job.status == "completed":
            return
        self._finish(job, "cancelled")
        await self._emit("completed", job)

    async def send_job_event(self, job_id: int, action: str | None = None) -> Delivery:
        """Send the job's current state again under a new delivery id (``action``
        defaults to its status)."""
        job = self.jobs[job_id]
        return await self._emit(action or job.status, job)

    # --- the simulated runner protocol -----------------------------------------------

    def authenticate_runner(self, runner_id: int, secret: str) -> Runner | None:
        """The runner whose JIT config carried ``secret``, if it is still registered."""
        runner = self.runners.get(runner_id)
        if runner is None or not secrets.compare_digest(runner.secret, secret):
            return None
        return runner

    async def acquire(self, runner: Runner, wait_s: float) -> Job | None:
        """Bring ``runner`` online and give it the oldest queued job of its repository
        whose labels it all has, waiting up to ``wait_s``; sends ``in_progress``."""
        runner.status = "online"
        if runner.job_id is not None:
            return self.jobs[runner.job_id]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        changed = self._condition()
        async with changed:
            while (job := self._next_job_for(runner)) is None:
                remaining = deadline - loop.time()
                gone = runner.runner_id not in self.runners or runner.status != "online"
                if self.closed or gone or remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
        runner.busy, runner.job_id = True, job.job_id
        job.status, job.started_at = "in_progress", self.clock()
        job.runner_id, job.runner_name = runner.runner_id, runner.name
        job.runner_group_id = runner.runner_group_id
        job.runner_group_name = self.group_name(runner)
        self._emit_later("in_progress", job)
        return job

    async def complete(self, runner: Runner, conclusion: str) -> Job:
        """Finish the runner's job with ``conclusion`` (sends ``completed``) and remove
        the ephemeral runner."""
        if conclusion not in CONCLUSIONS:
            raise ApiError(422, f"conclusion must be one of {', '.join(CONCLUSIONS)}")
        if runner.job_id is None:
            raise ApiError(409, f"runner {runner.name} has no job")
        job = self.jobs[runner.job_id]
        self.runners.pop(runner.runner_id, None)
        if job.status != "completed":
            self._finish(job, conclusion)
            self._emit_later("completed", job)
        return job

    async def lose_runner(self, runner_id: int) -> Job | None:
        """The runner's machine is gone (reclaimed, crashed) and GitHub stops hearing
        from it: a busy runner's job ends ``failure`` (sends ``completed``) and the
        ephemeral runner is removed; an idle runner is shown offline. Returns the job
        it was running, if any; ``ApiError(404)`` for an unknown runner."""
        runner = self.runners.get(runner_id)
        if runner is None:
            raise ApiError(404, f"no runner {runner_id}")
        if runner.job_id is not None:
            return await self.complete(runner, "failure")
        await self.disconnect(runner)
        return None

    async def disconnect(self, runner: Runner) -> None:
        """The runner went away: GitHub shows it offline, still registered (a pending
        :meth:`acquire` of it gives up). If it had been handed a job meanwhile (it was
        stopped before it heard the answer), that job ends ``cancelled``."""
        if runner.busy and runner.job_id is not None:
            await self.complete(runner, "cancelled")
            return
        runner.status = "offline"
        await self._notify()

    async def aclose(self) -> None:
        """Release waiting runners and send the webhooks still queued."""
        self.closed = True
        await self._notify()
        await self._webhooks.aclose()

    # --- internals -------------------------------------------------------------------

    def _canonical(self, repository: str) -> str:
        repo = self.repository(repository)
        return repo.full_name if repo is not None else repository

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        changed = self._condition()
        async with changed:
            changed.notify_all()

    async def _enqueue(self, job: Job) -> None:
        self.jobs[job.job_id] = job
        await self._notify()
        await self._emit("queued", job)

    def _next_job_for(self, runner: Runner) -> Job | None:
        have = {label.lower() for label in runner_labels(runner)}
        for job in sorted(self.jobs.values(), key=lambda j: j.job_id):
            if (
                job.status == "queued"
                and not job.held
                and job.offered_to in (None, runner.name)
                and self.serves(runner, job.repository)
                and all(label.lower() in have for label in job.labels)
            ):
                return job
        return None

    def _finish(self, job: Job, conclusion: str) -> None:
        job.status, job.conclusion, job.completed_at = "completed", conclusion, self.clock()
        runner = self.runners.get(job.runner_id) if job.runner_id is not None else None
        if runner is not None:
            runner.busy = False

    def _delivery(self, action: str, job: Job) -> Delivery:
        repo = self.add_repository(job.repository, installed=False)
        installation = self.installation_for(repo.owner.login, self.app.app_id)
        payload: dict[str, Any] = payloads.workflow_job_webhook(
            action, job, repo, installation, self.sender, self.api_url
        )
        delivery = webhooks.make_delivery(
            "workflow_job",
            payload,
            self.webhook_secret,
            job_id=job.job_id,
            installation_id=installation.installation_id if installation else None,
        )
        self.deliveries.append(delivery)
        return delivery

    async def _emit(self, action: str, job: Job) -> Delivery:
        delivery = self._delivery(action, job)
        await self._webhooks.submit(delivery)
        return delivery

    def _emit_later(self, action: str, job: Job) -> None:
        self._webhooks.submit(self._delivery(action, job))
