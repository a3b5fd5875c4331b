# One instance role + profile per role family, each with only what it needs:
#   kafka  - SSM Session Manager, CloudWatch metrics/logs
#   spark  - the same, plus the lake prefix in S3, the lake KMS key, the lake's Glue tables and (optionally) named
#            SageMaker endpoints; used by the Spark master (drivers) and the workers (executors)
#   hdfs   - SSM Session Manager, CloudWatch metrics/logs (namenode)

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition = data.aws_partition.current.partition
  roles     = toset(["kafka", "spark", "hdfs"])

  log_group_arn_prefix = "arn:${local.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:${var.log_group_name_prefix}"
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  for_each = local.roles

  name               = "${var.name}-${each.key}"
  description        = "Streamsight ${each.key} instances (${var.name})"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json

  tags = merge(var.tags, { Role = each.key })
}

resource "aws_iam_instance_profile" "this" {
  for_each = local.roles

  name = "${var.name}-${each.key}"
  role = aws_iam_role.this[each.key].name

  tags = merge(var.tags, { Role = each.key })
}

# Session Manager instead of SSH: the AWS-managed core policy for the SSM agent.
resource "aws_iam_role_policy_attachment" "ssm_core" {
  for_each = local.roles

  role       = aws_iam_role.this[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

################################################################################
# CloudWatch: metrics in the allowed namespaces, logs in this deployment's log groups
################################################################################

data "aws_iam_policy_document" "observability" {
  statement {
    sid       = "PutMetricsInOwnNamespaces"
    effect    = "Allow"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData has no resource-level permissions; the namespace condition scopes it

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = var.metric_namespaces
    }
  }

  statement {
    sid    = "WriteOwnLogGroups"
    effect = "Allow"
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogStreams",
    ]
    resources = [
      "${local.log_group_arn_prefix}*",
      "${local.log_group_arn_prefix}*:log-stream:*",
    ]
  }
}

resource "aws_iam_role_policy" "observability" {
  for_each = local.roles

  name   = "cloudwatch-metrics-and-logs"
  role   = aws_iam_role.this[each.key].id
  policy = data.aws_iam_policy_document.observability.json
}

################################################################################
# Spark: the lake prefix, the lake key, named SageMaker endpoints
################################################################################

data "aws_iam_policy_document" "spark" {
  statement {
    sid       = "LocateLakeBucket"
    effect    = "Allow"
    actions   = ["s3:GetBucketLocation"]
    resources = [var.lake_bucket_arn]
  }

  statement {
    sid       = "ListLakePrefixOnly"
    effect    = "Allow"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = [var.lake_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.lake_prefix, "${var.lake_prefix}/*"]
    }
  }

  statement {
    sid    = "ReadWriteLakeObjects"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${var.lake_bucket_arn}/${var.lake_prefix}/*"]
  }

  statement {
    sid    = "UseLakeKey"
    effect = "Allow"
    actions = [
      "kms:Decrypt",
      "kms:GenerateDataKey",
      "kms:DescribeKey",
    ]
    resources = [var.kms_key_arn]
  }

  dynamic "statement" {
    for_each = var.glue_database_name != "" ? [1] : []

    content {
      sid    = "RegisterLakeTablesInGlue"
      effect = "Allow"
      actions = [
        "glue:GetDatabase",
        "glue:GetTable",
        "glue:GetTables",
        "glue:CreateTable",
        "glue:UpdateTable",
      ]
      resources = [
        "arn:${data.aws_partition.current.partition}:glue:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:catalog",
        "arn:${data.aws_partition.current.partition}:glue:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:database/${var.glue_database_name}",
        "arn:${data.aws_partition.current.partition}:glue:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:table/${var.glue_database_name}/*",
      ]
    }
  }

  dynamic "statement" {
    for_each = var.predictions_table_arn != "" ? [1] : []

    content {
      sid       = "PutAndReadOnlinePredictions"
      effect    = "Allow"
      actions   = ["dynamodb:DescribeTable", "dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:Query"]
      resources = [var.predictions_table_arn, "${var.predictions_table_arn}/index/by_stream"]
    }
  }

  dynamic "statement" {
    for_each = length(var.sagemaker_endpoint_arns) > 0 ? [1] : []

    content {
      sid       = "InvokeNamedSageMakerEndpoints"
      effect    = "Allow"
      actions   = ["sagemaker:InvokeEndpoint"]
      resources = var.sagemaker_endpoint_arns
    }
  }
}

resource "aws_iam_role_policy" "spark" {
  name   = "lake-kms-sagemaker"
  role   = aws_iam_role.this["spark"].id
  policy = data.aws_iam_policy_document.spark.json
}
