"""``runs-fleet ec2 agent``: the agent of one EC2 runner instance.

The local agent's pass (:func:`runs_fleet_agent.cli.run_job`: report, run ``run.sh``
once under its runtime ceiling with SIGTERM forwarded, report) with AWS around it: the
instance learns who it is (instance metadata), takes its job's config from Parameter
Store (under the instance id for a claimed warm-pool instance, under the runner name for
a cold start) and deletes it once read, and afterwards terminates itself, so no instance
outlives its job.

A warm-pool instance (tag ``runs-fleet:pool``, no runner name) waits for its config as
long as it runs: the pool's reconciliation decides whether it stays started ("hot") or
is stopped, and a claim puts its config before starting it, so the agent, run anew at
every boot, finds it at once. With ``--wait-for-config`` it stops itself once that wait
is over (exit 75), to wait in the pool at no compute cost. Another instance waits
:data:`DEFAULT_COLD_WAIT_S`: its config is put as soon as
its launch request returns, long before it boots, so the wait only covers a dispatcher
that retries; then it exits 75 and terminates itself.

Reports go to the orchestrator's SQS queue when the config names ``report_queue_url``
(:class:`~runs_fleet_ec2.agent_reports.QueueReporter`, which owns the message format);
otherwise ``report_url`` is posted to as in local mode. An undelivered report is logged
and never changes the exit code, which is the local agent's (the runner's own, 124,
128 + signal, 127, 75, 78).

AWS calls go through an :class:`~runs_fleet_aws.calls.AwsCaller`, each awaited with
``asyncio.run``: :class:`~runs_fleet_ec2.ssm.SsmConfigStore` needs one, and its error
mapping puts AWS error codes into the log. botocore retries throttling, HTTP 5xx and
lost connections with backoff. Nothing here logs the JIT config or the report token.
Off EC2, ``RUNS_FLEET_INSTANCE_ID`` and ``RUNS_FLEET_RUNNER_NAME`` stand in for the
metadata, and ``RUNS_FLEET_IMDS_URL`` moves it.

With ``--log-group`` the agent's log and the runner's output also go to CloudWatch Logs,
secrets masked, from the wait for a config to the last report (:mod:`runs_fleet_ec2.logship`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from runs_fleet_agent.cli import (
    EXIT_BAD_CONFIG,
    EXIT_NO_CONFIG_YET,
    ReportSender,
    add_run_arguments,
    configure_logging,
    handling_stop_signals,
    http_reporter,
    run_job,
    setup_values,
)
from runs_fleet_agent.supervise import StopRequest, signal_exit_code
from runs_fleet_aws.calls import AwsCaller
from runs_fleet_core.domain.ids import RunnerId
from runs_fleet_core.domain.runner import RunnerConfig
from runs_fleet_core.errors import AdapterError
from runs_fleet_ec2 import logship
from runs_fleet_ec2.agent_reports import REPORT_KIND as REPORT_KIND
from runs_fleet_ec2.agent_reports import QueueReporter as QueueReporter
from runs_fleet_ec2.fleet import POOL_TAG, RUNNER_NAME_TAG
from runs_fleet_ec2.imds import Imds, ImdsError
from runs_fleet_ec2.ssm import DEFAULT_PREFIX, PREFIX_SETTING, SsmConfigStore

T = TypeVar("T")

INSTANCE_ID_VAR = "RUNS_FLEET_INSTANCE_ID"
RUNNER_NAME_VAR = "RUNS_FLEET_RUNNER_NAME"
DEFAULT_POOL_WAIT_S = math.inf
"""A pool instance waits until its config comes or it is stopped (see above)."""
DEFAULT_COLD_WAIT_S = 120.0
STOP = "stop_instances"
TERMINATE = "terminate_instances"
_log = logging.getLogger("runs_fleet_agent.ec2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the agent's options to ``parser``."""
    add_run_arguments(parser)
    parser.add_argument(
        "--wait-for-config",
        type=float,
        metavar="SECONDS",
        help="wait up to SECONDS for this instance's config, then exit 75 and stop (a "
        "warm-pool instance) or terminate (any other) the instance (default: a warm-pool "
        f"instance waits as long as it runs, any other {DEFAULT_COLD_WAIT_S:g})",
    )
    parser.add_argument(
        "--ssm-prefix",
        default=os.environ.get(PREFIX_SETTING) or DEFAULT_PREFIX,
        help=f"where the configs are in Parameter Store (default: ${PREFIX_SETTING} "
        f"or {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--no-terminate",
        action="store_true",
        help="leave this instance running when done (no terminate after the job, no stop or "
        "terminate when no config came): to look at an instance by hand",
    )
    parser.add_argument(
        "--log-group",
        default=os.environ.get(logship.LOG_GROUP_VAR) or None,
        metavar="NAME",
        help="also ship the agent's log and the runner's output, secrets masked, to this "
        "CloudWatch Logs group, stream <runner name or pool>/<instance id> (default: "
        f"${logship.LOG_GROUP_VAR}; unset: nothing is shipped)",
    )
    parser.add_argument("--poll-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--report-attempts", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--report-backoff", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--report-timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--aws-timeout", type=float, default=10.0, help=argparse.SUPPRESS)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with :func:`add_arguments`'s options and :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="runs-fleet ec2 agent", description="Run this EC2 instance's one GitHub Actions job."
    )
    add_arguments(parser)
    return main(parser.parse_args(argv))


