output "helm_values" {
  description = "The chart's values by path (aws.*, serviceAccount.annotations with the IRSA role)."
  value       = module.runs_fleet.helm_values
}

output "helm_values_yaml" {
  description = "terraform output -raw helm_values_yaml > aws-values.yaml; helm install runs-fleet charts/runs-fleet -n <namespace> -f aws-values.yaml -f <your values>."
  value       = module.runs_fleet.helm_values_yaml
}
