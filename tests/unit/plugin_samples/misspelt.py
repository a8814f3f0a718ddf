"""A plugin implementing a hook that does not exist."""

from runs_fleet_core.plugins import hookimpl


@hookimpl
def runs_fleet_register_adaptors(registry: object) -> None:
    """Misspelt: adaptors."""
