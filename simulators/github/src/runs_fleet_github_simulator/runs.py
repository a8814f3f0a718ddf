"""Workflow runs of the simulated GitHub, derived from its jobs.

The simulator records jobs only; a workflow run is the set of jobs sharing a ``run_id``
in one repository. A re-run adds a new execution of a job in a new attempt of its run
and replaces the old execution (``reruns`` pairs them), so the run's state follows GitHub:
``completed`` once the latest execution of every job has completed (``failure`` if one
failed, else ``cancelled`` if one was cancelled, else ``success``), ``queued`` while every
job of its latest attempt is queued, ``in_progress`` otherwise.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from runs_fleet_github_simulator.payloads import (
    JSON,
    WEB_URL,
    account_json,
    node_id,
    repository_json,
    timestamp,
)
from runs_fleet_github_simulator.records import Account, Job, Repository

RUN_STATUSES = ("queued", "in_progress", "completed", "requested", "waiting", "pending")
RUN_CONCLUSIONS = (
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "skipped",
    "stale",
    "success",
    "timed_out",
)
"""What the ``status`` filter of the run listing accepts: a status, or a conclusion
(meaning completed with that conclusion)."""
EVENT = "push"
AUTHOR = {"name": "Simulated User", "email": "simulated-user@users.noreply.github.com"}
COMMITTER = {"name": "GitHub", "email": "noreply@github.com"}


@dataclass(frozen=True)
class WorkflowRun:
    """One workflow run: every execution of its jobs by id, the ids of executions a
    re-run replaced, and its ``number`` among the runs of its repository."""

    run_id: int
    repository: str
    number: int
    jobs: tuple[Job, ...]
    replaced: frozenset[int]

    @property
    def first(self) -> Job:
        """The job that started the run: its workflow, branch and commit are the run's."""
        return self.jobs[0]

    @property
    def attempt(self) -> int:
        """The run's attempt: 1, plus one per re-run."""
        return max(job.run_attempt for job in self.jobs)

    def latest_jobs(self) -> list[Job]:
        """The most recent execution of each job (what ``filter=latest`` lists)."""
        return [job for job in self.jobs if job.job_id not in self.replaced]

    @property
    def status(self) -> str:
        """``queued``, ``in_progress`` or ``completed``."""
        if all(job.status == "completed" for job in self.latest_jobs()):
            return "completed"
        attempt = [job for job in self.jobs if job.run_attempt == self.attempt]
        return "queued" if all(job.status == "queued" for job in attempt) else "in_progress"

    @property
    def conclusion(self) -> str | None:
        """The run's conclusion once completed (None before)."""
        if self.status != "completed":
            return None
        found = {job.conclusion for job in self.latest_jobs()}
        return next((c for c in ("failure", "cancelled") if c in found), "success")

    @property
    def created_at(self) -> float:
        """When its first job was queued."""
        return min(job.created_at for job in self.jobs)

    @property
    def started_at(self) -> float:
        """When its latest attempt began (GitHub's ``run_started_at``)."""
        return min(job.created_at for job in self.jobs if job.run_attempt == self.attempt)

    @property
    def updated_at(self) -> float:
        """When one of its jobs last changed."""
        moments = (j.completed_at or j.started_at or j.created_at for j in self.jobs)
        return max(moments)

    def matches(self, status: str) -> bool:
        """Whether the ``status`` filter of the run listing keeps this run."""
        if status in RUN_CONCLUSIONS:
            return self.conclusion == status
        return self.status == status


def workflow_runs(
    jobs: Iterable[Job], repository: str, replaced: Collection[int]
) -> list[WorkflowRun]:
    """The runs of ``repository`` made of ``jobs``, newest first (``replaced``: ids of
    the executions that a re-run replaced)."""
    by_run: dict[int, list[Job]] = {}
    for job in sorted(jobs, key=lambda j: j.job_id):
        if job.repository.lower() == repository.lower():
            by_run.setdefault(job.run_id, []).append(job)
    ordered = sorted(by_run.values(), key=lambda run_jobs: run_jobs[0].job_id)
    runs = [
        WorkflowRun(
            run_id=run_jobs[0].run_id,
            repository=run_jobs[0].repository,
            number=number,
            jobs=tuple(run_jobs),
            replaced=frozenset(j.job_id for j in run_jobs if j.job_id in replaced),
        )
        for number, run_jobs in enumerate(ordered, start=1)
    ]
    return runs[::-1]


