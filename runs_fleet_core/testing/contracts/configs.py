"""The contract every ConfigStore adapter must pass.

A runner reads its one job's config (with a JIT config or a registration token, both
secrets) from the store; a config that comes back altered, lingers after delete or leaks
through a repr is a runner that registers wrongly or a secret in a log. These tests pin
that down.
"""

from __future__ import annotations

import asyncio

import attrs
import pytest

from runs_fleet_core.domain.ids import JobId, RunnerId
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.ports.configs import ConfigStore

FAKE_JIT_CONFIG = "eyJydW5uZXIiOiJzZWNyZXQtaml0LWNvbmZpZy1kby1ub3QtbG9nIn0="
FAKE_REGISTRATION_TOKEN = "AABBCCREGISTRATIONTOKENDONOTLOG1"  # noqa: S105 (a fake)
OTHER_TOKEN = "ZZYYXXANOTHERREGISTRATIONTOKEN99"  # noqa: S105 (a fake)


def runner_config(job_id: int, *, jit_config: str = FAKE_JIT_CONFIG) -> RunnerConfig:
    """A config for job ``job_id`` with labels and settings (so a lossy round trip shows)."""
    return RunnerConfig(
        runner_name=f"runs-fleet-{job_id}-1",
        job_id=JobId(job_id),
        repository="octo-org/app",
        jit_config=jit_config,
        labels=("self-hosted", f"runs-fleet={job_id}/cpu=2"),
        settings={"max_runtime_minutes": "360", "telemetry_url": "http://127.0.0.1:8080"},
    )


def token_config(job_id: int, *, token: str = FAKE_REGISTRATION_TOKEN) -> RunnerConfig:
    """A config for job ``job_id`` whose runner registers itself with a registration
    token: no JIT config, a token and the URL it registers at."""
    return attrs.evolve(
        runner_config(job_id, jit_config=""),
        registration_token=token,
        registration_url="https://github.com/octo-org/app",
    )


class ConfigStoreContract:
    """Contract tests for a :class:`~runs_fleet_core.ports.ConfigStore` adapter.

    Subclass it in a ``Test*`` class and provide a ``config_store`` fixture: a fresh,
    empty store (async fixtures are fine). Runner ids used are short and lowercase
    (``i-0123456789abcdef0``, ``runs-fleet-7-1``), valid for every backend.

    Example::

        class TestMyConfigStore(ConfigStoreContract):
            @pytest.fixture
            def config_store(self, tmp_path):
                return MyConfigStore(tmp_path / "configs")
    """

    pytestmark = pytest.mark.asyncio

    async def test_a_stored_config_is_read_back_unchanged(self, config_store: ConfigStore) -> None:
        await config_store.put(RunnerId("i-0123456789abcdef0"), runner_config(7))
        assert await config_store.get(RunnerId("i-0123456789abcdef0")) == runner_config(7)

    async def test_a_missing_config_is_none(self, config_store: ConfigStore) -> None:
        assert await config_store.get(RunnerId("runs-fleet-404-1")) is None

    async def test_putting_again_overwrites_the_config(self, config_store: ConfigStore) -> None:
        runner = RunnerId("runs-fleet-7-1")
        await config_store.put(runner, runner_config(7))
        await config_store.put(runner, runner_config(8, jit_config="another-secret"))
        assert await config_store.get(runner) == runner_config(8, jit_config="another-secret")
        assert list(await config_store.list_ids()) == [runner]

    async def test_a_deleted_config_is_gone_and_deleting_again_is_fine(
        self, config_store: ConfigStore
    ) -> None:
        runner = RunnerId("runs-fleet-7-1")
        await config_store.put(runner, runner_config(7))
        await config_store.delete(runner)
        await config_store.delete(runner)
        assert await config_store.get(runner) is None
        assert list(await config_store.list_ids()) == []

    async def test_deleting_a_config_that_never_existed_is_fine(
        self, config_store: ConfigStore
    ) -> None:
        await config_store.delete(RunnerId("runs-fleet-404-1"))

    async def test_every_stored_config_is_listed_until_deleted(
        self, config_store: ConfigStore
    ) -> None:
        assert list(await config_store.list_ids()) == []
        for job_id in (1, 2, 3):
            await config_store.put(RunnerId(f"runs-fleet-{job_id}-1"), runner_config(job_id))
        await config_store.delete(RunnerId("runs-fleet-2-1"))
        assert sorted(await config_store.list_ids()) == ["runs-fleet-1-1", "runs-fleet-3-1"]

    async def test_configs_of_different_runners_do_not_touch_each_other(
        self, config_store: ConfigStore
    ) -> None:
        await config_store.put(RunnerId("runs-fleet-1-1"), runner_config(1))
        await config_store.put(RunnerId("runs-fleet-2-1"), runner_config(2))
        await config_store.delete(RunnerId("runs-fleet-1-1"))
        assert await config_store.get(RunnerId("runs-fleet-2-1")) == runner_config(2)

    async def test_many_configs_put_concurrently_are_all_stored(
        self, config_store: ConfigStore
    ) -> None:
        runners = [RunnerId(f"runs-fleet-{n}-1") for n in range(10)]
        await asyncio.gather(
            *(config_store.put(r, runner_config(n)) for n, r in enumerate(runners))
        )
        assert sorted(await config_store.list_ids()) == sorted(runners)
        for n, runner in enumerate(runners):
            assert await config_store.get(runner) == runner_config(n)

    async def test_the_secret_shows_in_no_repr(self, config_store: ConfigStore) -> None:
        runner = RunnerId("runs-fleet-7-1")
        await config_store.put(runner, runner_config(7))
        stored = await config_store.get(runner)
        assert stored is not None
        assert stored.jit_config == FAKE_JIT_CONFIG
        for text in (repr(stored), str(stored), repr(config_store), str(config_store)):
            assert FAKE_JIT_CONFIG not in text

    async def test_a_registration_token_config_is_read_back_unchanged(
        self, config_store: ConfigStore
    ) -> None:
        runner = RunnerId("runs-fleet-9-1")
        await config_store.put(runner, token_config(9))
        stored = await config_store.get(runner)
        assert stored == token_config(9)
        assert stored is not None and stored.jit_config == ""
        assert stored.registration_token == FAKE_REGISTRATION_TOKEN
        assert stored.registration_url == "https://github.com/octo-org/app"

    async def test_a_token_config_and_a_jit_config_overwrite_each_other(
        self, config_store: ConfigStore
    ) -> None:
        runner = RunnerId("runs-fleet-9-1")
        await config_store.put(runner, token_config(9))
        await config_store.put(runner, runner_config(9))
        assert await config_store.get(runner) == runner_config(9)
        await config_store.put(runner, token_config(9, token=OTHER_TOKEN))
        assert await config_store.get(runner) == token_config(9, token=OTHER_TOKEN)

    async def test_the_registration_token_shows_in_no_repr(self, config_store: ConfigStore) -> None:
        runner = RunnerId("runs-fleet-9-1")
        await config_store.put(runner, token_config(9))
        stored = await config_store.get(runner)
        assert stored is not None
        for text in (repr(stored), str(stored), repr(config_store), str(config_store)):
            assert FAKE_REGISTRATION_TOKEN not in text
