"""What one CreateFleet call answered, and which of its failures a retry may cure.

An instant fleet answers synchronously with the instance it launched, or with
``Errors`` and no instance (the call itself succeeds). The job provider and the warm
pool both send requests built by :mod:`runs_fleet_ec2.fleet` and must decide the same
way what a failure means: no capacity in this market now (:data:`CAPACITY_CODES`: try
the other market, or later), a request that is itself wrong (:func:`is_permanent`: no
retry cures it), or anything else (worth another attempt). Reading the answer does
no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "MaxSpotInstanceCountExceeded",
        "SpotMaxPriceTooLow",
        "UnfulfillableCapacity",
    }
)
"""Errors that mean "no capacity in this market now", after which the other market (or
a later attempt) may well succeed."""

_PERMANENT_PREFIXES = ("Invalid", "Unauthorized", "AuthFailure", "MissingParameter", "OptIn")


def is_permanent(code: str) -> bool:
    """Whether an EC2 error code says the request itself is wrong (a missing launch
    template, a bad parameter, no permission), which no retry cures."""
    return code.startswith(_PERMANENT_PREFIXES)


@attrs.frozen(kw_only=True)
class FleetAnswer:
    """What one CreateFleet call gave: an instance, or error codes and messages."""

    instance_id: str | None = None
    instance_type: str = ""
    subnet_id: str = ""
    fleet_id: str = ""
    errors: tuple[tuple[str, str], ...] = ()

    @property
    def codes(self) -> list[str]:
        """The distinct error codes, sorted."""
        return sorted({code for code, _ in self.errors})


def read_answer(response: Mapping[str, Any]) -> FleetAnswer:
    """The first instance of an instant fleet's answer, or its errors."""
    fleet_id = str(response.get("FleetId", ""))
    for entry in response.get("Instances", []):
        ids = entry.get("InstanceIds") or []
        if ids:
            overrides = entry.get("LaunchTemplateAndOverrides", {}).get("Overrides", {})
            return FleetAnswer(
                instance_id=str(ids[0]),
                instance_type=str(entry.get("InstanceType", "")),
                subnet_id=str(overrides.get("SubnetId", "")),
                fleet_id=fleet_id,
            )
    errors = tuple(
        (str(e.get("ErrorCode", "Unknown")), str(e.get("ErrorMessage", "")).strip())
        for e in response.get("Errors", [])
    )
    return FleetAnswer(fleet_id=fleet_id, errors=errors)
