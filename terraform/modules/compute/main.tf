# Instances of the cluster. Every instance: private subnet, no public IP, IMDSv2 only, SSM
# instance profile (no SSH key), detailed monitoring, EBS-optimized, every volume encrypted with the
# lake's customer-managed key. Software is installed and configured by ansible/, which finds the
# hosts through the Role tag (and the outputs of the env).

data "aws_ami" "this" {
  most_recent = true
  owners      = var.ami_owners

  dynamic "filter" {
    for_each = var.ami_id == null ? [] : [var.ami_id]
    content {
      name   = "image-id"
      values = [filter.value]
    }
  }

  dynamic "filter" {
    for_each = var.ami_id == null ? [var.ami_name_filter] : []
    content {
      name   = "name"
      values = [filter.value]
    }
  }

  filter {
    name   = "architecture"
    values = [var.ami_architecture]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

locals {
  data_device = "/dev/sdf"

  metadata_options = {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }
}

################################################################################
# Kafka brokers (KRaft: each node is broker + controller; node id = KafkaNodeId tag)
################################################################################

resource "aws_instance" "kafka" {
  count = var.kafka_broker_count

  ami                         = data.aws_ami.this.id
  instance_type               = var.kafka_instance_type
  subnet_id                   = var.private_subnet_ids[count.index % length(var.private_subnet_ids)]
  vpc_security_group_ids      = [var.security_group_ids.kafka]
  iam_instance_profile        = var.instance_profile_names.kafka
  associate_public_ip_address = false
  monitoring                  = var.detailed_monitoring
  ebs_optimized               = true

  metadata_options {
    http_endpoint               = local.metadata_options.http_endpoint
    http_tokens                 = local.metadata_options.http_tokens
    http_put_response_hop_limit = local.metadata_options.http_put_response_hop_limit
    instance_metadata_tags      = local.metadata_options.instance_metadata_tags
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size
    encrypted             = true
    kms_key_id            = var.kms_key_arn
    delete_on_termination = true
  }

  ebs_block_device {
    device_name           = local.data_device
    volume_type           = "gp3"
    volume_size           = var.kafka_data_volume_size
    encrypted             = true
    kms_key_id            = var.kms_key_arn
    delete_on_termination = true
  }

  volume_tags = merge(var.tags, { Name = "${var.name}-kafka-${count.index + 1}", Role = "kafka" })

  tags = merge(var.tags, {
    Name        = "${var.name}-kafka-${count.index + 1}"
    Role        = "kafka"
    KafkaNodeId = tostring(count.index + 1)
  })

  lifecycle {
    ignore_changes = [ami] # a new AMI must not replace brokers; roll them deliberately
  }
}

################################################################################
# Spark master (standalone master + client-mode drivers of the streaming jobs)
################################################################################

resource "aws_instance" "spark_master" {
  ami                         = data.aws_ami.this.id
  instance_type               = var.spark_master_instance_type
  subnet_id                   = var.private_subnet_ids[0]
  vpc_security_group_ids      = [var.security_group_ids.spark_master]
  iam_instance_profile        = var.instance_profile_names.spark
  associate_public_ip_address = false
  monitoring                  = var.detailed_monitoring
  ebs_optimized               = true

  metadata_options {
    http_endpoint               = local.metadata_options.http_endpoint
    http_tokens                 = local.metadata_options.http_tokens
    http_put_response_hop_limit = local.metadata_options.http_put_response_hop_limit
    instance_metadata_tags      = local.metadata_options.instance_metadata_tags
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size
    encrypted             = true
    kms_key_id            = var.kms_key_arn
    delete_on_termination = true
  }

  volume_tags = merge(var.tags, { Name = "${var.name}-spark-master", Role = "spark_master" })

  tags = merge(var.tags, { Name = "${var.name}-spark-master", Role = "spark_master" })

  lifecycle {
    ignore_changes = [ami]
  }
}

################################################################################
# HDFS namenode
################################################################################

resource "aws_instance" "hdfs_namenode" {
  ami                         = data.aws_ami.this.id
  instance_type               = var.hdfs_namenode_instance_type
  subnet_id                   = var.private_subnet_ids[1]
  vpc_security_group_ids      = [var.security_group_ids.hdfs_namenode]
  iam_instance_profile        = var.instance_profile_names.hdfs
  associate_public_ip_address = false
  monitoring                  = var.detailed_monitoring
  ebs_optimized               = true

  metadata_options {
    http_endpoint               = local.metadata_options.http_endpoint
    http_tokens                 = local.metadata_options.http_tokens
    http_put_response_hop_limit = local.metadata_options.http_put_response_hop_limit
    instance_metadata_tags      = local.metadata_options.instance_metadata_tags
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size
    encrypted             = true
    kms_key_id            = var.kms_key_arn
    delete_on_termination = true
  }

  ebs_block_device {
    device_name           = local.data_device
    volume_type           = "gp3"
    volume_size           = var.hdfs_namenode_data_volume_size
    encrypted             = true
    kms_key_id            = var.kms_key_arn
    delete_on_termination = true
  }

  volume_tags = merge(var.tags, { Name = "${var.name}-hdfs-namenode", Role = "hdfs_namenode" })

  tags = merge(var.tags, { Name = "${var.name}-hdfs-namenode", Role = "hdfs_namenode" })

  lifecycle {
    ignore_changes = [ami]
  }
}

################################################################################
# Spark workers + HDFS datanodes: launch template + Auto Scaling group
################################################################################

resource "aws_launch_template" "spark_worker" {
  name_prefix            = "${var.name}-spark-worker-"
  description            = "Spark worker + HDFS datanode (${var.name})"
  image_id               = data.aws_ami.this.id
  instance_type          = var.spark_worker_instance_type
  ebs_optimized          = true
  update_default_version = true

  iam_instance_profile {
    name = var.instance_profile_names.spark
  }

  monitoring {
    enabled = var.detailed_monitoring
  }

  metadata_options {
    http_endpoint               = local.metadata_options.http_endpoint
    http_tokens                 = local.metadata_options.http_tokens
    http_put_response_hop_limit = local.metadata_options.http_put_response_hop_limit
    instance_metadata_tags      = local.metadata_options.instance_metadata_tags
  }

  network_interfaces {
    device_index                = 0
    associate_public_ip_address = false
    delete_on_termination       = true
    security_groups             = [var.security_group_ids.spark_worker]
  }

  block_device_mappings {
    device_name = data.aws_ami.this.root_device_name

    ebs {
      volume_type           = "gp3"
      volume_size           = var.root_volume_size
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  block_device_mappings {
    device_name = local.data_device

    ebs {
      volume_type           = "gp3"
      volume_size           = var.spark_worker_data_volume_size
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-spark-worker", Role = "spark_worker" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = "${var.name}-spark-worker", Role = "spark_worker" })
  }

  tags = merge(var.tags, { Name = "${var.name}-spark-worker" })
}

resource "aws_autoscaling_group" "spark_worker" {
  name                      = "${var.name}-spark-workers"
  vpc_zone_identifier       = var.private_subnet_ids
  min_size                  = var.spark_worker_min_size
  max_size                  = var.spark_worker_max_size
  desired_capacity          = var.spark_worker_desired_capacity
  health_check_type         = "EC2"
  health_check_grace_period = 300
  wait_for_capacity_timeout = var.wait_for_capacity_timeout
  enabled_metrics           = ["GroupInServiceInstances", "GroupDesiredCapacity", "GroupTotalInstances"]

  launch_template {
    id      = aws_launch_template.spark_worker.id
    version = aws_launch_template.spark_worker.latest_version
  }

  dynamic "tag" {
    for_each = merge(var.tags, { Name = "${var.name}-spark-worker", Role = "spark_worker" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

################################################################################
# Private DNS names used by conf/streamsight.yaml (profile aws) and ansible/
################################################################################

resource "aws_route53_record" "kafka" {
  count = var.create_dns_records ? var.kafka_broker_count : 0

  zone_id = var.private_zone_id
  name    = "kafka-${count.index + 1}"
  type    = "A"
  ttl     = 60
  records = [aws_instance.kafka[count.index].private_ip]
}

resource "aws_route53_record" "spark_master" {
  count = var.create_dns_records ? 1 : 0

  zone_id = var.private_zone_id
  name    = "spark-master"
  type    = "A"
  ttl     = 60
  records = [aws_instance.spark_master.private_ip]
}

resource "aws_route53_record" "hdfs_namenode" {
  count = var.create_dns_records ? 1 : 0

  zone_id = var.private_zone_id
  name    = "hdfs-namenode"
  type    = "A"
  ttl     = 60
  records = [aws_instance.hdfs_namenode.private_ip]
}
