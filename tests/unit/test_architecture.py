"""The hexagon's import rules, checked on the source (import-linter checks them too)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parents[2]
CORE_ALLOWED = {"attrs", "cattrs", "pluggy", "runs_fleet_core"}
CONTRACT_KIT_ALLOWED = CORE_ALLOWED | {"pytest", "hypothesis"}


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def _third_party(path: Path, allowed: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for line, name in _imports(path)
        if name not in allowed and name not in sys.stdlib_module_names
    ]


def test_the_core_imports_only_the_standard_library_attrs_cattrs_and_pluggy() -> None:
    found = []
    for path in sorted((ROOT / "runs_fleet_core").rglob("*.py")):
        contracts = "testing/contracts" in path.as_posix()
        found += _third_party(path, CONTRACT_KIT_ALLOWED if contracts else CORE_ALLOWED)
    assert found == []


def _plugin_packages() -> dict[str, Path]:
    return {
        package.name: package
        for package in ROOT.glob("plugins/*/src/*")
        if (package / "__init__.py").exists()
    }


SHARED_LIBRARIES = {"runs_fleet_aws"}
"""Plugin packages that exist to be imported by other plugins (the AWS plugins' base)."""
DECLARED_DEPENDENCIES = {"runs_fleet_ec2": {"runs_fleet_sqs", "runs_fleet_prometheus"}}
"""Plugins that build on others they depend on (EC2 mode queues on SQS and serves
Prometheus metrics besides CloudWatch)."""


def test_plugins_never_import_each_other_or_an_entry_point() -> None:
    """Each plugin stands alone, except that AWS plugins build on ``runs_fleet_aws``."""
    plugins = _plugin_packages()
    assert "runs_fleet_local" in plugins
    found = []
    for name, package in plugins.items():
        allowed = SHARED_LIBRARIES | DECLARED_DEPENDENCIES.get(name, set())
        forbidden = (set(plugins) - {name} - allowed) | {"runs_fleet_cli"}
        for path in package.rglob("*.py"):
            found += [
                f"{path.relative_to(ROOT)}:{line} imports {module}"
                for line, module in _imports(path)
                if module in forbidden
            ]
    assert found == []


def test_entry_points_never_import_a_plugin_module_by_name() -> None:
    plugins = set(_plugin_packages())
    found = []
    for path in (ROOT / "entrypoints").rglob("*.py"):
        found += [
            f"{path.relative_to(ROOT)}:{line} imports {module}"
            for line, module in _imports(path)
            if module in plugins
        ]
        text = path.read_text()
        found += [
            f"{path.relative_to(ROOT)} mentions the test fakes"
            for _ in [0]
            if "runs_fleet_core.testing" in text
        ]
    assert found == []
