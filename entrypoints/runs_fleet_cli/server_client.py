"""How the CLI reaches the runs-fleet server's API: where it is, the token, the errors.

The server owns the StateStore, so the commands that read or change what it keeps
(``runs-fleet pools``, ``runs-fleet jobs``) call its HTTP API instead of building one.
The server is ``--server``, else ``RUNS_FLEET_PUBLIC_URL``, else ``http://`` and
``RUNS_FLEET_LISTEN``; all three settings, and the admin token
``RUNS_FLEET_ADMIN_TOKEN``, may also come from ``RUNS_FLEET_CONFIG_FILE``, as they do
for the server.

The HTTP client is the standard library's, imported when a request is made, so that
loading this module costs the CLI next to nothing. API errors become ``error:`` lines and exit
code 2; with ``--json`` the server's JSON answer is printed as it came.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from runs_fleet_cli.output import emit_json
from runs_fleet_core import __version__
from runs_fleet_core.errors import ConfigError, RunsFleetError

EXIT_USAGE = 2
TIMEOUT_S = 15.0
DEFAULT_LISTEN = "127.0.0.1:8080"
PUBLIC_URL = "RUNS_FLEET_PUBLIC_URL"
LISTEN = "RUNS_FLEET_LISTEN"
ADMIN_TOKEN = "RUNS_FLEET_ADMIN_TOKEN"  # noqa: S105 (a setting name)
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def server_options() -> argparse.ArgumentParser:
    """The options of every command that talks to the server (``--server``, ``--json``),
    as a parent parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        metavar="URL",
        help="the runs-fleet server (default: RUNS_FLEET_PUBLIC_URL, else "
        f"http://RUNS_FLEET_LISTEN, else http://{DEFAULT_LISTEN})",
    )
    common.add_argument("--json", action="store_true", help="print the server's JSON answer")
    return common


class ServerClient:
    """The server's pools API over HTTP: where it is, how we got there, the token."""

    def __init__(self, url: str, source: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.source = source
        self.token = token

    @classmethod
    def from_env(cls, server: str | None, env: Mapping[str, str]) -> ServerClient:
        """The server from ``--server`` or the settings in ``env`` (environment, then
        ``RUNS_FLEET_CONFIG_FILE``), with the admin token if one is set. Raises
        ``ConfigError`` naming every problem with those settings."""
        from runs_fleet_core.catalog import CORE_SETTINGS
        from runs_fleet_core.settings import CONFIG_FILE_VAR, inspect_settings

        names = (PUBLIC_URL, LISTEN, ADMIN_TOKEN)
        definitions = {s.name: s for s in CORE_SETTINGS if s.name in names}
        settings, found = inspect_settings(env, definitions, require=False)
        # Keys of other settings in the shared config file are not this command's business.
        problems = [p for p in found if p.startswith((*names, CONFIG_FILE_VAR))]
        if server:
            url, source = server, "--server"
        elif settings.get(PUBLIC_URL):
            url, source = settings[PUBLIC_URL], PUBLIC_URL
        else:
            listen = settings.get(LISTEN) or DEFAULT_LISTEN
            defaulted = settings.sources.get(LISTEN, "default") == "default"
            url = _listen_url(listen, problems)
            source = f"the default of {LISTEN}" if defaulted else LISTEN
        if not url.startswith(("http://", "https://")):
            problems.append(f"{source}: {url!r} is not an http:// or https:// URL")
        if problems:
            raise ConfigError(problems)
        return cls(url, source, settings.get(ADMIN_TOKEN) or None)

    def call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """``(status, JSON object)`` of one request. Raises :class:`RunsFleetError` when
        the server cannot be reached or does not answer like a runs-fleet server."""
        import urllib.error
        import urllib.request

        headers = {"Accept": "application/json", "User-Agent": f"runs-fleet/{__version__}"}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # The scheme is http or https: from_env refuses any other.
        request = urllib.request.Request(self.url + path, data, headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
                return response.status, self._answer(response.status, response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, self._answer(exc.code, exc.read())
        except urllib.error.URLError as exc:
            raise self._unreachable(str(exc.reason)) from None
        except TimeoutError:
            raise self._unreachable(f"no answer within {TIMEOUT_S:g} s") from None
        except OSError as exc:  # e.g. the connection reset while reading the answer
            raise self._unreachable(str(exc)) from None

    def _answer(self, status: int, raw: bytes) -> dict[str, Any]:
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise RunsFleetError(
                f"{self.url} answered HTTP {status} without a runs-fleet JSON answer: is it "
                "a runs-fleet server? Point this command at one with "
                f"--server URL or {PUBLIC_URL}"
            )
        return answer

    def _unreachable(self, reason: str) -> RunsFleetError:
        return RunsFleetError(
            f"cannot reach the runs-fleet server at {self.url} (from {self.source}): "
            f"{reason}. Is 'runs-fleet serve' running there? Point this command at the "
            f"server with --server URL, or set {PUBLIC_URL} (or {LISTEN})"
        )


def report_failure(
    args: argparse.Namespace, api: ServerClient, status: int, answer: dict[str, Any]
) -> int:
    """Print an API error (its problems one per line) and return the exit code."""
    if args.json:
        emit_json(answer)
        return EXIT_USAGE
    message = str(answer.get("error") or f"the server answered HTTP {status}")
    if status == 401:
        message += (
            f"; the admin token in {ADMIN_TOKEN} was refused: it must be the server's"
            if api.token
            else f"; set {ADMIN_TOKEN} (or {ADMIN_TOKEN}_FILE) to the server's admin token"
        )
    sys.stderr.write(f"error: {message}\n")
    for problem in answer.get("problems") or ():
        sys.stderr.write(f"  - {problem}\n")
    return EXIT_USAGE


def _listen_url(listen: str, problems: list[str]) -> str:
    """``http://HOST:PORT`` for the address the server listens on; a wildcard address
    means this host (as the server itself reads it)."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit():
        problems.append(
            f"{LISTEN}: {listen!r} is not HOST:PORT; give the server's URL with --server"
        )
        return "http://invalid"
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    host = _WILDCARDS.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"
