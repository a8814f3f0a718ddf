# The orchestrator as an ECS Fargate service: `runs-fleet serve --scheduler` (webhooks,
# agent reports, probes, the dispatch worker and the leader-elected scheduler) with the
# module's outputs as its environment and the GitHub App's secrets from Secrets Manager.

module "runs_fleet" {
  source = "../.."

  vpc_id             = var.vpc_id
  private_subnet_ids = var.private_subnet_ids
  ami_ids            = var.ami_ids
  ecs_task_trust     = true
}

locals {
  environment = merge(module.runs_fleet.environment, {
    RUNS_FLEET_LISTEN           = "0.0.0.0:8080"
    RUNS_FLEET_PUBLIC_URL       = var.public_url
    RUNS_FLEET_GITHUB_APP_ID    = var.github_app_id
    RUNS_FLEET_SHUTDOWN_DELAY_S = "5"
  })
}

resource "aws_ecs_cluster" "this" {
  name = "runs-fleet"

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "orchestrator" {
  name              = "/ecs/runs-fleet"
  retention_in_days = 365
  kms_key_id        = var.logs_kms_key_arn
}

data "aws_iam_policy_document" "execution_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# The execution role pulls the image, writes logs and reads the two secrets at start.
resource "aws_iam_role" "execution" {
  name               = "runs-fleet-ecs-execution"
  assume_role_policy = data.aws_iam_policy_document.execution_trust.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.github_app_private_key_secret_arn, var.github_webhook_secret_arn]
  }

  dynamic "statement" {
    for_each = var.secrets_kms_key_arn == null ? [] : [1]

    content {
      actions   = ["kms:Decrypt"]
      resources = [var.secrets_kms_key_arn]
    }
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "runs-fleet-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets.json
}

resource "aws_ecs_task_definition" "orchestrator" {
  family                   = "runs-fleet"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "512"
  memory                   = "1024"
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = module.runs_fleet.orchestrator_role_arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "ARM64"
  }

  container_definitions = jsonencode([
    {
      name                   = "runs-fleet"
      image                  = var.image
      command                = ["serve", "--scheduler"]
      essential              = true
      readonlyRootFilesystem = true
      user                   = "10001:10001"
      stopTimeout            = 60
      portMappings           = [{ containerPort = 8080, protocol = "tcp" }]
      linuxParameters        = { capabilities = { drop = ["ALL"] }, initProcessEnabled = true }
      environment            = [for name in sort(keys(local.environment)) : { name = name, value = local.environment[name] }]
      secrets = [
        { name = "RUNS_FLEET_GITHUB_APP_PRIVATE_KEY", valueFrom = var.github_app_private_key_secret_arn },
        { name = "RUNS_FLEET_GITHUB_WEBHOOK_SECRET", valueFrom = var.github_webhook_secret_arn },
      ]
      healthCheck = {
        command     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=3)"]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 20
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.orchestrator.name
          awslogs-region        = var.region
          awslogs-stream-prefix = "runs-fleet"
        }
      }
    }
  ])
}

resource "aws_security_group" "orchestrator" {
  name_prefix = "runs-fleet-orchestrator-"
  description = "runs-fleet orchestrator tasks"
  vpc_id      = var.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "from_load_balancer" {
  security_group_id            = aws_security_group.orchestrator.id
  description                  = "webhooks and agent reports from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = var.load_balancer_security_group_id
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.orchestrator.id
  description       = "GitHub and AWS APIs over HTTPS"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_ecs_service" "orchestrator" {
  name                               = "runs-fleet"
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.orchestrator.arn
  desired_count                      = var.desired_count
  launch_type                        = "FARGATE"
  deployment_minimum_healthy_percent = 50
  deployment_maximum_percent         = 200

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.orchestrator.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = var.target_group_arn
    container_name   = "runs-fleet"
    container_port   = 8080
  }
}
