"""Directories only their owner may enter: where local mode keeps its secrets.

``Path.mkdir(parents=True)`` gives the parents it creates the umask's mode (0755 as a
rule), so a state dir made on the way to one of its subdirectories would show its
contents to every user of the host. Local mode makes its directories here instead.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` and each missing parent with mode 0700 (one that exists
    already is left as it is)."""
    missing = []
    for path in (directory, *directory.parents):
        if path.exists():
            break
        missing.append(path)
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # another process made it meanwhile
        os.chmod(path, DIR_MODE)  # mkdir's mode passes through the umask
