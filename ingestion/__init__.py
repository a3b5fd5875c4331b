"""Ingestion: sources (files, AI4I replay, synthetic) and the producer that publishes their records to Kafka."""
