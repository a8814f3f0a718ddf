"""Dispatch where GitHub has no JIT runner configs: runners register with a token.

With ``RUNS_FLEET_RUNNER_REGISTRATION=token`` the dispatcher asks GitHub for a
registration token instead of a JIT config and stores it, with the URL to register at,
the runner's name and the job's labels, for the agent's ``config.sh``; everything else
(claims, idempotency, retries, warm pools) is unchanged.
"""

from __future__ import annotations

from runs_fleet_core.domain.ids import JobId, RunnerId, runner_name_for
from runs_fleet_core.domain.job import JobStatus
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.runner import RegistrationMode
from runs_fleet_core.errors import GitHubError
from runs_fleet_core.usecases.dispatch import Dispatcher
from runs_fleet_server.bootstrap import build_services

from .conftest import REPO, World, event

JOB = JobId(1)
LABEL = "runs-fleet=42/cpu=2"


def _token_dispatcher(world: World) -> Dispatcher:
    return world.dispatcher(registration=RegistrationMode.TOKEN)


async def _dispatch_all(dispatcher: Dispatcher, world: World) -> list[str]:
    outcomes = []
    while deliveries := await world.queue.receive(10, 0):
        for delivery in deliveries:
            outcomes.append(str(await dispatcher.handle(delivery)))
    return outcomes


async def test_token_mode_stores_a_registration_token_and_asks_for_no_jit_config(
    world: World,
) -> None:
    await world.intake().take(event(1, LABEL))

    assert await _dispatch_all(_token_dispatcher(world), world) == ["launched"]

    name = runner_name_for(JOB, 1)
    config = await world.configs.get(RunnerId(name))
    assert config is not None
    assert config.jit_config == ""
    assert config.registration_token and config.registration_token.startswith("FAKE")
    assert config.registration_url == f"https://github.com/{REPO}"
    assert (config.runner_name, config.job_id, config.repository) == (name, JOB, REPO)
    assert config.labels == (LABEL, "linux")
    assert config.registration_token not in repr(config)
    assert world.github.registrations == [REPO]
    assert world.github.jit_requests == []
    assert await world.github.list_runners(REPO) == []  # nothing registered ahead
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.LAUNCHING and job.runner_name == name
    assert len(world.provider.created) == 1


async def test_jit_mode_stays_the_default(world: World) -> None:
    await world.intake().take(event(1, LABEL))

    assert await world.dispatch_all() == ["launched"]

    config = await world.configs.get(RunnerId(runner_name_for(JOB, 1)))
    assert config is not None and config.jit_config and config.registration_token is None
    assert world.github.jit_requests == [REPO] and world.github.registrations == []


async def test_a_redelivery_in_token_mode_asks_for_no_second_token(world: World) -> None:
    await world.intake().take(event(1, LABEL))
    dispatcher = _token_dispatcher(world)
    [delivery] = await world.queue.receive(1, 0)
    await dispatcher.handle(delivery)
    stored = await world.configs.get(RunnerId(runner_name_for(JOB, 1)))

    await dispatcher.handle(delivery)

    assert world.github.registrations == [REPO]
    assert await world.configs.get(RunnerId(runner_name_for(JOB, 1))) == stored
    assert len(world.provider.created) == 1


async def test_a_throttled_token_request_is_retried_and_leaves_no_config(world: World) -> None:
    await world.intake().take(event(1, LABEL))
    world.github.fail_next.append(GitHubError("secondary rate limit", retryable=True))
    dispatcher = _token_dispatcher(world)
    [delivery] = await world.queue.receive(1, 0)

    assert str(await dispatcher.handle(delivery)) == "retry"

    assert await world.configs.list_ids() == []
    job = await world.state.get_job(JOB)
    assert job is not None and job.status is JobStatus.QUEUED
    assert job.reason is not None and "secondary rate limit" in job.reason
    assert world.provider.created == []


async def test_a_warm_runner_gets_a_registration_token_in_token_mode(world: World) -> None:
    pool = PoolConfig(name="default", label="runs-fleet=pool/cpu=2", desired_running=1)
    await world.state.put_pool(pool)
    [runner_id] = await world.pools.create_pool_runners(pool, 1)
    await world.intake().take(event(1, "runs-fleet=42/pool=default"))

    assert await _dispatch_all(_token_dispatcher(world), world) == ["warm"]

    config = await world.configs.get(runner_id)
    assert config is not None and config.registration_token and config.jit_config == ""
    assert config.runner_name == runner_name_for(JOB, 1)
    assert world.github.jit_requests == []


def test_the_server_wires_the_registration_setting_into_its_dispatcher() -> None:
    env = {"RUNS_FLEET_MODE": "memory", "RUNS_FLEET_GITHUB_WEBHOOK_SECRET": "s3cret"}

    default = build_services(env).dispatcher
    token = build_services(env | {"RUNS_FLEET_RUNNER_REGISTRATION": "token"}).dispatcher

    assert default.registration is RegistrationMode.JIT
    assert token.registration is RegistrationMode.TOKEN
