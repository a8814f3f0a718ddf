"""runs-fleet's local mode plugin: runners as processes on this host.

It offers :class:`~runs_fleet_local.compute.LocalProvider` and
:class:`~runs_fleet_local.compute.LocalPoolProvider` (each runner is a runs-fleet agent
process with a record in the state dir), :class:`~runs_fleet_local.configs.FileConfigStore`
(each runner's config, with its secret JIT config, in a private file), and the embedded
Valkey server local mode uses when no ``RUNS_FLEET_VALKEY_URL`` is set
(:mod:`runs_fleet_local.embedded_valkey`).
"""
