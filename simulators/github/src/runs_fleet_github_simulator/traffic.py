"""The simulated GitHub's traffic: the log of REST calls it served, and the faults a
test asked it to inject into the next calls of a path (errors, throttling, slowness).
"""

from __future__ import annotations

from runs_fleet_github_simulator.records import Call, Fault


class Traffic:
    """REST calls served so far and faults still to serve."""

    def __init__(self) -> None:
        self._calls: list[Call] = []
        self._faults: list[Fault] = []

    def inject_fault(
        self,
        path: str,
        *,
        status: int | None = 500,
        count: int = 1,
        method: str | None = None,
        retry_after: int | None = None,
        reset_in: int | None = None,
        delay_s: float = 0.0,
    ) -> Fault:
        """Make the next ``count`` calls of ``path`` answer ``status`` (see
        :class:`~runs_fleet_github_simulator.records.Fault`)."""
        fault = Fault(
            path=path,
            status=status,
            remaining=count,
            method=method.upper() if method else None,
            retry_after=retry_after,
            reset_in=reset_in,
            delay_s=delay_s,
        )
        self._faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The fault that applies to this call, if any (consuming one of its uses)."""
        for fault in self._faults:
            if fault.path == path and fault.method in (None, method) and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def record(self, call: Call) -> None:
        """Log a served REST call (the REST layer calls this)."""
        self._calls.append(call)

    def calls(self, method: str | None = None, path: str | None = None) -> list[Call]:
        """The REST calls served so far, optionally only those of ``method``/``path``."""
        return [
            c
            for c in self._calls
            if (method is None or c.method == method.upper()) and (path is None or c.path == path)
        ]
