"""The two files of a Kubernetes runner's config: what is secret and what is not.

A runner pod mounts its one job's config at ``/etc/runs-fleet``: ``runner.json`` from a
ConfigMap and ``secret.json`` from a Secret. The split exists so that the secret part
(GitHub's JIT config or registration token, and every secret setting) lives only in a
Secret, whose access
RBAC and encryption at rest can restrict, while the rest stays readable to whoever
debugs a pod. This module is the one definition of that split: the orchestrator's
config store writes through :func:`split` and reads through :func:`join`, the agent in
the pod reads the mounted directory through :func:`read_dir`.

Errors name the file or key at fault and never quote the secret part.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs

from runs_fleet_core.converters import dumps, loads, make_config_converter
from runs_fleet_core.domain.ids import JobId
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.errors import RunsFleetError

RUNNER_FILE = "runner.json"
"""The ConfigMap key (and mounted file) with the non-secret part."""
SECRET_FILE = "secret.json"  # noqa: S105 (a file name, not a password)
"""The Secret key (and mounted file) with the JIT config (or registration token) and
the secret settings."""
MOUNT_DIR = Path("/etc/runs-fleet")
"""Where a runner pod finds both files."""

SECRET_SETTINGS = frozenset({"report_token"})
_SECRET_WORDS = ("token", "secret", "password", "key")


class ConfigFilesError(RunsFleetError):
    """A runner config's files are missing or malformed; the message names the file or
    key and never contains the secret part."""


@attrs.frozen(kw_only=True)
class _RunnerFile:
    runner_name: str
    job_id: JobId
    repository: str
    labels: tuple[str, ...] = ()
    settings: dict[str, str] = attrs.field(factory=dict)
    registration_url: str | None = None


@attrs.frozen(kw_only=True, repr=False)
class _SecretFile:
    jit_config: str
    settings: dict[str, str] = attrs.field(factory=dict)
    registration_token: str | None = None

    def __repr__(self) -> str:
        return "_SecretFile(***)"


def is_secret_setting(key: str) -> bool:
    """Whether the setting ``key`` goes to the Secret: ``report_token`` and any key that
    mentions a token, secret, password or key (case-insensitive). Erring towards the
    Secret costs nothing; a secret in a ConfigMap is readable to far more people."""
    lowered = key.lower()
    return lowered in SECRET_SETTINGS or any(word in lowered for word in _SECRET_WORDS)


def split(config: RunnerConfig) -> tuple[dict[str, str], dict[str, str]]:
    """``config`` as ``(configmap data, secret string data)``: ``{RUNNER_FILE: json}``
    without the JIT config, registration token and secret settings, and
    ``{SECRET_FILE: json}`` with them."""
    public = {k: v for k, v in config.settings.items() if not is_secret_setting(k)}
    hidden = {k: v for k, v in config.settings.items() if is_secret_setting(k)}
    converter = make_config_converter()
    runner = _RunnerFile(
        runner_name=config.runner_name,
        job_id=config.job_id,
        repository=config.repository,
        labels=config.labels,
        settings=public,
        registration_url=config.registration_url,
    )
    secret = _SecretFile(
        jit_config=config.jit_config,
        settings=hidden,
        registration_token=config.registration_token,
    )
    return {RUNNER_FILE: dumps(converter, runner)}, {SECRET_FILE: dumps(converter, secret)}


def join(
    configmap_data: Mapping[str, str],
    secret_data: Mapping[str, str],
    *,
    source: str = "the runner config",
) -> RunnerConfig:
    """The config that :func:`split` turned into ``configmap_data`` and ``secret_data``.
    ``source`` names where they came from in errors (``ConfigFilesError``)."""
    converter = make_config_converter()
    if RUNNER_FILE not in configmap_data:
        raise ConfigFilesError(f"{source} has no {RUNNER_FILE}")
    if SECRET_FILE not in secret_data:
        raise ConfigFilesError(f"{source} has no {SECRET_FILE}")
    try:
        runner = loads(converter, configmap_data[RUNNER_FILE], _RunnerFile)
    except ValueError as exc:  # the non-secret part: its detail may be shown
        raise ConfigFilesError(f"{RUNNER_FILE} of {source} is malformed: {exc}") from None
    try:
        secret = loads(converter, secret_data[SECRET_FILE], _SecretFile)
    except ValueError:  # the detail could quote the secret: say only what is expected
        raise ConfigFilesError(
            f"{SECRET_FILE} of {source} is malformed: expected a JSON object with a "
            "string 'jit_config', a 'settings' object of strings and an optional string "
            "'registration_token'"
        ) from None
    both = sorted(set(runner.settings) & set(secret.settings))
    if both:
        raise ConfigFilesError(
            f"{source} has the settings {', '.join(both)} in both {RUNNER_FILE} and "
            f"{SECRET_FILE}; write the config again"
        )
    return RunnerConfig(
        runner_name=runner.runner_name,
        job_id=runner.job_id,
        repository=runner.repository,
        jit_config=secret.jit_config,
        labels=runner.labels,
        settings={**runner.settings, **secret.settings},
        registration_token=secret.registration_token,
        registration_url=runner.registration_url,
    )


def read_dir(path: Path = MOUNT_DIR) -> RunnerConfig:
    """The config mounted in ``path`` (both files). ``ConfigFilesError`` saying which
    file is missing, unreadable or malformed, never with the secret's content."""
    contents: dict[str, str] = {}
    for name in (RUNNER_FILE, SECRET_FILE):
        file = path / name
        try:
            contents[name] = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigFilesError(
                f"there is no {name} in {path}: the pod must mount its runner config "
                f"(ConfigMap with {RUNNER_FILE}, Secret with {SECRET_FILE}) there"
            ) from None
        except UnicodeDecodeError:
            raise ConfigFilesError(f"{file} is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigFilesError(f"cannot read {file}: {exc.strerror}") from None
    return join(
        {RUNNER_FILE: contents[RUNNER_FILE]},
        {SECRET_FILE: contents[SECRET_FILE]},
        source=f"the runner config in {path}",
    )
