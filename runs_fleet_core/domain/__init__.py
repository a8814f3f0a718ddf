"""The domain: labels, runner specs, jobs and their state machine, pools, leases.

Pure values and functions; no I/O, no clock, no third-party client.
"""
