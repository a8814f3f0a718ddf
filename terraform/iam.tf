# Two roles. The orchestrator's may do exactly what runs-fleet's code calls (the EC2, SQS,
# DynamoDB, SSM and CloudWatch operations of the ec2, sqs and aws plugins), scoped to this
# module's resources by ARN, and for instances by the runs-fleet:managed tag. The runners'
# may read and delete runner configs, report to the termination queue, ship their logs to
# the runners' log group and stop or terminate the instance it runs on, nothing else.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account              = data.aws_caller_identity.current.account_id
  region               = data.aws_region.current.name
  partition            = data.aws_partition.current.partition
  launch_template_name = coalesce(var.launch_template_name, "${var.name}-runner")
  tags                 = merge(var.tags, { "runs-fleet:deployment" = var.name })
  ec2_arn              = "arn:${local.partition}:ec2:${local.region}:${local.account}"
  ssm_parameters_arn   = "arn:${local.partition}:ssm:${local.region}:${local.account}:parameter${var.ssm_prefix}"
  oidc_provider_host   = var.eks_oidc_provider_arn == null ? "" : element(split(":oidc-provider/", var.eks_oidc_provider_arn), 1)
  runner_log_group     = var.runner_log_group == null ? "" : var.runner_log_group.name
  runner_log_group_arn = "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:${local.runner_log_group}"
  table_arns = [
    aws_dynamodb_table.jobs.arn,
    aws_dynamodb_table.pools.arn,
    aws_dynamodb_table.locks.arn,
    aws_dynamodb_table.circuit_breaker.arn,
  ]
}

# ----------------------------------------------------------------------------------------
# The orchestrator (runs-fleet serve / worker / scheduler)
# ----------------------------------------------------------------------------------------