def workflow_id(repository: str, workflow_name: str) -> int:
    """A stable id for the workflow called ``workflow_name`` in ``repository``."""
    digest = hashlib.sha256(f"{repository.lower()}:{workflow_name}".encode()).hexdigest()
    return int(digest[:8], 16)


def _workflow_file(workflow_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", workflow_name.lower()).strip("-")
    return f".github/workflows/{slug or 'workflow'}.yml"


def _head_commit(run: WorkflowRun) -> JSON:
    sha = run.first.head_sha
    tree = hashlib.sha1(f"tree:{sha}".encode(), usedforsecurity=False).hexdigest()
    return {
        "id": sha,
        "tree_id": tree,
        "message": f"Simulated commit {sha[:7]}",
        "timestamp": timestamp(run.created_at),
        "author": dict(AUTHOR),
        "committer": dict(COMMITTER),
    }


def workflow_run_json(run: WorkflowRun, repo: Repository, actor: Account, api_url: str) -> JSON:
    """A ``workflow-run`` as ``GET /repos/{owner}/{repo}/actions/runs`` lists it."""
    repo_url = f"{api_url}/repos/{repo.full_name}"
    run_url = f"{repo_url}/actions/runs/{run.run_id}"
    workflow = workflow_id(repo.full_name, run.first.workflow_name)
    commit = _head_commit(run)
    repository = repository_json(repo, api_url)
    previous = f"{run_url}/attempts/{run.attempt - 1}" if run.attempt > 1 else None
    return {
        "id": run.run_id,
        "name": run.first.workflow_name,
        "node_id": node_id("WorkflowRun", run.run_id),
        "check_suite_id": run.run_id,
        "check_suite_node_id": node_id("CheckSuite", run.run_id),
        "head_branch": run.first.head_branch,
        "head_sha": run.first.head_sha,
        "path": _workflow_file(run.first.workflow_name),
        "display_title": commit["message"],
        "run_number": run.number,
        "event": EVENT,
        "status": run.status,
        "conclusion": run.conclusion,
        "workflow_id": workflow,
        "url": run_url,
        "html_url": f"{WEB_URL}/{repo.full_name}/actions/runs/{run.run_id}",
        "pull_requests": [],
        "created_at": timestamp(run.created_at),
        "updated_at": timestamp(run.updated_at),
        "actor": account_json(actor, api_url),
        "run_attempt": run.attempt,
        "referenced_workflows": [],
        "run_started_at": timestamp(run.started_at),
        "triggering_actor": account_json(actor, api_url),
        "jobs_url": f"{run_url}/jobs",
        "logs_url": f"{run_url}/logs",
        "check_suite_url": f"{repo_url}/check-suites/{run.run_id}",
        "artifacts_url": f"{run_url}/artifacts",
        "cancel_url": f"{run_url}/cancel",
        "rerun_url": f"{run_url}/rerun",
        "previous_attempt_url": previous,
        "workflow_url": f"{repo_url}/actions/workflows/{workflow}",
        "head_commit": commit,
        "repository": repository,
        "head_repository": repository,
        "head_repository_id": repo.repo_id,
    }


class WorkflowRuns:
    """The workflow runs of the simulator's jobs, and the re-runs made (mixed into the
    simulator, which owns ``jobs``)."""

    jobs: dict[int, Job]

    def __init__(self) -> None:
        self.reruns: list[tuple[int, int]] = []
        """Every re-run made: (the job re-run, the new job), oldest first."""

    def workflow_runs(self, repository: str) -> list[WorkflowRun]:
        """The runs of ``repository``, newest first."""
        replaced = {old for old, _ in self.reruns}
        return workflow_runs(self.jobs.values(), repository, replaced)

    def workflow_run(self, repository: str, run_id: int) -> WorkflowRun | None:
        """Run ``run_id`` of ``repository``, if it has a job."""
        return next((r for r in self.workflow_runs(repository) if r.run_id == run_id), None)

    def latest_execution(self, job_id: int) -> int:
        """The id of the most recent execution of ``job_id`` (itself if never re-run)."""
        newer = dict(self.reruns)
        while job_id in newer:
            job_id = newer[job_id]
        return job_id
