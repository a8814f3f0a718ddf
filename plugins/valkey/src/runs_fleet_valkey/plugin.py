"""Hook implementations of the ``valkey`` plugin: the queue and the state store.

This module is what the ``runs_fleet`` entry point names. It imports neither redis-py
nor the adapters: loading the plugin costs nothing until a deployment actually asks for
a Valkey adapter, and a missing client library surfaces as a clear plugin error then.
"""

from __future__ import annotations

from runs_fleet_core.errors import ConfigError
from runs_fleet_core.plugins import AdapterContext, AdapterRegistry, SettingsRegistry, hookimpl
from runs_fleet_core.ports import Queue, StateStore
from runs_fleet_core.settings import Kind, Setting

NAME = "valkey"
URL_SETTING = "RUNS_FLEET_VALKEY_URL"
QUEUE_NAME = "RUNS_FLEET_VALKEY_QUEUE_NAME"
VISIBILITY_TIMEOUT = "RUNS_FLEET_VALKEY_VISIBILITY_TIMEOUT_S"
QUEUE_MAX_LENGTH = "RUNS_FLEET_VALKEY_QUEUE_MAX_LENGTH"
KEY_PREFIX = "RUNS_FLEET_VALKEY_KEY_PREFIX"
MAX_HOLD = "RUNS_FLEET_VALKEY_MAX_HOLD_S"

SETTINGS = (
    Setting(
        name=QUEUE_NAME,
        help="Valkey stream of the job queue (its dead letters go to <name>:dead)",
        default="runs-fleet:jobs",
    ),
    Setting(
        name=VISIBILITY_TIMEOUT,
        help="seconds after which the job message of a dispatcher that died is taken over "
        "by another; a live dispatcher renews its messages every third of it",
        kind=Kind.FLOAT,
        default=60.0,
        minimum=1,
    ),
    Setting(
        name=MAX_HOLD,
        help="seconds a dispatcher may keep renewing one job message before it is let go "
        "for another to take over (a hung dispatch; at least the visibility timeout)",
        kind=Kind.FLOAT,
        default=900.0,
        minimum=1,
    ),
    Setting(
        name=QUEUE_MAX_LENGTH,
        help="cap on queued plus in-flight messages (XADD MAXLEN ~); beyond it the "
        "oldest are trimmed, so keep it far above any backlog",
        kind=Kind.INT,
        default=100_000,
        minimum=1000,
    ),
    Setting(
        name=KEY_PREFIX,
        help="prefix of every state key (jobs, runners, leases, pools) in Valkey",
        default="runs-fleet",
    ),
)


def valkey_url(context: AdapterContext) -> str:
    """The configured Valkey URL; ``ConfigError`` saying how to set it when it is not."""
    url = context.settings.get(URL_SETTING)
    if not url:
        raise ConfigError(
            [
                f"{URL_SETTING} is not set: the valkey queue and state store need a "
                f"server; set {URL_SETTING}=redis://HOST:6379/0 (or put the URL in a "
                f"file named by {URL_SETTING}_FILE)"
            ]
        )
    return str(url)


def _queue(context: AdapterContext) -> Queue:
    from runs_fleet_valkey.queue import ValkeyQueue

    settings = context.settings
    return ValkeyQueue.from_url(
        valkey_url(context),
        name=settings.get(QUEUE_NAME, "runs-fleet:jobs"),
        max_attempts=settings.get("RUNS_FLEET_MAX_ATTEMPTS", 3),
        visibility_timeout_s=settings.get(VISIBILITY_TIMEOUT, 60.0),
        max_hold_s=settings.get(MAX_HOLD, 900.0),
        max_length=settings.get(QUEUE_MAX_LENGTH, 100_000),
    )


def _state(context: AdapterContext) -> StateStore:
    from runs_fleet_valkey.state import ValkeyStateStore

    return ValkeyStateStore.from_url(
        valkey_url(context), prefix=context.settings.get(KEY_PREFIX, "runs-fleet")
    )


@hookimpl
def runs_fleet_register_adapters(registry: AdapterRegistry) -> None:
    """Offer the Valkey Streams queue and the Valkey state store, both as ``valkey``."""
    registry.add_queue(NAME, _queue)
    registry.add_state_store(NAME, _state)


@hookimpl
def runs_fleet_register_settings(registry: SettingsRegistry) -> None:
    """Declare the settings the Valkey adapters read besides the core's
    ``RUNS_FLEET_VALKEY_URL`` and ``RUNS_FLEET_MAX_ATTEMPTS``."""
    for setting in SETTINGS:
        registry.add(setting)
