"""Hook implementations of the ``k8s`` plugin: Kubernetes mode's adapters, settings and
commands.

This module is what the ``runs_fleet`` entry point names. It imports neither the
``kubernetes`` client nor the adapters: loading the plugin costs nothing until a
deployment asks for a Kubernetes adapter. All adapters of one deployment share one
:class:`~runs_fleet_k8s.client.KubeCaller` (connection pool, threads).
"""

from __future__ import annotations

import argparse

from runs_fleet_core.plugins import (
    AdapterContext,
    AdapterRegistry,
    Command,
    CommandRegistry,
    SettingsRegistry,
    hookimpl,
)
from runs_fleet_core.ports import ConfigStore, PoolProvider, Provider, RunnerIdentity, StateStore
from runs_fleet_core.settings import Setting


def _provider(context: AdapterContext) -> Provider:
    from runs_fleet_k8s import provider
    from runs_fleet_k8s.client import shared_caller

    return provider.from_context(context, shared_caller(context))


def _pool_provider(context: AdapterContext) -> PoolProvider:
    from runs_fleet_k8s import pool
    from runs_fleet_k8s.client import shared_caller

    return pool.from_context(context, shared_caller(context))


def _state(context: AdapterContext) -> StateStore:
    from runs_fleet_k8s import state
    from runs_fleet_k8s.client import shared_caller

    return state.from_context(context, shared_caller(context))


def _configs(context: AdapterContext) -> ConfigStore:
    from runs_fleet_k8s import configs
    from runs_fleet_k8s.client import shared_caller

    return configs.from_context(context, shared_caller(context))


def _identity(context: AdapterContext) -> RunnerIdentity:
    from runs_fleet_k8s import identity
    from runs_fleet_k8s.client import shared_caller

    return identity.from_context(context, shared_caller(context))


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    """Offer the Job provider and its Deployment warm pools, the ConfigMap state store
    (with Lease locks), the Secret config store and the pod token check."""
    registry.add_provider("k8s", _provider)
    registry.add_pool_provider("k8s", _pool_provider)
    registry.add_state_store("configmap", _state)
    registry.add_config_store("k8s", _configs)
    registry.add_runner_identity("k8s", _identity)


def settings() -> tuple[Setting, ...]:
    """Every setting the Kubernetes adapters read."""
    from runs_fleet_k8s import client, configs, manifests, pool, provider, state

    seen: dict[str, Setting] = {}
    for module in (client, manifests, provider, pool, state, configs):
        for setting in module.SETTINGS:
            seen.setdefault(setting.name, setting)
    return tuple(seen.values())


@hookimpl
def runs_fleet_register_settings(registry: SettingsRegistry) -> None:
    """Declare the Kubernetes mode settings besides the core's."""
    for setting in settings():
        registry.add(setting)


def _configure(parser: argparse.ArgumentParser) -> None:
    from runs_fleet_k8s import agent, render

    render.configure(parser)  # adds the sub-command parsers and "render"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    agent.add_arguments(
        sub.add_parser(
            "agent",
            help="run this pod's one job: config from /etc/runs-fleet or the orchestrator, "
            "the runner, reports (the runner image's entrypoint)",
        )
    )


def _run(args: argparse.Namespace) -> int:
    from runs_fleet_k8s import agent, render

    if args.k8s_command == "agent":
        return agent.main(args)
    return render.main(args)


@hookimpl
def runs_fleet_register_commands(registry: CommandRegistry) -> None:
    registry.add(
        Command(
            name="k8s",
            help="Kubernetes mode: print a label's runner manifests, run a runner pod's agent",
            configure=_configure,
            run=_run,
        )
    )
