output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "CIDR block of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "azs" {
  description = "The two availability zones used."
  value       = local.azs
}

output "public_subnet_ids" {
  description = "IDs of the public subnets (NAT gateways only)."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "IDs of the private subnets (every instance)."
  value       = aws_subnet.private[*].id
}

output "private_route_table_ids" {
  description = "IDs of the private route tables."
  value       = aws_route_table.private[*].id
}

output "nat_public_ips" {
  description = "Elastic IPs of the NAT gateways (egress addresses to allow-list upstream)."
  value       = aws_eip.nat[*].public_ip
}

output "s3_endpoint_prefix_list_id" {
  description = "Prefix list ID of the S3 gateway endpoint (null when disabled)."
  value       = one(aws_vpc_endpoint.s3[*].prefix_list_id)
}

output "private_zone_id" {
  description = "ID of the Route 53 private hosted zone (null when disabled)."
  value       = one(aws_route53_zone.private[*].zone_id)
}

output "private_zone_name" {
  description = "Name of the Route 53 private hosted zone (null when disabled)."
  value       = var.private_zone_name
}

output "flow_log_group_name" {
  description = "CloudWatch log group receiving the VPC flow logs (null when disabled)."
  value       = one(aws_cloudwatch_log_group.flow_logs[*].name)
}
