"""Asks pytest to rewrite the asserts of the contract suites.

pytest only rewrites asserts (to show the values on failure) in test files and modules
registered before they are imported; the suites live in the core, outside any test
directory, so the package imports this module ahead of them.
"""

import pytest

pytest.register_assert_rewrite(
    "runs_fleet_core.testing.contracts.compute",
    "runs_fleet_core.testing.contracts.configs",
    "runs_fleet_core.testing.contracts.outbox",
    "runs_fleet_core.testing.contracts.queue",
    "runs_fleet_core.testing.contracts.state",
)
