"""Which adapters a deployment uses, and building them: shared by every entry point.

Each entry point's composition function calls :func:`check_wiring` and
:func:`build_adapters` with the settings and the plugin registry; this is the only place
where a mode turns into adapter names.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

import attrs

from runs_fleet_core.catalog import CORE_SETTINGS, MODE_WIRING, ModeWiring
from runs_fleet_core.domain.labels import DEFAULT_BACKENDS, LabelDefaults, validate_presets
from runs_fleet_core.errors import ConfigError, PluginError
from runs_fleet_core.plugins.manager import PluginManager, extra_hint
from runs_fleet_core.plugins.registry import AdapterContext, AdapterRegistry, NamedOffers
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
from runs_fleet_core.settings import Setting, Settings, inspect_settings

BUILT_IN_HINT = (
    "it ships with runs-fleet itself: check that RUNS_FLEET_DISABLE_PLUGINS does not name "
    "the plugin that offers it"
)


def setting_definitions(plugins: PluginManager) -> dict[str, Setting]:
    """The core's settings followed by every available plugin's. A plugin may not
    redeclare a core setting."""
    definitions = {setting.name: setting for setting in CORE_SETTINGS}
    for offer in plugins.settings().settings.offers():
        if offer.name in definitions:
            raise PluginError(
                f"plugin {offer.plugin!r} declares {offer.name}, which is a setting of "
                "runs-fleet itself; the plugin must use a name of its own"
            )
        definitions[offer.name] = offer.item
    return definitions


def inspect_deployment(
    env: Mapping[str, str], plugins: PluginManager, *, require: bool = True
) -> tuple[Settings, list[str]]:
    """The deployment's settings and every problem with them at once: invalid or missing
    settings, adapters no installed plugin offers, broken label presets."""
    settings, problems = inspect_settings(env, setting_definitions(plugins), require=require)
    if settings.mode in MODE_WIRING:
        problems += check_wiring(settings, plugins.adapters())
    for _plugin, check in plugins.settings().checks:
        problems += [problem for problem in check(settings) if problem not in problems]
    problems += validate_presets(
        settings.get("RUNS_FLEET_PRESETS", {}), defaults=label_defaults(settings)
    )
    return settings, problems


def deployment_settings(
    env: Mapping[str, str], plugins: PluginManager, *, require: bool = True
) -> Settings:
    """Like :func:`inspect_deployment`, raising ``ConfigError`` if there is any problem."""
    settings, problems = inspect_deployment(env, plugins, require=require)
    if problems:
        raise ConfigError(problems)
    return settings


async def start_services(
    env: Mapping[str, str], plugins: PluginManager, stack: AsyncExitStack
) -> dict[str, str]:
    """Start every background service the deployment needs, each registered on
    ``stack`` (which stops them), and return ``env`` with their setting overrides (for
    example the URL of an embedded server). Raises ``ConfigError`` when the settings
    the services read are invalid."""
    settings, problems = inspect_settings(env, setting_definitions(plugins), require=False)
    if problems:
        raise ConfigError(problems)
    merged = dict(env)
    for offer in plugins.services().services.offers():
        manager = offer.item(settings)
        if manager is not None:
            merged.update(await stack.enter_async_context(manager))
    return merged


def label_defaults(settings: Settings) -> LabelDefaults:
    """Label parsing defaults from configuration: disk size, operator presets, and the
    backend names a label may use (the built-in ones plus any the deployment enables)."""
    return LabelDefaults(
        disk_gib=settings.get("RUNS_FLEET_DEFAULT_DISK_GIB"),
        presets=settings.get("RUNS_FLEET_PRESETS", {}),
        backends=DEFAULT_BACKENDS | frozenset(settings.get("RUNS_FLEET_BACKENDS", [])),
    )


@attrs.frozen(kw_only=True)
class Wiring:
    """Adapter names chosen for one deployment."""

    backends: tuple[str, ...]
    default_backend: str
    queue: str
    state_store: str
    config_store: str
    metrics: str
    github: str
    extra: str


def choose_wiring(settings: Settings) -> Wiring:
    """The adapter names for ``settings``: the mode's defaults, then overrides."""
    mode: ModeWiring = MODE_WIRING[settings.mode]
    backends = tuple(settings.get("RUNS_FLEET_BACKENDS") or [mode.provider])
    return Wiring(
        backends=backends,
        default_backend=settings.get("RUNS_FLEET_DEFAULT_BACKEND") or backends[0],
        queue=settings.get("RUNS_FLEET_QUEUE_ADAPTER") or mode.queue,
        state_store=settings.get("RUNS_FLEET_STATE_ADAPTER")
        or (settings.get("RUNS_FLEET_STATE_BACKEND") if settings.mode == "k8s" else None)
        or mode.state_store,
        config_store=settings.get("RUNS_FLEET_CONFIG_ADAPTER") or mode.config_store,
        metrics=settings.get("RUNS_FLEET_METRICS_ADAPTER") or mode.metrics,
        github=settings.get("RUNS_FLEET_GITHUB_ADAPTER") or mode.github,
        extra=mode.extra,
    )


