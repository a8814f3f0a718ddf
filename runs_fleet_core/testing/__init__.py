"""runs-fleet's testing kit, for the project's own tests and for plugin authors.

* :mod:`runs_fleet_core.testing.memory` — in-memory adapters of every port, with the
  same semantics as the production ones (they pass the same contract suites).
* :mod:`runs_fleet_core.testing.contracts` — one pytest contract suite per port:
  subclass it, provide the adapter as a fixture, and your adapter is held to the same
  contract as the built-in ones.
* :mod:`runs_fleet_core.testing.plugin` — the built-in ``memory`` plugin, which offers
  the in-memory adapters under the name ``memory`` (``RUNS_FLEET_MODE=memory``).

Importing :mod:`runs_fleet_core.testing.contracts` requires pytest.
"""
