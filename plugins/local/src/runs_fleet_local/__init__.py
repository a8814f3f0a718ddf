"""runs-fleet's local mode plugin: runners as processes on this host.

For now it offers :class:`~runs_fleet_local.configs.FileConfigStore`, which keeps each
runner's config (with its secret JIT config) in a private file on this host.
"""
