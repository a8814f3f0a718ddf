"""cattrs converters, one per boundary a value crosses.

* ``make_message_converter`` — queue messages and agent reports (JSON-safe primitives).
* ``make_record_converter`` — StateStore records (jobs, pools, leases, assignments).
* ``make_config_converter`` — runner configs handed to agents.

All three share the same hooks (ISO-8601 datetimes, enums by value, tuples as lists);
they are separate objects so that one boundary can change its format without touching
the others. Nothing here is global: callers build the converter they need.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypeVar

import cattrs
from cattrs.preconf.json import make_converter as make_json_converter

T = TypeVar("T")


def _base_converter() -> cattrs.Converter:
    converter = make_json_converter(forbid_extra_keys=False, omit_if_default=False)
    converter.register_unstructure_hook(datetime, _datetime_to_str)
    converter.register_structure_hook(datetime, _str_to_datetime)
    return converter


def _datetime_to_str(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _str_to_datetime(value: Any, _: type) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)
    else:
        raise ValueError(f"expected an ISO-8601 timestamp, got {type(value).__name__}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def make_message_converter() -> cattrs.Converter:
    """Converter for queue messages and agent reports."""
    return _base_converter()


def make_record_converter() -> cattrs.Converter:
    """Converter for StateStore records."""
    return _base_converter()


def make_config_converter() -> cattrs.Converter:
    """Converter for runner configs (which carry a secret: never log the output)."""
    return _base_converter()


def dumps(converter: cattrs.Converter, value: object) -> str:
    """``value`` as compact JSON through ``converter``."""
    return json.dumps(converter.unstructure(value), separators=(",", ":"), sort_keys=True)


def loads(converter: cattrs.Converter, text: str | bytes, cls: type[T]) -> T:
    """Parse JSON ``text`` into ``cls`` through ``converter``.

    Raises ``ValueError`` (with cattrs' detail) on malformed input, so callers can
    treat a bad record or message as one kind of failure.
    """
    try:
        return converter.structure(json.loads(text), cls)
    except (cattrs.BaseValidationError, json.JSONDecodeError, TypeError, KeyError) as exc:
        detail = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        raise ValueError(f"cannot read {cls.__name__}: {detail}") from exc
