"""Development tasks. ``nox -s tests`` sets up everything it needs and runs the suite."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = False

PYPROJECT = nox.project.load_toml("pyproject.toml")
# Every distribution of this repository besides the root one, installed editable.
DISTRIBUTIONS = [
    "plugins/local",
    "plugins/valkey",
    "plugins/prometheus",
    "plugins/github",
    "plugins/aws",
    "plugins/sqs",
    "plugins/ec2",
    "plugins/k8s",
    "simulators/github",
]


def _install_project(session: nox.Session, *groups: str) -> None:
    session.install("--upgrade", "pip")
    editable = ["-e", "."]
    for path in DISTRIBUTIONS:
        editable += ["-e", path]
    session.install(*editable)
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: unit, contract and integration tests.

    Three pytest workers, each taking whole files (their module-scoped servers stay
    per worker): most of the suite waits on servers and subprocesses, not on the CPU.
    ``nox -s tests -- -n 0`` runs it in one process."""
    _install_project(session, "test")
    session.run("pytest", "--numprocesses=3", "--dist=loadfile", *session.posargs)


@nox.session
def faults(session: nox.Session) -> None:
    """The fault matrix alone (``tests`` runs it too), ending with its table: each mode
    with three replicas under SIGKILLs, outages, Valkey restarts and duplicated webhooks.
    ``RUNS_FLEET_FAULTS_SEED`` picks another seed."""
    _install_project(session, "test")
    session.run("pytest", "--numprocesses=3", "--dist=loadfile", "tests/faults", *session.posargs)


@nox.session
def audit(session: nox.Session) -> None:
    """pip-audit over the dependency set of the ``tests`` session (the project's own
    packages aside): a known vulnerability fails the session; an advisory service that
    cannot be reached prints a warning that the audit did not run, and passes."""
    _install_project(session, "test")
    requirements = Path(session.create_tmp()) / "requirements.txt"
    session.run("python", ".ci/audit.py", "freeze", str(requirements))
    session.install("pip-audit")
    session.run("python", ".ci/audit.py", "check", str(requirements), *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, and the import contracts that keep the hexagon a hexagon."""
    _install_project(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy: strict on runs_fleet_core, checked everywhere else."""
    _install_project(session, "typecheck")
    session.run(
        "mypy",
        "runs_fleet_core",
        "entrypoints/runs_fleet_cli",
        "entrypoints/runs_fleet_scheduler",
        "entrypoints/runs_fleet_server",
        "agent/runs_fleet_agent",
        "plugins/prometheus/src/runs_fleet_prometheus",
        "plugins/github/src/runs_fleet_github",
        "simulators/github/src/runs_fleet_github_simulator",
        "plugins/local/src/runs_fleet_local",
        "plugins/valkey/src/runs_fleet_valkey",
        "plugins/aws/src/runs_fleet_aws",
        "plugins/sqs/src/runs_fleet_sqs",
        "plugins/ec2/src/runs_fleet_ec2",
        "plugins/k8s/src/runs_fleet_k8s",
    )


@nox.session(venv_backend="none")
def dev(session: nox.Session) -> None:
    """Create .venv with runs-fleet and every plugin installed in editable mode."""
    session.run("python3", "-m", "venv", ".venv")
    pip = [".venv/bin/python", "-m", "pip", "install", "--quiet"]
    session.run(*pip, "--upgrade", "pip")
    editable = [arg for path in DISTRIBUTIONS for arg in ("-e", path)]
    session.run(
        *pip,
        "-e",
        ".",
        *editable,
        *nox.project.dependency_groups(PYPROJECT, "test", "lint", "typecheck"),
    )
    session.log("ready: source .venv/bin/activate && runs-fleet --help")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: figures and ratios against baselines measured in the same run.

    ``bench/core.py``: the core on in-memory adapters. ``bench/local.py``: the server
    served for real (uvicorn subprocesses, embedded Valkey) against a bare Starlette
    endpoint, dispatch through Valkey, and the server's RSS; only 127.0.0.1 is used.
    ``bench/ec2.py``: EC2 mode against a moto server: AWS API calls per cold-start and
    per warm-pool job, and dispatch throughput against raw SQS traffic. ``bench/k8s.py``:
    Kubernetes mode against the fake API server: API requests per cold-start and per
    warm-pool job.
    """
    _install_project(session, "test")
    session.run("python", "bench/core.py")
    session.run("python", "bench/local.py")
    session.run("python", "bench/ec2.py")
    session.run("python", "bench/k8s.py")


@nox.session
def demo(session: nox.Session) -> None:
    """runs-fleet end to end on this machine: a simulated GitHub, local runners."""
    _install_project(session)
    session.run("runs-fleet", "demo", *session.posargs)
