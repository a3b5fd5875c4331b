variable "name" {
  description = "Name prefix for every resource (e.g. streamsight-dev)."
  type        = string
}

variable "vpc_id" {
  description = "ID of the VPC the security groups belong to."
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR block of the VPC: the widest source any ingress rule may use, and the destination of intra-VPC egress."
  type        = string
}

variable "kafka_client_cidr_blocks" {
  description = "Extra CIDRs (inside the VPC) allowed to reach the Kafka SASL_SSL client port, e.g. producer hosts. null: the whole VPC CIDR. []: only the cluster roles."
  type        = list(string)
  default     = null
}

variable "ui_cidr_blocks" {
  description = "CIDRs (inside the VPC) allowed to reach the web UIs (Spark 8080/8081/4040+, HDFS 9870/9864). null: the whole VPC CIDR. []: none (use SSM port forwarding on the instance itself)."
  type        = list(string)
  default     = null
}

variable "kafka_client_port" {
  description = "Kafka SASL_SSL listener (clients and inter-broker traffic)."
  type        = number
  default     = 9096
}

variable "kafka_controller_port" {
  description = "Kafka KRaft controller listener (brokers only)."
  type        = number
  default     = 9093
}

variable "spark_master_port" {
  description = "Spark standalone master RPC port (spark://host:PORT)."
  type        = number
  default     = 7077
}

variable "spark_worker_port" {
  description = "Spark standalone worker RPC port (SPARK_WORKER_PORT; Ansible must pin it)."
  type        = number
  default     = 7078
}

variable "spark_master_ui_port" {
  description = "Spark master web UI."
  type        = number
  default     = 8080
}

variable "spark_worker_ui_port" {
  description = "Spark worker web UI."
  type        = number
  default     = 8081
}

variable "spark_driver_ui_ports" {
  description = "Spark application (driver) UI port range: one port per concurrently running driver on the master, starting at 4040."
  type        = object({ from = number, to = number })
  default     = { from = 4040, to = 4050 }
}

variable "spark_internal_ports" {
  description = "Port range for spark.driver.port, spark.blockManager.port and executor traffic (Ansible must pin these Spark settings inside this range)."
  type        = object({ from = number, to = number })
  default     = { from = 40000, to = 40100 }
}

variable "hdfs_namenode_rpc_port" {
  description = "HDFS namenode RPC (fs.defaultFS)."
  type        = number
  default     = 8020
}

variable "hdfs_namenode_http_port" {
  description = "HDFS namenode web UI."
  type        = number
  default     = 9870
}

variable "hdfs_datanode_ports" {
  description = "HDFS datanode ports: data transfer, IPC, HTTP."
  type        = object({ data = number, ipc = number, http = number })
  default     = { data = 9866, ipc = 9867, http = 9864 }
}

variable "allow_http_egress" {
  description = "Allow TCP 80 egress to the internet (through NAT) for OS package mirrors. HTTPS (443) egress is always allowed: AWS APIs (SSM, KMS, CloudWatch, SageMaker) are reached through NAT."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
