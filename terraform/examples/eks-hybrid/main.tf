# Hybrid mode: the orchestrator runs in EKS (the Helm chart with mode: ec2) and launches
# EC2 runners. Its ServiceAccount assumes the orchestrator role through the cluster's
# IAM OIDC provider (IRSA); helm_values_yaml goes to `helm install -f`.

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_iam_openid_connect_provider" "cluster" {
  url = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
}

module "runs_fleet" {
  source = "../.."

  vpc_id                = data.aws_eks_cluster.this.vpc_config[0].vpc_id
  private_subnet_ids    = var.private_subnet_ids
  ami_ids               = var.ami_ids
  ecs_task_trust        = false
  eks_oidc_provider_arn = data.aws_iam_openid_connect_provider.cluster.arn
  kubernetes_namespace  = var.namespace
  service_account_name  = var.service_account_name
}
