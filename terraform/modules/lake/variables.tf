variable "name" {
  description = "Name prefix for every resource (e.g. streamsight-dev)."
  type        = string
}

variable "bucket_name" {
  description = "Name of the lake bucket. null: \"<name>-lake-<account id>\"."
  type        = string
  default     = null
}

variable "log_bucket_name" {
  description = "Name of the bucket receiving the lake's S3 server access logs. null: \"<name>-lake-logs-<account id>\"."
  type        = string
  default     = null
}

variable "lake_prefix" {
  description = "Key prefix of the lake inside the bucket (STREAMSIGHT_LAKE_DIR = s3a://<bucket>/<lake_prefix>)."
  type        = string
  default     = "lake"

  validation {
    condition     = length(var.lake_prefix) > 0 && !startswith(var.lake_prefix, "/") && !endswith(var.lake_prefix, "/")
    error_message = "lake_prefix must be non-empty, without leading or trailing slash."
  }
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete non-empty buckets (dev only; never in prod)."
  type        = bool
  default     = false
}

variable "kms_deletion_window_in_days" {
  description = "Waiting period before the KMS key is deleted after destroy (7-30)."
  type        = number
  default     = 30
}

variable "bronze_ia_transition_days" {
  description = "Days after which objects under <lake_prefix>/bronze/ move to STANDARD_IA."
  type        = number
  default     = 30
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which noncurrent object versions are deleted (lake and log bucket)."
  type        = number
  default     = 30
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which incomplete multipart uploads are aborted."
  type        = number
  default     = 7
}

variable "access_log_expiration_days" {
  description = "Days S3 server access logs are kept in the log bucket."
  type        = number
  default     = 365
}

variable "log_group_name_prefix" {
  description = "CloudWatch Logs log groups whose names start with this prefix may use the key (flow logs, application logs)."
  type        = string
  default     = "/streamsight/"
}

variable "create_autoscaling_service_linked_role" {
  description = "Create the EC2 Auto Scaling service-linked role. The key policy names it (Auto Scaling needs the key for encrypted worker volumes) and KMS rejects a policy naming a role that does not exist: set true in an account that has never used Auto Scaling."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}

variable "glue_database_name" {
  description = "Glue database of the lake's tables (STREAMSIGHT_CATALOG__DATABASE; lower case, digits, _)."
  type        = string
  default     = "streamsight"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]*$", var.glue_database_name))
    error_message = "glue_database_name must be lower case letters, digits and underscores, not starting with a digit."
  }
}

variable "manage_glue_catalog_encryption" {
  description = "Encrypt the account's Glue Data Catalog metadata with the lake's key. One setting per account and region, shared by every stack there: enable it in the stack that owns the account's catalog."
  type        = bool
  default     = false
}

variable "predictions_deletion_protection" {
  description = "Refuse to delete the predictions table (DynamoDB deletion protection)."
  type        = bool
  default     = true
}
