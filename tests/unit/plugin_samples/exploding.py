"""A plugin whose hook raises."""

from runs_fleet_core.plugins import AdapterRegistry, hookimpl


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    raise RuntimeError("boom")
