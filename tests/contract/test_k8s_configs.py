"""The Secret config store against the fake API server, and the split it writes.

Beyond the contract, a runner config must put its secret part (the JIT config, the
report token, every secret-looking setting) in a Secret and nowhere else, label both
objects so that housekeeping and RBAC can tell them apart, survive runner ids that
object names cannot carry, and refuse a bad runner id before the API server is called.
The agent reads the same split back from the mounted directory, with errors that never
quote the secret.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.errors import AdapterError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.settings import Settings
from runs_fleet_core.testing.contracts import ConfigStoreContract
from runs_fleet_core.testing.contracts.configs import (
    FAKE_JIT_CONFIG,
    FAKE_REGISTRATION_TOKEN,
    runner_config,
    token_config,
)
from runs_fleet_core.testing.memory import ManualClock, RecordingMetrics
from runs_fleet_k8s import config_files, configs
from runs_fleet_k8s.client import KubeCaller
from runs_fleet_k8s.config_files import ConfigFilesError
from runs_fleet_k8s.configs import SecretConfigStore
from tests.kube_api.fixtures import KubeApi

REPORT_TOKEN = "rt-0123456789-report-token-never-log"
BAD_IDS = ["", ".hidden", "a/b", "../x", "a b", "i-1\n", "runner:1", "x" * 201]


def secret_config(job_id: int = 7) -> RunnerConfig:
    """A config with secret settings besides the JIT config."""
    base = runner_config(job_id)
    settings = {**base.settings, "report_token": REPORT_TOKEN, "Cache_API_Key": "k-123-secret"}
    return RunnerConfig(
        runner_name=base.runner_name,
        job_id=base.job_id,
        repository=base.repository,
        jit_config=base.jit_config,
        labels=base.labels,
        settings=settings,
    )


@pytest.fixture
def caller(kube_api: KubeApi) -> Iterator[KubeCaller]:
    caller = KubeCaller(kube_api.api_client(), namespace=kube_api.namespace, timeout_s=5)
    yield caller
    caller.close()


@pytest.fixture
def store(caller: KubeCaller, kube_api: KubeApi) -> Iterator[SecretConfigStore]:
    """A store with two-item pages; every body it sent must have been valid."""
    yield SecretConfigStore(caller, page_size=2)
    assert kube_api.server.invalid_bodies == []


class TestSecretConfigStore(ConfigStoreContract):
    @pytest.fixture
    def config_store(self, store: SecretConfigStore) -> SecretConfigStore:
        return store


def _object(kube_api: KubeApi, resource: str, name: str) -> dict[str, Any]:
    obj = kube_api.server.get(resource, kube_api.namespace, name)
    assert obj is not None, f"no {resource} {name}"
    return obj


# -- the store -----------------------------------------------------------------------------
async def test_the_secret_part_is_in_the_secret_and_nowhere_in_the_config_map(
    store: SecretConfigStore, kube_api: KubeApi
) -> None:
    await store.put(RunnerId("runs-fleet-7-1"), secret_config())
    secret = _object(kube_api, "secrets", "runs-fleet-7-1-config")
    assert secret["type"] == "Opaque"
    hidden = json.loads(base64.b64decode(secret["data"]["secret.json"]))
    assert hidden == {
        "jit_config": FAKE_JIT_CONFIG,
        "registration_token": None,
        "settings": {"report_token": REPORT_TOKEN, "Cache_API_Key": "k-123-secret"},
    }
    config_map = json.dumps(_object(kube_api, "configmaps", "runs-fleet-7-1-settings"))
    for secret_text in (FAKE_JIT_CONFIG, REPORT_TOKEN, "k-123-secret", "report_token"):
        assert secret_text not in config_map
    assert "telemetry_url" in config_map


async def test_a_registration_token_is_in_the_secret_and_nowhere_in_the_config_map(
    store: SecretConfigStore, kube_api: KubeApi
) -> None:
    await store.put(RunnerId("runs-fleet-9-1"), token_config(9))
    secret = _object(kube_api, "secrets", "runs-fleet-9-1-config")
    hidden = json.loads(base64.b64decode(secret["data"]["secret.json"]))
    assert hidden["registration_token"] == FAKE_REGISTRATION_TOKEN
    assert hidden["jit_config"] == ""
    config_map = _object(kube_api, "configmaps", "runs-fleet-9-1-settings")
    assert FAKE_REGISTRATION_TOKEN not in json.dumps(config_map)
    public = json.loads(config_map["data"]["runner.json"])
    assert public["registration_url"] == "https://github.com/octo-org/app"


async def test_both_objects_are_labelled_with_the_job_and_annotated_with_the_runner(
    store: SecretConfigStore, kube_api: KubeApi
) -> None:
    await store.put(RunnerId("runs-fleet-7-1"), secret_config())
    for resource, name in (
        ("secrets", "runs-fleet-7-1-config"),
        ("configmaps", "runs-fleet-7-1-settings"),
    ):
        metadata = _object(kube_api, resource, name)["metadata"]
        assert metadata["labels"] == {
            "app.kubernetes.io/managed-by": "runs-fleet",
            "runs-fleet.io/component": "runner-config",
            "runs-fleet.io/job-id": "7",
        }
        assert metadata["annotations"] == {"runs-fleet.io/runner-id": "runs-fleet-7-1"}


async def test_the_secret_is_written_before_the_config_map(
    store: SecretConfigStore, kube_api: KubeApi
) -> None:
    kube_api.server.forbid("create", "configmaps")
    with pytest.raises(AdapterError, match="403 Forbidden"):
        await store.put(RunnerId("runs-fleet-7-1"), secret_config())
    creates = [r.resource for r in kube_api.server.requests if r.verb == "create"]
    assert creates == ["secrets", "configmaps"]
    assert await store.get(RunnerId("runs-fleet-7-1")) is None  # half a config is none
    assert list(await store.list_ids()) == ["runs-fleet-7-1"]  # but housekeeping sees it
    await store.delete(RunnerId("runs-fleet-7-1"))
    assert kube_api.server.objects("secrets", kube_api.namespace) == []


async def test_putting_again_keeps_the_owner_that_ties_the_config_to_its_job(
    store: SecretConfigStore, kube_api: KubeApi
) -> None:
    """The provider makes both objects dependents of the runner's Job (Kubernetes then
    deletes them with it); a config written again must stay tied to it."""
    runner = RunnerId("runs-fleet-7-1")
    await store.put(runner, secret_config())
    owner = kube_api.server.create(
        "configmaps", {"metadata": {"name": "stand-in-for-the-job"}}, kube_api.namespace
    )
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "stand-in-for-the-job",
        "uid": owner["metadata"]["uid"],
    }
    admin = client.CoreV1Api(kube_api.api_client())
    patch = {"metadata": {"ownerReferences": [reference]}}
    admin.patch_namespaced_secret("runs-fleet-7-1-config", kube_api.namespace, patch)
    admin.patch_namespaced_config_map("runs-fleet-7-1-settings", kube_api.namespace, patch)
    await store.put(runner, runner_config(8, jit_config="another-secret"))
    assert await store.get(runner) == runner_config(8, jit_config="another-secret")
    for resource, name in (
        ("secrets", "runs-fleet-7-1-config"),
        ("configmaps", "runs-fleet-7-1-settings"),
    ):
        metadata = _object(kube_api, resource, name)["metadata"]
        assert metadata["ownerReferences"] == [reference]
        assert metadata["labels"]["runs-fleet.io/job-id"] == "8"


async def test_a_runner_id_an_object_name_cannot_carry_is_kept_in_the_annotation(
    store: SecretConfigStore, kube_api: KubeApi
) -> None:
    runner = RunnerId("Runner_A.1")
    await store.put(runner, secret_config())
    assert await store.get(runner) == secret_config()
    assert list(await store.list_ids()) == [runner]
    [secret] = kube_api.server.objects("secrets", kube_api.namespace)
    assert secret["metadata"]["name"] != "Runner_A.1-config"


async def test_configs_of_other_owners_are_not_listed(
    store: SecretConfigStore, kube_api: KubeApi
) -> None:
    kube_api.server.create(
        "secrets",
        {"metadata": {"name": "db-password"}, "stringData": {"password": "hunter2"}},
        kube_api.namespace,
    )
    await store.put(RunnerId("runs-fleet-7-1"), secret_config())
    assert list(await store.list_ids()) == ["runs-fleet-7-1"]


@pytest.mark.parametrize("runner_id", BAD_IDS)
async def test_a_bad_runner_id_is_refused_before_any_request(
    store: SecretConfigStore, kube_api: KubeApi, runner_id: str
) -> None:
    for call in (
        store.put(RunnerId(runner_id), secret_config()),
        store.get(RunnerId(runner_id)),
        store.delete(RunnerId(runner_id)),
    ):
        with pytest.raises(ValueError, match="runner id"):
            await call
    assert kube_api.server.requests == []


async def test_an_api_error_that_quotes_the_secret_is_stripped_of_it(
    store: SecretConfigStore, kube_api: KubeApi
) -> None:
    kube_api.server.fail_next(
        "create", "secrets", status=422, reason="Invalid", message=f"bad value {FAKE_JIT_CONFIG}"
    )
    with pytest.raises(AdapterError) as raised:
        await store.put(RunnerId("runs-fleet-7-1"), secret_config())
    assert "422 Invalid: bad value ***" in str(raised.value)
    assert FAKE_JIT_CONFIG not in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


async def test_a_config_whose_secret_part_is_malformed_is_an_error_without_its_content(
    store: SecretConfigStore, kube_api: KubeApi
) -> None:
    await store.put(RunnerId("runs-fleet-7-1"), secret_config())
    truncated = json.dumps({"jit_config": FAKE_JIT_CONFIG})[:-3]
    patch = {"data": {"secret.json": base64.b64encode(truncated.encode()).decode()}}
    admin = client.CoreV1Api(kube_api.api_client())
    admin.patch_namespaced_secret("runs-fleet-7-1-config", kube_api.namespace, patch)
    with pytest.raises(AdapterError, match=r"secret\.json of the runner config") as raised:
        await store.get(RunnerId("runs-fleet-7-1"))
    assert FAKE_JIT_CONFIG[:20] not in str(raised.value)


def test_the_store_reads_no_settings(caller: KubeCaller) -> None:
    context = AdapterContext(
        settings=Settings(values={}), clock=ManualClock(), metrics=RecordingMetrics()
    )
    store = configs.from_context(context, caller)
    assert repr(store) == "SecretConfigStore(namespace='runs-fleet')"
    assert configs.SETTINGS == ()


# -- the split, as the agent reads it ---------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("report_token", True),
        ("GITHUB_TOKEN", True),
        ("webhook_secret", True),
        ("proxy_password", True),
        ("cache_api_key", True),
        ("max_runtime_minutes", False),
        ("telemetry_url", False),
    ],
)
def test_secret_settings_are_told_apart_by_their_key(key: str, secret: bool) -> None:
    assert config_files.is_secret_setting(key) is secret


def test_split_and_join_give_back_the_config() -> None:
    public, hidden = config_files.split(secret_config())
    assert set(public) == {"runner.json"}
    assert set(hidden) == {"secret.json"}
    assert FAKE_JIT_CONFIG not in public["runner.json"]
    assert REPORT_TOKEN not in public["runner.json"]
    assert config_files.join(public, hidden) == secret_config()


def test_the_mounted_directory_is_read_back_whole(tmp_path: Path) -> None:
    public, hidden = config_files.split(secret_config())
    (tmp_path / config_files.RUNNER_FILE).write_text(public["runner.json"])
    (tmp_path / config_files.SECRET_FILE).write_text(hidden["secret.json"])
    assert config_files.read_dir(tmp_path) == secret_config()


@pytest.mark.parametrize("missing", ["runner.json", "secret.json"])
def test_a_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    public, hidden = config_files.split(secret_config())
    for name, text in ({**public, **hidden}).items():
        if name != missing:
            (tmp_path / name).write_text(text)
    with pytest.raises(ConfigFilesError, match=re.escape(f"there is no {missing} in {tmp_path}")):
        config_files.read_dir(tmp_path)


def test_a_malformed_secret_file_is_named_without_its_content(tmp_path: Path) -> None:
    public, _ = config_files.split(secret_config())
    (tmp_path / "runner.json").write_text(public["runner.json"])
    (tmp_path / "secret.json").write_text(f'{{"jit_config": {FAKE_JIT_CONFIG}}}')
    with pytest.raises(ConfigFilesError, match=r"secret\.json of the runner config in") as raised:
        config_files.read_dir(tmp_path)
    assert FAKE_JIT_CONFIG not in str(raised.value)
    assert raised.value.__cause__ is None


def test_a_malformed_runner_file_says_what_is_wrong(tmp_path: Path) -> None:
    _, hidden = config_files.split(secret_config())
    (tmp_path / "runner.json").write_text(json.dumps({"runner_name": "r"}))
    (tmp_path / "secret.json").write_text(hidden["secret.json"])
    with pytest.raises(ConfigFilesError, match=r"runner\.json of the runner config in .*job_id"):
        config_files.read_dir(tmp_path)


def test_a_setting_in_both_files_is_refused() -> None:
    public, hidden = config_files.split(secret_config())
    runner = json.loads(public["runner.json"])
    runner["settings"]["report_token"] = "public"
    with pytest.raises(ConfigFilesError, match="report_token in both"):
        config_files.join({"runner.json": json.dumps(runner)}, hidden)
