"""Hook implementations of the ``sqs`` plugin: the job queue on Amazon SQS.

This module is what the ``runs_fleet`` entry point names. It imports neither boto3 nor
the adapter: loading the plugin costs nothing until a deployment asks for the ``sqs``
queue, and a configuration mistake (no queue URL) is reported before any AWS client is
built.
"""

from __future__ import annotations

from runs_fleet_core.errors import ConfigError
from runs_fleet_core.plugins import AdapterContext, AdapterRegistry, SettingsRegistry, hookimpl
from runs_fleet_core.ports import Queue
from runs_fleet_core.settings import Kind, Setting

NAME = "sqs"
QUEUE_URL = "RUNS_FLEET_QUEUE_URL"
"""Core setting (required in ec2 mode): the job queue's URL."""
MAX_ATTEMPTS = "RUNS_FLEET_MAX_ATTEMPTS"
"""Core setting: deliveries of a message before it is dead-lettered."""
AWS_TIMEOUT = "RUNS_FLEET_AWS_TIMEOUT_S"
"""Declared by the ``aws`` plugin: the deadline of one AWS call."""
DLQ_URL = "RUNS_FLEET_QUEUE_DLQ_URL"
VISIBILITY_TIMEOUT = "RUNS_FLEET_SQS_VISIBILITY_TIMEOUT_S"
MAX_HOLD = "RUNS_FLEET_SQS_MAX_HOLD_S"

DEFAULT_VISIBILITY_TIMEOUT_S = 60
DEFAULT_MAX_HOLD_S = 900

SETTINGS = (
    Setting(
        name=DLQ_URL,
        help="URL of the job queue's dead-letter queue (default: the queue named by "
        "the job queue's RedrivePolicy)",
    ),
    Setting(
        name=VISIBILITY_TIMEOUT,
        help="whole seconds a received job message stays hidden without a heartbeat: "
        "how soon another dispatcher takes a job over after this one dies (extended "
        "every half of it while the message is being worked on)",
        kind=Kind.INT,
        default=DEFAULT_VISIBILITY_TIMEOUT_S,
        minimum=2,
    ),
    Setting(
        name=MAX_HOLD,
        help="whole seconds a dispatcher may keep a received job message hidden by "
        "extending its visibility; after that it is delivered again even if the "
        "dispatcher is still busy, so a hung dispatch cannot keep a job "
        "(at least the visibility timeout, at most 43200)",
        kind=Kind.INT,
        default=DEFAULT_MAX_HOLD_S,
        minimum=2,
    ),
)


def queue_url(context: AdapterContext) -> str:
    """The configured job queue URL; ``ConfigError`` saying how to set it when it is
    missing or is a name or ARN rather than a URL."""
    url = context.settings.get(QUEUE_URL)
    if not url:
        raise ConfigError(
            [
                f"{QUEUE_URL} is not set: the sqs queue needs the URL of an SQS queue; "
                f"set {QUEUE_URL}=https://sqs.<region>.amazonaws.com/<account>/<name>.fifo "
                "(or queue_url in the file named by RUNS_FLEET_CONFIG_FILE)"
            ]
        )
    url = str(url)
    if not url.startswith(("https://", "http://")):
        raise ConfigError(
            [
                f"{QUEUE_URL}={url!r} is not a queue URL: give the URL "
                "(https://sqs.<region>.amazonaws.com/<account>/<name>), not the "
                "queue's name or ARN"
            ]
        )
    return url


def _queue(context: AdapterContext) -> Queue:
    queue_url(context)  # a missing URL fails here, before a client exists
    from runs_fleet_aws.calls import AwsCaller
    from runs_fleet_sqs.queue import from_context

    caller = AwsCaller(
        metrics=context.metrics, timeout_s=context.settings.get(AWS_TIMEOUT, 30.0)
    ).require_region()
    try:
        return from_context(context, caller, owns_caller=True)
    except BaseException:
        caller.close()
        raise


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    """Offer the SQS queue as ``sqs``."""
    registry.add_queue(NAME, _queue)


@hookimpl
def runs_fleet_register_settings(registry: SettingsRegistry) -> None:
    """Declare the settings the SQS queue reads besides the core's
    ``RUNS_FLEET_QUEUE_URL`` and ``RUNS_FLEET_MAX_ATTEMPTS``."""
    for setting in SETTINGS:
        registry.add(setting)
