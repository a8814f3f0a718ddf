"""The container images: both Dockerfiles checked statically, and built where Docker runs.

No Docker engine runs in this project's CI, so the Dockerfiles are parsed instruction by
instruction and held to the rules the images promise (pinned bases, a non-root numeric
user last, the right entrypoint, a checksum on the runner download, no secrets baked in).
The orchestrator's plugin selection is run for real: the exact ``python -c`` program of
its build stage maps each ``EXTRAS`` value to plugin folders, and those folders must hold
the distributions the root project's extras name. Where ``docker info`` works, both images
are built too.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import attrs
import pytest

REPO = Path(__file__).resolve().parents[2]
ORCHESTRATOR = REPO / "docker" / "orchestrator" / "Dockerfile"
RUNNER = REPO / "docker" / "runner" / "Dockerfile"
DOCKERFILES = {"orchestrator": ORCHESTRATOR, "runner": RUNNER}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DEFAULT_EXTRAS = "ec2,k8s"
KUBE_RUNNER_UID = 1001  # RUNS_FLEET_KUBE_RUNNER_UID's default
ORCHESTRATOR_UID = 10001


@attrs.frozen
class Instruction:
    keyword: str  # upper case
    args: str  # continuation lines joined, comments inside them dropped
    line: int  # where it starts (1-based)
    stage: int  # index of the build stage (-1 before the first FROM)


def parse(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, as BuildKit reads them (no heredocs)."""
    instructions: list[Instruction] = []
    stage = -1
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue  # blank lines, comments and parser directives between instructions
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].rstrip())
            continue
        pending.append(stripped)
        text = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = text.partition(" ")
        assert "<<" not in args or keyword.upper() != "RUN", f"{path}:{start}: no heredocs"
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), args.strip(), start, stage))
    assert not pending, f"{path}: ends inside a continued instruction"
    return instructions


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults."""
    values: dict[str, str] = {}
    for ins in instructions:
        if ins.stage >= 0:
            break
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            values[name] = default.strip('"')
    return values


def stage_arg_defaults(instructions: list[Instruction], stage: int) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for ins in instructions:
        if ins.stage == stage and ins.keyword == "ARG":
            name, sep, default = ins.args.partition("=")
            values[name] = default.strip('"') if sep else None
    return values


def base_images(instructions: list[Instruction]) -> list[str]:
    """The image of every FROM, with global ARGs substituted; stage names are skipped."""
    args = global_args(instructions)
    stages: set[str] = set()
    images = []
    for ins in instructions:
        if ins.keyword != "FROM":
            continue
        words = [w for w in ins.args.split() if not w.startswith("--platform")]
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if image.lower() not in stages:
            images.append(image)
    return images


def exec_form(ins: Instruction) -> list[str]:
    import json

    value = json.loads(ins.args)
    assert isinstance(value, list), f"line {ins.line}: {ins.keyword} must be in exec form"
    return value


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(ins.stage for ins in instructions)
    return [ins for ins in instructions if ins.stage == last]


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, list[Instruction]]:
    return request.param, parse(DOCKERFILES[request.param])


# ---------------------------------------------------------------------------------------
# rules both images keep


def test_the_parser_reads_continuations_and_stages() -> None:
    """The checks below are only as good as the parser: pin what it makes of a sample."""
    sample = REPO / ".cache" / "test-images-sample.Dockerfile"
    sample.parent.mkdir(parents=True, exist_ok=True)
    sample.write_text(
        "# syntax=docker/dockerfile:1\nARG BASE=debian:12-slim\nFROM ${BASE} AS one\n"
        "RUN a \\\n    # a comment\n    && b\nFROM one\nUSER 5:5\n"
    )
    try:
        parsed = parse(sample)
    finally:
        sample.unlink()
    assert [(i.keyword, i.args, i.stage) for i in parsed] == [
        ("ARG", "BASE=debian:12-slim", -1),
        ("FROM", "${BASE} AS one", 0),
        ("RUN", "a && b", 0),
        ("FROM", "one", 1),
        ("USER", "5:5", 1),
    ]
    assert base_images(parsed) == ["debian:12-slim"]


def test_every_base_image_is_pinned_by_a_tag(dockerfile: tuple[str, list[Instruction]]) -> None:
    name, instructions = dockerfile
    images = base_images(instructions)
    assert images, f"{name}: no FROM"
    for image in images:
        reference = image.split("@", 1)[0]
        _, _, tag = reference.rpartition("/")[2].partition(":")
        assert tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} floats on :latest"


def test_both_images_start_from_python_3_11_slim(dockerfile: tuple[str, list[Instruction]]) -> None:
    name, instructions = dockerfile
    for image in base_images(instructions):
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), (
            f"{name}: {image}"
        )


def test_the_last_user_is_numeric_and_not_root(dockerfile: tuple[str, list[Instruction]]) -> None:
    name, instructions = dockerfile
    final = final_stage(instructions)
    users = [ins for ins in final if ins.keyword == "USER"]
    assert users, f"{name}: the final stage sets no USER, so it runs as root"
    user, _, group = users[-1].args.partition(":")
    assert user.isdigit(), f"{name}: USER {users[-1].args} is not numeric (runAsNonRoot)"
    assert int(user) != 0, f"{name}: USER is root"
    assert not group or (group.isdigit() and int(group) != 0), f"{name}: group {group}"
    expected = ORCHESTRATOR_UID if name == "orchestrator" else KUBE_RUNNER_UID
    assert int(user) == expected
    after = [ins.keyword for ins in final if ins.line > users[-1].line]
    assert "RUN" not in after, f"{name}: RUN after the last USER runs as the user"


def test_nothing_is_fetched_by_add(dockerfile: tuple[str, list[Instruction]]) -> None:
    name, instructions = dockerfile
    for ins in instructions:
        if ins.keyword != "ADD":
            continue
        if re.search(r"\b(https?|git)://|git@", ins.args):
            assert "--checksum=sha256:" in ins.args, (
                f"{name}:{ins.line}: ADD of a URL without --checksum"
            )


SECRET_NAME = re.compile(r"token|password|passwd|secret|private_key|api_key", re.IGNORECASE)


def test_no_secret_is_baked_in(dockerfile: tuple[str, list[Instruction]]) -> None:
    name, instructions = dockerfile
    for ins in instructions:
        if ins.keyword in {"ENV", "ARG", "LABEL"}:
            names = re.findall(r"(?:^|\s)([A-Za-z_][\w.-]*)(?:=|\s|$)", ins.args)
            for variable in names:
                assert not SECRET_NAME.search(variable), f"{name}:{ins.line}: {variable}"
        if ins.keyword == "RUN":
            assert "RUNS_FLEET_GITHUB" not in ins.args, f"{name}:{ins.line}"
            assert not re.search(r"--secret\b|ghp_|github_pat_", ins.args), f"{name}:{ins.line}"


def test_commands_are_in_exec_form(dockerfile: tuple[str, list[Instruction]]) -> None:
    _, instructions = dockerfile
    for ins in final_stage(instructions):
        if ins.keyword in {"ENTRYPOINT", "CMD"}:
            exec_form(ins)  # shell form would run under /bin/sh and swallow SIGTERM


def test_oci_labels(dockerfile: tuple[str, list[Instruction]]) -> None:
    name, instructions = dockerfile
    labels = " ".join(ins.args for ins in final_stage(instructions) if ins.keyword == "LABEL")
    for key in ("title", "description", "version", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, f"{name}: no {key} label"
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
    assert PYPROJECT["project"]["license"] == "Apache-2.0"


def test_the_final_stage_installs_wheels_only_without_an_index(
    dockerfile: tuple[str, list[Instruction]],
) -> None:
    name, instructions = dockerfile
    installs = [
        ins
        for ins in final_stage(instructions)
        if ins.keyword == "RUN" and re.search(r"\bpip install\b", ins.args)
    ]
    assert len(installs) == 1, f"{name}: one pip install in the final stage"
    run = installs[0].args
    assert "--no-index" in run and "--find-links=/wheels" in run
    assert "from=build,source=/wheels,target=/wheels" in run, "wheels come from the build stage"
    builds = [ins for ins in instructions if ins.keyword == "RUN" and "pip wheel" in ins.args]
    assert builds and all(ins.stage < max(i.stage for i in instructions) for ins in builds)


# ---------------------------------------------------------------------------------------
# the orchestrator


def orchestrator_instructions() -> list[Instruction]:
    return parse(ORCHESTRATOR)


def test_the_orchestrator_runs_the_server_on_8080() -> None:
    final = final_stage(orchestrator_instructions())
    (entrypoint,) = [exec_form(i) for i in final if i.keyword == "ENTRYPOINT"]
    (cmd,) = [exec_form(i) for i in final if i.keyword == "CMD"]
    assert entrypoint == ["runs-fleet"]
    assert cmd == ["serve", "--listen", "0.0.0.0:8080"]
    assert [i.args for i in final if i.keyword == "EXPOSE"] == ["8080"]
    assert not [i for i in final if i.keyword == "HEALTHCHECK"], "Kubernetes probes instead"
    entry_points = PYPROJECT["project"]["scripts"]
    assert "runs-fleet" in entry_points


def test_the_orchestrator_writes_nothing_outside_tmp() -> None:
    final = final_stage(orchestrator_instructions())
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    assert [i.args for i in final if i.keyword == "WORKDIR"][-1] == "/tmp"
    assert not [i for i in final if i.keyword == "VOLUME"]


def test_extras_defaults_to_ec2_and_k8s_and_is_what_gets_installed() -> None:
    instructions = orchestrator_instructions()
    last = max(i.stage for i in instructions)
    for stage in (0, last):
        assert stage_arg_defaults(instructions, stage)["EXTRAS"] == DEFAULT_EXTRAS
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    assert any('".[${EXTRAS}]"' in run and "pip wheel" in run for run in runs)
    assert any('"runs-fleet[${EXTRAS}]"' in run and "pip install" in run for run in runs)


def plugin_selection_program() -> str:
    """The ``python -c`` program of the orchestrator's build stage, as the shell sees it."""
    (run,) = [
        i.args
        for i in orchestrator_instructions()
        if i.keyword == "RUN" and "plugin_dirs=" in i.args
    ]
    match = re.search(r"python -c '([^']*)'", run)
    assert match, "the plugin selection program is not a single-quoted python -c"
    return match[1]


