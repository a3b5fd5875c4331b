output "ami_id" {
  description = "AMI used by every instance."
  value       = data.aws_ami.this.id
}

output "kafka_instance_ids" {
  description = "Instance IDs of the Kafka brokers (in KafkaNodeId order)."
  value       = aws_instance.kafka[*].id
}

output "kafka_private_ips" {
  description = "Private IPs of the Kafka brokers (in KafkaNodeId order)."
  value       = aws_instance.kafka[*].private_ip
}

output "spark_master_instance_id" {
  description = "Instance ID of the Spark master."
  value       = aws_instance.spark_master.id
}

output "spark_master_private_ip" {
  description = "Private IP of the Spark master."
  value       = aws_instance.spark_master.private_ip
}

output "hdfs_namenode_instance_id" {
  description = "Instance ID of the HDFS namenode."
  value       = aws_instance.hdfs_namenode.id
}

output "hdfs_namenode_private_ip" {
  description = "Private IP of the HDFS namenode."
  value       = aws_instance.hdfs_namenode.private_ip
}

output "spark_workers_asg_name" {
  description = "Name of the Spark worker Auto Scaling group (the inventory resolves its instances at run time)."
  value       = aws_autoscaling_group.spark_worker.name
}

output "spark_worker_launch_template_id" {
  description = "ID of the Spark worker launch template."
  value       = aws_launch_template.spark_worker.id
}

output "dns_names" {
  description = "Relative private DNS names created in the private zone (empty when create_dns_records is false)."
  value = concat(
    aws_route53_record.kafka[*].name,
    aws_route53_record.spark_master[*].name,
    aws_route53_record.hdfs_namenode[*].name,
  )
}
