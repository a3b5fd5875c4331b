"""The Spark Structured Streaming job of a stream contract, its transforms, the stream's validator and the lake writer."""
