# Outputs named after the settings they feed (copy them into the orchestrator's
# environment) and, in helm_values, after the chart's values.

output "RUNS_FLEET_QUEUE_URL" {
  description = "URL of the FIFO job queue."
  value       = aws_sqs_queue.jobs.url
}

output "RUNS_FLEET_QUEUE_DLQ_URL" {
  description = "URL of the job queue's dead-letter queue."
  value       = aws_sqs_queue.jobs_dlq.url
}

output "RUNS_FLEET_EVENTS_QUEUE_URL" {
  description = "URL of the queue EventBridge sends EC2 spot warnings and state changes to."
  value       = aws_sqs_queue.events.url
}

output "RUNS_FLEET_TERMINATION_QUEUE_URL" {
  description = "URL of the queue the runners' agents report to."
  value       = aws_sqs_queue.termination.url
}

output "RUNS_FLEET_JOBS_TABLE" {
  description = "DynamoDB table of job records."
  value       = aws_dynamodb_table.jobs.name
}

output "RUNS_FLEET_POOLS_TABLE" {
  description = "DynamoDB table of warm pool configs."
  value       = aws_dynamodb_table.pools.name
}

output "RUNS_FLEET_LOCKS_TABLE" {
  description = "DynamoDB table of runner assignments and leases."
  value       = aws_dynamodb_table.locks.name
}

output "RUNS_FLEET_CIRCUIT_BREAKER_TABLE" {
  description = "DynamoDB table of the spot circuit breaker."
  value       = aws_dynamodb_table.circuit_breaker.name
}

output "RUNS_FLEET_PRIVATE_SUBNET_IDS" {
  description = "Subnets of the runners, comma-separated as the setting takes them."
  value       = join(",", var.private_subnet_ids)
}

output "RUNS_FLEET_SECURITY_GROUP_ID" {
  description = "Security group of the runners (also set in the launch templates)."
  value       = aws_security_group.runner.id
}

output "RUNS_FLEET_INSTANCE_PROFILE_ARN" {
  description = "Instance profile of the runners."
  value       = aws_iam_instance_profile.runner.arn
}

output "RUNS_FLEET_LAUNCH_TEMPLATE_NAME" {
  description = "Base name of the launch templates (<name>-arm64, <name>-amd64)."
  value       = local.launch_template_name
}

output "RUNS_FLEET_EC2_ROOT_DEVICE_NAME" {
  description = "Root device name of the runner AMIs."
  value       = var.root_device_name
}

output "RUNS_FLEET_SSM_PREFIX" {
  description = "Parameter Store path of the runner configs."
  value       = var.ssm_prefix
}

output "RUNS_FLEET_SSM_KMS_KEY_ID" {
  description = "KMS key of the runner configs (null: the AWS managed key)."
  value       = var.ssm_kms_key_arn
}

output "RUNS_FLEET_MAX_ATTEMPTS" {
  description = "Deliveries of a job before it is dead-lettered (the redrive policy allows one more)."
  value       = tostring(var.max_attempts)
}

output "RUNS_FLEET_CLOUDWATCH_NAMESPACE" {
  description = "The CloudWatch namespace the orchestrator may write to."
  value       = var.cloudwatch_namespace
}

output "runner_log_group_name" {
  description = "CloudWatch Logs group of the runners' logs (RUNS_FLEET_EC2_LOG_GROUP on the instances), one stream <runner name or pool>/<instance id> per instance; null when runner_log_group is null."
  value       = var.runner_log_group == null ? null : var.runner_log_group.name
}

output "AWS_REGION" {
  description = "Region of every resource of this module."
  value       = local.region
}

