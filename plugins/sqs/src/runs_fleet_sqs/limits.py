"""SQS's own limits, which the queue and its dead-letter listing must both stay within.

These are fixed by the service, not settings: asking for more fails the call.
"""

from __future__ import annotations

__all__ = ["MAX_BATCH", "MAX_VISIBILITY_S", "MAX_WAIT_S"]

MAX_VISIBILITY_S = 43_200
"""SQS keeps a received message hidden for at most 12 hours after the receive."""
MAX_WAIT_S = 20
"""SQS's longest long poll."""
MAX_BATCH = 10
"""SQS's most messages per receive."""
