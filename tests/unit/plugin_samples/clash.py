"""A plugin offering a queue under a name another plugin already uses."""

from runs_fleet_core.plugins import AdapterRegistry, hookimpl


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    registry.add_queue("sample", lambda context: None)  # type: ignore[arg-type,return-value]
