output "bucket_name" {
  description = "Name of the lake bucket."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the lake bucket."
  value       = aws_s3_bucket.this.arn
}

output "lake_prefix" {
  description = "Key prefix of the lake inside the bucket."
  value       = var.lake_prefix
}

output "lake_uri" {
  description = "Lake root for STREAMSIGHT_LAKE_DIR (s3a://<bucket>/<prefix>)."
  value       = "s3a://${aws_s3_bucket.this.id}/${var.lake_prefix}"
}

output "log_bucket_name" {
  description = "Name of the S3 access-log bucket."
  value       = aws_s3_bucket.logs.id
}

output "kms_key_arn" {
  description = "ARN of the customer-managed KMS key (lake, EBS, log groups, SNS)."
  value       = aws_kms_key.this.arn
}

output "kms_key_id" {
  description = "ID of the customer-managed KMS key."
  value       = aws_kms_key.this.key_id
}

output "kms_alias_name" {
  description = "Alias of the customer-managed KMS key."
  value       = aws_kms_alias.this.name
}

output "glue_database_name" {
  description = "Glue database of the lake's tables (STREAMSIGHT_CATALOG__DATABASE)."
  value       = aws_glue_catalog_database.this.name
}

output "glue_database_arn" {
  description = "ARN of the Glue database of the lake's tables."
  value       = aws_glue_catalog_database.this.arn
}

output "predictions_table_name" {
  description = "DynamoDB table of online predictions (STREAMSIGHT_PREDICTIONS_STORE__TABLE)."
  value       = aws_dynamodb_table.predictions.name
}

output "predictions_table_arn" {
  description = "ARN of the predictions table."
  value       = aws_dynamodb_table.predictions.arn
}
