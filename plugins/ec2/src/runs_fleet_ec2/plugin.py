"""Hook implementations of the ``ec2`` plugin: EC2 mode's adapters, settings and commands.

This module is what the ``runs_fleet`` entry point names. It imports neither boto3 nor
the adapters: loading the plugin costs nothing until a deployment asks for an EC2
adapter. All adapters of one deployment share one AWS caller (clients, thread pool).
"""

from __future__ import annotations

import argparse

from runs_fleet_core.plugins import (
    AdapterContext,
    AdapterRegistry,
    Command,
    CommandRegistry,
    SettingsRegistry,
    hookimpl,
)
from runs_fleet_core.ports import (
    ConfigStore,
    Metrics,
    PoolProvider,
    Provider,
    RunnerEvents,
    StateStore,
)
from runs_fleet_core.settings import Setting


def _provider(context: AdapterContext) -> Provider:
    from runs_fleet_aws.calls import shared_caller
    from runs_fleet_ec2 import provider

    return provider.from_context(context, shared_caller(context))


def _pool_provider(context: AdapterContext) -> PoolProvider:
    from runs_fleet_aws.calls import shared_caller
    from runs_fleet_ec2 import pool

    return pool.from_context(context, shared_caller(context))


def _runner_events(context: AdapterContext) -> RunnerEvents:
    from runs_fleet_aws.calls import shared_caller
    from runs_fleet_ec2 import events

    return events.from_context(context, shared_caller(context))


def _state(context: AdapterContext) -> StateStore:
    from runs_fleet_aws.calls import shared_caller
    from runs_fleet_ec2 import dynamodb

    return dynamodb.from_context(context, shared_caller(context))


def _configs(context: AdapterContext) -> ConfigStore:
    from runs_fleet_aws.calls import shared_caller
    from runs_fleet_ec2 import ssm

    return ssm.from_context(context, shared_caller(context))


def _metrics(context: AdapterContext) -> Metrics:
    """CloudWatch besides Prometheus: every metric also reaches the Prometheus sink, so
    ``/metrics`` keeps working. The sink has its own caller: it flushes last, at
    shutdown, after the other adapters have closed."""
    from runs_fleet_aws.calls import AwsCaller
    from runs_fleet_aws.plugin import TIMEOUT
    from runs_fleet_ec2 import cloudwatch
    from runs_fleet_prometheus.metrics import PrometheusMetrics

    caller = AwsCaller(timeout_s=float(context.settings.get(TIMEOUT, 30.0))).require_region()
    sink = cloudwatch.from_context(context, caller, PrometheusMetrics(), owns_caller=True)
    caller.metrics = sink
    return sink


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    """Offer the EC2 Fleet provider and its warm pools, its runner event feed, the
    DynamoDB state store, the SSM config store and the CloudWatch sink."""
    registry.add_provider("ec2", _provider)
    registry.add_pool_provider("ec2", _pool_provider)
    registry.add_runner_events("ec2", _runner_events)
    registry.add_state_store("dynamodb", _state)
    registry.add_config_store("ssm", _configs)
    registry.add_metrics("cloudwatch", _metrics)


def settings() -> tuple[Setting, ...]:
    """Every setting the EC2 adapters read (their modules import boto3 only lazily)."""
    from runs_fleet_ec2 import breaker, cloudwatch, dynamodb, events, fleet, pool, provider, ssm

    return (
        *fleet.SETTINGS,
        *pool.SETTINGS,
        *events.SETTINGS,
        *provider.SETTINGS,
        *breaker.SETTINGS,
        *dynamodb.SETTINGS,
        *ssm.SETTINGS,
        *cloudwatch.SETTINGS,
    )


@hookimpl
def runs_fleet_register_settings(registry: SettingsRegistry) -> None:
    """Declare the EC2 mode settings besides the core's (subnets, security group …)."""
    for setting in settings():
        registry.add(setting)


def _configure_ec2(parser: argparse.ArgumentParser) -> None:
    from runs_fleet_ec2 import agent, render

    render.configure(parser)  # adds the sub-command parsers and "render"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    agent.add_arguments(
        sub.add_parser(
            "agent",
            help="run this instance's one job: config from SSM, the runner, reports, "
            "then terminate the instance (runs on the runner instance, at every boot)",
        )
    )


def _run_ec2(args: argparse.Namespace) -> int:
    from runs_fleet_ec2 import agent, render

    if args.ec2_command == "agent":
        return agent.main(args)
    return render.main(args)


def _configure_aws(parser: argparse.ArgumentParser) -> None:
    from runs_fleet_ec2 import resources

    resources.configure(parser)


def _run_aws(args: argparse.Namespace) -> int:
    from runs_fleet_ec2 import resources

    return resources.main(args)


@hookimpl
def runs_fleet_register_commands(registry: CommandRegistry) -> None:
    """``runs-fleet ec2 render "<runs-on>"``: the CreateFleet request of a label;
    ``runs-fleet ec2 agent``: the runner side, on the instance;
    ``runs-fleet aws create-resources``: the queues and tables EC2 mode uses."""
    registry.add(
        Command(
            name="aws",
            help="AWS tools: 'create-resources' creates the SQS queues and DynamoDB "
            "tables of EC2 mode (idempotent)",
            configure=_configure_aws,
            run=_run_aws,
        )
    )
    registry.add(
        Command(
            name="ec2",
            help="EC2 mode tools: 'render' prints the CreateFleet request of a runs-on "
            "label, without calling AWS; 'agent' runs one job on a runner instance",
            configure=_configure_ec2,
            run=_run_ec2,
        )
    )
