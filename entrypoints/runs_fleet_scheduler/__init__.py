"""The scheduler: pool reconciliation and housekeeping on a timer, led by one replica."""
