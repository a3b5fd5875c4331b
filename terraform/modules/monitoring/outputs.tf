output "sns_topic_arn" {
  description = "ARN of the (KMS-encrypted) alarm topic."
  value       = aws_sns_topic.this.arn
}

output "alarm_names" {
  description = "Names of every alarm created."
  value = concat(
    [for a in aws_cloudwatch_metric_alarm.stream : a.alarm_name],
    [for a in aws_cloudwatch_metric_alarm.cpu : a.alarm_name],
    [for a in aws_cloudwatch_metric_alarm.disk : a.alarm_name],
    [aws_cloudwatch_metric_alarm.spark_workers_cpu.alarm_name, aws_cloudwatch_metric_alarm.spark_workers_disk.alarm_name],
  )
}

output "dashboard_name" {
  description = "Name of the CloudWatch dashboard (null when disabled)."
  value       = one(aws_cloudwatch_dashboard.this[*].dashboard_name)
}

output "log_group_names" {
  description = "Log group per source (kafka, spark, streaming-jobs, hdfs, cloudwatch-agent)."
  value       = { for k, g in aws_cloudwatch_log_group.this : k => g.name }
}

output "metric_namespace" {
  description = "Namespace of the Streamsight custom metrics (ConsumerLag, MicroBatchDurationMs, DeadLetterRate)."
  value       = var.metric_namespace
}
