"""The Terraform module against the code it deploys, parsed with python-hcl2 (offline).

No provider can be downloaded here, so ``terraform validate``/``plan`` do not run; these
tests check the shapes instead, taking the expected values from the code itself so that
the two cannot drift: the tables from ``runs_fleet_ec2.resources.TABLES``, the queues and
the EventBridge rule from what ``runs-fleet aws create-resources`` asks AWS for (recorded
by a fake caller), the IAM actions from the boto3 operations the plugins call.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

hcl2 = pytest.importorskip("hcl2")

REPO = Path(__file__).resolve().parents[2]
TF = REPO / "terraform"
EXAMPLES = TF / "examples"
PLUGINS = REPO / "plugins"
MODULE_FILES = {
    "versions.tf",
    "variables.tf",
    "outputs.tf",
    "sqs.tf",
    "dynamodb.tf",
    "eventbridge.tf",
    "launch_template.tf",
    "security_group.tf",
    "iam.tf",
    "logs.tf",
}

# ------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """hcl2's output without its quotes around strings and keys and its bookkeeping keys."""
    if isinstance(value, dict):
        return {
            _clean(key): _clean(item)
            for key, item in value.items()
            if key not in ("__is_block__", "__comments__")
        }
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


class Config:
    """The blocks of the .tf files of one directory, by kind."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.data: dict[tuple[str, str], dict[str, Any]] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.locals: dict[str, Any] = {}
        self.modules: dict[str, dict[str, Any]] = {}
        for path in sorted(directory.glob("*.tf")):
            with path.open() as handle:
                parsed = _clean(hcl2.load(handle))
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for block in parsed.get(kind, []):
                    for rtype, named in block.items():
                        for name, body in named.items():
                            target[(rtype, name)] = body
            for block in parsed.get("variable", []):
                self.variables.update(block)
            for block in parsed.get("output", []):
                self.outputs.update(block)
            for block in parsed.get("module", []):
                self.modules.update(block)
            for block in parsed.get("locals", []):
                self.locals.update(block)

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {name: body for (kind, name), body in self.resources.items() if kind == rtype}


@pytest.fixture(scope="module")
def module() -> Config:
    return Config(TF)


def _default(config: Config, variable: str) -> Any:
    return config.variables[variable]["default"]


def _substitute(config: Config, text: str) -> str:
    """``text`` with ``${var.x}`` / ``${local.x}`` replaced by defaults (one level)."""

    def value(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        if kind == "var":
            return str(_default(config, name))
        local = str(config.locals[name])
        if local.startswith("${coalesce("):  # coalesce(var.x, "fallback")
            fallback = re.search(r'"(.*)"\)\}$', local)
            assert fallback is not None, local
            return _substitute(config, fallback.group(1))
        return _substitute(config, local)

    return re.sub(r"\$\{(var|local)\.([a-z_0-9]+)\}", value, text)


def _tf_object_to_json(expression: str) -> Any:
    """The value of a literal ``jsonencode({...})`` written with HCL syntax."""
    inner = re.fullmatch(r"\$\{jsonencode\((.*)\)\}", expression, re.S)
    assert inner, expression
    text = re.sub(
        r'(?:"([^"]+)"|\b([A-Za-z_][\w-]*))\s*=\s*',
        lambda m: json.dumps(m.group(1) or m.group(2)) + ": ",
        inner.group(1),
    )
    text = re.sub(r",\s*([\]}])", r"\1", text)
    return json.loads(text)


# ------------------------------------------------------------------------------------------
# what `runs-fleet aws create-resources` asks AWS for
# ------------------------------------------------------------------------------------------


class _RecordingCaller:
    """A fake AwsCaller: tables and queues do not exist, are then created and ACTIVE."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.tables: dict[str, dict[str, Any]] = {}

    async def call(self, service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        from runs_fleet_core.errors import AdapterError

        self.calls.append((service, operation, params))
        if operation == "describe_table":
            table = self.tables.get(params["TableName"])
            if table is None:
                error = ClientError(
                    {"Error": {"Code": "ResourceNotFoundException"}}, "DescribeTable"
                )
                raise AdapterError("no table", retryable=False) from error
            return {"Table": table}
        if operation == "create_table":
            table = {**params, "TableStatus": "ACTIVE"}
            self.tables[params["TableName"]] = table
            return {}
        if operation == "describe_time_to_live":
            return {"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}
        if operation == "create_queue":
            return {"QueueUrl": f"https://sqs.test/123456789012/{params['QueueName']}"}
        if operation == "get_queue_attributes":
            name = params["QueueUrl"].rsplit("/", 1)[1]
            return {"Attributes": {"QueueArn": f"arn:aws:sqs:eu-west-1:123456789012:{name}"}}
        if operation == "put_rule":
            return {"RuleArn": f"arn:aws:events:eu-west-1:123456789012:rule/{params['Name']}"}
        return {}


class _Defaults:
    def get(self, name: str, default: Any = None) -> Any:
        return default


@pytest.fixture(scope="module")
def created() -> _RecordingCaller:
    from runs_fleet_ec2 import resources

    caller = _RecordingCaller()
    asyncio.run(
        resources.create_resources(
            _Defaults(),  # type: ignore[arg-type]
            caller,  # type: ignore[arg-type]
            queue_name=resources.DEFAULT_QUEUE_NAME,
            fifo=True,
        )
    )
    return caller


def _calls(caller: _RecordingCaller, operation: str) -> list[dict[str, Any]]:
    return [params for _, op, params in caller.calls if op == operation]


# ------------------------------------------------------------------------------------------
# files, formatting, variables, outputs
# ------------------------------------------------------------------------------------------


def _tf_dirs() -> list[Path]:
    return [TF, *sorted(p for p in EXAMPLES.iterdir() if p.is_dir())]


def test_module_and_examples_are_complete_and_parse() -> None:
    assert {p.name for p in TF.glob("*.tf")} >= MODULE_FILES
    assert (TF / "user_data.sh.tftpl").is_file()
    assert (TF / "README.md").is_file()
    for example in ("ecs-fargate", "eks-hybrid"):
        assert list((EXAMPLES / example).glob("*.tf")), example
    for directory in _tf_dirs():
        config = Config(directory)
        assert config.resources or config.modules, directory


def test_terraform_fmt() -> None:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("no terraform binary on PATH: formatting is checked where it is installed")
    done = subprocess.run(
        [binary, "fmt", "-check", "-recursive", "-diff", str(TF)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"terraform fmt would change:\n{done.stdout}"


@pytest.mark.parametrize("directory", _tf_dirs(), ids=lambda p: p.name)
def test_variables_have_description_and_type(directory: Path) -> None:
    config = Config(directory)
    assert config.variables, directory
    for name, body in config.variables.items():
        assert str(body.get("description", "")).strip(), f"variable {name} has no description"
        assert "type" in body, f"variable {name} has no type"
    for name, body in config.outputs.items():
        assert str(body.get("description", "")).strip(), f"output {name} has no description"


def test_identifiers_and_ranges_are_validated(module: Config) -> None:
    validated = {
        "name",
        "vpc_id",
        "private_subnet_ids",
        "ami_ids",
        "architectures",
        "launch_template_name",
        "root_device_name",
        "metadata_hop_limit",
        "runner_egress_cidr_blocks",
        "runner_egress_ipv6_cidr_blocks",
        "max_attempts",
        "ssm_prefix",
        "ssm_kms_key_arn",
        "dynamodb_kms_key_arn",
        "ebs_kms_key_arn",
        "eks_oidc_provider_arn",
        "kubernetes_namespace",
        "service_account_name",
        "cloudwatch_namespace",
        "runner_log_group",
    }
    for name in validated:
        rules = module.variables[name].get("validation", [])
        assert rules, f"variable {name} has no validation"
        for rule in rules:
            assert rule.get("condition") and rule.get("error_message"), name


def test_defaults_are_the_codes_defaults(module: Config) -> None:
    from runs_fleet_core.plugins import PluginManager
    from runs_fleet_core.wiring import setting_definitions

    settings = setting_definitions(PluginManager())
    assert _default(module, "max_attempts") == settings["RUNS_FLEET_MAX_ATTEMPTS"].default
    assert _default(module, "ssm_prefix") == settings["RUNS_FLEET_SSM_PREFIX"].default
    assert (
        _default(module, "root_device_name") == settings["RUNS_FLEET_EC2_ROOT_DEVICE_NAME"].default
    )
    assert (
        _default(module, "cloudwatch_namespace")
        == settings["RUNS_FLEET_CLOUDWATCH_NAMESPACE"].default
    )
    assert (
        _substitute(module, "${local.launch_template_name}")
        == settings["RUNS_FLEET_LAUNCH_TEMPLATE_NAME"].default
    )


def test_outputs_are_settings_and_cover_ec2_mode(module: Config) -> None:
    from runs_fleet_core.plugins import PluginManager
    from runs_fleet_core.wiring import setting_definitions

    settings = setting_definitions(PluginManager())
    named = {name for name in module.outputs if name.startswith("RUNS_FLEET_")}
    assert named <= set(settings), named - set(settings)
    required_ec2 = {name for name, s in settings.items() if "ec2" in (s.required_in or ())}
    decided_here = required_ec2 - {"RUNS_FLEET_GITHUB_APP_ID", "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY"}
    decided_here = {
        name for name in decided_here if "GITHUB" not in name and "PUBLIC_URL" not in name
    }
    assert decided_here <= named, decided_here - named
    wanted = {
        "RUNS_FLEET_QUEUE_URL",
        "RUNS_FLEET_QUEUE_DLQ_URL",
        "RUNS_FLEET_EVENTS_QUEUE_URL",
        "RUNS_FLEET_TERMINATION_QUEUE_URL",
        "RUNS_FLEET_JOBS_TABLE",
        "RUNS_FLEET_POOLS_TABLE",
        "RUNS_FLEET_LOCKS_TABLE",
        "RUNS_FLEET_CIRCUIT_BREAKER_TABLE",
        "RUNS_FLEET_PRIVATE_SUBNET_IDS",
        "RUNS_FLEET_SECURITY_GROUP_ID",
        "RUNS_FLEET_INSTANCE_PROFILE_ARN",
        "RUNS_FLEET_LAUNCH_TEMPLATE_NAME",
        "RUNS_FLEET_SSM_PREFIX",
    }
    assert wanted <= named, wanted - named
    # the environment map: every setting output, nothing that is not a setting, no secret
    environment = module.outputs["environment"]["value"]
    keys = set(re.findall(r"\b(RUNS_FLEET_[A-Z0-9_]+|AWS_REGION)\s*=", environment))
    assert named <= keys, named - keys
    assert keys - {"AWS_REGION"} <= set(settings)
    assert not {k for k in keys if k in settings and settings[k].secret}


def test_helm_values_use_the_charts_names(module: Config) -> None:
    values = module.outputs["helm_values"]["value"]
    assert isinstance(values, dict)
    expected = {
        "aws.region",
        "aws.privateSubnetIds",
        "aws.securityGroupId",
        "aws.instanceProfileArn",
        "aws.queueUrl",
        "aws.queueDlqUrl",
        "aws.eventsQueueUrl",
        "aws.terminationQueueUrl",
        "aws.jobsTable",
        "aws.poolsTable",
        "aws.locksTable",
        "aws.circuitBreakerTable",
        "aws.launchTemplateName",
    }
    assert expected <= set(values), expected - set(values)
    (irsa,) = [key for key in values if key.startswith("serviceAccount.annotations.eks")]
    assert "amazonaws" in irsa and irsa.endswith("com/role-arn")
    assert values[irsa] == "${aws_iam_role.orchestrator.arn}"
    chart_values = REPO / "charts" / "runs-fleet" / "values.yaml"
    if chart_values.is_file():
        import yaml

        chart = yaml.safe_load(chart_values.read_text())
        aws = chart.get("aws", {})
        missing = {key for key in expected if key.split(".", 1)[1] not in aws}
        assert not missing, f"helm_values keys the chart's values.yaml lacks: {missing}"


# ------------------------------------------------------------------------------------------
# SQS, DynamoDB, EventBridge
# ------------------------------------------------------------------------------------------


def _queue_by_name(module: Config) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        _substitute(module, body["name"]): (key, body)
        for key, body in module.of_type("aws_sqs_queue").items()
    }


def _resolve_number(module: Config, expression: str) -> int:
    text = expression.strip()
    text = re.sub(r"var\.([a-z_0-9]+)", lambda m: str(_default(module, m.group(1))), text)
    text = re.sub(r"local\.([a-z_0-9]+)", lambda m: str(module.locals[m.group(1)]), text)
    text = text.removeprefix("${").removesuffix("}")
    assert re.fullmatch(r"[0-9+\- ]+", text), expression
    return int(eval(text))


def test_queues_match_create_resources(module: Config, created: _RecordingCaller) -> None:
    queues = _queue_by_name(module)
    asked = {
        params["QueueName"]: params["Attributes"] for params in _calls(created, "create_queue")
    }
    assert set(asked) == set(queues), (set(asked), set(queues))
    for name, attributes in asked.items():
        _, body = queues[name]
        fifo = attributes.get("FifoQueue") == "true"
        assert bool(body.get("fifo_queue", False)) is fifo, name
        if fifo:
            assert name.endswith(".fifo")
            assert body.get("content_based_deduplication") is False, name
        if "MessageRetentionPeriod" in attributes:
            retention = _resolve_number(module, str(body["message_retention_seconds"]))
            assert retention == int(attributes["MessageRetentionPeriod"]), name
        if "VisibilityTimeout" in attributes:
            timeout = _resolve_number(module, str(body["visibility_timeout_seconds"]))
            assert timeout == int(attributes["VisibilityTimeout"]), name
        if "RedrivePolicy" in attributes:
            wanted = json.loads(attributes["RedrivePolicy"])
            redrive = str(body["redrive_policy"])
            target = re.search(r"deadLetterTargetArn\s*=\s*aws_sqs_queue\.(\w+)\.arn", redrive)
            count = re.search(r"maxReceiveCount\s*=\s*([^,}]+)", redrive)
            assert target and count, redrive
            dlq_name = wanted["deadLetterTargetArn"].rsplit(":", 1)[1]
            assert queues[dlq_name][0] == target.group(1), name
            assert _resolve_number(module, count.group(1)) == wanted["maxReceiveCount"], name
        else:
            assert "redrive_policy" not in body, name


def test_job_queue_redrive_follows_max_attempts(module: Config) -> None:
    jobs = module.of_type("aws_sqs_queue")["jobs"]
    assert jobs["fifo_queue"] is True and jobs["content_based_deduplication"] is False
    assert re.search(r"maxReceiveCount\s*=\s*var\.max_attempts\s*\+\s*1", jobs["redrive_policy"])
    assert "aws_sqs_queue.jobs_dlq.arn" in jobs["redrive_policy"]


def test_every_queue_is_encrypted(module: Config) -> None:
    for name, body in module.of_type("aws_sqs_queue").items():
        assert body.get("sqs_managed_sse_enabled") is True or body.get("kms_master_key_id"), name


def _table_shape(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "hash_key": body["hash_key"],
        "range_key": body.get("range_key"),
        "attributes": {a["name"]: a["type"] for a in body.get("attribute", [])},
        "indexes": {
            i["name"]: (i["hash_key"], i.get("range_key"), i["projection_type"])
            for i in body.get("global_secondary_index", [])
        },
        "ttl": next((t["attribute_name"] for t in body.get("ttl", []) if t["enabled"]), None),
    }


def test_tables_match_the_codes_specs(module: Config) -> None:
    from runs_fleet_ec2.resources import TABLES

    tables = {
        _substitute(module, body["name"]): body
        for body in module.of_type("aws_dynamodb_table").values()
    }
    assert set(tables) == {spec.default_name for spec in TABLES}
    for spec in TABLES:
        body = tables[spec.default_name]
        assert _table_shape(body) == {
            "hash_key": spec.hash_key,
            "range_key": spec.range_key,
            "attributes": dict(spec.attributes),
            "indexes": {i.name: (i.hash_key, i.range_key, "ALL") for i in spec.indexes},
            "ttl": spec.ttl_attribute,
        }, spec.role
        assert body["billing_mode"] == "PAY_PER_REQUEST", spec.role
        assert body["point_in_time_recovery"][0]["enabled"] is True, spec.role
        assert body["server_side_encryption"][0]["enabled"] is True, spec.role
        # the same request create-resources would send, built from the Terraform shape
        params = spec.create_table_params(spec.default_name)
        assert {a["AttributeName"] for a in params["AttributeDefinitions"]} == set(
            _table_shape(body)["attributes"]
        )


def test_event_rule_matches_create_resources(module: Config, created: _RecordingCaller) -> None:
    from runs_fleet_ec2 import resources

    (rule_call,) = _calls(created, "put_rule")
    (targets_call,) = _calls(created, "put_targets")
    rule = module.of_type("aws_cloudwatch_event_rule")["ec2_events"]
    assert _substitute(module, rule["name"]) == rule_call["Name"] == resources.EVENT_RULE_NAME
    assert _tf_object_to_json(rule["event_pattern"]) == json.loads(rule_call["EventPattern"])
    assert rule.get("state", "ENABLED") == rule_call["State"]
    target = module.of_type("aws_cloudwatch_event_target")["events_queue"]
    assert target["target_id"] == targets_call["Targets"][0]["Id"]
    events_queue = _queue_by_name(module)[resources.EVENTS_QUEUE_NAME][0]
    assert target["arn"] == f"${{aws_sqs_queue.{events_queue}.arn}}"
    assert target["rule"] == "${aws_cloudwatch_event_rule.ec2_events.name}"


def test_events_queue_policy_allows_only_the_rule(
    module: Config, created: _RecordingCaller
) -> None:
    policy_call = next(
        p for p in _calls(created, "set_queue_attributes") if "Policy" in p["Attributes"]
    )
    (wanted,) = json.loads(policy_call["Attributes"]["Policy"])["Statement"]
    (statement,) = module.data[("aws_iam_policy_document", "events_queue")]["statement"]
    assert statement["sid"] == wanted["Sid"]
    assert statement["actions"] == [wanted["Action"]]
    assert statement["principals"][0]["identifiers"] == [wanted["Principal"]["Service"]]
    (condition,) = statement["condition"]
    ((test, keys),) = wanted["Condition"].items()
    assert condition["test"] == test and condition["variable"] in keys
    assert condition["values"] == ["${aws_cloudwatch_event_rule.ec2_events.arn}"]
    policy = module.of_type("aws_sqs_queue_policy")["events"]
    assert policy["queue_url"] == "${aws_sqs_queue.events.id}"


# ------------------------------------------------------------------------------------------
# launch templates and the security group
# ------------------------------------------------------------------------------------------


def test_launch_templates_per_architecture(module: Config) -> None:
    from runs_fleet_ec2.fleet import template_name

    template = module.of_type("aws_launch_template")["runner"]
    assert template["for_each"] == "${var.architectures}"
    assert set(_default(module, "architectures")) == {"arm64", "amd64"}
    base = _substitute(module, "${local.launch_template_name}")
    for arch in ("arm64", "amd64"):
        name = _substitute(module, template["name"]).replace("${each.key}", arch)
        assert name == template_name(base, arch)  # type: ignore[arg-type]


def test_launch_template_security(module: Config) -> None:
    template = module.of_type("aws_launch_template")["runner"]
    (metadata,) = template["metadata_options"]
    assert metadata["http_tokens"] == "required"
    assert metadata["http_endpoint"] == "enabled"
    assert metadata["instance_metadata_tags"] == "enabled"
    assert metadata["http_put_response_hop_limit"] == "${var.metadata_hop_limit}"
    assert _default(module, "metadata_hop_limit") == 1
    (disk,) = template["block_device_mappings"]
    (ebs,) = disk["ebs"]
    assert ebs["encrypted"] is True and ebs["volume_type"] == "gp3"
    assert disk["device_name"] == "${var.root_device_name}"
    (nic,) = template["network_interfaces"]
    assert nic["associate_public_ip_address"] == "${var.associate_public_ip_address}"
    assert _default(module, "associate_public_ip_address") is False
    assert nic["security_groups"] == ["${aws_security_group.runner.id}"]
    assert template["iam_instance_profile"][0]["arn"] == "${aws_iam_instance_profile.runner.arn}"


def test_user_data_starts_the_agent_at_every_boot(module: Config) -> None:
    template = module.of_type("aws_launch_template")["runner"]
    call = re.search(
        r'templatefile\("\$\{path\.module\}/([^"]+)",\s*\{(.*?)\}\)', template["user_data"]
    )
    assert call, template["user_data"]
    text = (TF / call.group(1)).read_text()
    given = set(re.findall(r"(\w+)\s*=", call.group(2)))
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used <= given, used - given
    assert text.startswith("#!/bin/bash")
    assert re.search(r"^ExecStart=\$\{runs_fleet_command\} ec2 agent$", text, re.M)
    assert "WantedBy=multi-user.target" in text
    assert "systemctl enable" in text
    for variable in ("RUNS_FLEET_RUNNER_DIR", "RUNS_FLEET_SSM_PREFIX"):
        assert f"Environment={variable}=" in text
    assert "User=${runner_user}" in text
    from runs_fleet_ec2.logship import LOG_GROUP_VAR

    assert re.search(rf"^Environment={LOG_GROUP_VAR}=\$\{{log_group\}}$", text, re.M)
    assert re.search(r"\blog_group\s*=\s*local\.runner_log_group\b", call.group(2))
    # the agent's own flags exist
    from runs_fleet_ec2 import agent

    assert hasattr(agent, "main") or hasattr(agent, "configure")


def test_runner_security_group_is_egress_only(module: Config) -> None:
    group = module.of_type("aws_security_group")["runner"]
    assert "ingress" not in group
    assert "egress" not in group  # egress comes from the rule resources below
    assert not module.of_type("aws_vpc_security_group_ingress_rule")
    assert not [
        r for r in module.of_type("aws_security_group_rule").values() if r["type"] == "ingress"
    ]
    rules = module.of_type("aws_vpc_security_group_egress_rule")
    assert rules and all(
        r["security_group_id"] == "${aws_security_group.runner.id}" for r in rules.values()
    )


# ------------------------------------------------------------------------------------------
# the runners' log group
# ------------------------------------------------------------------------------------------


def test_runner_log_group_defaults_and_wiring(module: Config) -> None:
    from runs_fleet_ec2.logship import stream_name

    variable = module.variables["runner_log_group"]
    assert variable["default"] == {}
    kind = str(variable["type"])
    assert re.search(r"create\s*=\s*optional\(bool,\s*true\)", kind), kind
    assert re.search(r'name\s*=\s*optional\(string,\s*"/runs-fleet/runners"\)', kind), kind
    assert re.search(r"retention_in_days\s*=\s*optional\(number,\s*30\)", kind), kind
    assert re.search(r"kms_key_arn\s*=\s*optional\(string\)", kind), kind
    group = module.of_type("aws_cloudwatch_log_group")["runners"]
    assert group["count"] == "${try(var.runner_log_group.create, false) ? 1 : 0}"
    assert group["name"] == "${var.runner_log_group.name}"
    assert group["retention_in_days"] == "${var.runner_log_group.retention_in_days}"
    assert group["kms_key_id"] == "${var.runner_log_group.kms_key_arn}"
    # the runners' policy names the group by ARN, created here or not
    arn = module.locals["runner_log_group_arn"]
    assert arn.endswith(":log-group:${local.runner_log_group}"), arn
    assert "var.runner_log_group == null" in module.locals["runner_log_group"]
    output = module.outputs["runner_log_group_name"]["value"]
    assert "var.runner_log_group == null ? null : var.runner_log_group.name" in output
    # the agent's stream names are ones CloudWatch takes
    assert not set(stream_name("a:b*c", "i-0abc")) & {":", "*"}


# ------------------------------------------------------------------------------------------
# IAM: the actions the code calls
# ------------------------------------------------------------------------------------------

_ADMIN_MODULES = {
    "runs_fleet_ec2/resources.py",  # runs-fleet aws create-resources, run by an operator
    "runs_fleet_ec2/tables.py",  # ensure_table, used only by create-resources
    "runs_fleet_sqs/resources.py",  # ensure_queue, used only by create-resources
}
_RUNNER_MODULES = {
    "runs_fleet_ec2/agent.py",
    "runs_fleet_ec2/agent_reports.py",
    "runs_fleet_ec2/logship.py",
}
_NO_RESOURCE_SCOPE = {
    "ec2:DescribeInstances",
    "ec2:DescribeSubnets",
    "ec2:DescribeSpotPriceHistory",
    "ec2:DescribeTags",
    "cloudwatch:PutMetricData",
}
_IMPLIED = {
    # EC2 Fleet launches through RunInstances, tags at launch, and passes the runner role
    "ec2:RunInstances": "ec2:CreateFleet",
    "ec2:CreateTags": "ec2:CreateFleet",
    "iam:PassRole": "ec2:CreateFleet",
    # SecureString parameters under a customer managed key (ssm_kms_key_arn)
    "kms:Encrypt": "ssm:PutParameter",
    "kms:GenerateDataKey": "ssm:PutParameter",
    "kms:Decrypt": "ssm:GetParameter",
}


def _operations(service: str) -> dict[str, str]:
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(op): op for op in model.operation_names}


def _iam_action(service: str, operation: str) -> str:
    if service == "sqs" and operation.endswith("Batch"):  # batch calls use the single action
        operation = operation.removesuffix("Batch")
    return f"{service}:{operation}"


def _module_strings(tree: ast.AST) -> set[str]:
    """String constants, and f-strings with one placeholder filled with each constant."""
    constants = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    strings = set(constants)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            holes = [p for p in parts if isinstance(p, ast.FormattedValue)]
            if len(holes) != 1:
                continue
            for constant in constants:
                strings.add(
                    "".join(
                        constant if isinstance(p, ast.FormattedValue) else str(p.value)
                        for p in parts
                        if isinstance(p, ast.FormattedValue | ast.Constant)
                    )
                )
    return strings


def _code_calls() -> dict[str, set[str]]:
    """IAM actions per plugin module: every name of an operation of a service the module
    calls (``caller.call("svc", ...)`` or ``client("svc")``) that appears in it as a string,
    which covers operation names passed through helpers and built by f-strings."""
    found: dict[str, set[str]] = {}
    for path in sorted(PLUGINS.glob("*/src/runs_fleet_*/**/*.py")):
        text = path.read_text()
        services = set(re.findall(r'(?:\.call|\.client)\(\s*"([a-z0-9-]+)"', text))
        services &= {"ec2", "sqs", "dynamodb", "ssm", "events", "cloudwatch", "logs", "sts", "iam"}
        if not services:
            continue
        strings = _module_strings(ast.parse(text))
        actions = set()
        for service in services:
            operations = _operations(service)
            actions |= {_iam_action(service, operations[s]) for s in strings if s in operations}
        relative = path.relative_to(path.parents[1]).as_posix()
        found[relative] = actions
    return found


def _ssm_store_methods() -> dict[str, set[str]]:
    """The SSM actions of each public method of SsmConfigStore (through its helpers)."""
    from runs_fleet_ec2 import ssm

    tree = ast.parse(Path(ssm.__file__).read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SsmConfigStore"]
    operations = _operations("ssm")
    direct: dict[str, set[str]] = {}
    helpers: dict[str, set[str]] = {}
    for method in cls.body:
        if not isinstance(method, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        names = {
            n.value
            for n in ast.walk(method)
            if isinstance(n, ast.Constant) and n.value in operations
        }
        direct[method.name] = {_iam_action("ssm", operations[n]) for n in names}
        helpers[method.name] = {
            n.attr
            for n in ast.walk(method)
            if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name)
            and n.value.id == "self"
        }
    return {
        name: direct[name] | {a for h in helpers[name] if h in direct for a in direct[h]}
        for name in direct
    }


def _runner_code_actions(calls: dict[str, set[str]]) -> set[str]:
    from runs_fleet_ec2 import agent

    actions = set().union(*(calls[m] for m in _RUNNER_MODULES))
    used = set(re.findall(r"\bstore\.(\w+)\(", Path(agent.__file__).read_text()))
    methods = _ssm_store_methods()
    for name in used:
        actions |= methods.get(name, set())
    return actions


def _orchestrator_code_actions(calls: dict[str, set[str]]) -> set[str]:
    skip = _ADMIN_MODULES | _RUNNER_MODULES
    return set().union(*(actions for module, actions in calls.items() if module not in skip))


def _statements(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from document.get("statement", [])
    for dynamic in document.get("dynamic", []):
        yield from dynamic.get("statement", {}).get("content", [])


def _policy_actions(module: Config, name: str) -> set[str]:
    document = module.data[("aws_iam_policy_document", name)]
    return {action for s in _statements(document) for action in s["actions"]}


def test_scanner_finds_what_the_code_calls() -> None:
    calls = _code_calls()
    # spot checks that prove the scan sees calls made through helpers and f-strings
    assert "ec2:StartInstances" in calls["runs_fleet_ec2/pool.py"]  # f"{verb}_instances"
    assert "dynamodb:Query" in calls["runs_fleet_ec2/dynamodb.py"]  # self._pages("query")
    assert "ssm:PutParameter" in calls["runs_fleet_ec2/ssm.py"]  # self._call("put_parameter")
    assert "sqs:ChangeMessageVisibility" in calls["runs_fleet_sqs/deadletters.py"]  # batch
    assert "dynamodb:CreateTable" in calls["runs_fleet_ec2/tables.py"]
    assert {"ssm:GetParameter", "ssm:DeleteParameter"} <= _runner_code_actions(calls)
    assert {"logs:CreateLogStream", "logs:PutLogEvents"} <= calls["runs_fleet_ec2/logship.py"]


def test_orchestrator_actions_are_exactly_what_the_code_calls(module: Config) -> None:
    code = _orchestrator_code_actions(_code_calls())
    granted = _policy_actions(module, "orchestrator")
    extra = {a for a in granted - code if a not in _IMPLIED}
    assert not extra, f"granted but never called: {sorted(extra)}"
    missing = code - granted
    assert not missing, f"called but not granted: {sorted(missing)}"
    for action in granted & set(_IMPLIED):
        assert _IMPLIED[action] in code, f"{action} is only needed with {_IMPLIED[action]}"


def test_runner_actions_are_exactly_what_the_agent_calls(module: Config) -> None:
    code = _runner_code_actions(_code_calls())
    granted = _policy_actions(module, "runner")
    extra = {a for a in granted - code if a not in _IMPLIED}
    assert not extra, f"granted but never called: {sorted(extra)}"
    missing = code - granted
    assert not missing, f"called but not granted: {sorted(missing)}"


def test_iam_scoping(module: Config) -> None:
    for policy in ("orchestrator", "runner"):
        document = module.data[("aws_iam_policy_document", policy)]
        for statement in _statements(document):
            resources = statement["resources"]
            if isinstance(resources, list) and "*" in resources:
                assert set(statement["actions"]) <= _NO_RESOURCE_SCOPE, statement["sid"]
            assert not any(a.endswith("*") for a in statement["actions"]), statement["sid"]
    orchestrator = {
        s["sid"]: s for s in _statements(module.data[("aws_iam_policy_document", "orchestrator")])
    }
    runner = {s["sid"]: s for s in _statements(module.data[("aws_iam_policy_document", "runner")])}

    def conditions(statement: dict[str, Any]) -> dict[str, list[str]]:
        return {c["variable"]: c["values"] for c in statement.get("condition", [])}

    # instances are created only with the managed tag and changed only when they carry it
    for statement in orchestrator.values():
        actions = set(statement["actions"])
        if actions & {"ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"}:
            assert conditions(statement)["aws:ResourceTag/runs-fleet:managed"] == ["true"]
        if "ec2:CreateTags" in actions:
            assert conditions(statement)["ec2:CreateAction"] == ["CreateFleet", "RunInstances"]
        if "iam:PassRole" in actions:
            assert statement["resources"] == ["${aws_iam_role.runner.arn}"]
            assert conditions(statement)["iam:PassedToService"] == ["ec2.amazonaws.com"]
        if "cloudwatch:PutMetricData" in actions:
            assert conditions(statement)["cloudwatch:namespace"] == ["${var.cloudwatch_namespace}"]
        if any(r.endswith(":instance/*") for r in statement["resources"]) and actions & {
            "ec2:CreateFleet",
            "ec2:RunInstances",
        }:
            assert conditions(statement)["aws:RequestTag/runs-fleet:managed"] == ["true"]
    # a runner ends only the instance it runs on, and reads only runs-fleet's parameters
    (end,) = [s for s in runner.values() if "ec2:TerminateInstances" in s["actions"]]
    assert set(end["actions"]) == {"ec2:StopInstances", "ec2:TerminateInstances"}
    assert [r.replace("$${", "${") for r in end["resources"]] == ["${ec2:SourceInstanceARN}"]
    (read,) = [s for s in runner.values() if "ssm:GetParameter" in s["actions"]]
    assert read["resources"] == ["${local.ssm_parameters_arn}/*"]
    assert conditions(read)["aws:ResourceTag/runs-fleet:managed"] == ["true"]
    (report,) = [s for s in runner.values() if "sqs:SendMessage" in s["actions"]]
    assert report["resources"] == ["${aws_sqs_queue.termination.arn}"]
    # a runner writes log streams of the runners' log group only, when there is one
    (ship,) = [s for s in runner.values() if "logs:PutLogEvents" in s["actions"]]
    assert set(ship["actions"]) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert ship["resources"] == [
        "${local.runner_log_group_arn}",
        "${local.runner_log_group_arn}:*",
    ]
    document = module.data[("aws_iam_policy_document", "runner")]
    (guard,) = [
        str(d["statement"]["for_each"])
        for d in document["dynamic"]
        if "logs:PutLogEvents" in d["statement"]["content"][0]["actions"]
    ]
    assert "var.runner_log_group == null" in guard


def test_orchestrator_trust(module: Config) -> None:
    document = module.data[("aws_iam_policy_document", "orchestrator_trust")]
    statements = {s["sid"]: s for s in _statements(document)}
    ecs = statements["EcsTasks"]
    assert ecs["principals"][0]["identifiers"] == ["ecs-tasks.amazonaws.com"]
    irsa = statements["ChartServiceAccount"]
    assert irsa["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert irsa["principals"][0] == {
        "type": "Federated",
        "identifiers": ["${var.eks_oidc_provider_arn}"],
    }
    conditions = {c["variable"]: c["values"] for c in irsa["condition"]}
    assert conditions["${local.oidc_provider_host}:sub"] == [
        "system:serviceaccount:${var.kubernetes_namespace}:${var.service_account_name}"
    ]
    assert conditions["${local.oidc_provider_host}:aud"] == ["sts.amazonaws.com"]
    guards = [str(d["statement"]["for_each"]) for d in document["dynamic"]]
    assert any("var.eks_oidc_provider_arn == null" in guard for guard in guards), guards
    assert any("var.ecs_task_trust" in guard for guard in guards), guards


# ------------------------------------------------------------------------------------------
# examples and README
# ------------------------------------------------------------------------------------------


def test_ecs_example_wires_outputs_and_secrets() -> None:
    config = Config(EXAMPLES / "ecs-fargate")
    assert config.modules["runs_fleet"]["source"] == "../.."
    task = config.of_type("aws_ecs_task_definition")["orchestrator"]
    assert task["task_role_arn"] == "${module.runs_fleet.orchestrator_role_arn}"
    assert "module.runs_fleet.environment" in str(config.locals["environment"])
    definitions = task["container_definitions"]
    for secret in ("RUNS_FLEET_GITHUB_APP_PRIVATE_KEY", "RUNS_FLEET_GITHUB_WEBHOOK_SECRET"):
        assert re.search(rf'name\s*=\s*\\?"{secret}\\?",\s*valueFrom\s*=', definitions), secret
        assert secret not in str(config.locals["environment"])
    service = config.of_type("aws_ecs_service")["orchestrator"]
    assert service["network_configuration"][0]["assign_public_ip"] is False


def test_eks_example_gives_irsa_and_helm_values() -> None:
    config = Config(EXAMPLES / "eks-hybrid")
    module = config.modules["runs_fleet"]
    assert module["source"] == "../.."
    assert "aws_iam_openid_connect_provider.cluster.arn" in module["eks_oidc_provider_arn"]
    assert module["ecs_task_trust"] is False
    assert "module.runs_fleet.helm_values" in config.outputs["helm_values"]["value"]


def test_readme_says_what_needs_the_registry() -> None:
    text = (TF / "README.md").read_text()
    assert "terraform validate" in text and "terraform plan" in text
    assert "registry" in text
    for name in ("RUNS_FLEET_QUEUE_URL", "helm_values", "ec2:SourceInstanceARN"):
        assert name in text, name
