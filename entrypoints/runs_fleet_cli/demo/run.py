"""The demo's course: start the servers, queue the jobs, follow them, sum up, clean up."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from runs_fleet_cli.demo.processes import (
    DemoError,
    free_port,
    http_json,
    kill_leftovers,
    start,
    stop,
    wait_until_ready,
)
from runs_fleet_cli.demo.scenario import DUPLICATE_OF, JOBS, REPOSITORY, RUN_ID
from runs_fleet_cli.demo.timeline import Timeline, Tracked
from runs_fleet_cli.output import emit_table

SIMULATOR = "runs_fleet_github_simulator"
FOLLOW_TIMEOUT_S = 25.0
JIT_PATH = f"/repos/{REPOSITORY}/actions/runners/generate-jitconfig"


def demo_command(args: argparse.Namespace) -> int:
    """``runs-fleet demo``: 0 when every job ended as expected, 1 otherwise."""
    if importlib.util.find_spec(SIMULATOR) is None:
        sys.stderr.write(
            "error: the demo needs the GitHub simulator: pip install -e "
            "simulators/github (nox -s demo installs everything)\n"
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="runs-fleet-demo-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        return _run(workdir, processes, sys.stdout)
    except KeyboardInterrupt:
        sys.stdout.write("\ninterrupted: stopping everything\n")
        return 130
    except DemoError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    finally:
        for process in reversed(processes):
            stop(process)
        kill_leftovers(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def _clean_env() -> dict[str, str]:
    """This process's environment without any runs-fleet setting of the user's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RUNS_FLEET_")}


def _start_servers(workdir: Path, processes: list[subprocess.Popen[bytes]]) -> tuple[str, str]:
    sim_port, api_port = free_port(), free_port()
    simulator, api = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{api_port}"
    argv = [
        "-m", SIMULATOR, "--app-key-out", str(workdir / "app.pem"),
        "--webhook-url", f"{api}/webhook", "--webhook-secret-file", str(workdir / "webhook.secret"),
        "--repo", REPOSITORY, "--runner-dir", str(workdir / "runner"), "--job-seconds", "1",
        "--host", "127.0.0.1", "--port", str(sim_port),
    ]  # fmt: skip
    log = workdir / "github-simulator.log"
    processes.append(start(argv, env=_clean_env(), cwd=workdir, log=log))
    wait_until_ready(f"{simulator}/_simulator/jobs", processes[-1], log, timeout_s=20)
    env = _clean_env() | {
        "RUNS_FLEET_MODE": "local",
        "RUNS_FLEET_STATE_DIR": str(workdir / "state"),
        "RUNS_FLEET_GITHUB_APP_ID": "1",
        "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE": str(workdir / "app.pem"),
        "RUNS_FLEET_GITHUB_WEBHOOK_SECRET_FILE": str(workdir / "webhook.secret"),
        "RUNS_FLEET_GITHUB_API_URL": simulator,
        "RUNS_FLEET_RUNNER_DIR": str(workdir / "runner"),
        "RUNS_FLEET_LISTEN": f"127.0.0.1:{api_port}",
    }
    log = workdir / "runs-fleet-serve.log"
    processes.append(start(["-m", "runs_fleet_cli", "serve"], env=env, cwd=workdir, log=log))
    wait_until_ready(f"{api}/ready", processes[-1], log, timeout_s=30)
    return simulator, api


def _run(workdir: Path, processes: list[subprocess.Popen[bytes]], out: TextIO) -> int:
    out.write("runs-fleet demo: a simulated GitHub and runs-fleet in local mode\n")
    simulator, api = _start_servers(workdir, processes)
    out.write(
        f"  GitHub simulator  {simulator}\n  runs-fleet        {api} (local mode: "
        "embedded Valkey, runners as local processes)\n\n"
    )
    timeline = Timeline(api, datetime.now(UTC), out)
    tracked, deliveries = [], []
    for job in JOBS:
        sent = http_json("POST", f"{simulator}/_simulator/jobs", {
            "repository": REPOSITORY, "labels": [job.runs_on], "run_id": RUN_ID,
            "name": job.name, "conclusion": job.conclusion,
        })  # fmt: skip
        tracked.append(Tracked(job=job, job_id=int(sent["job_id"])))
        deliveries.append(str(sent["delivery_id"]))
    again = http_json(
        "POST", f"{simulator}/_simulator/deliveries/{deliveries[DUPLICATE_OF]}/redeliver"
    )
    first = tracked[DUPLICATE_OF]
    timeline.note(
        datetime.now(UTC),
        f"#{first.job_id} {first.job.name:<12} webhook "
        f"re-delivered (same delivery id): HTTP {again['status_code']}, nothing new",
    )
    finished = timeline.follow(tracked, FOLLOW_TIMEOUT_S)
    calls = http_json("GET", f"{simulator}/_simulator/calls?method=POST&path={JIT_PATH}")
    return _summarize(tracked, calls, finished, out)


def _millis(start: datetime | None, end: datetime | None) -> str:
    return "-" if start is None or end is None else f"{(end - start).total_seconds() * 1000:.0f}"


def _summarize(
    tracked: list[Tracked], calls: list[dict[str, Any]], finished: bool, out: TextIO
) -> int:
    jit_names = [
        str(call["body"].get("name"))
        for call in calls
        if call.get("status") == 201 and isinstance(call.get("body"), dict)
    ]
    rows = [("job", "runs-on", "status", "runner", "JIT configs", "to running ms", "total ms")]
    surprises = [] if finished else ["not every job finished in time"]
    for t in tracked:
        runner = str(t.record.get("runner_name") or "-")
        jits = jit_names.count(runner) if runner != "-" else 0
        last = t.record.get("timeline", [{}])[-1].get("at")
        rows.append(
            (
                f"#{t.job_id} {t.job.name}",
                t.job.runs_on,
                t.status,
                runner,
                str(jits),
                _millis(t.at("queued"), t.at("running")),
                _millis(t.at("queued"), datetime.fromisoformat(last) if last else None),
            )
        )
        if t.status != t.job.expected:
            surprises.append(f"#{t.job_id} ended {t.status}, expected {t.job.expected}")
        if jits != (1 if t.job.expected == "completed" else 0):
            surprises.append(f"#{t.job_id} got {jits} JIT configs")
    out.write("\n")
    emit_table(rows, out)
    runners = sum(1 for t in tracked if t.record.get("runner_name"))
    out.write(
        f"\n6 webhooks (one re-delivered), {len(tracked)} jobs, {runners} runners, "
        f"{len(jit_names)} JIT configs, "
        f"{sum(t.status == 'rejected' for t in tracked)} label rejected with its reason\n"
    )
    for surprise in surprises:
        out.write(f"unexpected: {surprise}\n")
    out.write("all jobs ended as expected; stopping and cleaning up\n" if not surprises else "")
    return 1 if surprises else 0