def main(args: argparse.Namespace) -> int:
    """Identify this instance, get its config, run its job, end the instance; the exit
    code (see the module docstring)."""
    configure_logging()
    stop = StopRequest()
    with handling_stop_signals(stop):
        try:
            imds = Imds.from_env(os.environ)
            instance_id = os.environ.get(INSTANCE_ID_VAR) or _instance_id(imds)
            region = _region(imds)
        except (ImdsError, ValueError) as exc:
            _log.error("cannot tell which instance this is: %s", exc)
            return EXIT_BAD_CONFIG
        caller = AwsCaller(region=region, timeout_s=args.aws_timeout, max_attempts=4)
        try:
            identity = identify(instance_id, os.environ, imds, caller)
            code = _serve(args, identity, caller, stop)
        finally:
            caller.close()
    return code


@attrs.frozen
class Identity:
    """Which runner this instance is: its id, and its runner name and warm pool when its
    tags say so."""

    instance_id: str
    runner_name: str | None = None
    pool: str | None = None

    @property
    def in_pool(self) -> bool:
        """A warm-pool member that has no job yet (it gets a runner name with a job)."""
        return self.pool is not None and self.runner_name is None

    @property
    def config_ids(self) -> tuple[RunnerId, ...]:
        """Where its config may be: under the instance id (a claimed pool instance),
        then under the runner name (a cold start)."""
        ids = [RunnerId(self.instance_id)]
        if self.runner_name:
            ids.append(RunnerId(self.runner_name))
        return tuple(ids)


def identify(instance_id: str, env: Mapping[str, str], imds: Imds, caller: AwsCaller) -> Identity:
    """The identity of ``instance_id``: the runner name from ``$RUNS_FLEET_RUNNER_NAME``
    or the instance's tags, which come from the metadata or, when it cannot give them,
    from EC2 (DescribeTags). Tags that cannot be read leave a bare instance id."""
    name = env.get(RUNNER_NAME_VAR)
    if name:
        return Identity(instance_id, runner_name=name)
    tags = _tags_from_imds(imds)
    if tags is None:
        tags = _tags_from_ec2(caller, instance_id)
    return Identity(
        instance_id, runner_name=tags.get(RUNNER_NAME_TAG) or None, pool=tags.get(POOL_TAG) or None
    )


def _tags_from_imds(imds: Imds) -> dict[str, str] | None:
    try:
        keys = imds.tag_keys()
        if keys is None:
            _log.info("instance tags are not in the metadata: asking EC2 for them")
            return None
        tags = {key: imds.tag(key) for key in (RUNNER_NAME_TAG, POOL_TAG) if key in keys}
    except ImdsError as exc:
        _log.info("no instance tags from the metadata (%s): asking EC2 for them", exc)
        return None
    return {key: value for key, value in tags.items() if value is not None}


def _tags_from_ec2(caller: AwsCaller, instance_id: str) -> dict[str, str]:
    filters = [
        {"Name": "resource-id", "Values": [instance_id]},
        {"Name": "key", "Values": [RUNNER_NAME_TAG, POOL_TAG]},
    ]
    try:
        answer = _wait(caller.call("ec2", "describe_tags", Filters=filters))
    except AdapterError as exc:
        _log.warning("cannot read this instance's tags (%s): looking by instance id only", exc)
        return {}
    return {str(tag["Key"]): str(tag["Value"]) for tag in answer.get("Tags", [])}


def _instance_id(imds: Imds) -> str:
    try:
        return imds.instance_id()
    except ImdsError as exc:
        raise ImdsError(f"{exc}; off EC2 set {INSTANCE_ID_VAR}") from None


def _region(imds: Imds) -> str:
    """boto3's own region (``AWS_REGION``, its config file), else the instance's."""
    import boto3.session

    region: str | None = boto3.session.Session().region_name
    if region:
        return region
    try:
        return imds.region()
    except ImdsError as exc:
        raise ImdsError(f"{exc}; or set AWS_REGION") from None


def _serve(
    args: argparse.Namespace, identity: Identity, caller: AwsCaller, stop: StopRequest
) -> int:
    """From the config to the end of the instance, the logs shipped until the instance
    is told to end when ``--log-group`` names a group."""
    with logship.shipping_logs(
        caller, args.log_group, runner_name=identity.runner_name, instance_id=identity.instance_id
    ) as shipper:
        code, operation = _take_job(args, identity, caller, stop, shipper)
    if operation is None:
        return code
    return _end(args, caller, identity, code, operation)