def check_wiring(settings: Settings, registry: AdapterRegistry) -> list[str]:
    """Every adapter the settings need that no installed plugin offers, as messages."""
    wiring = choose_wiring(settings)
    problems = []
    if wiring.default_backend not in wiring.backends:
        problems.append(
            f"RUNS_FLEET_DEFAULT_BACKEND={wiring.default_backend} is not one "
            f"of RUNS_FLEET_BACKENDS ({', '.join(wiring.backends)})"
        )
    wanted: list[tuple[NamedOffers[Any], str]] = [
        (registry.providers, b) for b in wiring.backends
    ] + [
        (registry.queues, wiring.queue),
        (registry.state_stores, wiring.state_store),
        (registry.config_stores, wiring.config_store),
        (registry.metrics, wiring.metrics),
        (registry.github_clients, wiring.github),
    ]
    hint = extra_hint(wiring.extra) if wiring.extra else BUILT_IN_HINT
    for table, name in wanted:
        if name not in table.names():
            problems.append(
                f"mode {settings.mode} needs the {table.kind} {name!r}, which no "
                f"installed plugin offers: {hint}"
            )
    return problems


@attrs.frozen(kw_only=True)
class Adapters:
    """One instance of every port a process needs."""

    providers: Mapping[str, Provider]
    pool_providers: Mapping[str, PoolProvider]
    queue: Queue
    state: StateStore
    configs: ConfigStore
    github: GitHub
    metrics: Metrics
    clock: Clock
    wiring: Wiring
    runner_events: Mapping[str, RunnerEvents] = attrs.field(factory=dict)
    """The runner event feed of each backend that has one."""
    runner_identities: Mapping[str, RunnerIdentity] = attrs.field(factory=dict)
    """The credential check of each backend whose runners fetch their config."""


def build_adapters(settings: Settings, registry: AdapterRegistry, clock: Clock) -> Adapters:
    """Build each adapter once. Raises ``ConfigError`` naming every missing one."""
    if problems := check_wiring(settings, registry):
        raise ConfigError(problems)
    wiring = choose_wiring(settings)
    try:
        metrics = registry.metrics.get(wiring.metrics)(
            AdapterContext(settings=settings, clock=clock, metrics=NullMetrics())
        )
        context = AdapterContext(settings=settings, clock=clock, metrics=metrics)
        pool_backends = [b for b in wiring.backends if b in registry.pool_providers.names()]
        event_backends = [b for b in wiring.backends if b in registry.runner_events.names()]
        identity_backends = [b for b in wiring.backends if b in registry.runner_identities.names()]
        return Adapters(
            providers={b: registry.providers.get(b)(context) for b in wiring.backends},
            pool_providers={b: registry.pool_providers.get(b)(context) for b in pool_backends},
            queue=registry.queues.get(wiring.queue)(context),
            state=registry.state_stores.get(wiring.state_store)(context),
            configs=registry.config_stores.get(wiring.config_store)(context),
            github=registry.github_clients.get(wiring.github)(context),
            metrics=metrics,
            clock=clock,
            wiring=wiring,
            runner_events={b: registry.runner_events.get(b)(context) for b in event_backends},
            runner_identities={
                b: registry.runner_identities.get(b)(context) for b in identity_backends
            },
        )
    except PluginError as exc:
        raise ConfigError([str(exc)]) from exc


class NullMetrics:
    """Metrics that go nowhere: what a metrics sink's own factory sees (nothing to
    report to yet), and what one-off commands build adapters with."""

    def increment(
        self, name: str, value: float = 1.0, labels: Mapping[str, str] | None = None
    ) -> None:
        return None

    def gauge(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        return None

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        return None
