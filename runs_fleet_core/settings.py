"""Typed settings from ``RUNS_FLEET_*`` environment variables and an optional TOML file.

Every setting is declared once (:class:`Setting`): its variable name, how to parse it,
its default, the modes that require it, whether it is a secret. The core declares its
own in :mod:`runs_fleet_core.catalog`; plugins add theirs through a hook. Loading
checks everything and raises one :class:`ConfigError` listing every problem at once.

Precedence: environment variable, then ``<NAME>_FILE`` (secrets only: the file's
content), then the TOML file named by ``RUNS_FLEET_CONFIG_FILE`` (keys are the names
without the prefix, lower-cased: ``queue_url = "..."``), then the default.
"""

from __future__ import annotations

import difflib
import enum
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from runs_fleet_core.errors import ConfigError

PREFIX = "RUNS_FLEET_"
CONFIG_FILE_VAR = "RUNS_FLEET_CONFIG_FILE"
ENV_ONLY_VARS = frozenset({CONFIG_FILE_VAR, "RUNS_FLEET_DISABLE_PLUGINS", "RUNS_FLEET_DEBUG"})
"""Read from the environment before any setting exists (which plugins to load, where
the file is, whether to show tracebacks); they cannot come from the TOML file."""

# Kubernetes injects variables describing each Service into every pod; for a Service
# named "runs-fleet..." they start with RUNS_FLEET_. They are recognised by name *and*
# value, so that a misspelt setting ending in _PORT is still reported.
_SERVICE_LINKS = (
    (re.compile(r"RUNS_FLEET\w*_SERVICE_HOST"), re.compile(r"[0-9A-Fa-f.:]+")),
    (re.compile(r"RUNS_FLEET\w*_SERVICE_PORT(_\w+)?"), re.compile(r"[0-9]+")),
    (
        re.compile(r"RUNS_FLEET\w*_PORT(_[0-9]+_(TCP|UDP|SCTP))?"),
        re.compile(r"(tcp|udp|sctp)://\S+"),
    ),
    (re.compile(r"RUNS_FLEET\w*_PORT_[0-9]+_(TCP|UDP|SCTP)_PROTO"), re.compile(r"tcp|udp|sctp")),
    (re.compile(r"RUNS_FLEET\w*_PORT_[0-9]+_(TCP|UDP|SCTP)_PORT"), re.compile(r"[0-9]+")),
    (re.compile(r"RUNS_FLEET\w*_PORT_[0-9]+_(TCP|UDP|SCTP)_ADDR"), re.compile(r"[0-9A-Fa-f.:]+")),
)


def is_service_link(name: str, value: str) -> bool:
    """Whether ``name=value`` looks like a variable Kubernetes injected for a Service."""
    return any(n.fullmatch(name) and v.fullmatch(value) for n, v in _SERVICE_LINKS)


