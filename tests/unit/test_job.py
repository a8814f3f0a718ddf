from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runs_fleet_core.domain.ids import JobId, RunId
from runs_fleet_core.domain.job import ALLOWED_TRANSITIONS, FINAL_STATUSES, Job, JobStatus
from runs_fleet_core.errors import IllegalTransition

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)


def _job() -> Job:
    return Job.new(job_id=JobId(1), run_id=RunId("42"), repository="o/r", at=T0)


def test_the_happy_path_is_timestamped_phase_by_phase() -> None:
    job = _job()
    for minute, status in enumerate(
        [JobStatus.CLAIMED, JobStatus.LAUNCHING, JobStatus.RUNNING, JobStatus.COMPLETED],
        start=1,
    ):
        job = job.transition(status, at=T0 + timedelta(minutes=minute))
    assert [(c.status, c.at - T0) for c in job.timeline] == [
        (JobStatus.QUEUED, timedelta(0)),
        (JobStatus.CLAIMED, timedelta(minutes=1)),
        (JobStatus.LAUNCHING, timedelta(minutes=2)),
        (JobStatus.RUNNING, timedelta(minutes=3)),
        (JobStatus.COMPLETED, timedelta(minutes=4)),
    ]
    assert job.final and job.entered(JobStatus.RUNNING) == T0 + timedelta(minutes=3)


@pytest.mark.parametrize("final", sorted(FINAL_STATUSES))
@pytest.mark.parametrize("target", list(JobStatus))
def test_nothing_leaves_a_final_status(final: JobStatus, target: JobStatus) -> None:
    job = _job()
    if final is not JobStatus.QUEUED:
        job = job.transition(final, at=T0)
    with pytest.raises(IllegalTransition, match=f"from {final} to {target}"):
        job.transition(target, at=T0)


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ((), JobStatus.LAUNCHING),
        ((), JobStatus.REQUEUED),
        ((JobStatus.CLAIMED,), JobStatus.REJECTED),
        ((JobStatus.CLAIMED, JobStatus.LAUNCHING, JobStatus.RUNNING), JobStatus.QUEUED),
        ((JobStatus.CLAIMED, JobStatus.LAUNCHING, JobStatus.RUNNING), JobStatus.LAUNCHING),
        ((JobStatus.CLAIMED,), JobStatus.CLAIMED),
    ],
)
def test_illegal_transitions_raise(path: tuple[JobStatus, ...], illegal: JobStatus) -> None:
    job = _job()
    for status in path:
        job = job.transition(status, at=T0)
    with pytest.raises(IllegalTransition):
        job.transition(illegal, at=T0)


def test_every_status_has_an_entry_in_the_transition_table() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(JobStatus)
    assert {s for s, targets in ALLOWED_TRANSITIONS.items() if not targets} == FINAL_STATUSES


def test_a_transition_keeps_the_original_and_records_the_reason() -> None:
    job = _job()
    rejected = job.transition(JobStatus.REJECTED, at=T0, reason="cpu=lots is not a number")
    assert job.status is JobStatus.QUEUED
    assert rejected.reason == "cpu=lots is not a number"
    assert rejected.timeline[-1].reason == "cpu=lots is not a number"


def test_claims_expire() -> None:
    job = _job().transition(
        JobStatus.CLAIMED, at=T0, claim_owner="w", claim_expires_at=T0 + timedelta(seconds=60)
    )
    assert job.claim_active(T0 + timedelta(seconds=59))
    assert not job.claim_active(T0 + timedelta(seconds=60))
