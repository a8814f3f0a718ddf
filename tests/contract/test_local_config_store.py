"""The local plugin's FileConfigStore: the ConfigStore contract, plus file safety.

Configs carry JIT secrets, so beyond the contract the files must be private (0600 in a
0700 directory), written atomically, and named only by ids that cannot escape the
directory.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runs_fleet_core.converters import loads, make_config_converter
from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.testing.contracts import ConfigStoreContract
from runs_fleet_core.testing.contracts.configs import runner_config, token_config
from runs_fleet_local.configs import FileConfigStore

UNSAFE_IDS = ["", ".", "..", "../x", "a/b", "/etc/passwd", ".hidden", "a\x00b", "a b", "x" * 201]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestFileConfigStore(ConfigStoreContract):
    @pytest.fixture
    def config_store(self, tmp_path: Path) -> FileConfigStore:
        return FileConfigStore(tmp_path / "state" / "configs")

    async def test_the_directory_is_0700_and_each_file_0600(
        self, config_store: FileConfigStore
    ) -> None:
        await config_store.put(RunnerId("runs-fleet-7-1"), runner_config(7))
        assert _mode(config_store.directory) == 0o700
        assert _mode(config_store.path_for(RunnerId("runs-fleet-7-1"))) == 0o600

    async def test_a_registration_token_config_file_is_0600_too(
        self, config_store: FileConfigStore
    ) -> None:
        await config_store.put(RunnerId("runs-fleet-9-1"), token_config(9))
        assert _mode(config_store.path_for(RunnerId("runs-fleet-9-1"))) == 0o600

    async def test_a_file_holds_the_config_as_the_config_converter_reads_it(
        self, config_store: FileConfigStore
    ) -> None:
        runner = RunnerId("runs-fleet-7-1")
        await config_store.put(runner, runner_config(7))
        text = config_store.path_for(runner).read_bytes()
        assert loads(make_config_converter(), text, RunnerConfig) == runner_config(7)

    async def test_overwriting_leaves_only_the_config_file_behind(
        self, config_store: FileConfigStore
    ) -> None:
        runner = RunnerId("runs-fleet-7-1")
        for job_id in (7, 8, 9):
            await config_store.put(runner, runner_config(job_id))
        assert sorted(p.name for p in config_store.directory.iterdir()) == ["runs-fleet-7-1.json"]

    @pytest.mark.parametrize("runner_id", UNSAFE_IDS)
    async def test_an_unsafe_runner_id_is_refused_before_touching_the_disk(
        self, config_store: FileConfigStore, runner_id: str
    ) -> None:
        with pytest.raises(ValueError):
            await config_store.put(RunnerId(runner_id), runner_config(7))
        with pytest.raises(ValueError):
            await config_store.get(RunnerId(runner_id))
        with pytest.raises(ValueError):
            await config_store.delete(RunnerId(runner_id))
        assert not config_store.directory.exists()

    async def test_listing_skips_temp_and_foreign_files(
        self, config_store: FileConfigStore
    ) -> None:
        await config_store.put(RunnerId("runs-fleet-7-1"), runner_config(7))
        (config_store.directory / ".runs-fleet-8-1.json.0123.tmp").write_text("{")
        (config_store.directory / "notes.txt").write_text("hello")
        assert list(await config_store.list_ids()) == ["runs-fleet-7-1"]

    async def test_reading_and_listing_never_create_the_directory(
        self, config_store: FileConfigStore
    ) -> None:
        assert list(await config_store.list_ids()) == []
        assert await config_store.get(RunnerId("runs-fleet-7-1")) is None
        await config_store.delete(RunnerId("runs-fleet-7-1"))
        assert not config_store.directory.exists()


@given(st.text(max_size=40))
def test_any_accepted_runner_id_names_a_file_directly_inside_the_directory(text: str) -> None:
    directory = Path("/srv/runs-fleet/configs")
    store = FileConfigStore(directory)
    try:
        path = store.path_for(RunnerId(text))
    except ValueError:
        return
    assert path.parent == directory
    assert path.name == f"{text}.json"
    assert not path.name.startswith(".")
