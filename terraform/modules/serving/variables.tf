variable "name" {
  description = "Name prefix for every resource (e.g. streamsight-dev)."
  type        = string
}

variable "lake_bucket_arn" {
  description = "ARN of the lake bucket; model artifacts (model.tar.gz) go below artifacts_prefix in it."
  type        = string
}

variable "artifacts_prefix" {
  description = "Key prefix of the model artifacts in the lake bucket (sagemaker.artifacts_uri = s3://BUCKET/PREFIX)."
  type        = string
  default     = "sagemaker-models"
}

variable "kms_key_arn" {
  description = "ARN of the lake's KMS key: it encrypts the artifacts and the image repository."
  type        = string
}

variable "log_group_name_prefix" {
  description = "Log group prefix the endpoints' containers write to (SageMaker's is /aws/sagemaker/Endpoints/)."
  type        = string
  default     = "/aws/sagemaker/Endpoints/"
}

variable "force_delete_images" {
  description = "Let destroy delete the repository with its images (dev only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
