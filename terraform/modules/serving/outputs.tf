output "repository_url" {
  description = "The inference image's repository (sagemaker.image_uri = REPOSITORY_URL:TAG)."
  value       = aws_ecr_repository.inference.repository_url
}

output "execution_role_arn" {
  description = "The role SageMaker runs the endpoints with (sagemaker.execution_role_arn)."
  value       = aws_iam_role.execution.arn
}

output "artifacts_prefix" {
  description = "Key prefix of the model artifacts in the lake bucket."
  value       = var.artifacts_prefix
}
