"""Registries that plugins fill through the hooks, and that entry points read from.

A registry records which plugin offered what, refuses a name offered twice, and hands
out factories by name with an error that says which names exist.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Generic, TypeVar

import attrs

from runs_fleet_core.errors import PluginError
from runs_fleet_core.ports import (
    Clock,
    ConfigStore,
    GitHub,
    Metrics,
    PoolProvider,
    Provider,
    Queue,
    RunnerEvents,
    RunnerIdentity,
    StateStore,
)
from runs_fleet_core.settings import Setting, Settings

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class AdapterContext:
    """What a factory gets to build its adapter: the validated settings, the clock and
    the metrics sink of the process."""

    settings: Settings
    clock: Clock
    metrics: Metrics


Factory = Callable[[AdapterContext], T]


@attrs.frozen
class Offer(Generic[T]):
    """One named thing a plugin offered."""

    name: str
    plugin: str
    item: T


class NamedOffers(Generic[T]):
    """Name → offer of one kind, refusing a name offered twice."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._offers: dict[str, Offer[T]] = {}

    def add(self, name: str, item: T, plugin: str) -> None:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise PluginError(
                f"plugin {plugin!r} offers a {self.kind} with the invalid name {name!r}: "
                "use letters, digits, '-' and '_'"
            )
        if name in self._offers:
            other = self._offers[name].plugin
            raise PluginError(
                f"{self.kind} {name!r} is offered by both plugin {other!r} and plugin "
                f"{plugin!r}; disable one with RUNS_FLEET_DISABLE_PLUGINS"
            )
        self._offers[name] = Offer(name, plugin, item)

    def get(self, name: str) -> T:
        try:
            return self._offers[name].item
        except KeyError:
            known = ", ".join(sorted(self._offers)) or "none"
            raise PluginError(
                f"no {self.kind} named {name!r} is installed (installed: {known}); "
                "install the plugin that offers it, e.g. pip install 'runs-fleet[all]'"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._offers)

    def offers(self) -> list[Offer[T]]:
        return [self._offers[n] for n in sorted(self._offers)]


class AdapterRegistry:
    """Adapter factories by port and name. Plugins call the ``add_*`` methods."""

    KINDS = (
        "provider",
        "pool_provider",
        "queue",
        "state_store",
        "config_store",
        "metrics",
        "github",
        "runner_events",
        "runner_identity",
    )

    def __init__(self) -> None:
        self.plugin = "?"
        self.providers: NamedOffers[Factory[Provider]] = NamedOffers("provider")
        self.pool_providers: NamedOffers[Factory[PoolProvider]] = NamedOffers("pool provider")
        self.queues: NamedOffers[Factory[Queue]] = NamedOffers("queue")
        self.state_stores: NamedOffers[Factory[StateStore]] = NamedOffers("state store")
        self.config_stores: NamedOffers[Factory[ConfigStore]] = NamedOffers("config store")
        self.metrics: NamedOffers[Factory[Metrics]] = NamedOffers("metrics sink")
        self.github_clients: NamedOffers[Factory[GitHub]] = NamedOffers("GitHub client")
        self.runner_events: NamedOffers[Factory[RunnerEvents]] = NamedOffers("runner event feed")
        self.runner_identities: NamedOffers[Factory[RunnerIdentity]] = NamedOffers(
            "runner identity check"
        )

    def add_provider(self, name: str, factory: Factory[Provider]) -> None:
        """Offer a compute backend; ``name`` is what ``backend=<name>`` selects."""
        self.providers.add(name, factory, self.plugin)

    def add_pool_provider(self, name: str, factory: Factory[PoolProvider]) -> None:
        """Offer warm pools for the backend of the same name."""
        self.pool_providers.add(name, factory, self.plugin)

    def add_queue(self, name: str, factory: Factory[Queue]) -> None:
        self.queues.add(name, factory, self.plugin)

    def add_state_store(self, name: str, factory: Factory[StateStore]) -> None:
        self.state_stores.add(name, factory, self.plugin)

    def add_config_store(self, name: str, factory: Factory[ConfigStore]) -> None:
        self.config_stores.add(name, factory, self.plugin)

    def add_metrics(self, name: str, factory: Factory[Metrics]) -> None:
        self.metrics.add(name, factory, self.plugin)

    def add_github(self, name: str, factory: Factory[GitHub]) -> None:
        self.github_clients.add(name, factory, self.plugin)

    def add_runner_events(self, name: str, factory: Factory[RunnerEvents]) -> None:
        """Offer the runner event feed of the backend of the same name (spot
        interruptions, vanished runners, agent reports sent through the backend)."""
        self.runner_events.add(name, factory, self.plugin)

    def add_runner_identity(self, name: str, factory: Factory[RunnerIdentity]) -> None:
        """Offer the check of credentials that runners of the backend of the same name
        present to fetch their config (``GET /api/agent/config``)."""
        self.runner_identities.add(name, factory, self.plugin)

    def provided_by(self, plugin: str) -> list[str]:
        """``kind:name`` of everything ``plugin`` offered (for ``runs-fleet plugins``)."""
        found = []
        for table in (
            self.providers,
            self.pool_providers,
            self.queues,
            self.state_stores,
            self.config_stores,
            self.metrics,
            self.github_clients,
            self.runner_events,
            self.runner_identities,
        ):
            found += [f"{table.kind}:{o.name}" for o in table.offers() if o.plugin == plugin]
        return found


@attrs.frozen(kw_only=True)
class Command:
    """A CLI sub-command: ``configure`` adds its arguments, ``run`` returns the exit code."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class CommandRegistry:
    def __init__(self) -> None:
        self.plugin = "?"
        self.commands: NamedOffers[Command] = NamedOffers("command")

    def add(self, command: Command) -> None:
        self.commands.add(command.name, command, self.plugin)


ServiceFactory = Callable[[Settings], AbstractAsyncContextManager[Mapping[str, str]] | None]
"""Given the deployment's settings, ``None`` when the service is not needed, else an
async context manager that starts it, yields setting overrides (e.g. the URL of the
server it started) and stops it on exit."""


class ServiceRegistry:
    """Background services a deployment may need before its adapters are built."""

    def __init__(self) -> None:
        self.plugin = "?"
        self.services: NamedOffers[ServiceFactory] = NamedOffers("service")

    def add(self, name: str, factory: ServiceFactory) -> None:
        self.services.add(name, factory, self.plugin)


SettingsCheck = Callable[[Settings], Sequence[str]]


class SettingsRegistry:
    def __init__(self) -> None:
        self.plugin = "?"
        self.settings: NamedOffers[Setting] = NamedOffers("setting")
        self.checks: list[tuple[str, SettingsCheck]] = []

    def add(self, setting: Setting) -> None:
        self.settings.add(setting.name, setting, self.plugin)

    def add_check(self, check: SettingsCheck) -> None:
        """Add a check of the parsed settings together, for what no single setting's
        own validation can see (two settings that contradict each other, a URL of the
        wrong shape): ``check(settings)`` returns the problems, each naming the setting
        to fix. ``config check`` and start-up report them with every other problem."""
        self.checks.append((self.plugin, check))

    def all(self) -> Mapping[str, Setting]:
        return {o.name: o.item for o in self.settings.offers()}
