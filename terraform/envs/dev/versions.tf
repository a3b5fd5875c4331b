terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # State is local (terraform.tfstate in this directory, ignored by git). For a shared state, replace
  # this comment with an S3 backend in a bucket that is NOT managed here, then `terraform init -migrate-state`:
  #
  # backend "s3" {
  #   bucket       = "my-org-terraform-state"
  #   key          = "streamsight/dev/terraform.tfstate"
  #   region       = "eu-west-1"
  #   encrypt      = true
  #   kms_key_id   = "alias/terraform-state"
  #   use_lockfile = true # S3-native locking (terraform >= 1.10); older: dynamodb_table = "terraform-locks"
  # }
}

provider "aws" {
  region = var.region
}
