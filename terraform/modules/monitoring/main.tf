# Alarms -> one KMS-encrypted SNS topic, a dashboard, and the instances' log groups.
#
# Custom metrics (namespace var.metric_namespace, default "Streamsight"), published by the
# streaming jobs once per micro-batch with dimensions Environment=<environment>, Stream=<stream>:
#   ConsumerLag           Count         records behind the latest Kafka offsets, summed over partitions
#   MicroBatchDurationMs  Milliseconds  wall time of one micro-batch (triggerExecution)
#   DeadLetterRate        Percent       100 * dead-letter records / input records of the batch
#   LateRowsDropped       Count         rows a stateful operator dropped as behind the watermark
# CloudWatch agent metric (namespace var.agent_namespace, default "CWAgent"), aggregated by the
# agent configuration (ansible/) to exactly these dimensions:
#   disk_used_percent     Percent       {InstanceId, path} on brokers, master and namenode;
#                                       {AutoScalingGroupName, path} on the workers

locals {
  topic_arns = [aws_sns_topic.this.arn]

  stream_alarms = merge([
    for stream in var.streams : {
      "${stream}-consumer-lag" = {
        stream      = stream
        metric      = "ConsumerLag"
        statistic   = "Maximum"
        threshold   = var.consumer_lag_threshold
        description = "Kafka consumer lag of stream ${stream} above ${var.consumer_lag_threshold} records"
      }
      "${stream}-micro-batch-duration" = {
        stream      = stream
        metric      = "MicroBatchDurationMs"
        statistic   = "p90"
        threshold   = var.micro_batch_duration_threshold_ms
        description = "p90 micro-batch duration of stream ${stream} above ${var.micro_batch_duration_threshold_ms} ms"
      }
      "${stream}-dead-letter-rate" = {
        stream      = stream
        metric      = "DeadLetterRate"
        statistic   = "Average"
        threshold   = var.dead_letter_rate_threshold_percent
        description = "Dead-letter rate of stream ${stream} above ${var.dead_letter_rate_threshold_percent}%"
      }
      "${stream}-late-rows" = {
        stream      = stream
        metric      = "LateRowsDropped"
        statistic   = "Sum"
        threshold   = var.late_rows_threshold
        description = "Stream ${stream} dropped more than ${var.late_rows_threshold} rows as later than its watermark (they are in bronze only)"
      }
    }
  ]...)

  # Hosts with a fixed instance: role label => { instance id, path of the watched volume }.
  instances = merge(
    { for i, id in var.kafka_instance_ids : "kafka-${i + 1}" => { id = id, path = var.data_mount_path } },
    {
      "spark-master"  = { id = var.spark_master_instance_id, path = "/" }
      "hdfs-namenode" = { id = var.hdfs_namenode_instance_id, path = var.data_mount_path }
    },
  )

  log_groups = toset(["kafka", "spark", "streaming-jobs", "hdfs", "cloudwatch-agent"])
}

################################################################################
# SNS topic
################################################################################

resource "aws_sns_topic" "this" {
  name              = "${var.name}-alarms"
  display_name      = "Streamsight ${var.environment} alarms"
  kms_master_key_id = var.kms_key_arn

  tags = merge(var.tags, { Name = "${var.name}-alarms" })
}

resource "aws_sns_topic_subscription" "email" {
  for_each = toset(var.alarm_email_endpoints)

  topic_arn = aws_sns_topic.this.arn
  protocol  = "email"
  endpoint  = each.value
}

################################################################################
# Log groups written by the instances (the iam module scopes writes to this prefix)
################################################################################

resource "aws_cloudwatch_log_group" "this" {
  for_each = local.log_groups

  name              = "/streamsight/${var.name}/instances/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = merge(var.tags, { Name = "${var.name}-${each.key}" })
}

################################################################################
# Pipeline alarms (custom metrics)
################################################################################

resource "aws_cloudwatch_metric_alarm" "stream" {
  for_each = local.stream_alarms

  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = var.metric_namespace
  metric_name         = each.value.metric
  dimensions          = { Environment = var.environment, Stream = each.value.stream }
  statistic           = each.value.statistic == "p90" ? null : each.value.statistic
  extended_statistic  = each.value.statistic == "p90" ? "p90" : null
  period              = var.period_seconds
  evaluation_periods  = var.evaluation_periods
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.topic_arns
  ok_actions          = local.topic_arns

  tags = var.tags
}

################################################################################
# Host alarms: CPU (AWS/EC2, detailed monitoring) and disk (CloudWatch agent) per role
################################################################################

