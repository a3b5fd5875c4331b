"""The streaming job of one stream contract: Kafka -> bronze -> silver + dead-letter -> predictions -> gold.

Usage on a cluster (Spark's own Kafka connector)::

    spark-submit --master spark://spark-master:7077 \\
        --packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.3.0 \\
        --py-files streamsight.zip \\
        streaming_jobs/pipeline.py --stream machine_telemetry

Locally: ``streamsight stream --stream machine_telemetry [--until-idle]``.

Queries (each with its own checkpoint under ``_checkpoints/<stream>/<query>``)::

    bronze       Kafka raw topic ──▶ bronze                         (Spark file sink)
    dead_letter  bronze ─parse─▶ invalid rows ∪ dead-letter topic ──▶ dead_letter  (Spark file sink)
    silver       bronze ─parse─▶ valid rows ─watermark─▶ drop duplicates within watermark
                 ─foreachBatch─▶ filter, enrich ─▶ silver ─score─▶ predictions    (idempotent by batch id)
    gold_<agg>   silver ─watermark─▶ event-time window aggregate ──▶ gold         (Spark file sink, append)

Exactly-once: the Spark file sinks keep ``_spark_metadata``; the foreachBatch tables are written with
:class:`streaming_jobs.lake_sink.LakeTable`, which writes the same log keyed by batch id, so a batch
re-run after a crash is skipped for every table it already committed. Downstream queries read
bronze and silver as file streams through that log, so they never see partial files.

``--until-idle`` runs the queries in dependency order with ``Trigger.AvailableNow`` and stops when
each has caught up; otherwise all queries run until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from streaming_jobs import transforms as T
from streaming_jobs.kafka_source import kafka_stream
from streaming_jobs.lake_sink import LakeTable
from streamsight.contracts import Contract, get_contract
from streamsight.kafka import check_broker, spark_options
from streamsight.lake import BRONZE_COLUMNS, checkpoint_uri, silver_columns, table_uri
from streamsight.settings import Settings

log = logging.getLogger(__name__)

BATCH_STATS_COLUMNS = ("batch_id bigint, rows_in bigint, filtered bigint, silver bigint, predictions bigint, "
                       "model_version int, committed_at timestamp")


def _ddl(columns: list[tuple[str, str]]) -> str:
    return ", ".join(f"`{c}` {t}" for c, t in columns)


def ops_uri(settings: Settings, contract: Contract, name: str) -> str:
    return f"{settings.lake_uri}/_ops/{contract.name}/{name}"


@dataclass
class StreamJob:
    """Builds and runs the queries of one contract."""

    spark: SparkSession
    settings: Settings
    contract: Contract
    servers: str | None = None
    _reference: DataFrame | None = field(default=None, init=False)

    def uri(self, table: str) -> str:
        return table_uri(self.settings.lake_uri, self.contract, table)

    def checkpoint(self, query: str) -> str:
        return checkpoint_uri(self.settings.lake_uri, self.contract, query)

    # -- sources ---------------------------------------------------------------------------
    def _kafka(self, topic: str) -> DataFrame:
        prefer = {"auto": None, "native": True, "python": False}[self.settings.spark.kafka_source]
        options = {"startingOffsets": "earliest", "failOnDataLoss": "true"}
        if self.settings.spark.max_offsets_per_trigger:
            options["maxOffsetsPerTrigger"] = str(self.settings.spark.max_offsets_per_trigger)
        options.update(spark_options(self.settings, self.servers))
        servers = options.pop("kafka.bootstrap.servers")
        return kafka_stream(self.spark, bootstrap_servers=servers, topics=[topic], options=options,
                            prefer_native=prefer)

    def _file_stream(self, table: str, columns: list[tuple[str, str]]) -> DataFrame:
        _ensure_dir(self.spark, self.uri(table))
        return self.spark.readStream.schema(_ddl(columns)).parquet(self.uri(table))

    def reference(self) -> DataFrame | None:
        ref, path = self.contract.reference, self.contract.reference_path
        if ref is None or path is None:
            return None
        if self._reference is None:
            reader = self.spark.read
            df = (reader.option("header", True).option("inferSchema", True).csv(str(path))
                  if ref.format == "csv" else reader.parquet(str(path)))
            self._reference = df.cache()
        return self._reference

    # -- queries ---------------------------------------------------------------------------
    def _writer(self, df: DataFrame, query: str, available_now: bool) -> Any:
        w = df.writeStream.queryName(f"{self.contract.name}.{query}").option("checkpointLocation", self.checkpoint(query))
        return w.trigger(availableNow=True) if available_now else w.trigger(
            processingTime=self.settings.spark.trigger_interval)

    def bronze_query(self, available_now: bool) -> StreamingQuery:
        df = T.to_bronze(self._kafka(self.contract.raw_topic))
        return (self._writer(df, "bronze", available_now).format("parquet")
                .partitionBy("ingest_date").start(self.uri("bronze")))

    def dead_letter_query(self, available_now: bool) -> StreamingQuery:
        parsed = T.parse(self._file_stream("bronze", BRONZE_COLUMNS), self.contract)
        from_stream = T.invalid_rows(parsed, source="stream")
        from_producer = T.producer_dead_letters(T.to_bronze(self._kafka(self.contract.dead_letter_topic)))
        df = from_stream.unionByName(from_producer)
        return (self._writer(df, "dead_letter", available_now).format("parquet")
                .partitionBy("ingest_date").start(self.uri("dead_letter")))

    def silver_query(self, available_now: bool) -> StreamingQuery:
        c = self.contract
        valid = T.valid_rows(T.parse(self._file_stream("bronze", BRONZE_COLUMNS), c), c)
        deduped = valid.withWatermark(c.event_time.field, c.watermark).dropDuplicatesWithinWatermark(c.dedup_key)
        writer = SilverBatchWriter(self)
        return self._writer(deduped, "silver", available_now).foreachBatch(writer).start()

    def gold_query(self, aggregate: str, available_now: bool) -> StreamingQuery:
        c = self.contract
        silver = self._file_stream("silver", silver_columns(c)).withWatermark(c.event_time.field, c.watermark)
        df = T.windowed_aggregate(silver, c, aggregate)
        return (self._writer(df, f"gold_{aggregate}", available_now).format("parquet")
                .outputMode("append").start(self.uri(f"gold_{aggregate}")))

    # -- running ---------------------------------------------------------------------------
    def run_until_idle(self) -> dict[str, int]:
        """Run every query with AvailableNow in dependency order; returns input rows per query."""
        stages = [
            ["bronze"],
            ["dead_letter", "silver"],
            [f"gold_{a.name}" for a in self.contract.aggregates],
        ]
        totals: dict[str, int] = {}
        for stage in stages:
            queries = [self._start(name, available_now=True) for name in stage]
            for q in queries:
                q.awaitTermination()
                if q.exception() is not None:
                    raise q.exception()  # type: ignore[misc]
                totals[q.name.split(".", 1)[1]] = sum(p["numInputRows"] for p in q.recentProgress)
        return totals

    def _start(self, name: str, available_now: bool) -> StreamingQuery:
        if name.startswith("gold_"):
            return self.gold_query(name[len("gold_"):], available_now)
        return getattr(self, f"{name}_query")(available_now)

    def run_forever(self) -> None:
        """Start every query and block until one fails or SIGTERM/SIGINT stops them all.

        The signal handler only sets a flag; the queries are stopped from this loop, so a
        micro-batch in flight is interrupted by Spark (and re-run on restart), never half-committed.
        """
        names = ["bronze", "dead_letter", "silver", *[f"gold_{a.name}" for a in self.contract.aggregates]]
        queries = [self._start(n, available_now=False) for n in names]
        stop_requested: list[int] = []

        def request_stop(signum: int, _frame: Any) -> None:
            stop_requested.append(signum)

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        log.info("streaming %s: %s", self.contract.name, ", ".join(q.name for q in queries))
        try:
            while not stop_requested:
                self.spark.streams.awaitAnyTermination(1)  # seconds; then look at the flag
                failed = [q for q in queries if q.exception() is not None]
                if failed:
                    raise failed[0].exception()  # type: ignore[misc]
                if not any(q.isActive for q in queries):
                    return
                self.spark.streams.resetTerminated()
            log.warning("signal %s: stopping %d queries", stop_requested[0], len(queries))
        finally:
            for q in queries:
                if q.isActive:
                    q.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class SilverBatchWriter:
    """foreachBatch function: filter, enrich and write silver, then score and write predictions.

    Each table write is idempotent by batch id, so a batch replayed after a crash adds nothing twice.
    """

    def __init__(self, job: StreamJob) -> None:
        self.job = job
        c = job.contract
        self.silver = LakeTable(job.uri("silver"), partition_by=c.partition_by)
        self.predictions = LakeTable(job.uri("predictions"), partition_by=["event_date"])
        self.stats = LakeTable(ops_uri(job.settings, c, "silver_batches"))
        self._scorer: Any = None
        if c.model is not None:
            from ml.scoring import ProductionScorer

            self._scorer = ProductionScorer(job.spark, job.settings, c)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        spark, c = batch.sparkSession, self.job.contract
        if self.stats.is_committed(spark, batch_id):
            return
        replay = self.silver.is_committed(spark, batch_id)  # an earlier attempt got this far
        seen = Observation(f"silver_in_{batch_id}")
        batch = batch.observe(seen, F.count(F.lit(1)).alias("rows")).persist()
        try:
            silver = T.to_silver_shape(T.enrich(T.apply_filter(batch, c), c, self.job.reference()), c, batch_id)
            if replay:
                silver_rows, rows_in = silver.count(), batch.count()
            else:
                silver_rows = self.silver.write_batch(silver, batch_id)  # one pass: counts come from observe
                rows_in = int(seen.get["rows"])
            predictions, version = 0, None
            if self._scorer is not None and silver_rows:
                scored = self._scorer.score(silver)
                if scored is not None:
                    version = self._scorer.last_version
                    if self.predictions.is_committed(spark, batch_id):
                        predictions = silver_rows  # committed by an earlier attempt of this batch
                    else:
                        predictions = self.predictions.write_batch(scored, batch_id)
            stats = spark.createDataFrame(
                [(batch_id, rows_in, rows_in - silver_rows, silver_rows, predictions, version)],
                "batch_id bigint, rows_in bigint, filtered bigint, silver bigint, predictions bigint, model_version int",
            ).selectExpr("*", "current_timestamp() AS committed_at")
            self.stats.write_batch(stats, batch_id)
        finally:
            batch.unpersist()


def _ensure_dir(spark: SparkSession, uri: str) -> None:
    jvm = spark._jvm  # type: ignore[attr-defined]
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
    if not fs.exists(path):
        fs.mkdirs(path)


def run(spark: SparkSession, settings: Settings, stream: str, *, until_idle: bool) -> dict[str, int] | None:
    contract = get_contract(settings.contracts_dir, stream)
    servers = check_broker(settings)
    job = StreamJob(spark, settings, contract, servers)
    if until_idle:
        started = time.monotonic()
        totals = job.run_until_idle()
        log.info("caught up in %.1fs: %s", time.monotonic() - started, totals)
        return totals
    job.run_forever()
    return None


def main(spark: SparkSession, settings: Settings, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streaming_jobs.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", required=True, help="contract name")
    parser.add_argument("--until-idle", action="store_true", help="stop once every query has caught up")
    args = parser.parse_args(argv)
    totals = run(spark, settings, args.stream, until_idle=args.until_idle)
    if totals is not None:
        print(totals)
    return 0


if __name__ == "__main__":
    from streaming_jobs.session import build_session
    from streamsight.settings import load_settings

    _settings = load_settings()
    sys.exit(main(build_session(_settings, "streamsight-stream"), _settings))
