# The job queue (FIFO, deduplicated by the MessageDeduplicationId runs-fleet sends) with its
# dead-letter queue, and the events and termination queues with theirs. Names, attributes
# and redrive policies are the ones `runs-fleet aws create-resources` gives its queues.

locals {
  queue_visibility_timeout_s = 60
  dead_letter_retention_s    = 1209600 # 14 days, the SQS maximum: dead letters wait for a person
  event_receives             = 5       # receives of an events or termination message before it is set aside
}

resource "aws_sqs_queue" "jobs_dlq" {
  name                        = "${var.name}-jobs-dlq.fifo"
  fifo_queue                  = true
  content_based_deduplication = false
  message_retention_seconds   = local.dead_letter_retention_s
  sqs_managed_sse_enabled     = true
  tags                        = local.tags
}

resource "aws_sqs_queue" "jobs" {
  name                        = "${var.name}-jobs.fifo"
  fifo_queue                  = true
  content_based_deduplication = false
  visibility_timeout_seconds  = local.queue_visibility_timeout_s
  sqs_managed_sse_enabled     = true
  # one more receive than RUNS_FLEET_MAX_ATTEMPTS: runs-fleet dead-letters a job with its
  # reason first; the redrive policy is the safety net for a consumer that never gets there
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.jobs_dlq.arn
    maxReceiveCount     = var.max_attempts + 1
  })
  tags = local.tags
}

resource "aws_sqs_queue" "events_dlq" {
  name                      = "${var.name}-events-dlq"
  message_retention_seconds = local.dead_letter_retention_s
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}

resource "aws_sqs_queue" "events" {
  name                       = "${var.name}-events"
  visibility_timeout_seconds = local.queue_visibility_timeout_s
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.events_dlq.arn
    maxReceiveCount     = local.event_receives
  })
  tags = local.tags
}

resource "aws_sqs_queue" "termination_dlq" {
  name                      = "${var.name}-termination-dlq"
  message_retention_seconds = local.dead_letter_retention_s
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}

resource "aws_sqs_queue" "termination" {
  name                       = "${var.name}-termination"
  visibility_timeout_seconds = local.queue_visibility_timeout_s
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.termination_dlq.arn
    maxReceiveCount     = local.event_receives
  })
  tags = local.tags
}

# EventBridge may send to the events queue, and only for the rule of this module.
data "aws_iam_policy_document" "events_queue" {
  statement {
    sid       = "runs-fleet-ec2-events"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.events.arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.ec2_events.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "events" {
  queue_url = aws_sqs_queue.events.id
  policy    = data.aws_iam_policy_document.events_queue.json
}
