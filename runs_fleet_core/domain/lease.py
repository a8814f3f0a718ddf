"""Leases: locks that expire, with an owner and a fencing token.

A lease held by a crashed process frees itself after ``expires_at``. The fencing token
grows with every new acquisition of the same name, so a writer holding an old lease
can be told apart from the current holder.
"""

from __future__ import annotations

from datetime import datetime

import attrs


@attrs.frozen(kw_only=True)
class Lease:
    name: str
    owner: str
    token: int
    expires_at: datetime

    def valid_at(self, now: datetime) -> bool:
        return now < self.expires_at
