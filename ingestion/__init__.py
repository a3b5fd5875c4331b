"""Ingestion: Kafka producers, generators and the embedded development broker."""
