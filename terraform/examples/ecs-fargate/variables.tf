variable "region" {
  description = "AWS region of the deployment."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region such as eu-west-1."
  }
}

variable "vpc_id" {
  description = "VPC of the orchestrator and the runners."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8}([0-9a-f]{9})?$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets of the orchestrator tasks and the runners."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) > 0 && alltrue([for id in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]{8}([0-9a-f]{9})?$", id))])
    error_message = "private_subnet_ids must hold at least one id like subnet-0123456789abcdef0."
  }
}

variable "ami_ids" {
  description = "Runner AMI per architecture (arm64, amd64)."
  type        = map(string)
}

variable "image" {
  description = "The orchestrator image (registry/repository:tag or @digest)."
  type        = string

  validation {
    condition     = length(var.image) > 0 && !endswith(var.image, ":latest")
    error_message = "image must name a pinned tag or digest, not :latest."
  }
}

variable "public_url" {
  description = "RUNS_FLEET_PUBLIC_URL: the HTTPS URL of the load balancer in front of the service (GitHub's webhook goes to <url>/webhook)."
  type        = string

  validation {
    condition     = can(regex("^https://[^/]+", var.public_url))
    error_message = "public_url must start with https://."
  }
}

variable "github_app_id" {
  description = "RUNS_FLEET_GITHUB_APP_ID: the GitHub App's id."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+$", var.github_app_id))
    error_message = "github_app_id must be a number."
  }
}

variable "github_app_private_key_secret_arn" {
  description = "Secrets Manager secret holding the GitHub App's private key (PEM)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.github_app_private_key_secret_arn))
    error_message = "github_app_private_key_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "github_webhook_secret_arn" {
  description = "Secrets Manager secret holding the GitHub App's webhook secret."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.github_webhook_secret_arn))
    error_message = "github_webhook_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "secrets_kms_key_arn" {
  description = "Customer managed KMS key of those secrets, if any (the task execution role then needs kms:Decrypt on it)."
  type        = string
  default     = null
}

variable "load_balancer_security_group_id" {
  description = "Security group of the load balancer that forwards to the tasks' port 8080."
  type        = string

  validation {
    condition     = can(regex("^sg-[0-9a-f]{8}([0-9a-f]{9})?$", var.load_balancer_security_group_id))
    error_message = "load_balancer_security_group_id must look like sg-0123456789abcdef0."
  }
}

variable "target_group_arn" {
  description = "Target group (type ip, port 8080, health check /ready) of the load balancer."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:elasticloadbalancing:", var.target_group_arn))
    error_message = "target_group_arn must be an ELB target group ARN."
  }
}

variable "logs_kms_key_arn" {
  description = "KMS key that encrypts the orchestrator's log group (its key policy must allow the logs service)."
  type        = string
}

variable "desired_count" {
  description = "Orchestrator tasks; at least 2 for a rolling deployment without downtime."
  type        = number
  default     = 2

  validation {
    condition     = var.desired_count >= 1
    error_message = "desired_count must be at least 1."
  }
}
