"""The user documentation keeps up with the code: settings, commands and links."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from runs_fleet_cli import app
from runs_fleet_core.plugins import PluginManager
from runs_fleet_core.wiring import setting_definitions

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _without_code(text: str) -> str:
    """``text`` without fenced code blocks and code spans (their brackets are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", text) is not None


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text())):
        slug, n = _slug(heading), 1
        unique = slug
        while unique in found:
            unique, n = f"{slug}-{n}", n + 1
        found.add(unique)
    return found


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Every sub-command path of ``parser``: ``serve``, ``labels explain``, ..."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                path = f"{prefix}{name}"
                paths.append(path)
                paths += _commands(child, f"{path} ")
    return paths


def test_every_setting_is_documented_in_configuration_md() -> None:
    text = (DOCS / "configuration.md").read_text()
    definitions = setting_definitions(PluginManager())
    assert "RUNS_FLEET_MODE" in definitions
    missing = [name for name in sorted(definitions) if not _mentions(text, name)]
    assert missing == [], f"settings missing from docs/configuration.md: {missing}"


def test_every_built_in_command_is_documented() -> None:
    text = (ROOT / "README.md").read_text() + (DOCS / "operations.md").read_text()
    commands = _commands(app._parser())
    assert {c.split()[0] for c in commands} == app.BUILT_IN
    missing = [c for c in commands if f"runs-fleet {c}" not in text]
    assert missing == [], f"commands missing from README.md and docs/operations.md: {missing}"


def test_relative_links_point_to_existing_files_and_headings() -> None:
    broken = []
    for page in PAGES:
        for target in _LINK.findall(_without_code(page.read_text())):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # https:, mailto: ...
            path_part, _, anchor = target.partition("#")
            linked = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(ROOT)}: {target}"
            if not linked.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{where} (no such heading)")
    assert broken == [], "broken links:\n" + "\n".join(broken)
