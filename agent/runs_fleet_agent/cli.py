"""The agent's command line and its one pass: config → started → run → outcome → exit.

Exit codes: the runner's own; 124 when the maximum runtime stopped it; 128 + the signal
(143 for SIGTERM) when told to stop; 127 when the runner could not be started; 75 when
no config arrived in time; 78 when the config is missing or unreadable, the setup
settings are wrong, the runner archive's checksum does not match or the runner is older
than the minimum; 69 when the runner could not be downloaded; 70 when the machine has
less free disk or memory than the minimums (:mod:`runs_fleet_agent.preflight`); 78 too
when a runner that registers with a token finds its directory registered already; a
failed ``config.sh``'s own (:mod:`runs_fleet_agent.register`). Nothing here logs the JIT
config, the registration token or the report token.

:func:`run_job` (report, run once, report) and the pieces around it are public so that
an agent that finds its config and sends its reports elsewhere (EC2 mode: Parameter
Store and SQS) runs the runner exactly as this one does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from runs_fleet_agent.configfile import ConfigFileError, read_and_delete, wait_for_file
from runs_fleet_agent.output import LineSink
from runs_fleet_agent.preflight import SETTINGS, SetupError, parse_setup, prepare
from runs_fleet_agent.register import cannot_register, register
from runs_fleet_agent.report import Reporter
from runs_fleet_agent.supervise import (
    EXIT_CANNOT_RUN,
    Outcome,
    StopRequest,
    run_once,
    signal_exit_code,
)
from runs_fleet_core.domain.messages import AgentEvent
from runs_fleet_core.domain.runner import RunnerConfig

DEFAULT_MAX_RUNTIME_S = 6 * 3600.0
EXIT_NO_CONFIG_YET = 75
EXIT_BAD_CONFIG = 78
_log = logging.getLogger("runs_fleet_agent")


class ReportSender(Protocol):
    """Where the reports of one runner go (:class:`Reporter` posts them over HTTP)."""

    def send(
        self, event: AgentEvent, *, exit_code: int | None = None, detail: str | None = None
    ) -> bool:
        """Deliver one report; ``False`` (after logging why) when it could not be."""
        ...


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`run_job` that every agent (local, EC2, Kubernetes) takes:
    the runner's directory, its runtime ceiling, the stop grace period, and the setup
    checks (pass them on with ``setup=setup_values(args)``)."""
    parser.add_argument(
        "--runner-dir",
        type=Path,
        default=os.environ.get("RUNS_FLEET_RUNNER_DIR") or None,
        help="the GitHub Actions runner's directory (default: $RUNS_FLEET_RUNNER_DIR)",
    )
    parser.add_argument(
        "--max-runtime",
        type=float,
        metavar="SECONDS",
        help="stop the runner after SECONDS (default: the config's max_runtime_s, or 6 h)",
    )
    parser.add_argument(
        "--grace", type=float, default=30.0, metavar="SECONDS", help="SIGTERM → SIGKILL delay"
    )
    setup = parser.add_argument_group(
        "runner setup", "checked before the runner starts; each defaults to its variable"
    )
    helps = {
        "--runner-url": (
            "URL",
            "download the runner from URL when the runner directory has no run.sh; "
            "{version}, {os} (linux, osx) and {arch} (x64, arm64, arm) are filled in",
        ),
        "--runner-version": ("VERSION", "the runner version to download, e.g. 2.320.0"),
        "--runner-sha256": (
            "HEX",
            "the SHA-256 of the runner archive, or os-arch=HEX pairs separated by commas "
            "(needed with a URL)",
        ),
        "--min-runner-version": ("VERSION", "refuse a runner older than VERSION"),
        "--min-free-disk-gib": ("GIB", "refuse to start with less free disk (default 0: off)"),
        "--min-free-memory-mib": ("MIB", "refuse to start with less free memory (0: off)"),
    }
    for variable, option in SETTINGS.items():
        metavar, text = helps[option]
        setup.add_argument(
            option,
            default=os.environ.get(variable) or None,
            metavar=metavar,
            help=f"{text} (${variable})".replace("%", "%%"),
        )


