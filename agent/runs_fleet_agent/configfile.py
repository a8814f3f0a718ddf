"""Reading the one-job runner config that the orchestrator left for this agent.

The config carries GitHub's JIT runner config, a secret that registers a runner for
exactly one job. The agent reads it once and deletes the file at once, so the secret
does not linger on disk and a restarted agent cannot register for the same job twice.
Warm-pool agents start before any job exists: they wait for the file to appear.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from runs_fleet_core.converters import loads, make_config_converter
from runs_fleet_core.domain.runner import RunnerConfig

_log = logging.getLogger("runs_fleet_agent")


class ConfigFileError(Exception):
    """The config could not be read; the message never contains the config's content."""


def wait_for_file(
    path: Path,
    timeout_s: float,
    *,
    should_stop: Callable[[], bool],
    poll_s: float = 0.2,
) -> bool:
    """Wait until ``path`` exists: ``True`` when it does, ``False`` when ``timeout_s``
    passed or ``should_stop()`` became true first. The store renames complete files
    into place, so an existing file is a whole config."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if should_stop() or time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def read_and_delete(path: Path) -> RunnerConfig:
    """The config in ``path``, which is deleted right after reading (even when it turns
    out to be malformed: it may hold a secret either way). A file that cannot be
    deleted is logged and the job goes ahead: GitHub accepts a JIT config only once."""
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise ConfigFileError(f"there is no runner config at {path}") from None
    except OSError as exc:
        raise ConfigFileError(f"cannot read the runner config at {path}: {exc.strerror}") from None
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        _log.warning("cannot delete the runner config at %s: %s", path, exc.strerror)
    try:
        return loads(make_config_converter(), payload, RunnerConfig)
    except ValueError as exc:
        raise ConfigFileError(f"the runner config at {path} is malformed: {exc}") from None
