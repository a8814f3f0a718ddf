"""The GitHub client's rate budget against the simulated GitHub on 127.0.0.1: runner
registrations held under their configured rate (callers queue, none fail), secondary
limits waited out, an installation's spent core budget respected before calling, and
installation tokens renewed before they expire.

Time is the shared :class:`ShiftableClock`; the client's waits advance it instead of
passing, so a queue that takes minutes of GitHub time runs in a few real seconds and
every assertion is about the simulator's own call timestamps, never the test's duration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from runs_fleet_core.errors import GitHubError
from runs_fleet_core.testing.memory import RecordingMetrics
from runs_fleet_github.client import GitHubAppClient
from runs_fleet_github_simulator import AppKeyPair, GitHubSimulator, SimulatorServer
from tests.integration.github_sim_fixture import (
    APP_ID,
    ORG_REPO,
    TEST_RETRY,
    USER_REPO,
    ShiftableClock,
)

pytest_plugins = ["tests.integration.github_sim_fixture"]

REGISTRATION = f"/repos/{ORG_REPO}/actions/runners/registration-token"
RUNNERS = f"/repos/{ORG_REPO}/actions/runners"
JITCONFIG = f"{RUNNERS}/generate-jitconfig"
LABELS = ["runs-fleet=5/cpu=2"]


@dataclass
class AdvancingSleep:
    """A sleep that moves the shared clock forward by the wait instead of waiting."""

    clock: ShiftableClock
    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def advancing(clock: ShiftableClock) -> AdvancingSleep:
    return AdvancingSleep(clock)


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


Build = Callable[..., Any]


@pytest.fixture
def make_client(
    github_server: SimulatorServer,
    app_keys: AppKeyPair,
    clock: ShiftableClock,
    advancing: AdvancingSleep,
    metrics: RecordingMetrics,
) -> Build:
    @asynccontextmanager
    async def build(**options: Any) -> AsyncIterator[GitHubAppClient]:
        settings: dict[str, Any] = {
            "app_id": APP_ID,
            "private_key": app_keys.private_pem,
            "api_url": github_server.url,
            "retry": TEST_RETRY,
            "clock": clock,
            "sleep": advancing,
            "metrics": metrics,
            "timeout_s": 5.0,
        }
        client = GitHubAppClient(**(settings | options))
        try:
            yield client
        finally:
            await client.aclose()

    return build


def _most_in_any_window(times: list[float], window_s: float) -> int:
    """The largest number of ``times`` inside any half-open window of ``window_s``."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_500_registrations_at_once_stay_within_the_rate_and_all_succeed(
    make_client: Build, github_sim: GitHubSimulator, metrics: RecordingMetrics
) -> None:
    # Real waits at a high rate (100 a second, bursts of 10): the property is the
    # spacing of the calls GitHub sees, read from the simulator's own timestamps.
    async with make_client(jit_per_minute=6000, jit_burst=10, sleep=asyncio.sleep) as client:
        jits = await asyncio.gather(
            *(
                client.create_jit_config(ORG_REPO, runner_name=f"rf-{n}", labels=LABELS)
                for n in range(500)
            )
        )

    calls = github_sim.calls("POST", JITCONFIG)
    assert len({jit.runner_id for jit in jits}) == 500
    assert {c.status for c in calls} == {201} and len(calls) == 500
    times = [c.at for c in calls]
    # At most 10 + 200 in any two seconds; the margin covers calls that took their
    # token just before a window and reached the simulator inside it, late (a loaded
    # machine delays some requests more than others, and a window of one second would
    # count that bunching against the client).
    assert _most_in_any_window(times, 2.0) <= 240
    assert max(times) - min(times) >= 4.5
    assert client.registrations.waited > 0  # how many depends on the machine's speed
    assert metrics.count("github_throttled_calls", reason="jit_rate") == (
        client.registrations.waited
    )
    assert [c.status for c in github_sim.calls() if c.status >= 400] == []