def setup_values(args: argparse.Namespace) -> dict[str, str | None]:
    """The setup options of :func:`add_run_arguments` in ``args``, keyed by their
    variables: what :func:`run_job` takes as ``setup``."""
    return {
        variable: getattr(args, option.removeprefix("--").replace("-", "_"))
        for variable, option in SETTINGS.items()
    }


def build_parser() -> argparse.ArgumentParser:
    """The agent's command-line options."""
    parser = argparse.ArgumentParser(
        prog="runs-fleet-agent", description="Run one GitHub Actions job for runs-fleet."
    )
    parser.add_argument("--config-file", type=Path, required=True, help="this runner's config")
    parser.add_argument(
        "--wait-for-config",
        type=float,
        metavar="SECONDS",
        help="wait up to SECONDS for the config file to appear (warm-pool runners)",
    )
    add_run_arguments(parser)
    parser.add_argument("--report-attempts", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--report-backoff", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--report-timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent once; returns the process exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    configure_logging()
    stop = StopRequest()
    with handling_stop_signals(stop):
        config = _obtain_config(args, stop)
        if isinstance(config, int):
            return config
        reporter = http_reporter(
            config,
            attempts=args.report_attempts,
            backoff_s=args.report_backoff,
            timeout_s=args.report_timeout,
        )
        return run_job(
            config,
            runner_dir=args.runner_dir,
            max_runtime_s=args.max_runtime,
            grace_s=args.grace,
            stop=stop,
            reporter=reporter,
            setup=setup_values(args),
        )


def _obtain_config(args: argparse.Namespace, stop: StopRequest) -> RunnerConfig | int:
    """The config, or the exit code when there is none to run."""
    path: Path = args.config_file
    if args.wait_for_config is not None:
        _log.info("waiting up to %gs for a config at %s", args.wait_for_config, path)
        if not wait_for_file(path, args.wait_for_config, should_stop=lambda: stop.requested):
            if stop.signum is not None:
                _log.info("stopped while waiting for a config")
                return signal_exit_code(stop.signum)
            _log.error("no config appeared at %s within %gs", path, args.wait_for_config)
            return EXIT_NO_CONFIG_YET
    try:
        return read_and_delete(path)
    except ConfigFileError as exc:
        _log.error("%s", exc)
        return EXIT_BAD_CONFIG


def run_job(
    config: RunnerConfig,
    *,
    runner_dir: Path | str | None,
    max_runtime_s: float | None,
    grace_s: float,
    stop: StopRequest,
    reporter: ReportSender | None,
    setup: Mapping[str, str | None] | None = None,
    output: LineSink | None = None,
) -> int:
    """Check the machine and the runner, report STARTED, run ``<runner_dir>/run.sh
    --jitconfig …`` once (with a registration token instead: ``config.sh`` to register,
    then ``run.sh``), report how it ended: the exit code of the run (see the module
    docstring). A failed check is reported FAILED without STARTED: the job never
    started. ``max_runtime_s`` ``None``: the config's ``max_runtime_s``, else 6 h.
    ``stop`` must already be the handler of SIGTERM/SIGINT (:func:`handling_stop_signals`)
    so that a stop reaches the runner; ``reporter`` ``None``: nothing is reported.
    ``setup``: the setup settings keyed by variable (:func:`setup_values`); ``None``:
    the environment's. ``output``: where the runner's output lines go besides the
    agent's stdout (:func:`~runs_fleet_agent.supervise.run_once`)."""
    _log.info("runner %s takes job %s of %s", config.runner_name, config.job_id, config.repository)
    refused = _preflight(config, runner_dir, os.environ if setup is None else setup, stop)
    if refused is not None:
        _log.error("not starting the runner (exit code %d): %s", refused.exit_code, refused.detail)
        if reporter is not None:
            reporter.send(refused.event, exit_code=refused.exit_code, detail=refused.detail)
        return refused.exit_code
    if reporter is not None:
        reporter.send(AgentEvent.STARTED)
    ceiling = max_runtime(max_runtime_s, config)
    outcome = _run_runner(config, runner_dir, ceiling, grace_s, stop, output)
    _log.info(
        "job %s ended: %s (exit code %d)", config.job_id, outcome.event.value, outcome.exit_code
    )
    if reporter is not None:
        reporter.send(outcome.event, exit_code=outcome.exit_code, detail=outcome.detail)
    return outcome.exit_code


def _preflight(
    config: RunnerConfig,
    runner_dir: Path | str | None,
    setup: Mapping[str, str | None],
    stop: StopRequest,
) -> Outcome | None:
    """Why the runner must not start, or ``None``. Without a runner directory, or once
    told to stop, :func:`_run_runner` says what happened."""
    if runner_dir is None or stop.requested:
        return None
    if config.registers_with_token and (why := cannot_register(config, Path(runner_dir))):
        return Outcome(EXIT_BAD_CONFIG, AgentEvent.FAILED, why)
    try:
        parsed = parse_setup(setup)
    except SetupError as exc:
        return Outcome(EXIT_BAD_CONFIG, AgentEvent.FAILED, f"the agent's setup is wrong: {exc}")
    code, detail = prepare(Path(runner_dir), parsed)
    return Outcome(code, AgentEvent.FAILED, detail) if code else None


def _run_runner(
    config: RunnerConfig,
    runner_dir: Path | str | None,
    max_runtime_s: float,
    grace_s: float,
    stop: StopRequest,
    output: LineSink | None,
) -> Outcome:
    if stop.signum is not None:
        name = signal.Signals(stop.signum).name
        return Outcome(signal_exit_code(stop.signum), AgentEvent.INTERRUPTED, f"stopped by {name}")
    if runner_dir is None:
        detail = "no runner directory: set RUNS_FLEET_RUNNER_DIR or pass --runner-dir"
        return Outcome(EXIT_CANNOT_RUN, AgentEvent.FAILED, detail)
    command = [str(Path(runner_dir) / "run.sh"), "--jitconfig", config.jit_config]
    if config.registers_with_token:
        refused = register(config, Path(runner_dir), grace_s=grace_s, stop=stop, output=output)
        if refused is not None:
            return refused
        command = command[:1]
    _log.info("running %s/run.sh (at most %gs)", runner_dir, max_runtime_s)
    return run_once(command, max_runtime_s=max_runtime_s, grace_s=grace_s, stop=stop, output=output)


def max_runtime(option: float | None, config: RunnerConfig) -> float:
    """The runtime ceiling: ``option`` when given, else the config's ``max_runtime_s``
    when it is a positive number, else :data:`DEFAULT_MAX_RUNTIME_S`."""
    if option is not None:
        return float(option)
    configured = config.settings.get("max_runtime_s")
    if configured:
        try:
            value = float(configured)
        except ValueError:
            _log.warning("ignoring max_runtime_s=%r from the config: not a number", configured)
        else:
            if value > 0:
                return value
    return DEFAULT_MAX_RUNTIME_S


def http_reporter(
    config: RunnerConfig, *, attempts: int = 4, backoff_s: float = 1.0, timeout_s: float = 10.0
) -> Reporter | None:
    """A :class:`Reporter` to the config's ``report_url`` with its ``report_token``, or
    ``None`` (after saying why) when the config names no usable URL."""
    url = config.settings.get("report_url")
    if not url:
        _log.info("the config names no report_url: not reporting")
        return None
    try:
        return Reporter(
            url,
            config.settings.get("report_token", ""),
            job_id=config.job_id,
            runner_name=config.runner_name,
            attempts=attempts,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
        )
    except ValueError as exc:
        _log.error("not reporting: %s", exc)
        return None


@contextmanager
def handling_stop_signals(stop: StopRequest) -> Iterator[None]:
    """Make ``stop`` the handler of SIGTERM and SIGINT for the ``with`` block."""
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def configure_logging() -> None:
    """Log the ``runs_fleet_agent`` logger (and its children) to stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s runs-fleet-agent %(levelname)s %(message)s")
    )
    _log.handlers[:] = [handler]
    _log.setLevel(logging.INFO)
    _log.propagate = False
