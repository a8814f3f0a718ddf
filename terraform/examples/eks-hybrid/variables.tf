variable "region" {
  description = "AWS region of the deployment."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region such as eu-west-1."
  }
}

variable "cluster_name" {
  description = "The EKS cluster the chart is installed in."
  type        = string

  validation {
    condition     = can(regex("^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$", var.cluster_name))
    error_message = "cluster_name must be an EKS cluster name."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets the runners start in (the cluster's VPC)."
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

variable "namespace" {
  description = "Namespace of the Helm release."
  type        = string
  default     = "runs-fleet"
}

variable "service_account_name" {
  description = "The chart's ServiceAccount (serviceAccount.name, by default the release's full name)."
  type        = string
  default     = "runs-fleet"
}
