"""Runner configs as SSM SecureString parameters: the ConfigStore of EC2 mode.

An EC2 runner's agent reads its one job's config (with GitHub's JIT config, a secret)
from Parameter Store at boot, with the instance role, so the config never travels in
user data or instance tags. Each config is one SecureString parameter
``<prefix>/<runner id>``, encrypted with the AWS managed key or the configured KMS key,
tagged ``runs-fleet:managed=true`` and ``runs-fleet:job-id=<id>`` so that an operator
(and an IAM policy) can tell runs-fleet's parameters apart.

The tier is ``Intelligent-Tiering``: a JIT config with its labels can exceed the
standard tier's 4 KB, and this way only those few parameters pay for the advanced
tier. The JIT config (or, where runners register with a token, the registration
token) is never part of a log line or an error: AWS errors raised while writing a config
are checked for it and stripped of it before they leave this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from runs_fleet_aws.calls import AwsCaller, error_code
from runs_fleet_core.converters import dumps, loads, make_config_converter
from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.errors import AdapterError, ConfigError
from runs_fleet_core.plugins import AdapterContext
from runs_fleet_core.settings import Setting

PREFIX_SETTING = "RUNS_FLEET_SSM_PREFIX"
KMS_KEY_SETTING = "RUNS_FLEET_SSM_KMS_KEY_ID"
DEFAULT_PREFIX = "/runs-fleet/runners"

SETTINGS: tuple[Setting, ...] = (
    Setting(
        name=PREFIX_SETTING,
        help="SSM Parameter Store path under which runner configs are stored, one "
        "SecureString parameter <prefix>/<runner id> each; runner instance roles need "
        "ssm:GetParameter on it",
        default=DEFAULT_PREFIX,
    ),
    Setting(
        name=KMS_KEY_SETTING,
        help="KMS key (id, ARN or alias/NAME) that encrypts runner configs in SSM; "
        "unset: the AWS managed key alias/aws/ssm",
    ),
)

MAX_VALUE_BYTES = 8192
"""The advanced tier's limit on a parameter value."""

MANAGED_TAG = "runs-fleet:managed"
JOB_TAG = "runs-fleet:job-id"
TIER = "Intelligent-Tiering"
_RUNNER_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
_PREFIX_RE = re.compile(r"(/[A-Za-z0-9_.-]+){1,14}")
_PAGE = 10  # GetParametersByPath returns at most 10 parameters a call


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can start parameter names (``/a/b``: no trailing slash, not
    under AWS's reserved ``/aws`` and ``/ssm``); ``ValueError`` saying why not."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"SSM prefix {prefix!r} is not a parameter path: use /name/name (1-14 levels of "
            "letters, digits, '.', '_' and '-', a leading '/' and no trailing '/')"
        )
    if prefix.split("/")[1].lower() in {"aws", "ssm"}:
        raise ValueError(f"SSM prefix {prefix!r} is under a path AWS reserves (/aws, /ssm)")
    return prefix


