# Outputs consumed by the Ansible inventory (`terraform output -json`) and by the aws profile of
# conf/streamsight.yaml (STREAMSIGHT_LAKE_DIR = lake_uri).

output "region" {
  description = "AWS region of the deployment."
  value       = var.region
}

output "vpc_id" {
  description = "ID of the VPC."
  value       = module.network.vpc_id
}

output "vpc_cidr_block" {
  description = "CIDR block of the VPC."
  value       = module.network.vpc_cidr_block
}

output "kafka_private_ips" {
  description = "Private IPs of the Kafka brokers, in KRaft node-id order (node.id = index + 1)."
  value       = module.compute.kafka_private_ips
}

output "kafka_instance_ids" {
  description = "Instance IDs of the Kafka brokers (SSM targets)."
  value       = module.compute.kafka_instance_ids
}

output "spark_master_private_ip" {
  description = "Private IP of the Spark master."
  value       = module.compute.spark_master_private_ip
}

output "spark_master_instance_id" {
  description = "Instance ID of the Spark master (SSM target)."
  value       = module.compute.spark_master_instance_id
}

output "spark_workers_asg_name" {
  description = "Auto Scaling group of the Spark workers / HDFS datanodes (resolve its instances at inventory time)."
  value       = module.compute.spark_workers_asg_name
}

output "hdfs_namenode_private_ip" {
  description = "Private IP of the HDFS namenode."
  value       = module.compute.hdfs_namenode_private_ip
}

output "hdfs_namenode_instance_id" {
  description = "Instance ID of the HDFS namenode (SSM target)."
  value       = module.compute.hdfs_namenode_instance_id
}

output "lake_bucket_name" {
  description = "Name of the lake bucket."
  value       = module.lake.bucket_name
}

output "lake_uri" {
  description = "Lake root for STREAMSIGHT_LAKE_DIR."
  value       = module.lake.lake_uri
}

output "glue_database_name" {
  description = "Glue database of the lake's tables, for STREAMSIGHT_CATALOG__DATABASE."
  value       = module.lake.glue_database_name
}

output "kms_key_arn" {
  description = "ARN of the customer-managed KMS key (lake, EBS, logs, SNS)."
  value       = module.lake.kms_key_arn
}

output "sns_topic_arn" {
  description = "ARN of the alarm topic."
  value       = module.monitoring.sns_topic_arn
}

output "log_group_names" {
  description = "CloudWatch log groups the CloudWatch agent ships to, per source."
  value       = module.monitoring.log_group_names
}

output "ansible_inventory" {
  description = "Everything the Ansible inventory needs, in one object."
  value = {
    region                    = var.region
    kafka                     = module.compute.kafka_private_ips
    kafka_instance_ids        = module.compute.kafka_instance_ids
    spark_master              = module.compute.spark_master_private_ip
    spark_master_instance_id  = module.compute.spark_master_instance_id
    spark_workers_asg_name    = module.compute.spark_workers_asg_name
    hdfs_namenode             = module.compute.hdfs_namenode_private_ip
    hdfs_namenode_instance_id = module.compute.hdfs_namenode_instance_id
    private_zone_name         = module.network.private_zone_name
    lake_bucket_name          = module.lake.bucket_name
    lake_uri                  = module.lake.lake_uri
    kms_key_arn               = module.lake.kms_key_arn
    sns_topic_arn             = module.monitoring.sns_topic_arn
    ports                     = module.security.ports
  }
}

output "predictions_table_name" {
  description = "DynamoDB table of online predictions: STREAMSIGHT_PREDICTIONS_STORE__TABLE."
  value       = module.lake.predictions_table_name
}

output "sagemaker_image_repository_url" {
  description = "Push the Dockerfile's sagemaker stage here; STREAMSIGHT_SAGEMAKER__IMAGE_URI = this URL:TAG."
  value       = module.serving.repository_url
}

output "sagemaker_execution_role_arn" {
  description = "STREAMSIGHT_SAGEMAKER__EXECUTION_ROLE_ARN: the role the endpoints run with."
  value       = module.serving.execution_role_arn
}

output "sagemaker_artifacts_uri" {
  description = "STREAMSIGHT_SAGEMAKER__ARTIFACTS_URI: where deploy uploads model.tar.gz."
  value       = "s3://${module.lake.bucket_name}/${module.serving.artifacts_prefix}"
}
