"""Hook implementations of the ``ec2`` plugin: EC2 mode's adapters, settings and commands.

This module is what the ``runs_fleet`` entry point names. It imports neither boto3 nor
the adapters: loading the plugin costs nothing until a deployment asks for an EC2
adapter. All adapters of one deployment share one AWS caller (clients, thread pool).
"""

from __future__ import annotations

from runs_fleet_core.plugins import (
    AdapterContext,
    AdapterRegistry,
    SettingsRegistry,
    hookimpl,
)
from runs_fleet_core.ports import ConfigStore, Metrics, StateStore
from runs_fleet_core.settings import Setting


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

    caller = AwsCaller(timeout_s=float(context.settings.get(TIMEOUT, 30.0)))
    sink = cloudwatch.from_context(context, caller, PrometheusMetrics(), owns_caller=True)
    caller.metrics = sink
    return sink


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    """Offer the DynamoDB state store, the SSM config store and the CloudWatch sink."""
    registry.add_state_store("dynamodb", _state)
    registry.add_config_store("ssm", _configs)
    registry.add_metrics("cloudwatch", _metrics)


def settings() -> tuple[Setting, ...]:
    """Every setting the EC2 adapters read (their modules import boto3 only lazily)."""
    from runs_fleet_ec2 import cloudwatch, dynamodb, ssm

    return (*dynamodb.SETTINGS, *ssm.SETTINGS, *cloudwatch.SETTINGS)


@hookimpl
def runs_fleet_register_settings(registry: SettingsRegistry) -> None:
    """Declare the EC2 mode settings besides the core's (subnets, security group …)."""
    for setting in settings():
        registry.add(setting)
