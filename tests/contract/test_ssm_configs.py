"""The SSM config store against a moto server: the contract, plus what only SSM has.

Beyond the contract, a runner config must be a SecureString (encrypted with the
configured key) tagged as runs-fleet's, big configs must fit (the tier), listing must
follow SSM's ten-parameter pages, and a runner id that cannot name a parameter must be
refused before AWS is called.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.stub import Stubber

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.errors import AdapterError, ConfigError
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
from runs_fleet_ec2 import ssm
from runs_fleet_ec2.ssm import SsmConfigStore

BAD_IDS = ["", ".hidden", "a/b", "../x", "a b", "i-1\n", "runner:1", "x" * 201]


@pytest.fixture
def metrics(aws_metrics: RecordingMetrics) -> RecordingMetrics:
    return aws_metrics


@pytest.fixture
def caller(aws_caller: AwsCaller) -> AwsCaller:
    return aws_caller


@pytest.fixture
def store(caller: AwsCaller) -> SsmConfigStore:
    return SsmConfigStore(caller)


class TestSsmConfigStore(ConfigStoreContract):
    @pytest.fixture
    def config_store(self, store: SsmConfigStore) -> SsmConfigStore:
        return store


def _ssm(caller: AwsCaller) -> Any:
    return caller.client("ssm")


def _tags(caller: AwsCaller, name: str) -> dict[str, str]:
    answer = _ssm(caller).list_tags_for_resource(ResourceType="Parameter", ResourceId=name)
    return {tag["Key"]: tag["Value"] for tag in answer["TagList"]}


async def test_a_config_is_a_secure_string_tagged_with_its_job(
    store: SsmConfigStore, caller: AwsCaller
) -> None:
    await store.put(RunnerId("i-0123456789abcdef0"), runner_config(7))
    name = "/runs-fleet/runners/i-0123456789abcdef0"
    assert store.parameter_name(RunnerId("i-0123456789abcdef0")) == name
    parameter = _ssm(caller).get_parameter(Name=name)["Parameter"]
    assert parameter["Type"] == "SecureString"
    assert _tags(caller, name) == {"runs-fleet:managed": "true", "runs-fleet:job-id": "7"}


async def test_a_registration_token_config_is_a_secure_string_too(
    store: SsmConfigStore, caller: AwsCaller
) -> None:
    await store.put(RunnerId("runs-fleet-9-1"), token_config(9))
    name = store.parameter_name(RunnerId("runs-fleet-9-1"))
    parameter = _ssm(caller).get_parameter(Name=name)["Parameter"]
    assert parameter["Type"] == "SecureString"
    (described,) = _ssm(caller).describe_parameters(
        ParameterFilters=[{"Key": "Name", "Values": [name]}]
    )["Parameters"]
    assert FAKE_REGISTRATION_TOKEN not in str(described)


async def test_overwriting_a_config_moves_its_job_tag(
    store: SsmConfigStore, caller: AwsCaller
) -> None:
    runner = RunnerId("runs-fleet-7-1")
    await store.put(runner, runner_config(7))
    await store.put(runner, runner_config(8))
    name = store.parameter_name(runner)
    assert _tags(caller, name) == {"runs-fleet:managed": "true", "runs-fleet:job-id": "8"}
    assert _ssm(caller).get_parameter(Name=name)["Parameter"]["Version"] == 2


async def test_a_deleted_config_leaves_no_parameter(
    store: SsmConfigStore, caller: AwsCaller
) -> None:
    await store.put(RunnerId("runs-fleet-7-1"), runner_config(7))
    await store.delete(RunnerId("runs-fleet-7-1"))
    answer = _ssm(caller).get_parameters_by_path(Path="/runs-fleet", Recursive=True)
    assert answer["Parameters"] == []


async def test_a_config_over_four_kilobytes_is_stored_in_a_tier_that_holds_it(
    store: SsmConfigStore, caller: AwsCaller
) -> None:
    big = runner_config(7, jit_config="J" * 6000)
    await store.put(RunnerId("runs-fleet-7-1"), big)
    assert await store.get(RunnerId("runs-fleet-7-1")) == big
    name = store.parameter_name(RunnerId("runs-fleet-7-1"))
    (described,) = _ssm(caller).describe_parameters(
        ParameterFilters=[{"Key": "Name", "Values": [name]}]
    )["Parameters"]
    # AWS reports the tier it chose (Advanced here); moto echoes the one asked for
    assert described["Tier"] in {"Advanced", "Intelligent-Tiering"}


async def test_a_config_too_big_for_ssm_is_refused_without_the_secret(
    store: SsmConfigStore, caller: AwsCaller
) -> None:
    secret = "S" * 9000
    with pytest.raises(AdapterError, match="more than the 8192 an SSM parameter holds") as caught:
        await store.put(RunnerId("runs-fleet-7-1"), runner_config(7, jit_config=secret))
    assert secret not in str(caught.value)
    assert caught.value.retryable is False
    assert list(await store.list_ids()) == []


async def test_the_configured_kms_key_encrypts_the_config(caller: AwsCaller) -> None:
    key_id = caller.client("kms").create_key(Description="runner configs")["KeyMetadata"]["KeyId"]
    store = SsmConfigStore(caller, kms_key_id=key_id)
    await store.put(RunnerId("runs-fleet-7-1"), runner_config(7))
    name = store.parameter_name(RunnerId("runs-fleet-7-1"))
    (described,) = _ssm(caller).describe_parameters(
        ParameterFilters=[{"Key": "Name", "Values": [name]}]
    )["Parameters"]
    assert described["KeyId"] == key_id
    assert await store.get(RunnerId("runs-fleet-7-1")) == runner_config(7)


async def test_listing_follows_every_page_of_ten(
    store: SsmConfigStore, metrics: RecordingMetrics
) -> None:
    runners = sorted(RunnerId(f"runs-fleet-{n}-1") for n in range(23))
    for n, runner in enumerate(runners):
        await store.put(runner, runner_config(n))
    assert list(await store.list_ids()) == runners
    assert metrics.count("aws_api_calls", operation="GetParametersByPath") == 3


async def test_listing_ignores_parameters_outside_the_prefix_and_below_it(
    store: SsmConfigStore, caller: AwsCaller
) -> None:
    await store.put(RunnerId("runs-fleet-1-1"), runner_config(1))
    for name in ("/runs-fleet/other/x", "/runs-fleet/runners/nested/y", "/runs-fleet/runnersx"):
        _ssm(caller).put_parameter(Name=name, Value="v", Type="String")
    assert list(await store.list_ids()) == ["runs-fleet-1-1"]


async def test_stores_under_different_prefixes_do_not_see_each_other(
    store: SsmConfigStore, caller: AwsCaller
) -> None:
    other = SsmConfigStore(caller, prefix="/ci/runners")
    await other.put(RunnerId("runs-fleet-1-1"), runner_config(1))
    assert list(await store.list_ids()) == []
    assert await store.get(RunnerId("runs-fleet-1-1")) is None


@pytest.mark.parametrize("runner_id", BAD_IDS)
async def test_a_bad_runner_id_is_refused_before_calling_aws(
    store: SsmConfigStore, metrics: RecordingMetrics, runner_id: str
) -> None:
    with pytest.raises(ValueError, match="cannot name an SSM parameter"):
        await store.put(RunnerId(runner_id), runner_config(7))
    with pytest.raises(ValueError, match="cannot name an SSM parameter"):
        await store.get(RunnerId(runner_id))
    with pytest.raises(ValueError, match="cannot name an SSM parameter"):
        await store.delete(RunnerId(runner_id))
    assert metrics.count("aws_api_calls") == 0


async def test_a_parameter_that_is_not_a_config_is_an_error_without_its_value(
    store: SsmConfigStore, caller: AwsCaller
) -> None:
    name = store.parameter_name(RunnerId("runs-fleet-7-1"))
    _ssm(caller).put_parameter(
        Name=name, Value=f'{{"jit_config": "{FAKE_JIT_CONFIG}"', Type="SecureString"
    )
    with pytest.raises(AdapterError, match="does not hold a runs-fleet runner config") as caught:
        await store.get(RunnerId("runs-fleet-7-1"))
    assert FAKE_JIT_CONFIG not in str(caught.value)
    assert caught.value.__cause__ is None


async def test_an_aws_error_quoting_the_config_reaches_the_caller_without_it(
    store: SsmConfigStore, caller: AwsCaller
) -> None:
    # AWS validation messages may quote the rejected value; moto never rejects one
    secret = "jit-config-that-aws-quoted"
    value = runner_config(7, jit_config=secret)
    with Stubber(_ssm(caller)) as stubber:
        stubber.add_client_error(
            "put_parameter",
            service_error_code="ValidationException",
            service_message=f"Value '{secret}' at 'value' failed to satisfy constraint",
        )
        with pytest.raises(AdapterError, match="ValidationException: Value '\\*\\*\\*'") as caught:
            await store.put(RunnerId("runs-fleet-7-1"), value)
    assert secret not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


async def test_an_aws_error_quoting_a_registration_token_reaches_the_caller_without_it(
    store: SsmConfigStore, caller: AwsCaller
) -> None:
    with Stubber(_ssm(caller)) as stubber:
        stubber.add_client_error(
            "put_parameter",
            service_error_code="ValidationException",
            service_message=f"Value '{FAKE_REGISTRATION_TOKEN}' failed to satisfy constraint",
        )
        with pytest.raises(AdapterError, match="ValidationException: Value '\\*\\*\\*'") as caught:
            await store.put(RunnerId("runs-fleet-9-1"), token_config(9))
    assert FAKE_REGISTRATION_TOKEN not in str(caught.value)
    assert caught.value.__cause__ is None


def _context(**values: str) -> AdapterContext:
    settings = Settings(values={"RUNS_FLEET_MODE": "ec2", **values})
    return AdapterContext(settings=settings, clock=ManualClock(), metrics=RecordingMetrics())


@pytest.mark.parametrize(
    "prefix", ["runs-fleet", "/runs-fleet/", "/aws/runners", "/SSM/x", "/a b", "/a//b", ""]
)
def test_a_prefix_that_is_no_parameter_path_is_a_config_error(
    caller: AwsCaller, prefix: str
) -> None:
    with pytest.raises(ConfigError, match="RUNS_FLEET_SSM_PREFIX"):
        ssm.from_context(_context(RUNS_FLEET_SSM_PREFIX=prefix), caller)


def test_the_factory_uses_the_configured_prefix_and_key(caller: AwsCaller) -> None:
    context = _context(RUNS_FLEET_SSM_PREFIX="/ci/runners", RUNS_FLEET_SSM_KMS_KEY_ID="alias/ci")
    store = ssm.from_context(context, caller)
    assert (store.prefix, store.kms_key_id) == ("/ci/runners", "alias/ci")
    assert {s.name: s.default for s in ssm.SETTINGS} == {
        "RUNS_FLEET_SSM_PREFIX": "/runs-fleet/runners",
        "RUNS_FLEET_SSM_KMS_KEY_ID": None,
    }