def select_plugins(extras: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", plugin_selection_program(), extras],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def distribution_name(folder: Path) -> str:
    return tomllib.loads((folder / "pyproject.toml").read_text())["project"]["name"]


@pytest.mark.parametrize(
    "extras", [DEFAULT_EXTRAS, *sorted(PYPROJECT["project"]["optional-dependencies"])]
)
def test_each_extra_maps_to_plugin_folders_holding_its_distributions(extras: str) -> None:
    result = select_plugins(extras)
    assert result.returncode == 0, result.stderr
    folders = [REPO / f for f in result.stdout.split()]
    wanted = {
        requirement.split("==")[0]
        for extra in extras.split(",")
        for requirement in PYPROJECT["project"]["optional-dependencies"][extra]
    }
    assert {distribution_name(folder) for folder in folders} == wanted
    for folder in folders:
        assert folder.parent == REPO / "plugins", folder
        # pinned to the root's version, which the build stage's root wheel satisfies
        assert (
            f"runs-fleet=={PYPROJECT['project']['version']}"
            in tomllib.loads((folder / "pyproject.toml").read_text())["project"]["dependencies"]
        )


def test_an_unknown_extra_stops_the_build() -> None:
    result = select_plugins("ec2,nope")
    assert result.returncode != 0
    assert "KeyError: 'nope'" in result.stderr


def test_the_build_context_holds_what_the_root_wheel_packages() -> None:
    """Every folder the root wheel packages, and the plugins, are copied into the build."""
    copied = " ".join(
        i.args for i in orchestrator_instructions() if i.keyword == "COPY" and i.stage == 0
    )
    packaged = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    for package in packaged:
        top = package.split("/")[0]
        assert re.search(rf"(^|\s){re.escape(top)}(\s|$)", copied), f"{top} is not copied"
    assert re.search(r"(^|\s)plugins(\s|$)", copied)
    assert "pyproject.toml" in copied and "README.md" in copied  # readme = "README.md"


@pytest.fixture(scope="module")
def built_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's own wheels for the default extras, built as the build stage does
    (without the third-party dependencies, which need an index)."""
    if shutil.which("hatchling") is None and not _has_module("hatchling"):
        pytest.skip("hatchling is not installed: cannot build the wheels offline")
    folders = select_plugins(DEFAULT_EXTRAS).stdout.split()
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(out),
            ".",
            *folders,
        ],
        cwd=REPO,
        check=True,
        timeout=120,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return out


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _metadata(wheel: Path) -> tuple[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        points = next(
            (n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")), None
        )
        return archive.read(meta).decode(), archive.read(points).decode() if points else ""


def test_the_built_wheels_offer_the_extras_and_the_command(built_wheels: Path) -> None:
    wheels = {
        re.sub(r"-\d.*$", "", w.name).replace("_", "-"): w for w in built_wheels.glob("*.whl")
    }
    root_meta, root_points = _metadata(wheels["runs-fleet"])
    for extra in DEFAULT_EXTRAS.split(","):
        assert f"Provides-Extra: {extra}" in root_meta
        for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
            assert requirement.split("==")[0] in wheels, f"{requirement} was not built"
    assert "runs-fleet = runs_fleet_cli.app:run" in root_points
    for name, wheel in wheels.items():
        if name != "runs-fleet":
            _, points = _metadata(wheel)
            assert "[runs_fleet]" in points, f"{name} declares no runs_fleet entry point"


# ---------------------------------------------------------------------------------------
# the Kubernetes runner


def runner_instructions() -> list[Instruction]:
    return parse(RUNNER)


def test_the_runner_entrypoint_is_the_k8s_agent() -> None:
    final = final_stage(runner_instructions())
    (entrypoint,) = [exec_form(i) for i in final if i.keyword == "ENTRYPOINT"]
    assert entrypoint == ["runs-fleet", "k8s", "agent"]
    assert not [i for i in final if i.keyword == "CMD"], "pool pods pass no arguments"
    from runs_fleet_k8s.pod_spec import AGENT_COMMAND

    assert list(AGENT_COMMAND) == entrypoint  # what cold-start Jobs run


def test_the_runner_dir_is_set_and_owned_by_the_runner_uid() -> None:
    final = final_stage(runner_instructions())
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    match = re.search(r"RUNS_FLEET_RUNNER_DIR=(\S+)", env)
    assert match, "RUNS_FLEET_RUNNER_DIR is not set"
    runner_dir = match[1]
    copies = [i.args for i in final if i.keyword == "COPY" and i.args.endswith(runner_dir)]
    assert copies and f"--chown={KUBE_RUNNER_UID}:{KUBE_RUNNER_UID}" in copies[0]
    installs = " ".join(i.args for i in final if i.keyword == "RUN")
    assert f"{runner_dir}/bin/installdependencies.sh" in installs
    assert '"runs-fleet[k8s]"' in installs


def test_the_runner_download_is_checked_before_it_is_unpacked() -> None:
    instructions = runner_instructions()
    (fetch,) = [
        i for i in instructions if i.keyword == "RUN" and "github.com/actions/runner" in i.args
    ]
    args = stage_arg_defaults(instructions, fetch.stage)
    for name in ("RUNNER_VERSION", "RUNNER_SHA256_AMD64", "RUNNER_SHA256_ARM64", "TARGETARCH"):
        assert name in args, f"ARG {name} is not declared in the fetch stage"
    script = fetch.args
    assert "releases/download/v${RUNNER_VERSION}/" in script
    assert "actions-runner-linux-${arch}-${RUNNER_VERSION}.tar.gz" in script
    assert re.search(r"amd64\) arch=x64; sum=\"\$\{RUNNER_SHA256_AMD64\}\"", script)
    assert re.search(r"arm64\) arch=arm64; sum=\"\$\{RUNNER_SHA256_ARM64\}\"", script)
    assert "--fail" in script and "--proto '=https'" in script
    check = script.index("sha256sum -c")
    assert check < script.index("tar -xzf"), "unpacked before the checksum is checked"
    assert 'test -n "${sum}"' in script, "an empty checksum must stop the build"
    assert script.startswith("set -eu;")


def test_the_runner_checksum_logic_rejects_a_wrong_sum(tmp_path: Path) -> None:
    """Run the fetch stage's shell with the download replaced by a local file."""
    if shutil.which("sh") is None or shutil.which("sha256sum") is None:
        pytest.skip("needs sh and sha256sum")
    (fetch,) = [
        i
        for i in runner_instructions()
        if i.keyword == "RUN" and "github.com/actions/runner" in i.args
    ]
    # a fake runner tarball and a fake curl that "downloads" it
    payload = tmp_path / "payload"
    (payload / "bin").mkdir(parents=True)
    (payload / "bin" / "installdependencies.sh").write_text("#!/bin/sh\n")
    tarball = tmp_path / "runner.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(payload), "."], check=True)
    digest = subprocess.run(
        ["sha256sum", str(tarball)], check=True, capture_output=True, text=True
    ).stdout.split()[0]
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    curl = fakebin / "curl"
    curl.write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ "$1" = --output ]; then out=$2; fi; shift; done\n'
        f'cp {shlex.quote(str(tarball))} "$out"\n'
    )
    curl.chmod(0o755)
    root = tmp_path / "root"
    # /tmp/ first: the paths put in for /actions-runner are under /tmp themselves
    script = fetch.args.replace("/tmp/", f"{tmp_path}/").replace(
        "/actions-runner", str(root / "actions-runner")
    )

    def run(amd64: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{fakebin}:{os.environ['PATH']}",
            "RUNNER_VERSION": "2.0.0",
            "RUNNER_SHA256_AMD64": amd64,
            "RUNNER_SHA256_ARM64": "",
            "TARGETARCH": "amd64",
        }
        return subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=False
        )

    bad = run("0" * 64)
    assert bad.returncode != 0
    assert not (root / "actions-runner" / "bin").exists(), "unpacked despite a wrong checksum"
    empty = run("")
    assert empty.returncode != 0 and "RUNNER_SHA256_AMD64" in empty.stderr
    good = run(digest)
    assert good.returncode == 0, good.stderr
    assert (root / "actions-runner" / "bin" / "installdependencies.sh").exists()


