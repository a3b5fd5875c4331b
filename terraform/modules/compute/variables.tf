variable "name" {
  description = "Name prefix for every resource (e.g. streamsight-dev)."
  type        = string
}

################################################################################
# Image
################################################################################

variable "ami_id" {
  description = "AMI for every instance (it must be owned by one of ami_owners). null: the newest image matching ami_name_filter from ami_owners."
  type        = string
  default     = null
}

variable "ami_owners" {
  description = "Accounts the AMI may come from (default: Canonical)."
  type        = list(string)
  default     = ["099720109477"]
}

variable "ami_name_filter" {
  description = "Name pattern of the AMI when ami_id is null (default: Ubuntu 24.04 LTS, x86_64, gp3 root)."
  type        = string
  default     = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
}

variable "ami_architecture" {
  description = "CPU architecture of the AMI (must match the instance types)."
  type        = string
  default     = "x86_64"
}

################################################################################
# Placement
################################################################################

variable "private_subnet_ids" {
  description = "Private subnets (two AZs) for every instance; brokers are spread round-robin."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "At least two private subnets (two AZs) are required."
  }
}

variable "security_group_ids" {
  description = "Security group per role, as output by the security module: kafka, spark_master, spark_worker, hdfs_namenode."
  type = object({
    kafka         = string
    spark_master  = string
    spark_worker  = string
    hdfs_namenode = string
  })
}

variable "instance_profile_names" {
  description = "Instance profile per role family, as output by the iam module: kafka, spark, hdfs."
  type = object({
    kafka = string
    spark = string
    hdfs  = string
  })
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key encrypting every EBS volume."
  type        = string
}

################################################################################
# Sizes
################################################################################

variable "root_volume_size" {
  description = "Root volume size (GiB) of every instance."
  type        = number
  default     = 30
}

variable "kafka_broker_count" {
  description = "Number of Kafka brokers (KRaft combined broker+controller); an odd number >= 3 for a controller quorum."
  type        = number
  default     = 3

  validation {
    condition     = var.kafka_broker_count >= 3 && var.kafka_broker_count % 2 == 1
    error_message = "kafka_broker_count must be an odd number >= 3 (KRaft quorum)."
  }
}

variable "kafka_instance_type" {
  description = "Instance type of the Kafka brokers."
  type        = string
  default     = "m6i.large"
}

variable "kafka_data_volume_size" {
  description = "Size (GiB) of each broker's log volume (/dev/sdf, gp3)."
  type        = number
  default     = 100
}

variable "spark_master_instance_type" {
  description = "Instance type of the Spark master (runs the client-mode drivers)."
  type        = string
  default     = "m6i.large"
}

variable "spark_worker_instance_type" {
  description = "Instance type of the Spark workers (also HDFS datanodes)."
  type        = string
  default     = "m6i.xlarge"
}

variable "spark_worker_min_size" {
  description = "Minimum number of Spark workers."
  type        = number
  default     = 2
}

variable "spark_worker_max_size" {
  description = "Maximum number of Spark workers."
  type        = number
  default     = 4
}

variable "spark_worker_desired_capacity" {
  description = "Desired number of Spark workers."
  type        = number
  default     = 2
}

variable "spark_worker_data_volume_size" {
  description = "Size (GiB) of each worker's data volume (/dev/sdf: HDFS datanode blocks and Spark local dirs)."
  type        = number
  default     = 200
}

variable "hdfs_namenode_instance_type" {
  description = "Instance type of the HDFS namenode."
  type        = string
  default     = "m6i.large"
}

variable "hdfs_namenode_data_volume_size" {
  description = "Size (GiB) of the namenode metadata volume (/dev/sdf)."
  type        = number
  default     = 50
}

variable "detailed_monitoring" {
  description = "1-minute CloudWatch metrics (detailed monitoring) on every instance. Keep true; only the moto-based test turns it off (moto does not implement MonitorInstances)."
  type        = bool
  default     = true
}

variable "wait_for_capacity_timeout" {
  description = "How long terraform waits for the worker Auto Scaling group to reach its desired capacity (\"0\" disables waiting)."
  type        = string
  default     = "10m"
}

################################################################################
# DNS
################################################################################

variable "create_dns_records" {
  description = "Create A records (kafka-N, spark-master, hdfs-namenode) in the private zone private_zone_id."
  type        = bool
  default     = false
}

variable "private_zone_id" {
  description = "Route 53 private hosted zone for the A records (used when create_dns_records is true)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags applied to every resource (and propagated to instances and volumes)."
  type        = map(string)
  default     = {}
}
