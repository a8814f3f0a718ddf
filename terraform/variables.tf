variable "name" {
  description = "Prefix of every resource name: queues <name>-jobs.fifo, <name>-events, <name>-termination; tables <name>-jobs, <name>-pools, <name>-locks, <name>-circuit-state; roles and the security group."
  type        = string
  default     = "runs-fleet"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name))
    error_message = "name must be 2-32 lower-case letters, digits or '-', starting with a letter and not ending with '-'."
  }
}

variable "vpc_id" {
  description = "VPC of the runners and their security group."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8}([0-9a-f]{9})?$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "private_subnet_ids" {
  description = "Subnets the runners start in (RUNS_FLEET_PRIVATE_SUBNET_IDS); private subnets with a route to the internet through NAT, in the VPC of vpc_id."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) > 0 && alltrue([for id in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]{8}([0-9a-f]{9})?$", id))])
    error_message = "private_subnet_ids must hold at least one id like subnet-0123456789abcdef0."
  }
}

variable "architectures" {
  description = "CPU architectures to create a launch template for (<launch template name>-<arch>)."
  type        = set(string)
  default     = ["arm64", "amd64"]

  validation {
    condition     = length(var.architectures) > 0 && alltrue([for arch in var.architectures : contains(["arm64", "amd64"], arch)])
    error_message = "architectures may only hold arm64 and amd64, and at least one of them."
  }
}

variable "ami_ids" {
  description = "The runner AMI per architecture (keys arm64, amd64): an image with runs-fleet[ec2] and the GitHub Actions runner installed."
  type        = map(string)

  validation {
    condition     = alltrue([for arch, id in var.ami_ids : contains(["arm64", "amd64"], arch) && can(regex("^ami-[0-9a-f]{8}([0-9a-f]{9})?$", id))])
    error_message = "ami_ids maps arm64 and/or amd64 to image ids like ami-0123456789abcdef0."
  }
}

variable "launch_template_name" {
  description = "Base name of the launch templates (RUNS_FLEET_LAUNCH_TEMPLATE_NAME); each architecture's is <name>-arm64 / <name>-amd64. Null: <name>-runner."
  type        = string
  default     = null

  validation {
    condition     = var.launch_template_name == null || can(regex("^[A-Za-z0-9()./_-]{3,118}$", var.launch_template_name))
    error_message = "launch_template_name must be 3-118 characters of letters, digits and ( ) . / _ - (no {arch}: this module appends -<arch>)."
  }
}

variable "root_device_name" {
  description = "Device name of the AMI's root volume (RUNS_FLEET_EC2_ROOT_DEVICE_NAME)."
  type        = string
  default     = "/dev/xvda"

  validation {
    condition     = can(regex("^/dev/(xvd|sd|nvme)[a-z0-9]+$", var.root_device_name))
    error_message = "root_device_name must be a device such as /dev/xvda or /dev/sda1."
  }
}

variable "root_volume_size_gib" {
  description = "Default size of the runners' encrypted gp3 root volume in GiB (a job's disk= label overrides it per runner)."
  type        = number
  default     = 50

  validation {
    condition     = var.root_volume_size_gib >= 8 && var.root_volume_size_gib <= 16384 && floor(var.root_volume_size_gib) == var.root_volume_size_gib
    error_message = "root_volume_size_gib must be a whole number from 8 to 16384."
  }
}

variable "ebs_kms_key_arn" {
  description = "KMS key that encrypts the runners' root volumes; null: the account's default EBS key."
  type        = string
  default     = null

  validation {
    condition     = var.ebs_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$", var.ebs_kms_key_arn))
    error_message = "ebs_kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)."
  }
}

variable "associate_public_ip_address" {
  description = "Give runners a public IPv4 address. Off by default: runners belong in private subnets behind NAT."
  type        = bool
  default     = false
}

variable "metadata_hop_limit" {
  description = "IMDSv2 response hop limit: 1 keeps the metadata (and the instance role) away from containers on bridge networks; 2 lets jobs' Docker containers reach it."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 2], var.metadata_hop_limit)
    error_message = "metadata_hop_limit must be 1 or 2."
  }
}

variable "runner_egress_cidr_blocks" {
  description = "IPv4 ranges the runners may reach (all protocols); jobs need GitHub and whatever registries they use."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for cidr in var.runner_egress_cidr_blocks : can(cidrhost(cidr, 0)) && can(regex("^[0-9.]+/[0-9]+$", cidr))])
    error_message = "runner_egress_cidr_blocks must hold IPv4 CIDR blocks such as 10.0.0.0/8."
  }
}

variable "runner_egress_ipv6_cidr_blocks" {
  description = "IPv6 ranges the runners may reach (all protocols)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.runner_egress_ipv6_cidr_blocks : can(cidrhost(cidr, 0)) && can(regex(":", cidr))])
    error_message = "runner_egress_ipv6_cidr_blocks must hold IPv6 CIDR blocks such as ::/0."
  }
}

variable "max_attempts" {
  description = "RUNS_FLEET_MAX_ATTEMPTS: deliveries of a job before runs-fleet dead-letters it; the job queue's redrive policy moves a message after max_attempts + 1 receives."
  type        = number
  default     = 3

  validation {
    condition     = var.max_attempts >= 1 && var.max_attempts <= 999 && floor(var.max_attempts) == var.max_attempts
    error_message = "max_attempts must be a whole number from 1 to 999."
  }
}

