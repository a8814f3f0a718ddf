"""Every model that crosses a process boundary survives a JSON round trip."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runs_fleet_core.converters import (
    dumps,
    loads,
    make_config_converter,
    make_message_converter,
    make_record_converter,
)
from runs_fleet_core.domain.ids import JobId, RunId, RunnerId
from runs_fleet_core.domain.job import Job, JobStatus
from runs_fleet_core.domain.labels import parse_label
from runs_fleet_core.domain.lease import Lease
from runs_fleet_core.domain.messages import (
    AgentEvent,
    AgentReport,
    JobMessage,
    WorkflowJobAction,
    WorkflowJobEvent,
)
from runs_fleet_core.domain.pool import PoolConfig, Schedule
from runs_fleet_core.domain.runner import RunnerAssignment, RunnerConfig

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
SPEC = parse_label("runs-fleet=42/cpu=4+8/ram=16/arch=arm64/family=c7g+m7g/gen=7/pool=ci")

EXAMPLES = [
    Job.new(
        job_id=JobId(1),
        run_id=RunId("42"),
        repository="o/r",
        at=T0,
        spec=SPEC.for_job(JobId(1), "o/r"),
    ).transition(JobStatus.CLAIMED, at=T0, claim_owner="w", claim_expires_at=T0),
    JobMessage(
        job_id=JobId(1),
        run_id=RunId("42"),
        repository="o/r",
        spec=SPEC.for_job(JobId(1), "o/r", 2),
        attempt=2,
        enqueued_at=T0,
    ),
    WorkflowJobEvent(
        action=WorkflowJobAction.COMPLETED,
        job_id=JobId(1),
        run_id=42,
        run_attempt=1,
        repository="o/r",
        labels=("runs-fleet=1", "x"),
        conclusion="success",
    ),
    AgentReport(
        job_id=JobId(1), runner_name="runs-fleet-1-1", event=AgentEvent.FINISHED, at=T0, exit_code=0
    ),
    PoolConfig(
        name="ci",
        label="runs-fleet=pool/cpu=2",
        desired_running=2,
        schedules=(Schedule(weekdays=(0, 1), start_hour=8, end_hour=18, desired_running=5),),
    ),
    Lease(name="scheduler", owner="replica-1", token=7, expires_at=T0),
    RunnerAssignment(runner_id=RunnerId("i-1"), job_id=JobId(1), assigned_at=T0),
    RunnerConfig(
        runner_name="runs-fleet-1-1",
        job_id=JobId(1),
        repository="o/r",
        jit_config="c2VjcmV0",
        labels=("runs-fleet=1",),
    ),
]


@pytest.mark.parametrize(
    "make", [make_message_converter, make_record_converter, make_config_converter]
)
@pytest.mark.parametrize("value", EXAMPLES, ids=lambda v: type(v).__name__)
def test_round_trip(make: object, value: object) -> None:
    converter = make()  # type: ignore[operator]
    assert loads(converter, dumps(converter, value), type(value)) == value


@settings(max_examples=200)
@given(
    job_id=st.integers(1, 2**53),
    attempt=st.integers(1, 5),
    spot=st.booleans(),
    repo=st.from_regex(r"[a-z0-9-]{1,20}/[a-z0-9._-]{1,20}", fullmatch=True),
)
def test_job_messages_round_trip(job_id: int, attempt: int, spot: bool, repo: str) -> None:
    converter = make_message_converter()
    spec = SPEC.for_job(JobId(job_id), repo, attempt)
    message = JobMessage(
        job_id=JobId(job_id),
        run_id=RunId("42"),
        repository=repo,
        spec=spec if spot else spec.on_demand(),
        attempt=attempt,
    )
    assert loads(converter, dumps(converter, message), JobMessage) == message


def test_a_malformed_record_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"cannot read Job: .*run_id"):
        loads(make_record_converter(), '{"job_id": 1}', Job)
    with pytest.raises(ValueError, match="cannot read JobMessage"):
        loads(make_message_converter(), "not json", JobMessage)


def test_a_runner_config_never_shows_its_secret() -> None:
    config = EXAMPLES[-1]
    assert "c2VjcmV0" not in repr(config) and "c2VjcmV0" not in str(config)
