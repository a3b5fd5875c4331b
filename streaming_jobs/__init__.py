"""Streamsight Spark Structured Streaming jobs and their lake sinks."""
