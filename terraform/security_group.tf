# The runners' security group: no ingress at all (runners only call out: GitHub, AWS APIs,
# package registries), egress to the configured ranges.

resource "aws_security_group" "runner" {
  name_prefix = "${var.name}-runner-"
  description = "runs-fleet runners: egress only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-runner" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_egress_rule" "runner_ipv4" {
  for_each = toset(var.runner_egress_cidr_blocks)

  security_group_id = aws_security_group.runner.id
  description       = "runner egress to ${each.value}"
  ip_protocol       = "-1"
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "runner_ipv6" {
  for_each = toset(var.runner_egress_ipv6_cidr_blocks)

  security_group_id = aws_security_group.runner.id
  description       = "runner egress to ${each.value}"
  ip_protocol       = "-1"
  cidr_ipv6         = each.value
  tags              = local.tags
}