data "aws_iam_policy_document" "orchestrator_trust" {
  dynamic "statement" {
    for_each = var.ecs_task_trust ? [1] : []

    content {
      sid     = "EcsTasks"
      effect  = "Allow"
      actions = ["sts:AssumeRole"]

      principals {
        type        = "Service"
        identifiers = ["ecs-tasks.amazonaws.com"]
      }

      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account]
      }
    }
  }

  dynamic "statement" {
    for_each = var.eks_oidc_provider_arn == null ? [] : [1]

    content {
      sid     = "ChartServiceAccount"
      effect  = "Allow"
      actions = ["sts:AssumeRoleWithWebIdentity"]

      principals {
        type        = "Federated"
        identifiers = [var.eks_oidc_provider_arn]
      }

      condition {
        test     = "StringEquals"
        variable = "${local.oidc_provider_host}:sub"
        values   = ["system:serviceaccount:${var.kubernetes_namespace}:${var.service_account_name}"]
      }

      condition {
        test     = "StringEquals"
        variable = "${local.oidc_provider_host}:aud"
        values   = ["sts.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "orchestrator" {
  name               = "${var.name}-orchestrator"
  description        = "runs-fleet orchestrator: launches and tracks EC2 runners"
  assume_role_policy = data.aws_iam_policy_document.orchestrator_trust.json
  tags               = local.tags

  lifecycle {
    precondition {
      condition     = var.ecs_task_trust || var.eks_oidc_provider_arn != null
      error_message = "the orchestrator role needs a principal: keep ecs_task_trust or set eks_oidc_provider_arn."
    }
  }
}

data "aws_iam_policy_document" "orchestrator" {
  # the job queue and its dead-letter queue (sqs plugin: queue, receipts, dead letters)
  statement {
    sid    = "JobQueue"
    effect = "Allow"
    actions = [
      "sqs:SendMessage",
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [aws_sqs_queue.jobs.arn, aws_sqs_queue.jobs_dlq.arn]
  }

  # EC2 events and the runners' start and finish reports are read, then deleted
  statement {
    sid       = "EventQueues"
    effect    = "Allow"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage"]
    resources = [aws_sqs_queue.events.arn, aws_sqs_queue.termination.arn]
  }

  statement {
    sid    = "StateTables"
    effect = "Allow"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:BatchGetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
      "dynamodb:Query",
      "dynamodb:Scan",
    ]
    resources = concat(local.table_arns, [for arn in local.table_arns : "${arn}/index/*"])
  }

  statement {
    sid    = "RunnerConfigs"
    effect = "Allow"
    actions = [
      "ssm:PutParameter",
      "ssm:AddTagsToResource",
      "ssm:GetParameter",
      "ssm:DeleteParameter",
    ]
    resources = ["${local.ssm_parameters_arn}/*"]
  }

  statement {
    sid       = "ListRunnerConfigs"
    effect    = "Allow"
    actions   = ["ssm:GetParametersByPath"]
    resources = [local.ssm_parameters_arn, "${local.ssm_parameters_arn}/*"]
  }

  # EC2 Fleet (type instant) launches runners through RunInstances on the caller's behalf;
  # the instances and volumes it creates must carry runs-fleet:managed=true
  statement {
    sid       = "LaunchManagedRunners"
    effect    = "Allow"
    actions   = ["ec2:CreateFleet", "ec2:RunInstances"]
    resources = ["${local.ec2_arn}:instance/*", "${local.ec2_arn}:volume/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/runs-fleet:managed"
      values   = ["true"]
    }
  }

  statement {
    sid     = "LaunchFromTheseTemplates"
    effect  = "Allow"
    actions = ["ec2:CreateFleet", "ec2:RunInstances"]
    resources = concat(
      ["${local.ec2_arn}:fleet/*"],
      [for template in aws_launch_template.runner : template.arn],
      [for id in var.private_subnet_ids : "${local.ec2_arn}:subnet/${id}"],
      ["${local.ec2_arn}:security-group/${aws_security_group.runner.id}"],
      ["${local.ec2_arn}:network-interface/*"],
      ["${local.ec2_arn}:spot-instances-request/*"],
      [for arch in var.architectures : "arn:${local.partition}:ec2:${local.region}::image/${var.ami_ids[arch]}"],
    )
  }

  statement {
    sid       = "TagRunnersAtLaunch"
    effect    = "Allow"
    actions   = ["ec2:CreateTags"]
    resources = ["${local.ec2_arn}:instance/*", "${local.ec2_arn}:volume/*", "${local.ec2_arn}:network-interface/*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["CreateFleet", "RunInstances"]
    }
  }

  statement {
    sid       = "ManageOnlyManagedRunners"
    effect    = "Allow"
    actions   = ["ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"]
    resources = ["${local.ec2_arn}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/runs-fleet:managed"
      values   = ["true"]
    }
  }

  # Describe* calls have no resource-level permissions in EC2: "*" is the only resource
  statement {
    sid       = "DescribeEc2"
    effect    = "Allow"
    actions   = ["ec2:DescribeInstances", "ec2:DescribeSubnets", "ec2:DescribeSpotPriceHistory"]
    resources = ["*"]
  }

  statement {
    sid       = "PassOnlyTheRunnerRole"
    effect    = "Allow"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.runner.arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com"]
    }
  }

  # PutMetricData has no resource-level permissions: the namespace condition scopes it
  statement {
    sid       = "Metrics"
    effect    = "Allow"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.cloudwatch_namespace]
    }
  }

  dynamic "statement" {
    for_each = var.ssm_kms_key_arn == null ? [] : [1]

    content {
      sid       = "RunnerConfigKey"
      effect    = "Allow"
      actions   = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.ssm_kms_key_arn]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "orchestrator" {
  name   = "runs-fleet-orchestrator"
  role   = aws_iam_role.orchestrator.id
  policy = data.aws_iam_policy_document.orchestrator.json
}

# ----------------------------------------------------------------------------------------
# The runners (runs-fleet ec2 agent on each instance)
# ----------------------------------------------------------------------------------------

data "aws_iam_policy_document" "runner_trust" {
  statement {
    sid     = "Ec2Instances"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "runner" {
  name               = "${var.name}-runner"
  description        = "runs-fleet runner instances: read their config, report, end themselves"
  assume_role_policy = data.aws_iam_policy_document.runner_trust.json
  tags               = local.tags
}

resource "aws_iam_instance_profile" "runner" {
  name = "${var.name}-runner"
  role = aws_iam_role.runner.name
  tags = local.tags
}

data "aws_iam_policy_document" "runner" {
  # A config is <prefix>/<instance id> (warm pool) or <prefix>/<runner name> (cold start).
  # IAM has no policy variable holding the caller's instance id or its tags, so a runner
  # cannot be limited to its own parameter by name; it is limited to runs-fleet's
  # parameters under the prefix (tagged runs-fleet:managed=true), and each config is
  # deleted by its runner as soon as it is read and holds a one-use JIT config.
  statement {
    sid       = "ReadAndDeleteRunnerConfigs"
    effect    = "Allow"
    actions   = ["ssm:GetParameter", "ssm:DeleteParameter"]
    resources = ["${local.ssm_parameters_arn}/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/runs-fleet:managed"
      values   = ["true"]
    }
  }

  statement {
    sid       = "ReportToTheTerminationQueue"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.termination.arn]
  }

  # Only the instance making the request: ec2:SourceInstanceARN is the ARN of the
  # instance whose role credentials signed it, used here as a policy variable
  statement {
    sid       = "EndOnlyItself"
    effect    = "Allow"
    actions   = ["ec2:StopInstances", "ec2:TerminateInstances"]
    resources = ["$${ec2:SourceInstanceARN}"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/runs-fleet:managed"
      values   = ["true"]
    }
  }

  # the fallback when instance metadata tags are off; DescribeTags has no resource scope
  statement {
    sid       = "ReadOwnTags"
    effect    = "Allow"
    actions   = ["ec2:DescribeTags"]
    resources = ["*"]
  }

  # a stream per instance in the runners' log group (":*": its streams); IAM cannot tie a
  # stream name to the calling instance, so any runner may write to any stream of it
  dynamic "statement" {
    for_each = var.runner_log_group == null ? [] : [1]

    content {
      sid       = "ShipLogsToTheRunnersLogGroup"
      effect    = "Allow"
      actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
      resources = [local.runner_log_group_arn, "${local.runner_log_group_arn}:*"]
    }
  }

  dynamic "statement" {
    for_each = var.ssm_kms_key_arn == null ? [] : [1]

    content {
      sid       = "DecryptRunnerConfigs"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [var.ssm_kms_key_arn]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "runner" {
  name   = "runs-fleet-runner"
  role   = aws_iam_role.runner.id
  policy = data.aws_iam_policy_document.runner.json
}

# EC2 Fleet and Spot need their service-linked roles; AWS creates them the first time an
# account uses them from the console, otherwise create them here once per account.
resource "aws_iam_service_linked_role" "spot" {
  count            = var.create_service_linked_roles ? 1 : 0
  aws_service_name = "spot.amazonaws.com"
}

resource "aws_iam_service_linked_role" "ec2_fleet" {
  count            = var.create_service_linked_roles ? 1 : 0
  aws_service_name = "ec2fleet.amazonaws.com"
}
