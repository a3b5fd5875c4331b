# One security group per role. Ingress opens only the ports a role serves, only from the other
# role groups or from CIDRs inside the VPC; there is no SSH rule at all (operators use SSM Session
# Manager) and no 0.0.0.0/0 ingress. Egress: any TCP inside the VPC (the receiving group still
# filters by port), HTTPS to AWS APIs through NAT and, optionally, HTTP to package mirrors.

locals {
  roles = {
    kafka         = "Kafka brokers (KRaft, combined broker+controller)"
    spark_master  = "Spark standalone master and client-mode drivers"
    spark_worker  = "Spark workers with co-located HDFS datanodes"
    hdfs_namenode = "HDFS namenode"
  }

  kafka_client_cidrs = var.kafka_client_cidr_blocks == null ? [var.vpc_cidr_block] : var.kafka_client_cidr_blocks
  ui_cidrs           = var.ui_cidr_blocks == null ? [var.vpc_cidr_block] : var.ui_cidr_blocks
  dn                 = var.hdfs_datanode_ports

  # Ingress from another role's security group (or the same one: "self").
  # key = "<target role>:<what>:<source role>"
  sg_ingress = {
    "kafka:client:kafka"                 = { role = "kafka", from = var.kafka_client_port, to = var.kafka_client_port, source = "kafka", description = "Kafka SASL_SSL inter-broker" }
    "kafka:client:spark_master"          = { role = "kafka", from = var.kafka_client_port, to = var.kafka_client_port, source = "spark_master", description = "Kafka SASL_SSL from Spark drivers" }
    "kafka:client:spark_worker"          = { role = "kafka", from = var.kafka_client_port, to = var.kafka_client_port, source = "spark_worker", description = "Kafka SASL_SSL from Spark executors" }
    "kafka:controller:kafka"             = { role = "kafka", from = var.kafka_controller_port, to = var.kafka_controller_port, source = "kafka", description = "KRaft controller quorum" }
    "spark_master:rpc:spark_worker"      = { role = "spark_master", from = var.spark_master_port, to = var.spark_master_port, source = "spark_worker", description = "Spark master RPC from workers" }
    "spark_master:rpc:spark_master"      = { role = "spark_master", from = var.spark_master_port, to = var.spark_master_port, source = "spark_master", description = "Spark master RPC from local spark-submit" }
    "spark_master:internal:spark_worker" = { role = "spark_master", from = var.spark_internal_ports.from, to = var.spark_internal_ports.to, source = "spark_worker", description = "Spark driver and block manager from executors" }
    "spark_worker:rpc:spark_master"      = { role = "spark_worker", from = var.spark_worker_port, to = var.spark_worker_port, source = "spark_master", description = "Spark worker RPC from master" }
    "spark_worker:internal:spark_master" = { role = "spark_worker", from = var.spark_internal_ports.from, to = var.spark_internal_ports.to, source = "spark_master", description = "Spark executors from driver" }
    "spark_worker:internal:spark_worker" = { role = "spark_worker", from = var.spark_internal_ports.from, to = var.spark_internal_ports.to, source = "spark_worker", description = "Spark executor to executor (shuffle, blocks)" }
    "spark_worker:dn-data:spark_worker"  = { role = "spark_worker", from = local.dn.data, to = local.dn.data, source = "spark_worker", description = "HDFS datanode data transfer (replication, executors)" }
    "spark_worker:dn-data:spark_master"  = { role = "spark_worker", from = local.dn.data, to = local.dn.data, source = "spark_master", description = "HDFS datanode data transfer from drivers" }
    "spark_worker:dn-ipc:spark_worker"   = { role = "spark_worker", from = local.dn.ipc, to = local.dn.ipc, source = "spark_worker", description = "HDFS datanode IPC between datanodes" }
    "spark_worker:dn-ipc:hdfs_namenode"  = { role = "spark_worker", from = local.dn.ipc, to = local.dn.ipc, source = "hdfs_namenode", description = "HDFS datanode IPC from namenode" }
    "spark_worker:dn-http:hdfs_namenode" = { role = "spark_worker", from = local.dn.http, to = local.dn.http, source = "hdfs_namenode", description = "HDFS datanode HTTP from namenode" }
    "hdfs_namenode:rpc:spark_worker"     = { role = "hdfs_namenode", from = var.hdfs_namenode_rpc_port, to = var.hdfs_namenode_rpc_port, source = "spark_worker", description = "HDFS namenode RPC from datanodes and executors" }
    "hdfs_namenode:rpc:spark_master"     = { role = "hdfs_namenode", from = var.hdfs_namenode_rpc_port, to = var.hdfs_namenode_rpc_port, source = "spark_master", description = "HDFS namenode RPC from drivers" }
    "hdfs_namenode:rpc:hdfs_namenode"    = { role = "hdfs_namenode", from = var.hdfs_namenode_rpc_port, to = var.hdfs_namenode_rpc_port, source = "hdfs_namenode", description = "HDFS namenode RPC from local hdfs CLI" }
  }

  # Ingress from CIDRs inside the VPC: Kafka clients and the web UIs.
  cidr_ingress_all = {
    "kafka:client:cidr"           = { role = "kafka", from = var.kafka_client_port, to = var.kafka_client_port, cidrs = local.kafka_client_cidrs, description = "Kafka SASL_SSL from producers inside the VPC" }
    "spark_master:ui:cidr"        = { role = "spark_master", from = var.spark_master_ui_port, to = var.spark_master_ui_port, cidrs = local.ui_cidrs, description = "Spark master UI from inside the VPC" }
    "spark_master:driver-ui:cidr" = { role = "spark_master", from = var.spark_driver_ui_ports.from, to = var.spark_driver_ui_ports.to, cidrs = local.ui_cidrs, description = "Spark application UIs from inside the VPC" }
    "spark_worker:ui:cidr"        = { role = "spark_worker", from = var.spark_worker_ui_port, to = var.spark_worker_ui_port, cidrs = local.ui_cidrs, description = "Spark worker UI from inside the VPC" }
    "spark_worker:dn-http:cidr"   = { role = "spark_worker", from = local.dn.http, to = local.dn.http, cidrs = local.ui_cidrs, description = "HDFS datanode HTTP from inside the VPC" }
    "hdfs_namenode:ui:cidr"       = { role = "hdfs_namenode", from = var.hdfs_namenode_http_port, to = var.hdfs_namenode_http_port, cidrs = local.ui_cidrs, description = "HDFS namenode UI from inside the VPC" }
  }
  cidr_ingress = { for k, v in local.cidr_ingress_all : k => v if length(v.cidrs) > 0 }

  internet_egress_ports = var.allow_http_egress ? { https = 443, http = 80 } : { https = 443 }
  internet_egress = merge([
    for role in keys(local.roles) : {
      for proto, port in local.internet_egress_ports : "${role}:${proto}" => { role = role, port = port }
    }
  ]...)
}

