"""Choosing the architecture for a spec that leaves it open, by recent spot prices.

A label without ``arch=`` says "either will do", and the two architectures' spot prices
move independently: the cheaper side this hour is the better deal. One
DescribeSpotPriceHistory call prices every candidate type of both architectures; the
answer is cached for ten minutes per region and candidate set, so a burst of jobs
costs one call. Prices are a preference, never a requirement: when the call fails or
returns nothing, the choice falls back to arm64 (usually the cheaper per vCPU), and a
failure is remembered for a minute so a missing permission does not cost a call per job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.domain.spec import Arch
from runs_fleet_core.errors import AdapterError
from runs_fleet_core.ports import Clock

_log = logging.getLogger(__name__)

DEFAULT_ARCH = Arch.ARM64
CACHE_TTL_S = 600.0
FAILURE_TTL_S = 60.0
PRODUCTS = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")
MAX_PAGES = 5

_CacheKey = tuple[str, tuple[tuple[str, tuple[str, ...]], ...], tuple[str, ...]]


@attrs.frozen(kw_only=True)
class ArchChoice:
    """The chosen architecture, the lowest spot price seen per architecture (USD per
    hour, ``None`` without data) and why, for logs and runner details."""

    arch: Arch
    prices: Mapping[Arch, float | None]
    reason: str


def choose(prices: Mapping[Arch, float | None]) -> ArchChoice:
    """The cheaper architecture; with a price for one side only, that side (the other
    is not sold as spot there); without any price, :data:`DEFAULT_ARCH`. Ties go to
    arm64."""
    known = {arch: price for arch, price in prices.items() if price is not None}
    if not known:
        return ArchChoice(arch=DEFAULT_ARCH, prices=prices, reason="no spot price data")
    ordered = sorted(known, key=lambda arch: (known[arch], arch is not Arch.ARM64))
    arch = ordered[0]
    if len(known) == 1:
        reason = f"only {arch} has spot prices"
    else:
        reason = ", ".join(f"{a} from ${known[a]:.4f}/h" for a in ordered)
    return ArchChoice(arch=arch, prices=prices, reason=f"cheaper spot price ({reason})")


class SpotPrices:
    """Recent spot prices per architecture, cached per region and candidate set."""

    def __init__(
        self,
        caller: AwsCaller,
        clock: Clock,
        *,
        ttl_s: float = CACHE_TTL_S,
        failure_ttl_s: float = FAILURE_TTL_S,
    ) -> None:
        self._caller = caller
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_s)
        self._failure_ttl = timedelta(seconds=failure_ttl_s)
        self._cache: dict[_CacheKey, tuple[datetime, ArchChoice]] = {}

    async def cheaper_arch(
        self, choices: Mapping[Arch, Sequence[str]], zones: Sequence[str] = ()
    ) -> ArchChoice:
        """The architecture whose candidate types (``choices``: arch → type names) have
        the lowest current spot price in ``zones`` (all zones when empty)."""
        now = self._clock.now()
        key: _CacheKey = (
            self._caller.region or "",
            tuple(sorted((str(arch), tuple(sorted(names))) for arch, names in choices.items())),
            tuple(sorted(zones)),
        )
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            lowest = await self._lowest_prices(choices, zones, now)
        except AdapterError as exc:
            _log.warning("spot prices unavailable, launching %s: %s", DEFAULT_ARCH, exc)
            choice = ArchChoice(
                arch=DEFAULT_ARCH, prices=dict.fromkeys(choices), reason=f"no spot prices: {exc}"
            )
            self._cache[key] = (now + self._failure_ttl, choice)
            return choice
        choice = choose(lowest)
        self._cache[key] = (now + self._ttl, choice)
        return choice

    async def _lowest_prices(
        self, choices: Mapping[Arch, Sequence[str]], zones: Sequence[str], now: datetime
    ) -> dict[Arch, float | None]:
        arch_of = {name: arch for arch, names in choices.items() for name in names}
        params: dict[str, Any] = {
            "InstanceTypes": sorted(arch_of),
            "ProductDescriptions": list(PRODUCTS),
            "StartTime": now,
            "MaxResults": 1000,
        }
        if zones:
            params["Filters"] = [{"Name": "availability-zone", "Values": sorted(zones)}]
        lowest: dict[Arch, float | None] = dict.fromkeys(choices)
        for _ in range(MAX_PAGES):
            page = await self._caller.call("ec2", "describe_spot_price_history", **params)
            for entry in page.get("SpotPriceHistory", []):
                arch = arch_of.get(str(entry.get("InstanceType", "")))
                price = _price(entry.get("SpotPrice"))
                if arch is None or price is None:
                    continue
                current = lowest[arch]
                lowest[arch] = price if current is None else min(current, price)
            token = page.get("NextToken")
            if not token:
                break
            params["NextToken"] = token
        return lowest


def _price(text: object) -> float | None:
    try:
        value = float(str(text))
    except ValueError:
        return None
    return value if value > 0 else None