# ---------------------------------------------------------------------------------------
# real builds, where a Docker engine runs


@functools.cache
def _docker_reason() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not on PATH"
    try:
        info = subprocess.run(
            ["docker", "info"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed: {exc}"
    if info.returncode != 0:
        return (
            "no Docker engine answers `docker info`: "
            + (info.stderr.strip().splitlines() or ["no output"])[-1]
        )
    return None


@pytest.mark.skipif(_docker_reason() is not None, reason=str(_docker_reason()))
@pytest.mark.parametrize("extras", ["ec2,k8s", "ec2"])
def test_docker_builds_the_orchestrator(extras: str) -> None:
    tag = f"runs-fleet-test/orchestrator:{extras.replace(',', '-')}"
    subprocess.run(
        [
            "docker",
            "build",
            "-f",
            str(ORCHESTRATOR),
            "--build-arg",
            f"EXTRAS={extras}",
            "-t",
            tag,
            str(REPO),
        ],
        check=True,
        timeout=1800,
    )
    plugins = subprocess.run(
        ["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", tag, "plugins", "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for extra in extras.split(","):
        assert f'"{extra}"' in plugins


@pytest.mark.skipif(_docker_reason() is not None, reason=str(_docker_reason()))
@pytest.mark.skipif(
    not os.environ.get("RUNS_FLEET_TEST_RUNNER_VERSION"),
    reason="set RUNS_FLEET_TEST_RUNNER_VERSION and RUNS_FLEET_TEST_RUNNER_SHA256_AMD64 "
    "(and _ARM64) to build the runner image: its version and checksums have no default",
)
def test_docker_builds_the_runner() -> None:
    env = os.environ
    subprocess.run(
        [
            "docker",
            "build",
            "-f",
            str(RUNNER),
            "--build-arg",
            f"RUNNER_VERSION={env['RUNS_FLEET_TEST_RUNNER_VERSION']}",
            "--build-arg",
            f"RUNNER_SHA256_AMD64={env.get('RUNS_FLEET_TEST_RUNNER_SHA256_AMD64', '')}",
            "--build-arg",
            f"RUNNER_SHA256_ARM64={env.get('RUNS_FLEET_TEST_RUNNER_SHA256_ARM64', '')}",
            "-t",
            "runs-fleet-test/runner:latest-test",
            str(REPO),
        ],
        check=True,
        timeout=1800,
    )
    whoami = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", "runs-fleet-test/runner:latest-test", "-u"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()
    assert whoami == str(KUBE_RUNNER_UID)
