"""Reading EC2's instance descriptions: tags, state, launch order. Shared by the
provider (cold runners) and the pool provider (warm ones)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any


def instances(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The instances of a ``DescribeInstances`` page, across its reservations."""
    return [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]


def tags(instance: Mapping[str, Any]) -> dict[str, str]:
    """An instance's tags as a mapping."""
    return {str(t["Key"]): str(t["Value"]) for t in instance.get("Tags", [])}


def state(instance: Mapping[str, Any]) -> str:
    """An instance's state name (``pending``, ``running``, ``stopped`` …)."""
    return str(instance.get("State", {}).get("Name", ""))


def launch_order(instance: Mapping[str, Any]) -> tuple[str, str]:
    """Sort key: launch time, then id (the oldest first, ties broken stably)."""
    launched = instance.get("LaunchTime")
    return (launched.isoformat() if isinstance(launched, datetime) else "", instance["InstanceId"])
