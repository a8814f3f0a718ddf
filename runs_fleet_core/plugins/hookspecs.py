"""The hooks through which a plugin extends runs-fleet.

A plugin is a module registered under the ``runs_fleet`` entry-point group that
implements some of the hooks below with ``@hookimpl``. Each hook hands the plugin a
*registry*; the plugin adds named factories to it and returns nothing. Factories are
called later, only for the adapters a deployment actually uses, so a plugin module must
stay cheap to import: import your SDK inside the factory, not at the top of the module.

Example (a complete plugin module)::

    from runs_fleet_core.plugins import hookimpl

    @hookimpl
    def runs_fleet_register_adapters(registry):
        def make_queue(context):
            from my_queue_adapter import NatsQueue   # heavy import stays lazy
            return NatsQueue(context.settings.get("RUNS_FLEET_NATS_URL"))
        registry.add_queue("nats", make_queue)

and in the plugin distribution's ``pyproject.toml``::

    [project.entry-points.runs_fleet]
    nats = "my_runs_fleet_nats.plugin"
"""

from __future__ import annotations

import pluggy

from runs_fleet_core.plugins.registry import (
    AdapterRegistry,
    CommandRegistry,
    ServiceRegistry,
    SettingsRegistry,
)

PROJECT = "runs_fleet"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    """Offer adapters by name: providers, pool providers, queues, state stores,
    config stores, metrics sinks and GitHub clients.

    :param registry: call its ``add_*`` methods, one per adapter, with a unique name
        and a factory ``(AdapterContext) -> adapter``. A name offered by two plugins is
        an error reported at load time, naming both.
    """


@hookspec
def runs_fleet_register_settings(registry: SettingsRegistry) -> None:
    """Declare the ``RUNS_FLEET_*`` settings the plugin reads.

    :param registry: call ``registry.add(Setting(...))`` once per setting. Declared
        settings are parsed and validated with the core's, listed by
        ``runs-fleet config check``, and reach factories through
        ``context.settings.get(NAME)``. A name the core already uses is refused. Mark
        secrets with ``secret=True``: they can then be
        read from ``<NAME>_FILE`` and are never printed. For what no single setting's
        validation can see (settings that contradict each other), add a check with
        ``registry.add_check(fn)``: ``fn(settings)`` returns the problems, each naming
        the setting to fix.
    """


@hookspec
def runs_fleet_register_commands(registry: CommandRegistry) -> None:
    """Add sub-commands to the ``runs-fleet`` CLI.

    :param registry: call ``registry.add(Command(...))``. A command's ``run`` returns
        the process exit code; raise a ``RunsFleetError`` for failures the user can fix
        (the CLI prints its message, never a traceback).
    """


@hookspec
def runs_fleet_register_services(registry: ServiceRegistry) -> None:
    """Offer background services that a deployment needs before its adapters exist.

    :param registry: call ``registry.add(name, factory)``. The factory receives the
        deployment's settings and returns ``None`` when the service is not needed, or an
        async context manager that starts it and yields setting overrides (for example
        local mode's embedded Valkey server yields ``RUNS_FLEET_VALKEY_URL``). Services
        are stopped in reverse order when the process shuts down.
    """
