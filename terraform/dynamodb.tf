# The state store's tables, with exactly the keys, key types, indexes and TTL attributes of
# runs_fleet_ec2.tables (jobs, pools, locks) and the spot circuit breaker's table. On-demand
# capacity: a CI fleet's load comes in bursts.

resource "aws_dynamodb_table" "jobs" {
  name                        = "${var.name}-jobs"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "job_id"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "job_id"
    type = "N"
  }

  attribute {
    name = "status"
    type = "S"
  }

  attribute {
    name = "pool"
    type = "S"
  }

  attribute {
    name = "status_job"
    type = "S"
  }

  global_secondary_index {
    name            = "by-status"
    hash_key        = "status"
    range_key       = "job_id"
    projection_type = "ALL"
  }

  global_secondary_index {
    name            = "by-pool"
    hash_key        = "pool"
    range_key       = "status_job"
    projection_type = "ALL"
  }

  ttl {
    attribute_name = "expire_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.dynamodb_kms_key_arn
  }

  tags = local.tags
}

resource "aws_dynamodb_table" "pools" {
  name                        = "${var.name}-pools"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "name"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "name"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.dynamodb_kms_key_arn
  }

  tags = local.tags
}

# Runner assignments and leases: no TTL (a lease keeps its fencing token across holdings).
resource "aws_dynamodb_table" "locks" {
  name                        = "${var.name}-locks"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "kind"
  range_key                   = "name"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "kind"
    type = "S"
  }

  attribute {
    name = "name"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.dynamodb_kms_key_arn
  }

  tags = local.tags
}

resource "aws_dynamodb_table" "circuit_breaker" {
  name                        = "${var.name}-circuit-state"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "key"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "key"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.dynamodb_kms_key_arn
  }

  tags = local.tags
}
