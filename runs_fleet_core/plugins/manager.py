"""Finds, loads and asks the plugins, so that nothing else has to touch pluggy.

Built-in plugins (local, ec2, k8s, ...) are separate distributions found through the
same ``runs_fleet`` entry-point group as third-party ones. A plugin that cannot load
(a missing dependency, an import error, a misspelt hook) is reported as unavailable with
the reason and the command that fixes it; it never crashes the process.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

import attrs
import pluggy

from runs_fleet_core.errors import PluginError
from runs_fleet_core.plugins import hookspecs
from runs_fleet_core.plugins.registry import (
    AdapterRegistry,
    CommandRegistry,
    ServiceRegistry,
    SettingsRegistry,
)

ENTRY_POINT_GROUP = "runs_fleet"
DISABLE_VAR = "RUNS_FLEET_DISABLE_PLUGINS"
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@attrs.frozen(kw_only=True)
class PluginStatus:
    """One discovered plugin: where it comes from and whether it works."""

    name: str
    distribution: str
    version: str
    available: bool
    reason: str = ""
    provides: tuple[str, ...] = ()


ROOT_DISTRIBUTION = "runs-fleet"


def _installed(name: str) -> bool:
    try:
        md.distribution(name)
    except md.PackageNotFoundError:
        return False
    return True


def extra_hint(extra: str) -> str:
    """What to do when the plugins of ``runs-fleet[extra]`` are needed: the pip command
    while some are missing, else a pointer to ``runs-fleet plugins``."""
    try:
        meta = md.metadata(ROOT_DISTRIBUTION)
    except md.PackageNotFoundError:
        meta = None
    if meta is None or extra not in (meta.get_all("Provides-Extra") or []):
        return (
            "install a plugin that offers it; 'runs-fleet plugins' lists what the "
            "installed plugins provide"
        )
    marker = re.compile(rf"extra\s*==\s*['\"]{re.escape(extra)}['\"]")
    wanted = [r for r in (meta.get_all("Requires-Dist") or []) if marker.search(r)]
    names = [m.group(1) for r in wanted if (m := _REQ_NAME.match(r))]
    if any(not _installed(name) for name in names):
        return f"pip install '{ROOT_DISTRIBUTION}[{extra}]'"
    return (
        f"the plugins of {ROOT_DISTRIBUTION}[{extra}] are installed but none offers it; "
        "'runs-fleet plugins' shows which are unavailable or disabled and why"
    )


def install_hint(distribution: str) -> str:
    """The command that installs ``distribution`` with its dependencies."""
    extra = distribution.removeprefix(f"{ROOT_DISTRIBUTION}-")
    if extra != distribution and extra_hint(extra).startswith("pip install"):
        return extra_hint(extra)
    return f"pip install --force-reinstall '{distribution}'"


def _missing_requirements(dist: md.Distribution | None) -> list[str]:
    """Declared (non-optional) requirements of ``dist`` that are not installed."""
    missing = []
    for requirement in (dist.requires or []) if dist else []:
        if ";" in requirement and "extra" in requirement.split(";", 1)[1]:
            continue
        match = _REQ_NAME.match(requirement)
        if match and not _installed(match.group(1)):
            missing.append(match.group(1))
    return missing


class PluginManager:
    """Loads the ``runs_fleet`` entry points once and serves the registries they fill.

    ``entry_points`` replaces discovery (tests); ``disabled`` names plugins to skip
    (default: from ``RUNS_FLEET_DISABLE_PLUGINS``).
    """

    def __init__(
        self,
        *,
        disabled: Iterable[str] = (),
        entry_points: Sequence[md.EntryPoint] | None = None,
    ) -> None:
        self._disabled = set(disabled)
        self._entry_points = entry_points
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._statuses: dict[str, PluginStatus] = {}
        self._loaded = False
        self._adapters: AdapterRegistry | None = None
        self._settings: SettingsRegistry | None = None
        self._commands: CommandRegistry | None = None
        self._services: ServiceRegistry | None = None

    def load(self) -> None:
        """Discover and import every plugin (idempotent)."""
        if self._loaded:
            return
        self._loaded = True
        found = self._entry_points
        if found is None:
            found = list(md.entry_points(group=ENTRY_POINT_GROUP))
        for entry_point in sorted(found, key=lambda ep: ep.name):
            self._load_one(entry_point)

    def register(self, name: str, module: ModuleType | object) -> None:
        """Register an already imported plugin object (tests, embedding)."""
        self._loaded = True
        self._pm.register(module, name=name)
        self._pm.check_pending()
        self._statuses[name] = PluginStatus(
            name=name, distribution="(registered in process)", version="", available=True
        )

    def _load_one(self, entry_point: md.EntryPoint) -> None:
        dist = entry_point.dist
        status = PluginStatus(
            name=entry_point.name,
            distribution=dist.name if dist else "?",
            version=dist.version if dist else "?",
            available=False,
        )
        if entry_point.name in self._disabled:
            self._statuses[entry_point.name] = attrs.evolve(
                status, reason=f"disabled by {DISABLE_VAR}"
            )
            return
        reason = self._import_and_register(entry_point, status.distribution, dist)
        self._statuses[entry_point.name] = attrs.evolve(status, available=not reason, reason=reason)

    def _import_and_register(
        self, entry_point: md.EntryPoint, distribution: str, dist: md.Distribution | None
    ) -> str:
        """Import and register one plugin; the reason it is unavailable, or ""."""
        hint = install_hint(distribution)
        if missing := _missing_requirements(dist):
            return f"missing dependencies {', '.join(missing)}: {hint}"
        try:
            module = entry_point.load()
        except ImportError as exc:
            return f"cannot import {exc.name or entry_point.value}: {hint}"
        except Exception as exc:  # a broken third-party module must not crash us
            return f"failed to import {entry_point.value}: {type(exc).__name__}: {exc}"
        if self._pm.is_registered(module):
            return f"{entry_point.value} is already registered under another name"
        self._pm.register(module, name=entry_point.name)
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self._pm.unregister(module)
            return f"implements a hook runs-fleet does not have: {exc}"
        return ""

    def _call_each(self, hook_name: str, registry: Any) -> None:
        hook: pluggy.HookCaller = getattr(self._pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            registry.plugin = impl.plugin_name
            call: Callable[..., object] = impl.function
            try:
                call(registry=registry)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                    f"{type(exc).__name__}: {exc}; disable it with {DISABLE_VAR}"
                ) from exc

    def adapters(self) -> AdapterRegistry:
        """Every adapter factory the available plugins offer."""
        if self._adapters is None:
            self.load()
            registry = AdapterRegistry()
            self._call_each("runs_fleet_register_adapters", registry)
            self._adapters = registry
        return self._adapters

    def settings(self) -> SettingsRegistry:
        """Every setting declared by the available plugins."""
        if self._settings is None:
            self.load()
            registry = SettingsRegistry()
            self._call_each("runs_fleet_register_settings", registry)
            self._settings = registry
        return self._settings

    def services(self) -> ServiceRegistry:
        """Every background service the available plugins offer."""
        if self._services is None:
            self.load()
            registry = ServiceRegistry()
            self._call_each("runs_fleet_register_services", registry)
            self._services = registry
        return self._services

    def commands(self) -> CommandRegistry:
        if self._commands is None:
            self.load()
            registry = CommandRegistry()
            self._call_each("runs_fleet_register_commands", registry)
            self._commands = registry
        return self._commands

    def statuses(self) -> list[PluginStatus]:
        """Every discovered plugin, available or not, with what it provides."""
        self.load()
        adapters = self.adapters()
        commands = self.commands()
        result = []
        for name in sorted(self._statuses):
            status = self._statuses[name]
            provides = (
                adapters.provided_by(name)
                + [
                    f"service:{o.name}"
                    for o in self.services().services.offers()
                    if o.plugin == name
                ]
                + [f"command:{o.name}" for o in commands.commands.offers() if o.plugin == name]
            )
            result.append(attrs.evolve(status, provides=tuple(provides)))
        return result