output "environment" {
  description = "Every RUNS_FLEET_* setting of EC2 mode this module decides, plus AWS_REGION: the orchestrator's environment (no secrets)."
  value = merge(
    {
      RUNS_FLEET_MODE                  = "ec2"
      AWS_REGION                       = local.region
      RUNS_FLEET_QUEUE_URL             = aws_sqs_queue.jobs.url
      RUNS_FLEET_QUEUE_DLQ_URL         = aws_sqs_queue.jobs_dlq.url
      RUNS_FLEET_EVENTS_QUEUE_URL      = aws_sqs_queue.events.url
      RUNS_FLEET_TERMINATION_QUEUE_URL = aws_sqs_queue.termination.url
      RUNS_FLEET_JOBS_TABLE            = aws_dynamodb_table.jobs.name
      RUNS_FLEET_POOLS_TABLE           = aws_dynamodb_table.pools.name
      RUNS_FLEET_LOCKS_TABLE           = aws_dynamodb_table.locks.name
      RUNS_FLEET_CIRCUIT_BREAKER_TABLE = aws_dynamodb_table.circuit_breaker.name
      RUNS_FLEET_PRIVATE_SUBNET_IDS    = join(",", var.private_subnet_ids)
      RUNS_FLEET_SECURITY_GROUP_ID     = aws_security_group.runner.id
      RUNS_FLEET_INSTANCE_PROFILE_ARN  = aws_iam_instance_profile.runner.arn
      RUNS_FLEET_LAUNCH_TEMPLATE_NAME  = local.launch_template_name
      RUNS_FLEET_EC2_ROOT_DEVICE_NAME  = var.root_device_name
      RUNS_FLEET_SSM_PREFIX            = var.ssm_prefix
      RUNS_FLEET_MAX_ATTEMPTS          = tostring(var.max_attempts)
      RUNS_FLEET_CLOUDWATCH_NAMESPACE  = var.cloudwatch_namespace
    },
    var.ssm_kms_key_arn == null ? {} : { RUNS_FLEET_SSM_KMS_KEY_ID = var.ssm_kms_key_arn },
  )
}

output "helm_values" {
  description = "Values for the runs-fleet chart in ec2 (hybrid) mode, keyed by value path (pass each with --set, or use helm_values_yaml)."
  value = {
    "mode"                                                      = "ec2"
    "aws.region"                                                = local.region
    "aws.vpcId"                                                 = var.vpc_id
    "aws.privateSubnetIds"                                      = var.private_subnet_ids
    "aws.securityGroupId"                                       = aws_security_group.runner.id
    "aws.instanceProfileArn"                                    = aws_iam_instance_profile.runner.arn
    "aws.queueUrl"                                              = aws_sqs_queue.jobs.url
    "aws.queueDlqUrl"                                           = aws_sqs_queue.jobs_dlq.url
    "aws.eventsQueueUrl"                                        = aws_sqs_queue.events.url
    "aws.terminationQueueUrl"                                   = aws_sqs_queue.termination.url
    "aws.jobsTable"                                             = aws_dynamodb_table.jobs.name
    "aws.poolsTable"                                            = aws_dynamodb_table.pools.name
    "aws.locksTable"                                            = aws_dynamodb_table.locks.name
    "aws.circuitBreakerTable"                                   = aws_dynamodb_table.circuit_breaker.name
    "aws.launchTemplateName"                                    = local.launch_template_name
    "aws.ssmPrefix"                                             = var.ssm_prefix
    "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn" = aws_iam_role.orchestrator.arn
  }
}

output "helm_values_yaml" {
  description = "The same values as a YAML document for helm install -f."
  value = yamlencode({
    mode = "ec2"
    aws = {
      region              = local.region
      vpcId               = var.vpc_id
      privateSubnetIds    = var.private_subnet_ids
      securityGroupId     = aws_security_group.runner.id
      instanceProfileArn  = aws_iam_instance_profile.runner.arn
      queueUrl            = aws_sqs_queue.jobs.url
      queueDlqUrl         = aws_sqs_queue.jobs_dlq.url
      eventsQueueUrl      = aws_sqs_queue.events.url
      terminationQueueUrl = aws_sqs_queue.termination.url
      jobsTable           = aws_dynamodb_table.jobs.name
      poolsTable          = aws_dynamodb_table.pools.name
      locksTable          = aws_dynamodb_table.locks.name
      circuitBreakerTable = aws_dynamodb_table.circuit_breaker.name
      launchTemplateName  = local.launch_template_name
      ssmPrefix           = var.ssm_prefix
    }
    serviceAccount = {
      annotations = {
        "eks.amazonaws.com/role-arn" = aws_iam_role.orchestrator.arn
      }
    }
  })
}

output "orchestrator_role_arn" {
  description = "The orchestrator's role: the ECS task role, or the ServiceAccount's IRSA role."
  value       = aws_iam_role.orchestrator.arn
}

output "orchestrator_role_name" {
  description = "Name of the orchestrator's role."
  value       = aws_iam_role.orchestrator.name
}

output "runner_role_arn" {
  description = "The runners' role (in the instance profile)."
  value       = aws_iam_role.runner.arn
}

output "launch_template_ids" {
  description = "Launch template id per architecture."
  value       = { for arch, template in aws_launch_template.runner : arch => template.id }
}
