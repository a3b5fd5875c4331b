variable "name" {
  description = "Name prefix for every resource (e.g. streamsight-dev)."
  type        = string
}

variable "environment" {
  description = "Value of the Environment dimension the Streamsight jobs put on their custom metrics (e.g. dev)."
  type        = string
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key encrypting the SNS topic and the log groups (its policy must allow cloudwatch.amazonaws.com and logs.<region>.amazonaws.com)."
  type        = string
}

variable "alarm_email_endpoints" {
  description = "E-mail addresses subscribed to the alarm topic (each must confirm the subscription)."
  type        = list(string)
  default     = []
}

variable "streams" {
  description = "Stream names (conf/contracts/<stream>.yaml) that get consumer-lag, micro-batch-duration and dead-letter-rate alarms."
  type        = list(string)
  default     = ["machine_telemetry"]
}

variable "metric_namespace" {
  description = "CloudWatch namespace of the Streamsight custom metrics."
  type        = string
  default     = "Streamsight"
}

variable "agent_namespace" {
  description = "CloudWatch namespace of the CloudWatch agent (disk_used_percent)."
  type        = string
  default     = "CWAgent"
}

variable "kafka_instance_ids" {
  description = "Instance IDs of the Kafka brokers."
  type        = list(string)
}

variable "spark_master_instance_id" {
  description = "Instance ID of the Spark master."
  type        = string
}

variable "hdfs_namenode_instance_id" {
  description = "Instance ID of the HDFS namenode."
  type        = string
}

variable "spark_workers_asg_name" {
  description = "Name of the Spark worker Auto Scaling group."
  type        = string
}

variable "data_mount_path" {
  description = "Mount point of the data volume on brokers, workers and the namenode (the path dimension of disk_used_percent)."
  type        = string
  default     = "/data"
}

variable "period_seconds" {
  description = "Alarm evaluation period, in seconds."
  type        = number
  default     = 60
}

variable "evaluation_periods" {
  description = "Consecutive periods over the threshold before an alarm fires."
  type        = number
  default     = 5
}

variable "consumer_lag_threshold" {
  description = "ConsumerLag (records behind the latest offsets, summed over partitions) that raises the alarm."
  type        = number
  default     = 100000
}

variable "micro_batch_duration_threshold_ms" {
  description = "MicroBatchDurationMs (p90 over the period) that raises the alarm."
  type        = number
  default     = 60000
}

variable "dead_letter_rate_threshold_percent" {
  description = "DeadLetterRate (percentage of input records sent to the dead-letter table) that raises the alarm."
  type        = number
  default     = 5
}

variable "late_rows_threshold" {
  description = "LateRowsDropped (rows dropped as later than the watermark, summed over the period) that raises the alarm; 0 alarms on any."
  type        = number
  default     = 0
}

variable "cpu_threshold_percent" {
  description = "Average CPUUtilization that raises a CPU alarm."
  type        = number
  default     = 85
}

variable "disk_threshold_percent" {
  description = "disk_used_percent that raises a disk alarm."
  type        = number
  default     = 80
}

variable "log_retention_days" {
  description = "Retention of the instance log groups, in days."
  type        = number
  default     = 365
}

variable "enable_dashboard" {
  description = "Create the CloudWatch dashboard."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
