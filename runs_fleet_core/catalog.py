"""The core's settings and the adapters each deployment mode wires by default.

This is the one table that says what ``RUNS_FLEET_MODE`` means. The adapters named here
come from plugins; a mode whose plugins are not installed is reported with the extra to
install.
"""

from __future__ import annotations

import attrs

from runs_fleet_core.settings import Kind, Setting
from runs_fleet_core.usecases.ephemeral import SETTINGS as EPHEMERAL_POOL_SETTINGS

MODES = ("local", "ec2", "k8s", "memory")
SERVING_MODES = frozenset({"local", "ec2", "k8s"})


@attrs.frozen(kw_only=True)
class ModeWiring:
    """Default adapter names, per port, for one mode (each overridable by a setting).

    ``extra`` names the ``runs-fleet[extra]`` that installs the mode's plugins ("" when
    they ship with runs-fleet itself)."""

    provider: str
    queue: str
    state_store: str
    config_store: str
    metrics: str
    github: str
    extra: str


MODE_WIRING: dict[str, ModeWiring] = {
    "local": ModeWiring(
        provider="local",
        queue="valkey",
        state_store="valkey",
        config_store="local",
        metrics="prometheus",
        github="github",
        extra="local",
    ),
    "ec2": ModeWiring(
        provider="ec2",
        queue="sqs",
        state_store="dynamodb",
        config_store="ssm",
        metrics="cloudwatch",
        github="github",
        extra="ec2",
    ),
    "k8s": ModeWiring(
        provider="k8s",
        queue="valkey",
        state_store="configmap",
        config_store="k8s",
        metrics="prometheus",
        github="github",
        extra="k8s",
    ),
    "memory": ModeWiring(
        provider="memory",
        queue="memory",
        state_store="memory",
        config_store="memory",
        metrics="memory",
        github="memory",
        extra="",
    ),
}

_SERVING = SERVING_MODES


def _s(name: str, help_text: str, **kwargs: object) -> Setting:
    return Setting(name=f"RUNS_FLEET_{name}", help=help_text, **kwargs)  # type: ignore[arg-type]


