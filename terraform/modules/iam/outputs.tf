output "instance_profile_names" {
  description = "Instance profile name per role family: kafka, spark, hdfs."
  value       = { for k, p in aws_iam_instance_profile.this : k => p.name }
}

output "instance_profile_arns" {
  description = "Instance profile ARN per role family: kafka, spark, hdfs."
  value       = { for k, p in aws_iam_instance_profile.this : k => p.arn }
}

output "role_arns" {
  description = "IAM role ARN per role family: kafka, spark, hdfs."
  value       = { for k, r in aws_iam_role.this : k => r.arn }
}

output "role_names" {
  description = "IAM role name per role family: kafka, spark, hdfs."
  value       = { for k, r in aws_iam_role.this : k => r.name }
}
