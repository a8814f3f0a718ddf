"""``runs-fleet demo`` as a newcomer runs it: it succeeds and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _demo_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("runs-fleet-demo-*")}


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def test_the_demo_runs_every_job_as_expected_and_cleans_up() -> None:
    before = _demo_dirs()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")}
    result = subprocess.run(
        [sys.executable, "-m", "runs_fleet_cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "6 webhooks (one re-delivered), 5 jobs, 4 runners, 4 JIT configs" in out
    assert "re-delivered (same delivery id): HTTP 202, nothing new" in out
    assert "rejected: label not accepted: segment 'cpu=lots'" in out
    assert out.count("completed (success)") == 3 and "completed (failure)" in out
    assert "all jobs ended as expected" in out
    assert "Traceback" not in result.stderr
    assert _demo_dirs() == before
    assert _processes_mentioning("runs-fleet-demo-") == []


def test_ctrl_c_stops_the_demo_and_leaves_nothing_behind() -> None:
    import signal
    import time

    before = _demo_dirs()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "runs_fleet_cli", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:  # wait until jobs are under way
            if "claimed by a dispatch worker" in line:
                break
        time.sleep(0.3)
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130, err
    assert "interrupted: stopping everything" in out
    assert "Traceback" not in err
    assert _demo_dirs() == before
    assert _processes_mentioning("runs-fleet-demo-") == []
