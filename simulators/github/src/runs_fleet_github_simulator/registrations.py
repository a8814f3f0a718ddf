"""Runners that register themselves with a registration token, as ``config.sh`` does.

GitHub's ``config.sh --url URL`` trades a registration token for a runner registration.
The simulated ``config.sh`` does the same through ``POST
/_simulator/runner-registrations``. The rules kept: the token must be one the
registration-token endpoint issued for that repository (or organization), through an
installation still on its owner, and not expired (401 otherwise); the runner is
ephemeral and offline until it asks for a job, like a JIT runner; an idle runner of the
same name is replaced, a busy one is not (409).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from runs_fleet_github_simulator.records import Runner, TokenRegistration
from runs_fleet_github_simulator.simulator import ApiError, GitHubSimulator

BAD_TOKEN = "Bad credentials: not a live registration token for this URL"  # noqa: S105


def scope_of(url: str) -> str:
    """``owner/name`` or ``owner`` from a repository's or organization's web URL;
    ``ValueError`` for any other URL."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme not in ("http", "https") or not 1 <= len(segments) <= 2:
        raise ValueError(f"{url!r} is not the URL of a repository or an organization")
    return "/".join(segments)


def register_with_token(
    sim: GitHubSimulator, *, token: str, url: str, name: str, labels: Sequence[str]
) -> Runner:
    """Register ephemeral runner ``name`` with ``labels`` at ``url`` (a repository's or
    organization's URL) with registration token ``token``, and record it in
    ``sim.token_registrations``. ``ApiError`` 401 for a token not good for ``url``,
    404 for an unknown repository or organization, 409 if the name is busy."""
    try:
        scope = scope_of(url)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    owner = scope.partition("/")[0]
    issued = sim.registration_tokens.get(token)
    installation = sim.installations.get(issued.installation_id) if issued else None
    if (
        issued is None
        or installation is None
        or issued.expires_at <= sim.clock()
        or issued.scope.lower() != scope.lower()
        or installation.account.login.lower() != owner.lower()
    ):
        raise ApiError(401, BAD_TOKEN)
    if "/" in scope:
        repo = sim.repository(scope)
        if repo is None:
            raise ApiError(404, "Not Found")
        _replace_idle(sim, sim.runners_of(repo.full_name), name)
        runner = sim.register_jit_runner(repo.full_name, name=name, labels=labels)
    else:
        _replace_idle(sim, sim.org_runners(owner), name)
        try:
            runner = sim.register_org_jit_runner(owner, name=name, labels=labels)
        except LookupError:
            raise ApiError(404, "Not Found") from None
    sim.token_registrations.append(
        TokenRegistration(
            token=token,
            url=url,
            name=name,
            labels=list(labels),
            runner_id=runner.runner_id,
            at=sim.clock(),
        )
    )
    return runner


def _replace_idle(sim: GitHubSimulator, runners: Sequence[Runner], name: str) -> None:
    """Remove the idle runner called ``name``; ``ApiError(409)`` if it is busy."""
    for runner in runners:
        if runner.name != name:
            continue
        if runner.busy:
            raise ApiError(409, f"A runner named {name} is running a job and cannot be replaced")
        del sim.runners[runner.runner_id]
