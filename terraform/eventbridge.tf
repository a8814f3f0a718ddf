# EC2 spot interruption warnings and instance state changes into the events queue
# (RUNS_FLEET_EVENTS_QUEUE_URL), the same rule `runs-fleet aws create-resources` makes.

resource "aws_cloudwatch_event_rule" "ec2_events" {
  name        = "${var.name}-ec2-events"
  description = "runs-fleet: EC2 spot interruption warnings and instance state changes"
  state       = "ENABLED"
  event_pattern = jsonencode({
    source = ["aws.ec2"]
    "detail-type" = [
      "EC2 Spot Instance Interruption Warning",
      "EC2 Instance State-change Notification",
    ]
  })
  tags = local.tags
}

resource "aws_cloudwatch_event_target" "events_queue" {
  rule      = aws_cloudwatch_event_rule.ec2_events.name
  target_id = "runs-fleet-events"
  arn       = aws_sqs_queue.events.arn
}
