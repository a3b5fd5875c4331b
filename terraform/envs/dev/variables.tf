variable "region" {
  description = "AWS region of the deployment."
  type        = string
  default     = "eu-west-1"
}

variable "azs" {
  description = "The two availability zones of the deployment (must belong to region)."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b"]
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "ami_id" {
  description = "AMI for every instance. null: the newest Ubuntu 24.04 LTS (x86_64) published by Canonical."
  type        = string
  default     = null
}

variable "ami_name_filter" {
  description = "Name pattern of the AMI looked up when ami_id is null."
  type        = string
  default     = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
}

variable "alarm_email_endpoints" {
  description = "E-mail addresses subscribed to the alarm topic."
  type        = list(string)
  default     = []
}

variable "sagemaker_endpoint_arns" {
  description = "SageMaker endpoints the Spark jobs may invoke (full ARNs). Empty: none."
  type        = list(string)
  default     = []
}

variable "streams" {
  description = "Streams (conf/contracts/<stream>.yaml) that get pipeline alarms."
  type        = list(string)
  default     = ["machine_telemetry"]
}

variable "create_autoscaling_service_linked_role" {
  description = "Create the EC2 Auto Scaling service-linked role (true only in an account that has never used Auto Scaling)."
  type        = bool
  default     = false
}

variable "enable_flow_logs" {
  description = "VPC flow logs to CloudWatch Logs. Keep true (the moto-based test turns it off in its override file)."
  type        = bool
  default     = true
}

variable "enable_detailed_monitoring" {
  description = "Detailed (1-minute) EC2 monitoring. Keep true (the moto-based test turns it off in its override file)."
  type        = bool
  default     = true
}

variable "enable_dashboard" {
  description = "CloudWatch dashboard. Keep true (the moto-based test may turn it off in its override file)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource (Project, Environment and ManagedBy are always set)."
  type        = map(string)
  default     = {}
}