resource "aws_security_group" "this" {
  #checkov:skip=CKV2_AWS_5:Attached outside this module: the compute module puts each group on its role's instances / launch template (checkov does not follow the module outputs).
  for_each = local.roles

  name        = "${var.name}-${replace(each.key, "_", "-")}"
  description = "${each.value}: only the ports this role serves, from inside the VPC"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-${replace(each.key, "_", "-")}", Role = each.key })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group_rule" "ingress_from_role" {
  for_each = local.sg_ingress

  type                     = "ingress"
  security_group_id        = aws_security_group.this[each.value.role].id
  protocol                 = "tcp"
  from_port                = each.value.from
  to_port                  = each.value.to
  source_security_group_id = aws_security_group.this[each.value.source].id
  description              = each.value.description
}

resource "aws_security_group_rule" "ingress_from_vpc" {
  for_each = local.cidr_ingress

  type              = "ingress"
  security_group_id = aws_security_group.this[each.value.role].id
  protocol          = "tcp"
  from_port         = each.value.from
  to_port           = each.value.to
  cidr_blocks       = each.value.cidrs
  description       = each.value.description
}

resource "aws_security_group_rule" "egress_vpc" {
  for_each = local.roles

  type              = "egress"
  security_group_id = aws_security_group.this[each.key].id
  protocol          = "tcp"
  from_port         = 0
  to_port           = 65535
  cidr_blocks       = [var.vpc_cidr_block]
  description       = "TCP inside the VPC (receivers filter by port)"
}

# 0.0.0.0/0 egress, TCP 443 (and 80) only, leaving through the NAT gateway. Needed because the
# instances call AWS APIs over HTTPS (SSM Session Manager, KMS, CloudWatch, SageMaker runtime; S3
# goes through the gateway endpoint) and install OS packages from public mirrors (HTTP, packages
# are signature-verified). There is no internet ingress: instances have no public IP.
# checkov has no finding to skip here: its all-ports egress check (CKV_AWS_382) passes because only
# 443 and 80 are open. To remove this rule entirely, add interface VPC endpoints (ssm, ssmmessages,
# ec2messages, kms, logs, monitoring, sagemaker.runtime) and a package mirror inside the VPC.
resource "aws_security_group_rule" "egress_internet" {
  for_each = local.internet_egress

  type              = "egress"
  security_group_id = aws_security_group.this[each.value.role].id
  protocol          = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_blocks       = ["0.0.0.0/0"]
  description       = each.value.port == 443 ? "HTTPS to AWS APIs through NAT" : "HTTP to OS package mirrors through NAT"
}