variable "ssm_prefix" {
  description = "RUNS_FLEET_SSM_PREFIX: the Parameter Store path of the runner configs (<prefix>/<instance id or runner name>)."
  type        = string
  default     = "/runs-fleet/runners"

  validation {
    condition     = can(regex("^(/[A-Za-z0-9_.-]+){1,14}$", var.ssm_prefix)) && !can(regex("^/(?i:aws|ssm)(/|$)", var.ssm_prefix))
    error_message = "ssm_prefix must be a path like /runs-fleet/runners: 1-14 levels, no trailing '/', not under /aws or /ssm."
  }
}

variable "ssm_kms_key_arn" {
  description = "RUNS_FLEET_SSM_KMS_KEY_ID: the KMS key that encrypts runner configs; null: the AWS managed key alias/aws/ssm."
  type        = string
  default     = null

  validation {
    condition     = var.ssm_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$", var.ssm_kms_key_arn))
    error_message = "ssm_kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)."
  }
}

variable "dynamodb_kms_key_arn" {
  description = "KMS key that encrypts the tables; null: the AWS managed key alias/aws/dynamodb."
  type        = string
  default     = null

  validation {
    condition     = var.dynamodb_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$", var.dynamodb_kms_key_arn))
    error_message = "dynamodb_kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)."
  }
}

variable "cloudwatch_namespace" {
  description = "RUNS_FLEET_CLOUDWATCH_NAMESPACE: the only namespace the orchestrator may put metrics in."
  type        = string
  default     = "RunsFleet"

  validation {
    condition     = can(regex("^[A-Za-z0-9./#:_-]{1,255}$", var.cloudwatch_namespace)) && !startswith(var.cloudwatch_namespace, "AWS/")
    error_message = "cloudwatch_namespace must be 1-255 characters of letters, digits and . / # : _ - and not start with AWS/."
  }
}

variable "runner_log_group" {
  description = "RUNS_FLEET_EC2_LOG_GROUP of the runners: the CloudWatch Logs group their agents ship their own log and the runner's output to, secrets masked, one stream <runner name or pool>/<instance id> per instance. create = false: the group named exists already and the runners only get access to it. retention_in_days and kms_key_arn (whose key policy must let logs.<region>.amazonaws.com use it) apply to a group this module creates. null: nothing is shipped."
  type = object({
    create            = optional(bool, true)
    name              = optional(string, "/runs-fleet/runners")
    retention_in_days = optional(number, 30)
    kms_key_arn       = optional(string)
  })
  default = {}

  validation {
    condition     = var.runner_log_group == null || can(regex("^[A-Za-z0-9._/#-]{1,512}$", try(var.runner_log_group.name, "")))
    error_message = "runner_log_group.name must be 1-512 letters, digits and . - _ / #."
  }

  validation {
    condition     = var.runner_log_group == null || contains([0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], try(var.runner_log_group.retention_in_days, -1))
    error_message = "runner_log_group.retention_in_days must be one of CloudWatch Logs' retention periods (0: never expire, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }

  validation {
    condition     = try(var.runner_log_group.kms_key_arn, null) == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$", try(var.runner_log_group.kms_key_arn, "")))
    error_message = "runner_log_group.kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)."
  }
}

variable "deletion_protection" {
  description = "Protect the tables from deletion (turn off before a terraform destroy)."
  type        = bool
  default     = true
}

variable "runner_dir" {
  description = "RUNS_FLEET_RUNNER_DIR on the AMI: the GitHub Actions runner's directory."
  type        = string
  default     = "/opt/actions-runner"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+$", var.runner_dir))
    error_message = "runner_dir must be an absolute path of letters, digits and _ . / -."
  }
}

variable "runner_user" {
  description = "The AMI's user that runs the agent and the runner (the GitHub runner refuses root)."
  type        = string
  default     = "runner"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.runner_user))
    error_message = "runner_user must be a POSIX user name."
  }
}

variable "runs_fleet_command" {
  description = "Absolute path of the runs-fleet executable on the AMI."
  type        = string
  default     = "/opt/runs-fleet/bin/runs-fleet"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_./-]+$", var.runs_fleet_command))
    error_message = "runs_fleet_command must be an absolute path of letters, digits and _ . / -."
  }
}

variable "ecs_task_trust" {
  description = "Let ECS tasks of this account assume the orchestrator role (the orchestrator on ECS Fargate)."
  type        = bool
  default     = true
}

variable "eks_oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider; when set, the chart's ServiceAccount may assume the orchestrator role (IRSA)."
  type        = string
  default     = null

  validation {
    condition     = var.eks_oidc_provider_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/.+$", var.eks_oidc_provider_arn))
    error_message = "eks_oidc_provider_arn must be an IAM OIDC provider ARN (arn:aws:iam::<account>:oidc-provider/oidc.eks.<region>.amazonaws.com/id/<id>)."
  }
}

variable "kubernetes_namespace" {
  description = "Namespace of the Helm release (for the IRSA trust)."
  type        = string
  default     = "runs-fleet"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.kubernetes_namespace))
    error_message = "kubernetes_namespace must be a DNS-1123 label."
  }
}

variable "service_account_name" {
  description = "The chart's ServiceAccount name (for the IRSA trust)."
  type        = string
  default     = "runs-fleet"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.service_account_name))
    error_message = "service_account_name must be a DNS-1123 subdomain."
  }
}

variable "create_service_linked_roles" {
  description = "Create the EC2 Spot and EC2 Fleet service-linked roles (only once per account, and only when the account has none yet)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags on every resource this module creates (no aws: or runs-fleet: keys)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for key in keys(var.tags) : !startswith(lower(key), "aws:") && !startswith(key, "runs-fleet:")])
    error_message = "tags must not use the aws: or runs-fleet: prefixes."
  }
}
