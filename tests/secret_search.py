"""Where secrets are in a text: the search the secret scanner runs on all output.

It finds the exact values registered with :meth:`Secrets.add` (as they are, JSON-escaped,
or line by line for a PEM key), searched through one trie-shaped regex so that thousands
of them cost about as much as one, and the shapes secrets have: PEM private keys, GitHub
tokens, registration tokens (GitHub's and the in-memory fake's), ``Authorization``
header values, passwords in URLs, and base64 that decodes to a JIT config or to text
holding any of these. :func:`find` turns the matches into hits whose excerpts show each
secret as its kind, never the secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

MIN_SECRET_CHARS = 8
_DEPTH = 2
"""How many layers of base64 are opened (a JIT config inside a Kubernetes Secret is two)."""

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("PEM private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")),
    (
        "GitHub token",
        re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"),
    ),
    (
        "registration token",
        re.compile(
            r"(?<![A-Za-z0-9_])(?:(?=[A-Z]*[0-9])(?=[0-9]*[A-Z])[A-Z0-9]{29}"
            r"|FAKE[A-Za-z0-9_-]{32})(?![A-Za-z0-9_-])"
        ),
    ),
    (
        "Authorization header",
        re.compile(
            r"(?i)authorization[\"']?\s*[:=]\s*b?[\"']?(?:bearer|token)\s+"
            r"(?P<secret>[A-Za-z0-9._~+/=-]{8,})"
        ),
    ),
    (
        "password in a URL",
        re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s:/@\"']*:(?P<secret>[^\s@/\"']{6,})@"),
    ),
)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}")
_JIT_KEYS = ({"runner_id", "secret"}, {".runner", ".credentials"})
"""Keys of a decoded JIT config: the simulated GitHub's and the in-memory fake's
(runner id and secret), and GitHub's own (``.runner``, ``.credentials``)."""


@attrs.frozen
class Hit:
    """One secret found: where (``source``: a test or a file; ``where`` in it), of what
    kind, and the line it is on with every secret replaced by its kind."""

    source: str
    where: str
    kind: str
    excerpt: str

    def describe(self) -> str:
        return f"{self.source}: {self.where}: {self.kind}: {self.excerpt}"


class Secrets:
    """The exact values fixtures registered, and the search for them and for patterns."""

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {}
        self._needles: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str | bytes, kind: str) -> None:
        """Look for ``value`` from now on: as is and JSON-escaped, or (a multi-line value
        such as a PEM key) line by line."""
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        text = text.strip()
        if len(text) < MIN_SECRET_CHARS:
            raise ValueError(
                f"a {kind} of {len(text)} characters would match ordinary output: "
                f"register secrets of at least {MIN_SECRET_CHARS} characters"
            )
        lines = [line.strip() for line in text.splitlines()]
        forms = {line for line in lines if len(line) >= 16} if len(lines) > 1 else set()
        forms |= {text, json.dumps(text)[1:-1]} if len(lines) == 1 else set()
        with self._lock:
            for form in forms - self._kinds.keys():
                self._kinds[form] = kind
                self._needles = None

    def _pattern(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._needles is None and self._kinds:
                self._needles = re.compile(_trie(self._kinds))
            return self._needles

    def spans(self, text: str, depth: int = 0) -> Iterator[tuple[int, int, str]]:
        """``(start, end, kind)`` of every secret in ``text``."""
        needles = self._pattern()
        if needles is not None:
            for match in needles.finditer(text):
                yield match.start(), match.end(), self._kinds[match.group()]
        for kind, pattern in _PATTERNS:
            for match in pattern.finditer(text):
                group = "secret" if "secret" in pattern.groupindex else 0
                yield match.start(group), match.end(group), kind
        if depth < _DEPTH:
            for match in _BASE64.finditer(text):
                kind = self._encoded_kind(match.group(), depth)
                if kind is not None:
                    yield match.start(), match.end(), kind

    def _encoded_kind(self, candidate: str, depth: int) -> str | None:
        """The kind of secret ``candidate`` encodes (``None``: not base64 of text, or
        nothing secret in it)."""
        decoded = _decode_base64(candidate)
        if decoded is None:
            return None
        try:
            document = json.loads(decoded)
        except ValueError:
            document = None
        if isinstance(document, dict) and any(keys <= document.keys() for keys in _JIT_KEYS):
            return "JIT config"
        inner = next(self.spans(decoded, depth + 1), None)
        return None if inner is None else f"{inner[2]} (base64-encoded)"


def _trie(words: Iterable[str]) -> str:
    """One regex matching any of ``words``, longest first, built as a trie so a search
    costs about the same for thousands of words as for one."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return _trie_node(root)


def _trie_node(node: dict[str, Any]) -> str:
    chain = []
    while len(node) == 1 and "" not in node:  # a run of single letters: a literal
        ((char, node),) = node.items()
        chain.append(re.escape(char))
    branches = [re.escape(char) + _trie_node(child) for char, child in node.items() if char]
    if not branches:
        return "".join(chain)
    group = f"(?:{'|'.join(branches)})"
    return "".join(chain) + (group + "?" if "" in node else group)


def _decode_base64(candidate: str) -> str | None:
    altchars = b"-_" if ("-" in candidate or "_" in candidate) else None
    padded = candidate.rstrip("=") + "=" * (-len(candidate.rstrip("=")) % 4)
    try:
        raw = base64.b64decode(padded, altchars=altchars, validate=True)
        text = raw.decode()
    except (binascii.Error, ValueError):
        return None
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return text if printable >= 0.95 * len(text) else None


def find(
    secrets: Secrets, text: str, source: str, where: str = "", first_line: int = 1
) -> list[Hit]:
    """The secrets in ``text``, one hit per line and kind (``where`` gets the line
    number; ``text`` starts at ``first_line``), with excerpts in which every secret
    found is replaced by ``<kind>``."""
    spans = sorted(set(secrets.spans(text)))
    redacted, cursor = [], 0
    for start, end, kind in spans:
        if end <= cursor:
            continue
        start = max(start, cursor)  # overlapping secrets: marked where the last ended
        redacted += [text[cursor:start], f"<{kind}>", "\n" * text.count("\n", start, end)]
        cursor = end
    lines = "".join([*redacted, text[cursor:]]).split("\n")
    hits: dict[tuple[int, str], Hit] = {}
    for start, _end, kind in spans:
        line = text.count("\n", 0, start)
        place = f"{where}, " if where else ""
        hit = Hit(source, f"{place}line {line + first_line}", kind, _shorten(lines[line], kind))
        hits.setdefault((line, kind), hit)
    return list(hits.values())


def _shorten(line: str, kind: str, width: int = 160) -> str:
    at = max(line.find(f"<{kind}"), 0)
    start = max(at - width // 2, 0)
    return ("…" if start else "") + line[start : start + width].strip()
