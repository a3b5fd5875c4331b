# Streamsight dev: the smallest cluster that still has every role (3 KRaft brokers, Spark master,
# 1-2 workers with HDFS datanodes, HDFS namenode). Buckets can be destroyed with their contents.

locals {
  environment = "dev"
  name        = "streamsight-${local.environment}"

  tags = merge(var.tags, {
    Project     = "streamsight"
    Environment = local.environment
    ManagedBy   = "terraform"
  })
}

module "lake" {
  source = "../../modules/lake"

  name                                   = local.name
  force_destroy                          = true
  kms_deletion_window_in_days            = 7
  log_group_name_prefix                  = "/streamsight/${local.name}/"
  create_autoscaling_service_linked_role = var.create_autoscaling_service_linked_role
  predictions_deletion_protection        = false

  tags = local.tags
}

module "serving" {
  source = "../../modules/serving"

  name                = local.name
  lake_bucket_arn     = module.lake.bucket_arn
  kms_key_arn         = module.lake.kms_key_arn
  force_delete_images = true

  tags = local.tags
}

module "network" {
  source = "../../modules/network"

  name                   = local.name
  azs                    = var.azs
  cidr                   = var.vpc_cidr
  one_nat_gateway_per_az = false
  enable_flow_logs       = var.enable_flow_logs
  kms_key_arn            = module.lake.kms_key_arn

  tags = local.tags
}

module "security" {
  source = "../../modules/security"

  name           = local.name
  vpc_id         = module.network.vpc_id
  vpc_cidr_block = module.network.vpc_cidr_block

  tags = local.tags
}

module "iam" {
  source = "../../modules/iam"

  name                    = local.name
  lake_bucket_arn         = module.lake.bucket_arn
  lake_prefix             = module.lake.lake_prefix
  kms_key_arn             = module.lake.kms_key_arn
  glue_database_name      = module.lake.glue_database_name
  predictions_table_arn   = module.lake.predictions_table_arn
  log_group_name_prefix   = "/streamsight/${local.name}/instances/"
  sagemaker_endpoint_arns = var.sagemaker_endpoint_arns

  tags = local.tags
}

module "compute" {
  source = "../../modules/compute"

  name            = local.name
  ami_id          = var.ami_id
  ami_name_filter = var.ami_name_filter

  private_subnet_ids     = module.network.private_subnet_ids
  security_group_ids     = module.security.security_group_ids
  instance_profile_names = module.iam.instance_profile_names
  kms_key_arn            = module.lake.kms_key_arn

  root_volume_size               = 20
  kafka_instance_type            = "t3.large"
  kafka_data_volume_size         = 50
  spark_master_instance_type     = "t3.large"
  spark_worker_instance_type     = "m6i.large"
  spark_worker_min_size          = 1
  spark_worker_max_size          = 2
  spark_worker_desired_capacity  = 1
  spark_worker_data_volume_size  = 50
  hdfs_namenode_instance_type    = "t3.medium"
  hdfs_namenode_data_volume_size = 20

  detailed_monitoring = var.enable_detailed_monitoring
  create_dns_records  = true
  private_zone_id     = module.network.private_zone_id

  tags = local.tags
}

module "monitoring" {
  source = "../../modules/monitoring"

  name                  = local.name
  environment           = local.environment
  kms_key_arn           = module.lake.kms_key_arn
  alarm_email_endpoints = var.alarm_email_endpoints
  streams               = var.streams
  enable_dashboard      = var.enable_dashboard

  kafka_instance_ids        = module.compute.kafka_instance_ids
  spark_master_instance_id  = module.compute.spark_master_instance_id
  hdfs_namenode_instance_id = module.compute.hdfs_namenode_instance_id
  spark_workers_asg_name    = module.compute.spark_workers_asg_name

  tags = local.tags
}