async def test_a_burst_within_the_bucket_does_not_wait(
    make_client: Build, github_sim: GitHubSimulator, advancing: AdvancingSleep
) -> None:
    async with make_client(jit_per_minute=60, jit_burst=5) as client:
        for n in range(5):
            await client.create_jit_config(ORG_REPO, runner_name=f"r{n}", labels=LABELS)

        assert advancing.waits == []
        await client.create_jit_config(ORG_REPO, runner_name="r5", labels=LABELS)

    # one token's worth of waiting, less the real time the five calls took
    [wait] = advancing.waits
    assert 0 < wait <= 1.0 + 1e-6


async def test_registration_tokens_share_the_registration_budget(
    make_client: Build, github_sim: GitHubSimulator
) -> None:
    async with make_client(jit_per_minute=60, jit_burst=2) as client:
        await client.create_jit_config(ORG_REPO, runner_name="r", labels=LABELS)
        await client.registration_token(ORG_REPO)
        await client.registration_token(USER_REPO)

    assert client.registrations.waited == 1


@pytest.mark.parametrize("status", [403, 429])
async def test_a_secondary_limit_is_waited_out_and_the_call_succeeds(
    status: int,
    make_client: Build,
    github_sim: GitHubSimulator,
    advancing: AdvancingSleep,
    metrics: RecordingMetrics,
) -> None:
    github_sim.inject_fault(JITCONFIG, status=status, retry_after=3, count=1)

    async with make_client() as client:
        jit = await client.create_jit_config(ORG_REPO, runner_name="r", labels=LABELS)

    assert jit.runner_id > 0
    assert [c.status for c in github_sim.calls("POST", JITCONFIG)] == [status, 201]
    assert 3.0 in advancing.waits
    assert metrics.count("github_throttled_calls", reason="secondary") == 1


async def test_the_remaining_budget_is_tracked_per_owner(
    make_client: Build, github_sim: GitHubSimulator, metrics: RecordingMetrics
) -> None:
    async with make_client() as client:
        await client.list_runners(ORG_REPO)
        await client.registration_token(ORG_REPO)
        await client.list_runners(USER_REPO)
        await client.list_runners(USER_REPO)  # unchanged: a 304, which costs nothing

    assert client.ledger.remaining("octo-org") == 4998
    assert client.ledger.remaining("octocat") == 4999
    assert metrics.gauge_value("github_rate_remaining", owner="octo-org") == 4998
    assert metrics.gauge_value("github_rate_remaining", owner="octocat") == 4999


async def test_a_spent_budget_is_not_spent_further(
    make_client: Build,
    github_sim: GitHubSimulator,
    clock: ShiftableClock,
    metrics: RecordingMetrics,
) -> None:
    github_sim.rate_limit = 2
    async with make_client() as client:
        await client.registration_token(ORG_REPO)
        await client.registration_token(ORG_REPO)

        with pytest.raises(GitHubError, match="budget of octo-org is spent") as caught:
            await client.registration_token(ORG_REPO)
        assert caught.value.retryable is True
        assert len(github_sim.calls("POST", REGISTRATION)) == 2

        clock.advance(3600 - 3)
        assert await client.registration_token(ORG_REPO)

    assert [c.status for c in github_sim.calls("POST", REGISTRATION)] == [201, 201, 201]
    assert metrics.count("github_throttled_calls", reason="rate_exhausted") == 2


async def test_an_expired_installation_token_is_renewed_before_any_call_fails(
    make_client: Build, github_sim: GitHubSimulator, clock: ShiftableClock
) -> None:
    async with make_client() as client:
        await client.list_runners(ORG_REPO)
        clock.advance(github_sim.token_ttl_s + 60)
        await client.create_jit_config(ORG_REPO, runner_name="after-expiry", labels=LABELS)
        await client.list_runners(ORG_REPO)

    statuses = [c.status for c in github_sim.calls()]
    assert 401 not in statuses
    assert sum(1 for c in github_sim.calls("POST") if c.path.endswith("/access_tokens")) == 2


async def test_a_token_refused_as_bad_credentials_is_replaced_without_a_failure(
    make_client: Build, github_sim: GitHubSimulator
) -> None:
    async with make_client() as client:
        await client.list_runners(ORG_REPO)
        github_sim.tokens.clear()
        jit = await client.create_jit_config(ORG_REPO, runner_name="r", labels=LABELS)

    assert jit.runner_id > 0
    assert [c.status for c in github_sim.calls("POST", JITCONFIG)] == [401, 201]
