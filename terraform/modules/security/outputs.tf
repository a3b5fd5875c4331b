output "security_group_ids" {
  description = "Security group ID per role: kafka, spark_master, spark_worker, hdfs_namenode."
  value       = { for role, sg in aws_security_group.this : role => sg.id }
}

output "kafka_security_group_id" {
  description = "Security group of the Kafka brokers."
  value       = aws_security_group.this["kafka"].id
}

output "spark_master_security_group_id" {
  description = "Security group of the Spark master."
  value       = aws_security_group.this["spark_master"].id
}

output "spark_worker_security_group_id" {
  description = "Security group of the Spark workers / HDFS datanodes."
  value       = aws_security_group.this["spark_worker"].id
}

output "hdfs_namenode_security_group_id" {
  description = "Security group of the HDFS namenode."
  value       = aws_security_group.this["hdfs_namenode"].id
}

output "ports" {
  description = "Ports opened by this module, for the Ansible configuration."
  value = {
    kafka_client       = var.kafka_client_port
    kafka_controller   = var.kafka_controller_port
    spark_master       = var.spark_master_port
    spark_worker       = var.spark_worker_port
    spark_master_ui    = var.spark_master_ui_port
    spark_worker_ui    = var.spark_worker_ui_port
    spark_driver_ui    = var.spark_driver_ui_ports
    spark_internal     = var.spark_internal_ports
    hdfs_namenode_rpc  = var.hdfs_namenode_rpc_port
    hdfs_namenode_http = var.hdfs_namenode_http_port
    hdfs_datanode      = var.hdfs_datanode_ports
  }
}
