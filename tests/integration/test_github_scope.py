"""Organization runners, runner groups by name and several installations, against the
simulated GitHub on 127.0.0.1; and the plugin's refusal of contradictory settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from runs_fleet_core.errors import ConfigError, GitHubError
from runs_fleet_core.plugins import AdapterContext, PluginManager
from runs_fleet_core.ports import SystemClock
from runs_fleet_core.settings import Settings
from runs_fleet_core.testing.memory import RecordingMetrics
from runs_fleet_github.client import GitHubAppClient
from runs_fleet_github.plugin import check_api_url, setting_problems
from runs_fleet_github.scope import GroupChoice, Scope
from runs_fleet_github_simulator import AppKeyPair, GitHubSimulator, SimulatorServer
from tests.integration.github_sim_fixture import (
    APP_ID,
    ORG_REPO,
    TEST_RETRY,
    USER_REPO,
    RecordingSleep,
    ShiftableClock,
)

pytest_plugins = ["tests.integration.github_sim_fixture"]

ORG_RUNNERS = "/orgs/octo-org/actions/runners"
ORG_JIT = f"{ORG_RUNNERS}/generate-jitconfig"
GROUPS = "/orgs/octo-org/actions/runner-groups"
LABELS = ["runs-fleet=9/cpu=2"]
Build = Callable[..., Any]


@pytest.fixture
def make_client(
    github_server: SimulatorServer,
    app_keys: AppKeyPair,
    clock: ShiftableClock,
    sleeps: RecordingSleep,
) -> Build:
    @asynccontextmanager
    async def build(**options: Any) -> AsyncIterator[GitHubAppClient]:
        settings: dict[str, Any] = {
            "app_id": APP_ID,
            "private_key": app_keys.private_pem,
            "api_url": github_server.url,
            "retry": TEST_RETRY,
            "clock": clock,
            "sleep": sleeps,
            "timeout_s": 5.0,
            "scope": Scope.ORG,
        }
        client = GitHubAppClient(**(settings | options))
        try:
            yield client
        finally:
            await client.aclose()

    return build


async def test_org_scope_registers_runners_in_the_named_group(
    make_client: Build, github_sim: GitHubSimulator
) -> None:
    github_sim.add_runner_group("octo-org", "other")
    group = github_sim.add_runner_group("octo-org", "runs-fleet")

    async with make_client(runner_group=GroupChoice(name="runs-fleet")) as client:
        jits = [
            await client.create_jit_config(ORG_REPO, runner_name=f"org-{n}", labels=LABELS)
            for n in range(3)
        ]
        listed = await client.list_runners(ORG_REPO)
        await client.delete_runner(ORG_REPO, jits[0].runner_id)
        after = await client.list_runners(ORG_REPO)

    assert len(github_sim.calls("GET", GROUPS)) == 1
    bodies = [c.body for c in github_sim.calls("POST", ORG_JIT)]
    assert [b["runner_group_id"] for b in bodies] == [group.group_id] * 3
    assert github_sim.calls("POST", f"/repos/{ORG_REPO}/actions/runners/generate-jitconfig") == []
    assert sorted(r.name for r in listed) == ["org-0", "org-1", "org-2"]
    assert sorted(r.name for r in after) == ["org-1", "org-2"]
    runner = github_sim.runners[jits[1].runner_id]
    assert (runner.org, runner.repository, runner.runner_group_id) == (
        "octo-org",
        "",
        group.group_id,
    )


async def test_an_org_runner_takes_a_job_of_any_repository_of_its_organization(
    make_client: Build, github_sim: GitHubSimulator
) -> None:
    github_sim.add_repository("octo-org/second-repo")
    github_sim.add_runner_group("octo-org", "runs-fleet")
    async with make_client(runner_group=GroupChoice(name="runs-fleet")) as client:
        jit = await client.create_jit_config("octo-org/second-repo", runner_name="o", labels=LABELS)
    job_id = await github_sim.queue_job("octo-org/second-repo", LABELS)

    job = await github_sim.acquire(github_sim.runners[jit.runner_id], wait_s=1)

    assert job is not None and job.job_id == job_id
    assert (job.runner_name, job.runner_group_name) == ("o", "runs-fleet")


async def test_an_unknown_group_name_names_the_setting_and_the_groups_there(
    make_client: Build, github_sim: GitHubSimulator
) -> None:
    github_sim.add_runner_group("octo-org", "linux")

    async with make_client(runner_group=GroupChoice(name="missing")) as client:
        with pytest.raises(GitHubError) as caught:
            await client.create_jit_config(ORG_REPO, runner_name="r", labels=LABELS)

    assert caught.value.retryable is False
    assert "RUNS_FLEET_RUNNER_GROUP" in str(caught.value)
    assert "Default, linux" in str(caught.value)
    assert github_sim.calls("POST", ORG_JIT) == []


async def test_a_group_recreated_under_a_new_id_is_looked_up_again(
    make_client: Build, github_sim: GitHubSimulator
) -> None:
    first = github_sim.add_runner_group("octo-org", "runs-fleet")
    async with make_client(runner_group=GroupChoice(name="runs-fleet")) as client:
        await client.create_jit_config(ORG_REPO, runner_name="a", labels=LABELS)
        del github_sim.runner_groups[first.group_id]
        second = github_sim.add_runner_group("octo-org", "runs-fleet")
        await client.create_jit_config(ORG_REPO, runner_name="b", labels=LABELS)

    calls = github_sim.calls("POST", ORG_JIT)
    assert [(c.body["runner_group_id"], c.status) for c in calls] == [
        (first.group_id, 201),
        (first.group_id, 404),
        (second.group_id, 201),
    ]
    assert len(github_sim.calls("GET", GROUPS)) == 2


async def test_org_scope_on_a_user_account_names_the_scope_setting(
    make_client: Build, github_sim: GitHubSimulator
) -> None:
    async with make_client() as client:
        with pytest.raises(GitHubError, match="RUNS_FLEET_RUNNER_SCOPE=org") as caught:
            await client.create_jit_config(USER_REPO, runner_name="r", labels=LABELS)

    assert caught.value.retryable is False


async def test_an_idle_org_runner_of_the_same_name_is_replaced(
    make_client: Build, github_sim: GitHubSimulator
) -> None:
    async with make_client() as client:
        first = await client.create_jit_config(ORG_REPO, runner_name="same", labels=LABELS)
        second = await client.create_jit_config(ORG_REPO, runner_name="same", labels=LABELS)

    assert first.runner_id != second.runner_id
    assert [r.runner_id for r in github_sim.org_runners("octo-org")] == [second.runner_id]
    assert [c.status for c in github_sim.calls("POST", ORG_JIT)] == [201, 409, 201]


async def test_one_client_serves_several_organizations_each_with_its_installation(
    make_client: Build, github_sim: GitHubSimulator
) -> None:
    github_sim.add_repository("second-org/app")
    for org in ("octo-org", "second-org"):
        github_sim.add_runner_group(org, "runs-fleet")

    async with make_client(runner_group=GroupChoice(name="runs-fleet")) as client:
        for repository in (ORG_REPO, "second-org/app", ORG_REPO, "second-org/app"):
            name = f"{repository.split('/')[0]}-{len(github_sim.runners)}"
            await client.create_jit_config(repository, runner_name=name, labels=LABELS)

    tokens = [c.path for c in github_sim.calls("POST") if c.path.endswith("/access_tokens")]
    assert len(tokens) == 2 and len(set(tokens)) == 2
    assert len(github_sim.org_runners("octo-org")) == 2
    assert len(github_sim.org_runners("second-org")) == 2
    assert {c.path for c in github_sim.calls("GET") if c.path.endswith("runner-groups")} == {
        GROUPS,
        "/orgs/second-org/actions/runner-groups",
    }


async def test_repo_scope_stays_the_default(
    github_client: GitHubAppClient, github_sim: GitHubSimulator
) -> None:
    await github_client.create_jit_config(ORG_REPO, runner_name="r", labels=LABELS)

    assert github_client.scope is Scope.REPO
    assert github_sim.calls("POST", ORG_JIT) == []
    assert github_sim.calls("GET", GROUPS) == []


# --- the plugin's settings -----------------------------------------------------------


def _factory(**values: object) -> Any:
    base: dict[str, object] = {
        "RUNS_FLEET_GITHUB_APP_ID": APP_ID,
        "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY": "unused",
    }
    context = AdapterContext(
        settings=Settings(values=base | values), clock=SystemClock(), metrics=RecordingMetrics()
    )
    return PluginManager().adapters().github_clients.get("github")(context)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"RUNS_FLEET_RUNNER_GROUP": "ci"}, "RUNS_FLEET_RUNNER_GROUP='ci' needs"),
        (
            {
                "RUNS_FLEET_RUNNER_SCOPE": "org",
                "RUNS_FLEET_RUNNER_GROUP": "ci",
                "RUNS_FLEET_GITHUB_RUNNER_GROUP_ID": 7,
            },
            "are both set: keep one",
        ),
        ({"RUNS_FLEET_RUNNER_SCOPE": "org", "RUNS_FLEET_RUNNER_GROUP": " "}, "is empty"),
        (
            {"RUNS_FLEET_GITHUB_API_URL": "https://github.example.com"},
            "use https://github.example.com/api/v3",
        ),
    ],
)
def test_contradictory_settings_are_refused_naming_them(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _factory(**values)


def test_api_urls_of_github_and_enterprise_server_are_accepted() -> None:
    for url in (
        "https://api.github.com",
        "https://ghes.example.com/api/v3",
        "https://api.octocorp.ghe.com",
        "http://127.0.0.1:8080",
    ):
        assert check_api_url(url) is None, url
    assert check_api_url("ftp://example.com") is not None


def test_consistent_settings_have_no_problems() -> None:
    org = {"RUNS_FLEET_RUNNER_SCOPE": "org", "RUNS_FLEET_RUNNER_GROUP": "ci"}
    repo = {"RUNS_FLEET_GITHUB_RUNNER_GROUP_ID": 1}

    assert setting_problems(Settings(values=org)) == []
    assert setting_problems(Settings(values=repo)) == []
    assert len(setting_problems(Settings(values=org | {"RUNS_FLEET_RUNNER_SCOPE": "repo"}))) == 1


async def test_the_factory_builds_an_org_client_with_a_named_group(
    github_server: SimulatorServer, github_sim: GitHubSimulator, app_keys: AppKeyPair
) -> None:
    group = github_sim.add_runner_group("octo-org", "runs-fleet")
    client = _factory(
        RUNS_FLEET_GITHUB_APP_PRIVATE_KEY=app_keys.private_pem.decode(),
        RUNS_FLEET_GITHUB_API_URL=github_server.url,
        RUNS_FLEET_RUNNER_SCOPE="org",
        RUNS_FLEET_RUNNER_GROUP="runs-fleet",
        RUNS_FLEET_GITHUB_JIT_PER_MINUTE=30,
    )
    try:
        await client.create_jit_config(ORG_REPO, runner_name="f", labels=LABELS)
    finally:
        await client.aclose()

    assert client.registrations.burst == 5
    [call] = github_sim.calls("POST", ORG_JIT)
    assert call.body["runner_group_id"] == group.group_id