def _take_job(
    args: argparse.Namespace,
    identity: Identity,
    caller: AwsCaller,
    stop: StopRequest,
    shipper: logship.CloudWatchLogShipper | None,
) -> tuple[int, str | None]:
    """Wait for the config and run its job: the exit code, and what becomes of the
    instance (``None``: whoever stopped the agent, a shutdown, decides)."""
    try:
        store = SsmConfigStore(caller, prefix=args.ssm_prefix)
    except ValueError as exc:
        _log.error("%s", exc)
        return EXIT_BAD_CONFIG, TERMINATE
    wait_s = args.wait_for_config
    if wait_s is None:
        wait_s = DEFAULT_POOL_WAIT_S if identity.in_pool else DEFAULT_COLD_WAIT_S
    _log.info(
        "instance %s (runner %s, pool %s) looks for its config under %s/{%s} for up to %gs",
        identity.instance_id,
        identity.runner_name or "not named yet",
        identity.pool or "none",
        store.prefix,
        ",".join(identity.config_ids),
        wait_s,
    )
    found = wait_for_config(store, _usable(store, identity), wait_s, args.poll_interval, stop)
    if isinstance(found, int):
        if stop.requested:
            return found, None
        pool_wait_over = found == EXIT_NO_CONFIG_YET and identity.in_pool
        return found, STOP if pool_wait_over else TERMINATE
    logship.hide_secrets_of(shipper, found)
    code = run_job(
        found,
        runner_dir=args.runner_dir,
        max_runtime_s=args.max_runtime,
        grace_s=args.grace,
        stop=stop,
        reporter=_reporter(args, found, caller),
        setup=setup_values(args),
        output=shipper,
    )
    return code, TERMINATE


def _usable(store: SsmConfigStore, identity: Identity) -> list[RunnerId]:
    """The ids of :attr:`Identity.config_ids` that can name a parameter (a runner name tag
    set by hand may not)."""
    usable = []
    for runner_id in identity.config_ids:
        try:
            store.parameter_name(runner_id)
        except ValueError as exc:
            _log.warning("not looking for a config under %r: %s", runner_id, exc)
        else:
            usable.append(runner_id)
    return usable


def wait_for_config(
    store: SsmConfigStore,
    runner_ids: Sequence[RunnerId],
    wait_s: float,
    poll_s: float,
    stop: StopRequest,
) -> RunnerConfig | int:
    """The first config found under ``runner_ids`` within ``wait_s`` (its parameter
    deleted right away: it holds a secret that GitHub accepts once), or the exit code:
    75 when none came, 78 when one cannot be read, 128 + signal when stopped."""
    deadline = time.monotonic() + wait_s
    while True:
        for runner_id in runner_ids:
            try:
                config = _wait(store.get(runner_id))
            except AdapterError as exc:
                if exc.retryable:
                    _log.warning("cannot read the config yet: %s", exc)
                    continue
                _log.error("cannot read the config: %s", exc)
                if exc.__cause__ is None:  # not an AWS error: a parameter that is no config
                    _delete(store, runner_id)
                return EXIT_BAD_CONFIG
            if config is not None:
                _log.info("found the config of job %s under %s", config.job_id, runner_id)
                _delete(store, runner_id)
                return config
        if stop.signum is not None:
            _log.info("stopped while waiting for a config")
            return signal_exit_code(stop.signum)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _log.error("no config for this instance within %gs", wait_s)
            return EXIT_NO_CONFIG_YET
        stop.sleep(min(poll_s, remaining))


def _delete(store: SsmConfigStore, runner_id: RunnerId) -> None:
    try:
        _wait(store.delete(runner_id))
    except AdapterError as exc:
        _log.warning("cannot delete the config parameter of %s: %s", runner_id, exc)


def _end(
    args: argparse.Namespace, caller: AwsCaller, identity: Identity, code: int, operation: str
) -> int:
    """Stop or terminate this instance (``operation``) unless ``--no-terminate``; return
    ``code``, whether EC2 took the request or not (a failure is logged)."""
    verb = operation.removesuffix("_instances")
    if args.no_terminate:
        _log.info("--no-terminate: leaving instance %s running", identity.instance_id)
        return code
    try:
        _wait(caller.call("ec2", operation, InstanceIds=[identity.instance_id]))
    except AdapterError as exc:
        permission = "ec2:" + operation.title().replace("_", "")
        _log.error("cannot %s this instance (it needs %s on itself): %s", verb, permission, exc)
        return code
    _log.info("asked EC2 to %s instance %s", verb, identity.instance_id)
    return code


def _reporter(
    args: argparse.Namespace, config: RunnerConfig, caller: AwsCaller
) -> ReportSender | None:
    """To the config's ``report_queue_url`` when it names one, else to its ``report_url``."""
    queue_url = config.settings.get("report_queue_url")
    if not queue_url:
        return http_reporter(
            config,
            attempts=args.report_attempts,
            backoff_s=args.report_backoff,
            timeout_s=args.report_timeout,
        )
    token = config.settings.get("report_token", "")
    return QueueReporter(
        caller, queue_url, token, job_id=config.job_id, runner_name=config.runner_name
    )


def _wait(awaitable: Coroutine[Any, Any, T]) -> T:
    """Run one AWS call of the async adapters to its end from this synchronous program."""
    return asyncio.run(awaitable)
