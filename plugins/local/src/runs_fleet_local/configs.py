"""Runner configs as private files: the ConfigStore of local mode.

A local runner process reads its one job's config (with a secret JIT config) from a
file, so the store keeps one JSON file per runner id in a directory only the owner can
enter (0700), each file readable only by the owner (0600). Files are written to a temp
file and renamed into place, so a reader never sees half a config, and fsynced before
``put`` returns, so a crash right after cannot lose one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from runs_fleet_core.converters import dumps, loads, make_config_converter
from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_local.private import make_private_dir

_RUNNER_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
_SUFFIX = ".json"
FILE_MODE = 0o600


class FileConfigStore:
    """The :class:`~runs_fleet_core.ports.ConfigStore` port over ``directory``.

    The directory is created (mode 0700) on the first ``put``. Runner ids must match
    ``[A-Za-z0-9._-]+`` and not start with a dot; anything else (``..``, ``a/b``) raises
    ``ValueError`` before touching the disk. Blocking file I/O runs in a worker thread.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)
        self._converter = make_config_converter()

    @property
    def directory(self) -> Path:
        """Where the config files live."""
        return self._directory

    def path_for(self, runner_id: RunnerId) -> Path:
        """The file that holds (or would hold) the config of ``runner_id``: what a
        local runner process is pointed at. ``ValueError`` for an unsafe id."""
        if not _RUNNER_ID_RE.fullmatch(runner_id):
            raise ValueError(
                f"runner id {runner_id!r} cannot name a config file: use 1-200 of "
                "A-Z a-z 0-9 . _ - and do not start with a dot"
            )
        return self._directory / f"{runner_id}{_SUFFIX}"

    async def put(self, runner_id: RunnerId, config: RunnerConfig) -> None:
        """Write the config atomically (temp file, fsync, rename) with mode 0600."""
        path = self.path_for(runner_id)
        payload = dumps(self._converter, config).encode()
        await asyncio.to_thread(self._write, path, payload)

    async def get(self, runner_id: RunnerId) -> RunnerConfig | None:
        """The config of ``runner_id``, or ``None`` when there is no file."""
        path = self.path_for(runner_id)
        payload = await asyncio.to_thread(_read_or_none, path)
        return None if payload is None else loads(self._converter, payload, RunnerConfig)

    async def delete(self, runner_id: RunnerId) -> None:
        """Remove the config file; a missing one is not an error."""
        path = self.path_for(runner_id)
        await asyncio.to_thread(self._unlink, path)

    async def list_ids(self) -> Sequence[RunnerId]:
        """Ids of every stored config, sorted (temp files and strangers are skipped)."""
        return await asyncio.to_thread(self._scan)

    def __repr__(self) -> str:
        return f"FileConfigStore({str(self._directory)!r})"

    def _write(self, path: Path, payload: bytes) -> None:
        make_private_dir(self._directory)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), FILE_MODE)
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        self._sync_directory()

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        self._sync_directory()

    def _scan(self) -> list[RunnerId]:
        try:
            names = os.listdir(self._directory)
        except FileNotFoundError:
            return []
        ids = [name.removesuffix(_SUFFIX) for name in names if name.endswith(_SUFFIX)]
        return sorted(RunnerId(i) for i in ids if _RUNNER_ID_RE.fullmatch(i))

    def _sync_directory(self) -> None:
        fd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
