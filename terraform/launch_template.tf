# One launch template per architecture, named <launch template name>-<arch> as the ec2
# provider expects (RUNS_FLEET_LAUNCH_TEMPLATE_NAME). Fleet overrides set the instance type,
# subnet, instance profile and disk size; the template carries what they cannot: the
# security group, the metadata options and the agent's boot script.

resource "aws_launch_template" "runner" {
  for_each = var.architectures

  name                    = "${local.launch_template_name}-${each.key}"
  description             = "runs-fleet runner (${each.key})"
  image_id                = var.ami_ids[each.key]
  ebs_optimized           = true
  update_default_version  = true
  disable_api_termination = false
  user_data = base64encode(templatefile("${path.module}/user_data.sh.tftpl", {
    runs_fleet_command = var.runs_fleet_command
    runner_dir         = var.runner_dir
    runner_user        = var.runner_user
    ssm_prefix         = var.ssm_prefix
    region             = local.region
    log_group          = local.runner_log_group
  }))

  iam_instance_profile {
    arn = aws_iam_instance_profile.runner.arn
  }

  # IMDSv2 only; the agent reads its instance id and tags (runner name, pool) from it
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = var.metadata_hop_limit
    instance_metadata_tags      = "enabled"
  }

  block_device_mappings {
    device_name = var.root_device_name

    ebs {
      volume_type           = "gp3"
      volume_size           = var.root_volume_size_gib
      encrypted             = true
      kms_key_id            = var.ebs_kms_key_arn
      delete_on_termination = true
    }
  }

  network_interfaces {
    device_index                = 0
    associate_public_ip_address = var.associate_public_ip_address
    security_groups             = [aws_security_group.runner.id]
    delete_on_termination       = true
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "network-interface"
    tags          = merge(local.tags, { "runs-fleet:managed" = "true" })
  }

  tags = local.tags
}