resource "aws_cloudwatch_metric_alarm" "cpu" {
  for_each = local.instances

  alarm_name          = "${var.name}-${each.key}-cpu"
  alarm_description   = "CPU of ${each.key} above ${var.cpu_threshold_percent}%"
  namespace           = "AWS/EC2"
  metric_name         = "CPUUtilization"
  dimensions          = { InstanceId = each.value.id }
  statistic           = "Average"
  period              = var.period_seconds
  evaluation_periods  = var.evaluation_periods
  threshold           = var.cpu_threshold_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = local.topic_arns
  ok_actions          = local.topic_arns

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "disk" {
  for_each = local.instances

  alarm_name          = "${var.name}-${each.key}-disk"
  alarm_description   = "Disk ${each.value.path} of ${each.key} above ${var.disk_threshold_percent}% used"
  namespace           = var.agent_namespace
  metric_name         = "disk_used_percent"
  dimensions          = { InstanceId = each.value.id, path = each.value.path }
  statistic           = "Maximum"
  period              = var.period_seconds
  evaluation_periods  = var.evaluation_periods
  threshold           = var.disk_threshold_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = local.topic_arns
  ok_actions          = local.topic_arns

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "spark_workers_cpu" {
  alarm_name          = "${var.name}-spark-workers-cpu"
  alarm_description   = "Average CPU of the Spark workers above ${var.cpu_threshold_percent}%"
  namespace           = "AWS/EC2"
  metric_name         = "CPUUtilization"
  dimensions          = { AutoScalingGroupName = var.spark_workers_asg_name }
  statistic           = "Average"
  period              = var.period_seconds
  evaluation_periods  = var.evaluation_periods
  threshold           = var.cpu_threshold_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = local.topic_arns
  ok_actions          = local.topic_arns

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "spark_workers_disk" {
  alarm_name          = "${var.name}-spark-workers-disk"
  alarm_description   = "Fullest ${var.data_mount_path} of the Spark workers / datanodes above ${var.disk_threshold_percent}% used"
  namespace           = var.agent_namespace
  metric_name         = "disk_used_percent"
  dimensions          = { AutoScalingGroupName = var.spark_workers_asg_name, path = var.data_mount_path }
  statistic           = "Maximum"
  period              = var.period_seconds
  evaluation_periods  = var.evaluation_periods
  threshold           = var.disk_threshold_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = local.topic_arns
  ok_actions          = local.topic_arns

  tags = var.tags
}

################################################################################
# Dashboard
################################################################################

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name

  stream_widgets = [
    for i, metric in ["ConsumerLag", "MicroBatchDurationMs", "DeadLetterRate", "LateRowsDropped"] : {
      type   = "metric"
      x      = 6 * i
      y      = 0
      width  = 6
      height = 6
      properties = {
        title   = metric
        region  = local.region
        view    = "timeSeries"
        stat    = lookup({ MicroBatchDurationMs = "p90", DeadLetterRate = "Average", LateRowsDropped = "Sum" }, metric, "Maximum")
        period  = var.period_seconds
        metrics = [for stream in var.streams : [var.metric_namespace, metric, "Environment", var.environment, "Stream", stream]]
      }
    }
  ]

  host_widgets = [
    {
      type   = "metric"
      x      = 0
      y      = 6
      width  = 12
      height = 6
      properties = {
        title  = "CPUUtilization"
        region = local.region
        view   = "timeSeries"
        stat   = "Average"
        period = var.period_seconds
        metrics = concat(
          [for label, host in local.instances : ["AWS/EC2", "CPUUtilization", "InstanceId", host.id, { label = label }]],
          [["AWS/EC2", "CPUUtilization", "AutoScalingGroupName", var.spark_workers_asg_name, { label = "spark-workers" }]],
        )
      }
    },
    {
      type   = "metric"
      x      = 12
      y      = 6
      width  = 12
      height = 6
      properties = {
        title  = "disk_used_percent"
        region = local.region
        view   = "timeSeries"
        stat   = "Maximum"
        period = var.period_seconds
        metrics = concat(
          [for label, host in local.instances : [var.agent_namespace, "disk_used_percent", "InstanceId", host.id, "path", host.path, { label = label }]],
          [[var.agent_namespace, "disk_used_percent", "AutoScalingGroupName", var.spark_workers_asg_name, "path", var.data_mount_path, { label = "spark-workers" }]],
        )
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  count = var.enable_dashboard ? 1 : 0

  dashboard_name = var.name
  dashboard_body = jsonencode({ widgets = concat(local.stream_widgets, local.host_widgets) })
}
