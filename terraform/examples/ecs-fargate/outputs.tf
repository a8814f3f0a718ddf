output "webhook_url" {
  description = "The URL to give the GitHub App as its webhook URL."
  value       = "${trimsuffix(var.public_url, "/")}/webhook"
}

output "environment" {
  description = "The orchestrator's environment (no secrets)."
  value       = local.environment
}
