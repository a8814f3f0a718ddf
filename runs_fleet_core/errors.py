"""Every error runs-fleet raises on purpose, under one base class.

Each error carries a message written for the person who has to act on it: what is
wrong and how to fix it. Entry points print ``str(error)`` and map the class to an
exit code or an HTTP status; they never show a traceback for these.
"""

from __future__ import annotations


class RunsFleetError(Exception):
    """Base of every error runs-fleet raises deliberately."""


class LabelError(RunsFleetError):
    """A ``runs-on`` label that runs-fleet cannot honour.

    ``segment`` is the offending ``key=value`` segment (or the whole label when the
    problem is not tied to one segment); the message says what is allowed.
    """

    def __init__(self, message: str, *, segment: str = "") -> None:
        super().__init__(message)
        self.segment = segment


class ConfigError(RunsFleetError):
    """Invalid or missing configuration; ``problems`` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s):\n{lines}")


class IllegalTransition(RunsFleetError):
    """A job was asked to move between two states the state machine does not link."""


class ConflictError(RunsFleetError):
    """A conditional write lost: the record changed (or exists) since it was read."""


class NotFoundError(RunsFleetError):
    """The record, runner or config asked for does not exist."""


class PluginError(RunsFleetError):
    """A plugin is missing, unavailable, or offers something it should not."""


class AdapterError(RunsFleetError):
    """An adapter's call to its backend failed.

    ``retryable`` tells the caller whether the same call may succeed later (throttling,
    timeouts, capacity) or never will (bad request, permissions, no matching capacity).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ProviderError(AdapterError):
    """A compute provider could not create, describe or remove a runner."""


class GitHubError(AdapterError):
    """A call to the GitHub API failed."""
