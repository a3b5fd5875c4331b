variable "name" {
  description = "Name prefix for every resource (e.g. streamsight-dev)."
  type        = string
}

variable "lake_bucket_arn" {
  description = "ARN of the lake bucket."
  type        = string
}

variable "lake_prefix" {
  description = "Key prefix of the lake inside the bucket: Spark may read/write only below it."
  type        = string
  default     = "lake"
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key of the lake (the only key Spark may use)."
  type        = string
}

variable "log_group_name_prefix" {
  description = "Instances may write only to CloudWatch log groups whose names start with this prefix (e.g. /streamsight/streamsight-dev/)."
  type        = string
}

variable "metric_namespaces" {
  description = "CloudWatch namespaces the instances may publish metrics to (the application's and the CloudWatch agent's)."
  type        = list(string)
  default     = ["Streamsight", "CWAgent"]
}

variable "sagemaker_endpoint_arns" {
  description = "ARNs of the SageMaker endpoints the Spark jobs may invoke. Empty: no SageMaker permission at all."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.sagemaker_endpoint_arns : can(regex("^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:[0-9]{12}:endpoint/[A-Za-z0-9-]+$", arn))])
    error_message = "sagemaker_endpoint_arns must be full endpoint ARNs (arn:aws:sagemaker:REGION:ACCOUNT:endpoint/NAME), no wildcards."
  }
}

variable "glue_database_name" {
  description = "Glue database whose tables the Spark jobs may register (`streamsight lake register`). Empty: no Glue permission."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}

variable "predictions_table_arn" {
  description = "DynamoDB table of online predictions the jobs put to and the API reads. Empty: no DynamoDB permission."
  type        = string
  default     = ""
}
