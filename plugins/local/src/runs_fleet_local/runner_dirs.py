"""A runner directory of its own for each local runner that registers itself.

A runner that registers with a registration token (``RUNS_FLEET_RUNNER_REGISTRATION=
token``) has ``config.sh`` write its registration (``.runner``, ``.credentials``) into
its runner directory, so two runners cannot share one; local mode runs every runner from
the one ``RUNS_FLEET_RUNNER_DIR``. So each such runner gets a directory inside its work
dir: copies of the shared one's top-level files (``run.sh``, ``config.sh`` and their
helpers resolve symlinks to find their root, so they must be real files there) and
symlinks to its directories (``bin``, ``externals``: large, and only read), without what
a registration or a run leaves behind there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

PER_RUNNER = frozenset(
    {".runner", ".credentials", ".credentials_rsaparams", ".service", "_work", "_diag"}
)
"""Entries of a runner directory that belong to one registered runner: never shared."""
DIR_NAME = "actions-runner"
"""The name of a runner's own runner directory inside its work dir."""


def private_runner_dir(shared: Path, work_dir: Path) -> Path:
    """Make ``<work_dir>/actions-runner`` anew (whatever an earlier run of this runner
    left there goes) as ``shared`` seen through symlinks, and return it. ``OSError``
    when ``shared`` cannot be listed or the directory cannot be made."""
    target = work_dir / DIR_NAME
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    entries = sorted(Path(shared).absolute().iterdir())
    target.mkdir(mode=0o700)
    for entry in entries:
        if entry.name in PER_RUNNER:
            continue
        if entry.is_file():
            shutil.copy2(entry, target / entry.name)
        else:
            (target / entry.name).symlink_to(entry)
    return target
