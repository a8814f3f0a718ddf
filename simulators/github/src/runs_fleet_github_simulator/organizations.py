"""Organization runners and runner groups of the simulated GitHub.

Kept to GitHub's rules that runs-fleet depends on: only an organization has
organization runners and runner groups; every organization has the group "Default"
(id 1); a JIT config names its group by id and an unknown id is refused (404); runner
names are unique within the organization (409); an organization runner takes jobs of
every repository its organization owns.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from runs_fleet_github_simulator.directory import Directory
from runs_fleet_github_simulator.records import ORGANIZATION, Runner, RunnerGroup

DEFAULT_GROUP = "Default"
NOT_FOUND = "Not Found"


class Organizations(Directory):
    """Runner groups and organization runners (mixed into the simulator, whose
    ``runners`` table holds repository and organization runners alike)."""

    runners: dict[int, Runner]

    def _init_organizations(self) -> None:
        self.runner_groups: dict[int, RunnerGroup] = {}

    def is_organization(self, login: str) -> bool:
        """Whether ``login`` is an existing organization."""
        account = self.accounts.get(login.lower())
        return account is not None and account.type == ORGANIZATION

    def add_runner_group(self, org: str, name: str, *, visibility: str = "all") -> RunnerGroup:
        """Create runner group ``name`` in organization ``org`` (idempotent by name)."""
        if not self.is_organization(org):
            raise ValueError(f"{org} is not an organization")
        for group in self.runner_groups_of(org):
            if group.name == name:
                return group
        group = RunnerGroup(
            group_id=self.next_id(), name=name, org=self.accounts[org.lower()].login,
            visibility=visibility,
        )  # fmt: skip
        self.runner_groups[group.group_id] = group
        return group

    def runner_groups_of(self, org: str) -> list[RunnerGroup]:
        """The groups of ``org``: "Default" (id 1) first, then the others by id."""
        login = self.accounts[org.lower()].login
        default = RunnerGroup(group_id=1, name=DEFAULT_GROUP, org=login, default=True)
        others = [g for g in self.runner_groups.values() if g.org.lower() == org.lower()]
        return [default, *sorted(others, key=lambda g: g.group_id)]

    def group_name(self, runner: Runner) -> str:
        """The name of the group ``runner`` is in."""
        group = self.runner_groups.get(runner.runner_group_id)
        return group.name if group is not None else DEFAULT_GROUP

    def org_runners(self, org: str) -> list[Runner]:
        """The organization runners of ``org``, oldest first."""
        return [r for r in self.runners.values() if (r.org or "").lower() == org.lower()]

    def register_org_jit_runner(
        self,
        org: str,
        *,
        name: str,
        labels: Sequence[str],
        runner_group_id: int = 1,
        work_folder: str = "_work",
    ) -> Runner:
        """Register an offline ephemeral organization runner; ``LookupError`` for an
        unknown organization or group, ``FileExistsError`` if the name is taken."""
        if not self.is_organization(org):
            raise LookupError(NOT_FOUND)
        if runner_group_id not in {g.group_id for g in self.runner_groups_of(org)}:
            raise LookupError(NOT_FOUND)
        if any(r.name == name for r in self.org_runners(org)):
            raise FileExistsError(f"Already exists - A runner with the name {name} already exists.")
        runner = Runner(
            runner_id=self.next_id(),
            name=name,
            repository="",
            labels=list(labels),
            runner_group_id=runner_group_id,
            work_folder=work_folder,
            secret=secrets.token_urlsafe(24),
            org=self.accounts[org.lower()].login,
        )
        self.runners[runner.runner_id] = runner
        return runner

    def serves(self, runner: Runner, repository: str) -> bool:
        """Whether ``runner`` may take jobs of ``repository``."""
        if runner.org is not None:
            return repository.partition("/")[0].lower() == runner.org.lower()
        return runner.repository.lower() == repository.lower()
