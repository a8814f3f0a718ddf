"""Random preemption at adapter boundaries, so a simulation explores interleavings.

Under asyncio a task only gives way where it awaits. Wrapping an adapter in
:class:`Preempting` adds a random number of yields before each call reaches the adapter
and after it returns, so that every await point of a use case may be overtaken by any
other task: a dispatcher claiming a runner between the pool loop's read and its stop is
then one of the orders the simulation tries, not a lucky accident of timing.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Callable
from typing import Any


async def yield_randomly(rng: random.Random, most: int) -> None:
    """Give way to the other tasks between 0 and ``most`` times."""
    for _ in range(rng.randint(0, most)):
        await asyncio.sleep(0)


class Preempting:
    """``inner`` with every coroutine method preemptible on both sides of the call.

    Everything else (properties such as a provider's ``name``, plain methods) passes
    through unchanged, so the wrapper stands in for the adapter behind any port.
    """

    def __init__(self, inner: Any, rng: random.Random, *, most: int = 4) -> None:
        self._inner = inner
        self._rng = rng
        self._most = most

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        return self._preemptible(attribute)

    def _preemptible(self, method: Callable[..., Any]) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            await yield_randomly(self._rng, self._most)
            result = await method(*args, **kwargs)
            await yield_randomly(self._rng, self._most)
            return result

        return call
