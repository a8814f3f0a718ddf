from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.tokens import report_token, verify_report_token


def test_a_token_verifies_only_for_its_job_and_runner() -> None:
    token = report_token("server-secret", JobId(7), "runs-fleet-7-1")
    assert verify_report_token("server-secret", JobId(7), "runs-fleet-7-1", token)
    assert not verify_report_token("server-secret", JobId(8), "runs-fleet-7-1", token)
    assert not verify_report_token("server-secret", JobId(7), "runs-fleet-7-2", token)
    assert not verify_report_token("other-secret", JobId(7), "runs-fleet-7-1", token)
    assert "server-secret" not in token
