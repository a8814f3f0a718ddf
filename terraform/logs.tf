# The runners' log group. A runner instance terminates itself after its job, and its
# journal goes with it, so each runner's agent ships its own log and the runner's output
# here while it runs (secrets masked), one stream per instance:
# <runner name or "pool">/<instance id>.

resource "aws_cloudwatch_log_group" "runners" {
  count = try(var.runner_log_group.create, false) ? 1 : 0

  name              = var.runner_log_group.name
  retention_in_days = var.runner_log_group.retention_in_days
  kms_key_id        = var.runner_log_group.kms_key_arn
  tags              = local.tags
}
