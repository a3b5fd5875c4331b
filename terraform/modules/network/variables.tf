variable "name" {
  description = "Name prefix for every resource (e.g. streamsight-dev)."
  type        = string
}

variable "cidr" {
  description = "IPv4 CIDR block of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "azs" {
  description = "The two availability zones to spread the subnets over, listed explicitly so the set never changes when AWS adds a zone."
  type        = list(string)

  validation {
    condition     = length(var.azs) == 2 && length(distinct(var.azs)) == 2
    error_message = "azs must list exactly two distinct availability zones."
  }
}

variable "public_subnet_cidrs" {
  description = "CIDRs of the two public subnets (NAT gateways only). Empty: derived from cidr (/24s at netnum 0 and 1)."
  type        = list(string)
  default     = []
}

variable "private_subnet_cidrs" {
  description = "CIDRs of the two private subnets (every instance). Empty: derived from cidr (/20s at netnum 1 and 2)."
  type        = list(string)
  default     = []
}

variable "one_nat_gateway_per_az" {
  description = "true: one NAT gateway per AZ (no cross-AZ dependency, prod). false: a single NAT gateway shared by both private subnets (cheaper, dev)."
  type        = bool
  default     = false
}

variable "enable_s3_gateway_endpoint" {
  description = "Create an S3 gateway VPC endpoint so lake traffic stays off the NAT gateway."
  type        = bool
  default     = true
}

variable "enable_flow_logs" {
  description = "Capture VPC flow logs into CloudWatch Logs. Keep true; only the moto-based test turns it off."
  type        = bool
  default     = true
}

variable "flow_log_traffic_type" {
  description = "Traffic captured by the flow log: ACCEPT, REJECT or ALL."
  type        = string
  default     = "ALL"

  validation {
    condition     = contains(["ACCEPT", "REJECT", "ALL"], var.flow_log_traffic_type)
    error_message = "flow_log_traffic_type must be ACCEPT, REJECT or ALL."
  }
}

variable "flow_log_retention_days" {
  description = "Retention of the flow-log log group, in days."
  type        = number
  default     = 365
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key that encrypts the flow-log log group (its key policy must allow logs.<region>.amazonaws.com)."
  type        = string
}

variable "private_zone_name" {
  description = "Name of a Route 53 private hosted zone attached to the VPC (hosts such as kafka-1.internal). null: no zone."
  type        = string
  default     = "internal"
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