class Secret(str):
    """A string that never shows itself in ``repr`` (so logs and errors stay clean)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


class Kind(enum.Enum):
    STR = "text"
    INT = "whole number"
    FLOAT = "number"
    BOOL = "true or false"
    LIST = "comma-separated list"
    MAPPING = "JSON object of text values"
    PATH = "path"


@attrs.frozen(kw_only=True)
class Setting:
    """The declaration of one setting.

    ``required_in``: modes in which it must be set. ``choices``: allowed values (for
    ``STR`` and each item of ``LIST``). ``minimum``: for numbers.
    """

    name: str
    help: str
    kind: Kind = Kind.STR
    default: Any = None
    required_in: frozenset[str] = frozenset()
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None

    @property
    def toml_key(self) -> str:
        return self.name.removeprefix(PREFIX).lower()


@attrs.frozen(kw_only=True)
class Settings:
    """Validated settings: ``values`` by variable name, ``warnings`` for things worth
    a look that do not stop the process (an unknown ``RUNS_FLEET_*`` variable)."""

    values: Mapping[str, Any]
    warnings: tuple[str, ...] = ()
    sources: Mapping[str, str] = attrs.field(factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        value = self.values.get(name)
        return default if value is None else value

    @property
    def mode(self) -> str:
        return str(self.values["RUNS_FLEET_MODE"])


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"true", "1", "yes", "on"}:
        return True
    if lowered in {"false", "0", "no", "off"}:
        return False
    raise ValueError(text)


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """An environment-only on/off switch: true for 1/true/yes/on, false otherwise."""
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse_mapping(text: str) -> dict[str, str]:
    value = json.loads(text)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(text)
    return {str(k): v for k, v in value.items()}


_PARSERS: dict[Kind, Callable[[str], Any]] = {
    Kind.STR: str.strip,
    Kind.INT: int,
    Kind.FLOAT: float,
    Kind.BOOL: _parse_bool,
    Kind.LIST: _parse_list,
    Kind.MAPPING: _parse_mapping,
    Kind.PATH: lambda text: Path(text).expanduser(),
}


def _coerce(setting: Setting, raw: Any) -> Any:
    """Parse a raw value (text from the environment, or a TOML value) for ``setting``."""
    if isinstance(raw, str):
        value = _PARSERS[setting.kind](raw)
    elif setting.kind is Kind.LIST and isinstance(raw, list):
        value = [str(item) for item in raw]
    elif setting.kind is Kind.MAPPING and isinstance(raw, dict):
        value = {str(k): str(v) for k, v in raw.items()}
    elif setting.kind is Kind.BOOL and isinstance(raw, bool):
        value = raw
    elif setting.kind in (Kind.INT, Kind.FLOAT) and type(raw) in (int, float):
        value = int(raw) if setting.kind is Kind.INT else float(raw)
    else:
        raise ValueError(repr(raw))
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{raw!r} is not a finite number")
    return Secret(value) if setting.secret and isinstance(value, str) else value


def _check_value(setting: Setting, value: Any) -> str | None:
    items = value if isinstance(value, list) else [value]
    if setting.choices and any(item not in setting.choices for item in items):
        return f"must be one of {', '.join(setting.choices)}"
    if setting.minimum is not None and isinstance(value, int | float) and (value < setting.minimum):
        return f"must be at least {setting.minimum:g}"
    return None


def _read_toml(path_text: str, problems: list[str]) -> dict[str, Any]:
    path = Path(path_text).expanduser()
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        problems.append(f"{CONFIG_FILE_VAR}: file {path} does not exist")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{CONFIG_FILE_VAR}: cannot read {path}: {exc}")
    return {}


def _raw_value(
    setting: Setting, env: Mapping[str, str], toml: Mapping[str, Any], problems: list[str]
) -> tuple[Any, str]:
    """The unparsed value of ``setting`` and where it came from ("" when unset)."""
    file_var = f"{setting.name}_FILE"
    if setting.secret and env.get(file_var):
        if env.get(setting.name):
            problems.append(f"{setting.name} and {file_var} are both set: keep one")
            return None, ""
        try:
            return Path(env[file_var]).read_text().rstrip("\r\n"), file_var
        except OSError as exc:
            problems.append(f"{file_var}: cannot read {env[file_var]}: {exc.strerror}")
            return None, ""
    if env.get(setting.name, "") != "":
        return env[setting.name], "environment"
    if setting.toml_key in toml:
        return toml[setting.toml_key], "config file"
    return None, ""


def load_settings(
    env: Mapping[str, str], definitions: Mapping[str, Setting], *, require: bool = True
) -> Settings:
    """Read, parse and check every declared setting; raise ``ConfigError`` listing all
    problems (never stopping at the first). ``require=False`` skips the per-mode
    "required" checks, for commands that only read a few settings."""
    settings, problems = inspect_settings(env, definitions, require=require)
    if problems:
        raise ConfigError(problems)
    return settings


def inspect_settings(
    env: Mapping[str, str], definitions: Mapping[str, Setting], *, require: bool = True
) -> tuple[Settings, list[str]]:
    """Like :func:`load_settings` but never raises: the settings (a setting whose value
    is invalid keeps its default) and every problem found."""
    problems: list[str] = []
    toml = _read_toml(env[CONFIG_FILE_VAR], problems) if env.get(CONFIG_FILE_VAR) else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, setting in definitions.items():
        values[name], sources[name] = setting.default, "default"
        raw, source = _raw_value(setting, env, toml, problems)
        if source:
            try:
                value = _coerce(setting, raw)
            except (ValueError, TypeError, OverflowError):
                shown = "the value given" if setting.secret else repr(raw)
                problems.append(f"{name}: {shown} is not a {setting.kind.value}")
                continue
            values[name], sources[name] = value, source
        if values[name] is not None and (why := _check_value(setting, values[name])):
            problems.append(f"{name}: {why} (got {values[name]!r})")
    mode = values.get("RUNS_FLEET_MODE")
    for name, setting in definitions.items() if require else ():
        if mode in setting.required_in and values.get(name) in (None, "", []):
            problems.append(f"{name} is required when RUNS_FLEET_MODE={mode}: {setting.help}")
    problems += _unknown_toml_keys(toml, definitions)
    warnings = tuple(_unknown_vars(env, definitions))
    return Settings(values=values, warnings=warnings, sources=sources), problems


def _unknown_vars(env: Mapping[str, str], definitions: Mapping[str, Setting]) -> list[str]:
    known = set(definitions) | ENV_ONLY_VARS
    known |= {f"{n}_FILE" for n, s in definitions.items() if s.secret}
    found = []
    for var in sorted(env):
        if var.startswith(PREFIX) and var not in known and not is_service_link(var, env[var]):
            close = difflib.get_close_matches(var, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            found.append(f"{var} is not a runs-fleet setting and is ignored{hint}")
    return found


def _unknown_toml_keys(toml: Mapping[str, Any], definitions: Mapping[str, Setting]) -> list[str]:
    keys = {s.toml_key for s in definitions.values()}
    problems = []
    for key in sorted(toml):
        if key not in keys:
            close = difflib.get_close_matches(key, sorted(keys), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"config file: unknown key {key!r}{hint}")
    return problems