class SsmConfigStore:
    """The :class:`~runs_fleet_core.ports.ConfigStore` port on SSM Parameter Store.

    ``kms_key_id`` (``None``: the AWS managed key) encrypts the parameters; runner
    instance roles need ``kms:Decrypt`` on it.
    """

    def __init__(
        self, caller: AwsCaller, *, prefix: str = DEFAULT_PREFIX, kms_key_id: str | None = None
    ) -> None:
        self._caller = caller
        self.prefix = check_prefix(prefix)
        self.kms_key_id = kms_key_id or None
        self._converter = make_config_converter()

    def __repr__(self) -> str:
        return f"SsmConfigStore(prefix={self.prefix!r})"

    def parameter_name(self, runner_id: RunnerId) -> str:
        """The parameter that holds (or would hold) the config of ``runner_id``: what
        the runner's agent reads. ``ValueError`` for an id the port does not allow."""
        if not _RUNNER_ID_RE.fullmatch(runner_id):
            raise ValueError(
                f"runner id {runner_id!r} cannot name an SSM parameter: use 1-200 of "
                "letters, digits, '.', '_' and '-', not starting with '.'"
            )
        return f"{self.prefix}/{runner_id}"

    async def put(self, runner_id: RunnerId, config: RunnerConfig) -> None:
        """Create the parameter with its tags or, when it exists, overwrite its value and
        re-tag it (PutParameter refuses tags together with ``Overwrite``)."""
        name = self.parameter_name(runner_id)
        value = dumps(self._converter, config)
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise AdapterError(
                f"the config of runner {runner_id} is {len(value.encode())} bytes, more than "
                f"the {MAX_VALUE_BYTES} an SSM parameter holds; shorten its labels or settings",
                retryable=False,
            )
        params: dict[str, Any] = {
            "Name": name,
            "Value": value,
            "Type": "SecureString",
            "Tier": TIER,
            "Description": f"runs-fleet runner config of job {config.job_id}",
        }
        if self.kms_key_id:
            params["KeyId"] = self.kms_key_id
        job_tag = {"Key": JOB_TAG, "Value": str(config.job_id)}
        secrets = [s for s in (value, config.jit_config, config.registration_token) if s]
        try:
            await self._put(params, secrets, Tags=[{"Key": MANAGED_TAG, "Value": "true"}, job_tag])
        except AdapterError as exc:
            if error_code(exc) != "ParameterAlreadyExists":
                raise
            await self._put(params, secrets, Overwrite=True)
            await self._call(
                "add_tags_to_resource", ResourceType="Parameter", ResourceId=name, Tags=[job_tag]
            )

    async def _put(self, params: dict[str, Any], secrets: Sequence[str], **more: Any) -> None:
        try:
            await self._call("put_parameter", **params, **more)
        except AdapterError as exc:
            if any(secret and secret in str(exc) for secret in secrets):
                # keep the secret out of the message and out of the chained cause
                text = str(exc)
                for secret in secrets:
                    text = text.replace(secret, "***")
                raise AdapterError(text, retryable=exc.retryable) from None
            raise

    async def get(self, runner_id: RunnerId) -> RunnerConfig | None:
        """The decrypted config of ``runner_id``, or ``None`` when there is none."""
        name = self.parameter_name(runner_id)
        try:
            answer = await self._call("get_parameter", Name=name, WithDecryption=True)
        except AdapterError as exc:
            if error_code(exc) == "ParameterNotFound":
                return None
            raise
        try:
            return loads(self._converter, answer["Parameter"]["Value"], RunnerConfig)
        except ValueError:
            # the parsing error could quote the value: say what is wrong without it
            raise AdapterError(
                f"SSM parameter {name} does not hold a runs-fleet runner config; delete it "
                "or put a config for that runner again",
                retryable=False,
            ) from None

    async def delete(self, runner_id: RunnerId) -> None:
        """Delete the parameter; a missing one is not an error."""
        name = self.parameter_name(runner_id)
        try:
            await self._call("delete_parameter", Name=name)
        except AdapterError as exc:
            if error_code(exc) != "ParameterNotFound":
                raise

    async def list_ids(self) -> Sequence[RunnerId]:
        """Ids of every config directly under the prefix, sorted, read page by page
        without decryption (only the names are used)."""
        params: dict[str, Any] = {
            "Path": self.prefix,
            "Recursive": False,
            "WithDecryption": False,
            "MaxResults": _PAGE,
        }
        ids: list[RunnerId] = []
        while True:
            answer = await self._call("get_parameters_by_path", **params)
            for parameter in answer.get("Parameters", []):
                runner_id = parameter["Name"].removeprefix(self.prefix + "/")
                if _RUNNER_ID_RE.fullmatch(runner_id):
                    ids.append(RunnerId(runner_id))
            if not answer.get("NextToken"):
                return sorted(ids)
            params["NextToken"] = answer["NextToken"]

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await self._caller.call("ssm", operation, **params)


def from_context(context: AdapterContext, caller: AwsCaller) -> SsmConfigStore:
    """The store under the configured prefix and KMS key; ``ConfigError`` naming
    ``RUNS_FLEET_SSM_PREFIX`` when the prefix cannot be a parameter path."""
    prefix = str(context.settings.get(PREFIX_SETTING, DEFAULT_PREFIX))
    try:
        return SsmConfigStore(
            caller, prefix=prefix, kms_key_id=context.settings.get(KMS_KEY_SETTING)
        )
    except ValueError as exc:
        raise ConfigError([f"{PREFIX_SETTING}: {exc}"]) from None