CORE_SETTINGS: tuple[Setting, ...] = (
    _s(
        "MODE",
        "deployment mode: local (embedded default), ec2, k8s; memory keeps "
        "everything in process memory, for trying things out",
        default="local",
        choices=MODES,
    ),
    _s(
        "BACKENDS",
        "compute backends this deployment enables for backend= labels (default: the mode's own)",
        kind=Kind.LIST,
        default=[],
    ),
    _s(
        "DEFAULT_BACKEND",
        "backend for jobs whose label has no backend= (default: the first of RUNS_FLEET_BACKENDS)",
    ),
    _s("QUEUE_ADAPTER", "queue adapter name, overriding the mode's default"),
    _s("STATE_ADAPTER", "state store adapter name, overriding the mode's default"),
    _s(
        "STATE_BACKEND",
        "k8s mode: where job records, pool configs and locks live: configmap (ConfigMaps "
        "and Leases, the default) or valkey (the queue's Valkey)",
        choices=("configmap", "valkey"),
    ),
    _s("CONFIG_ADAPTER", "runner config store adapter name, overriding the mode's default"),
    _s("METRICS_ADAPTER", "metrics sink name, overriding the mode's default"),
    _s("GITHUB_ADAPTER", "GitHub client name, overriding the mode's default"),
    _s(
        "STATE_DIR",
        "where local mode keeps its data (default: the per-user data dir)",
        kind=Kind.PATH,
    ),
    _s(
        "VALKEY_URL",
        "Valkey URL, e.g. redis://valkey:6379/0 (local mode starts an embedded server when unset)",
        required_in=frozenset({"k8s"}),
        secret=True,
    ),
    _s("QUEUE_URL", "URL of the SQS FIFO job queue", required_in=frozenset({"ec2"})),
    _s(
        "TERMINATION_QUEUE_URL",
        "URL of the SQS queue runners send their start and finish reports to (EC2 mode); "
        "when set, runner configs name it instead of the server's report URL",
    ),
    _s(
        "PRIVATE_SUBNET_IDS",
        "subnets runners start in",
        kind=Kind.LIST,
        default=[],
        required_in=frozenset({"ec2"}),
    ),
    _s("SECURITY_GROUP_ID", "security group of the runners", required_in=frozenset({"ec2"})),
    _s("INSTANCE_PROFILE_ARN", "instance profile of the runners", required_in=frozenset({"ec2"})),
    _s(
        "RUNNER_DIR",
        "directory of an unpacked GitHub Actions runner (with run.sh) that local runners run",
        kind=Kind.PATH,
        required_in=frozenset({"local"}),
    ),
    _s(
        "AGENT_MAX_RUNTIME_S",
        "longest a runner may run one job before its agent stops it (default 6 hours)",
        kind=Kind.FLOAT,
        minimum=1,
    ),
    _s("KUBE_NAMESPACE", "namespace runner Jobs are created in", default="default"),
    _s("GITHUB_APP_ID", "the GitHub App's id", kind=Kind.INT, minimum=1, required_in=_SERVING),
    _s(
        "GITHUB_APP_PRIVATE_KEY",
        "the GitHub App's private key (PEM, or base64 of it); use "
        "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY_FILE to read it from a file",
        secret=True,
        required_in=_SERVING,
    ),
    _s(
        "GITHUB_WEBHOOK_SECRET",
        "the secret GitHub signs webhooks with; use "
        "RUNS_FLEET_GITHUB_WEBHOOK_SECRET_FILE to read it from a file",
        secret=True,
        required_in=_SERVING,
    ),
    _s(
        "GITHUB_API_URL",
        "GitHub API base URL (GitHub Enterprise Server: https://HOST/api/v3)",
        default="https://api.github.com",
    ),
    _s(
        "RUNNER_REGISTRATION",
        "how runners register with GitHub: jit (a just-in-time config that binds each "
        "runner to its name and labels, the default) or token, for a GitHub without JIT "
        "configs (an older GitHub Enterprise Server). token is weaker: each runner registers "
        "itself with config.sh, a one-hour registration token and --ephemeral, so any "
        "queued job whose labels it has may take it (runs-fleet's in_progress check then "
        "sees the mismatch and counts it), and the token could register other runners "
        "until it expires",
        default="jit",
        choices=("jit", "token"),
    ),
    _s(
        "DEFAULT_DISK_GIB",
        "root disk size when a label has no disk=",
        kind=Kind.INT,
        default=40,
        minimum=1,
    ),
    _s(
        "PRESETS",
        "operator-defined runner= presets: name -> label segments, e.g. "
        '{"big-arm": "cpu=16/ram=64/arch=arm64"}',
        kind=Kind.MAPPING,
        default={},
    ),
    _s(
        "MAX_ATTEMPTS",
        "deliveries of a job message before it is dead-lettered",
        kind=Kind.INT,
        default=3,
        minimum=1,
    ),
    _s(
        "CLAIM_TTL_S",
        "seconds a dispatcher's claim on a job lasts before another may take over",
        kind=Kind.FLOAT,
        default=120.0,
        minimum=5,
    ),
    _s("LOG_LEVEL", "log level", default="info", choices=("debug", "info", "warning", "error")),
    _s("LISTEN", "HOST:PORT the server listens on", default="127.0.0.1:8080"),
    _s(
        "PUBLIC_URL",
        "URL at which runners reach this server, e.g. https://runs-fleet.example.com "
        "(required by the server in ec2 and k8s modes; default: http://<listen address>)",
    ),
    _s(
        "ADMIN_TOKEN",
        "bearer token for /api/jobs and /api/pools (unset: loopback clients only)",
        secret=True,
    ),
    _s(
        "WORKER_CONCURRENCY",
        "job messages one worker dispatches at the same time",
        kind=Kind.INT,
        default=8,
        minimum=1,
    ),
    _s(
        "SCHEDULER_INTERVAL_S",
        "seconds between two rounds of pool reconciliation and housekeeping",
        kind=Kind.FLOAT,
        default=60.0,
        minimum=1,
    ),
    _s(
        "SCHEDULER_LEASE_S",
        "seconds the scheduler leader's lease lasts: when the leader dies, another replica "
        "takes over within this time (keep it several times RUNS_FLEET_SCHEDULER_INTERVAL_S)",
        kind=Kind.FLOAT,
        default=180.0,
        minimum=5,
    ),
    _s(
        "HEAL_AFTER_S",
        "seconds an unfinished job may go without a status change before the scheduler "
        "asks GitHub about it (a lost webhook); the answer settles it as the webhook would have",
        kind=Kind.FLOAT,
        default=600.0,
        minimum=10,
    ),
    _s(
        "RELAUNCH_AFTER_S",
        "seconds a job may wait for a runner that GitHub never saw take it before its runner "
        "is removed and the job dispatched again as its next attempt",
        kind=Kind.FLOAT,
        default=900.0,
        minimum=10,
    ),
    _s(
        "ORPHAN_GRACE_S",
        "seconds housekeeping leaves a runner alone before it may remove it as an orphan "
        "(its job finished, unknown or served by another runner): counted from the runner's "
        "launch, and for a runner GitHub passed over (it gave the runner's job to another "
        "runner and this one took no other job) from when that job started",
        kind=Kind.FLOAT,
        default=600.0,
        minimum=1,
    ),
    _s(
        "DISCOVER_AFTER_S",
        "seconds a runs-fleet= job may sit queued on GitHub without its queued webhook "
        "before the scheduler picks it up itself, from the queued jobs GitHub lists for the "
        "repositories served in the last day (0: never look)",
        kind=Kind.FLOAT,
        default=120.0,
        minimum=0,
    ),
    _s(
        "RERUN_LOST_JOBS",
        "re-run through GitHub a job that failed because its runner vanished while running "
        "it (spot reclaim, instance or pod lost) while the run's attempt is at most this: 0 "
        "never, 1 once; genuine failures are never re-run (the App needs Actions: write)",
        kind=Kind.INT,
        default=0,
        minimum=0,
    ),
    _s(
        "SHUTDOWN_DELAY_S",
        "seconds the server keeps serving, with /ready answering 503, after SIGTERM "
        "before it stops accepting connections (lets a load balancer stop routing to it)",
        kind=Kind.FLOAT,
        default=0.0,
        minimum=0,
    ),
    _s(
        "WEBHOOK_BAD_SIGNATURE_LIMIT",
        "webhook requests with a missing or wrong signature one client address may send "
        "within RUNS_FLEET_WEBHOOK_BAD_SIGNATURE_WINDOW_S before its further badly signed "
        "ones are answered 429 (correctly signed ones never are); 0 turns the limit off",
        kind=Kind.INT,
        default=20,
        minimum=0,
    ),
    _s(
        "WEBHOOK_BAD_SIGNATURE_WINDOW_S",
        "whole seconds over which RUNS_FLEET_WEBHOOK_BAD_SIGNATURE_LIMIT counts a client "
        "address's badly signed webhook requests",
        kind=Kind.INT,
        default=60,
        minimum=1,
    ),
    *EPHEMERAL_POOL_SETTINGS,
)
