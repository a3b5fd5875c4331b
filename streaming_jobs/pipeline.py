"""The streaming job of one stream contract: Kafka -> bronze -> silver + dead-letter -> predictions -> gold.

Usage on a cluster (Spark's own Kafka connector and Delta Lake)::

    spark-submit --master spark://spark-master:7077 \\
        --packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0,io.delta:delta-spark_4.2_2.13:4.4.0 \\
        --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \\
        --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \\
        --py-files streamsight.zip \\
        streaming_jobs/pipeline.py --stream machine_telemetry

Locally: ``streamsight stream --stream machine_telemetry [--until-idle]``.

Queries (each with its own checkpoint under ``_checkpoints/<stream>/<query>``); every table is a
Delta Lake table, created with its declared columns when the job starts::

    bronze       Kafka raw topic ──▶ bronze                                      (Delta sink)
    silver       Kafka raw topic ─validate─▶ watermark ─▶ drop duplicates within watermark
                 ─foreachBatch─▶ rejected records ─▶ dead_letter table + dead-letter topic
                              └─▶ filter, enrich ─▶ silver ─score─▶ predictions
                                                  (each table idempotent by query id and batch id)
    predictions  (model.scoring: online) Kafka predictions topic ─parse─▶ watermark ─▶ drop duplicates
                 by event id ─foreachBatch─▶ predictions (+ store); unreadable messages ─▶ dead_letter
    gold_<agg>   silver (Delta source) ─watermark─▶ event-time window aggregate ──▶ gold  (Delta sink, append)
                 first_seen: silver ─foreachBatch─▶ earliest event per key ─merge─▶ gold (an earlier one wins)

``bronze`` and ``silver`` both read Kafka, so an event reaches silver and predictions in one
micro-batch of one query. With ``model.scoring: online`` the hot path (:mod:`streaming_jobs.online`)
scores instead, and the ``predictions`` query keeps the first message per event id.

The stream validates every value (:func:`streaming_jobs.transforms.validated`: the stream's own
verdict, or the one its producer attached in the message headers). Only valid
records take part in de-duplication: a rejected record is keyed by its Kafka coordinates and
carries no event time, so it is never dropped, never counts as a duplicate and never moves the
watermark.

Exactly-once: Delta's streaming sink records each query's batch ids in the table's log; the
foreachBatch tables are written with :class:`streaming_jobs.lake_writer.BatchTable` (Delta's
idempotent writes, keyed by the writing query's id, silver's or predictions', and the batch id), so a batch re-run after a
crash is skipped for every table it already committed; a ``first_seen`` gold table is merged
(:class:`FirstSeenWriter`), which a re-run repeats without changing it. The dead-letter topic gets a batch's
messages before its dead_letter table commit: a crash between the two publishes them again (at
least once; each message's key is its record's Kafka coordinates). With ``predictions_store.kind:
dynamodb`` each batch's predictions are put in DynamoDB (:mod:`streamsight.store`) before the
predictions table's commit: a replay puts them again, replacing the same items. Downstream queries read silver
through its transaction log, so they never see uncommitted files.

``--until-idle`` runs the queries in dependency order with ``Trigger.AvailableNow`` and stops when
each has caught up; otherwise all queries run until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from streaming_jobs import transforms as T
from streaming_jobs.lake_writer import BatchRecordLog, BatchTable, create_table, query_id
from streaming_jobs.metrics import (
    DEAD_LETTER_RATE,
    MetricsSink,
    ProgressListener,
    dead_letter_rate,
    late_rows,
    make_sink,
)
from streamsight.contracts import Contract, get_contract
from streamsight.kafka import check_broker, spark_options
from streamsight.lake import TABLE_FORMAT, checkpoint_uri, table_columns, table_properties, table_uri
from streamsight.settings import Settings
from streamsight.spark import session_conf

log = logging.getLogger(__name__)

BATCH_STATS_COLUMNS = ("query_id string, batch_id bigint, rows_in bigint, filtered bigint, silver bigint, predictions bigint, "
                       "model_version int, dead_letter bigint, committed_at timestamp, seconds map<string,double>")


def batch_stats(spark: SparkSession, settings: Settings, contract: Contract) -> DataFrame:
    """The silver query's per-micro-batch records (``_ops/<stream>/silver_batches``): query id, counts,
    the model version used, commit time and where the batch's time went."""
    return BatchRecordLog(ops_uri(settings, contract, "silver_batches")).read(spark, BATCH_STATS_COLUMNS)


def ops_uri(settings: Settings, contract: Contract, name: str) -> str:
    return f"{settings.lake_uri}/_ops/{contract.name}/{name}"


@dataclass
class StreamJob:
    """Builds and runs the queries of one contract."""

    spark: SparkSession
    settings: Settings
    contract: Contract
    servers: str | None = None
    metrics: MetricsSink | None = None  # default: made from settings.metrics while the job runs
    # rows the stateful operators dropped as later than the watermark, per query, over the runs of
    # run_until_idle (queries with such an operator only: silver, windowed gold_*)
    late_rows: dict[str, int] = field(default_factory=dict, init=False)
    _reference: DataFrame | None = field(default=None, init=False)
    _reference_table: DataFrame | None = field(default=None, init=False)

    def uri(self, table: str) -> str:
        return table_uri(self.settings.lake_uri, self.contract, table)

    def batch_table(self, table: str) -> BatchTable:
        """One of the stream's tables, for writes in ``foreachBatch``."""
        columns, partitions = table_columns(self.contract, table)
        return BatchTable(self.uri(table), columns, partitions)

    def checkpoint(self, query: str) -> str:
        return checkpoint_uri(self.settings.lake_uri, self.contract, query)

    # -- sources ---------------------------------------------------------------------------
    def kafka_stream(self, *topics: str, max_offsets: int | None) -> DataFrame:
        """Spark's ``kafka`` source over ``topics``, from the earliest offsets, failing on data loss."""
        options = {"subscribe": ",".join(topics), "startingOffsets": "earliest", "failOnDataLoss": "true",
                   "includeHeaders": "true", **spark_options(self.settings, self.servers)}
        if max_offsets:
            options["maxOffsetsPerTrigger"] = str(max_offsets)
        return self.spark.readStream.format("kafka").options(**options).load()

    def _table_stream(self, table: str) -> DataFrame:
        """The rows each commit of a lake table adds, as a stream."""
        return self.spark.readStream.format(TABLE_FORMAT).load(self.uri(table))

    @property
    def online(self) -> bool:
        """The hot path scores this stream (``model.scoring: online``): predictions come from its topic."""
        return self.contract.model is not None and self.contract.model.scoring == "online"

    def tables(self) -> list[str]:
        """The stream's lake tables (predictions only with a model)."""
        c = self.contract
        return ["bronze", "silver", "dead_letter", *(["predictions"] if c.model else []),
                *[f"gold_{a.name}" for a in c.aggregates]]

    def create_tables(self) -> None:
        """Every lake table of the stream, empty with its declared columns, unless it exists; the
        tables' retention properties follow the contract (or settings)."""
        properties = table_properties(self.contract, self.settings)
        for table in self.tables():
            columns, partitions = table_columns(self.contract, table)
            create_table(self.spark, self.uri(table), columns, partitions, properties)

    def reference(self) -> DataFrame | None:
        """The contract's reference data, read once (None without a ``reference`` block)."""
        ref, path = self.contract.reference, self.contract.reference_path
        if ref is None or path is None:
            return None
        if self._reference is None:
            location = str(path)
            if "://" in location and not location.startswith("file:"):  # hdfs://, s3a://: executors read it
                reader = self.spark.read
                df = (reader.option("header", True).option("inferSchema", True).csv(location)
                      if ref.format == "csv" else reader.parquet(location))
            else:
                # A file on the driver's machine (the contracts directory): read it here, so that
                # executors on other hosts need no copy of it; the rows travel with the plan.
                import pandas as pd

                frame = pd.read_csv(location) if ref.format == "csv" else pd.read_parquet(location)
                df = self.spark.createDataFrame(frame.astype(object).where(frame.notna(), None))
            self._reference = df.cache()
        return self._reference

    def reference_table(self) -> DataFrame | None:
        """:func:`streaming_jobs.transforms.reference_table` of the reference data, collected once
        into a table held in the plan: joining it runs no Spark job (a broadcast of the cached,
        de-duplicated DataFrame ran two in every micro-batch)."""
        if self._reference_table is None:
            reference = self.reference()
            if reference is None:
                return None
            table = T.reference_table(reference, self.contract)
            self._reference_table = _local_table(self.spark, table.collect(), table.schema)
        return self._reference_table

    # -- queries ---------------------------------------------------------------------------
    def _writer(self, df: DataFrame, query: str, available_now: bool) -> Any:
        w = df.writeStream.queryName(f"{self.contract.name}.{query}").option("checkpointLocation", self.checkpoint(query))
        if available_now:
            return w.trigger(availableNow=True)
        spark_settings = self.settings.spark
        interval = spark_settings.bronze_trigger_interval if query == "bronze" else spark_settings.trigger_interval
        return w.trigger(processingTime=interval)

    def bronze_query(self, available_now: bool) -> StreamingQuery:
        df = T.to_bronze(self.kafka_stream(self.contract.raw_topic,
                                     max_offsets=self.settings.spark.bronze_max_offsets_per_trigger))
        return (self._writer(df, "bronze", available_now).format(TABLE_FORMAT)
                .partitionBy("ingest_date").start(self.uri("bronze")))

    def silver_query(self, available_now: bool) -> StreamingQuery:
        c = self.contract
        records = T.to_bronze(self.kafka_stream(c.raw_topic, max_offsets=self.settings.spark.max_offsets_per_trigger))
        keyed = T.dedup_keyed(T.validated(records, c), c)
        deduped = keyed.withWatermark(T.DEDUP_TIME, c.watermark).dropDuplicatesWithinWatermark(T.dedup_columns(c))
        writer = SilverBatchWriter(self)
        # No "no-data" micro-batches for this query: they would only expire de-duplication state
        # (which the next batch with data does as well) and cost a second or so each, delaying the
        # next batch with data.  The query's session copies the conf when it starts.
        with session_conf(self.spark, "spark.sql.streaming.noDataMicroBatches.enabled", "false"):
            return self._writer(deduped, "silver", available_now).foreachBatch(writer).start()

    def predictions_query(self, available_now: bool) -> StreamingQuery:
        """``model.scoring: online``: the predictions topic, de-duplicated by event id within the
        watermark, into the predictions table (and the store)."""
        from streaming_jobs.online import parsed_predictions

        c = self.contract
        records = self.kafka_stream(c.predictions_topic, max_offsets=self.settings.spark.max_offsets_per_trigger)
        deduped = (parsed_predictions(records, c).withWatermark(T.DEDUP_TIME, c.watermark)
                   .dropDuplicatesWithinWatermark(["_dedup_other", *c.dedup_key]))
        writer = PredictionsBatchWriter(self)
        with session_conf(self.spark, "spark.sql.streaming.noDataMicroBatches.enabled", "false"):
            return self._writer(deduped, "predictions", available_now).foreachBatch(writer).start()

    def gold_query(self, aggregate: str, available_now: bool) -> StreamingQuery:
        c = self.contract
        if next(a for a in c.aggregates if a.name == aggregate).first_seen:
            writer = FirstSeenWriter(self, aggregate)
            return self._writer(self._table_stream("silver"), f"gold_{aggregate}", available_now).foreachBatch(
                writer).start()
        quoted = "`" + c.event_time.field.replace("`", "``") + "`"  # parsed as SQL: a name like `@timestamp`
        silver = self._table_stream("silver").withWatermark(quoted, c.watermark)
        df = T.windowed_aggregate(silver, c, aggregate)
        return (self._writer(df, f"gold_{aggregate}", available_now).format(TABLE_FORMAT)
                .outputMode("append").start(self.uri(f"gold_{aggregate}")))

    # -- running ---------------------------------------------------------------------------
    @contextmanager
    def _publishing_metrics(self) -> Iterator[None]:
        """Metrics (settings.metrics) for the queries started inside the block, and warnings of
        rows dropped as late (the listener warns even when no metrics are published)."""
        owned = self.metrics is None and self.settings.metrics.sink != "none"
        if owned:
            self.metrics = make_sink(self.settings)
        listener = ProgressListener(self.metrics, {self.contract.name})
        self.spark.streams.addListener(listener)
        try:
            yield
        finally:
            self.spark.streams.removeListener(listener)
            if owned and self.metrics is not None:
                self.metrics.close()
                self.metrics = None

    def run_until_idle(self, progress: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, int]:
        """Run every query with AvailableNow in dependency order; returns input rows per query
        (and puts each query's progress reports into ``progress`` when given)."""
        self.create_tables()
        with self._publishing_metrics():
            return self._run_stages(progress)

    def _run_stages(self, progress: dict[str, list[dict[str, Any]]] | None) -> dict[str, int]:
        stages = [
            ["bronze", "silver", *(["predictions"] if self.online else [])],
            [f"gold_{a.name}" for a in self.contract.aggregates],
        ]
        totals: dict[str, int] = {}
        for stage in stages:
            queries = [self._start(name, available_now=True) for name in stage]
            for q in queries:
                q.awaitTermination()
                if q.exception() is not None:
                    raise q.exception()  # type: ignore[misc]
                name = q.name.split(".", 1)[1]
                totals[name] = sum(p["numInputRows"] for p in q.recentProgress)
                if progress is not None:
                    progress[name] = list(q.recentProgress)
                late = [n for n in map(late_rows, q.recentProgress) if n is not None]
                if late:
                    self.late_rows[name] = self.late_rows.get(name, 0) + sum(late)
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
        with self._publishing_metrics():
            self._run_all()

    def start_queries(self) -> list[StreamingQuery]:
        """Every query of the stream, running with its trigger interval."""
        self.create_tables()
        names = ["bronze", "silver", *(["predictions"] if self.online else []),
                 *[f"gold_{a.name}" for a in self.contract.aggregates]]
        return [self._start(n, available_now=False) for n in names]

    @staticmethod
    def check(queries: list[StreamingQuery]) -> None:
        """Raise the exception of the first query that failed."""
        for q in queries:
            if q.exception() is not None:
                raise q.exception()  # type: ignore[misc]

    def _run_all(self) -> None:
        queries = self.start_queries()
        stop_requested: list[int] = []

        def request_stop(signum: int, _frame: Any) -> None:
            stop_requested.append(signum)

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        log.info("streaming %s: %s", self.contract.name, ", ".join(q.name for q in queries))
        try:
            while not stop_requested:
                self.spark.streams.awaitAnyTermination(1)  # seconds; then look at the flag
                self.check(queries)
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
    """foreachBatch function of the ``silver`` query.

    Writes rejected records to dead_letter (and the dead-letter topic); filters, enriches and writes
    the valid de-duplicated records to silver; scores them into predictions (unless the hot path
    scores the stream: :class:`PredictionsBatchWriter`); records the batch's
    counts in ``_ops/<stream>/silver_batches``.  Each table write is idempotent by the query's id
    and the batch id, so a batch replayed after a crash adds nothing twice.
    """

    def __init__(self, job: StreamJob) -> None:
        self.job = job
        c = job.contract
        self.silver = job.batch_table("silver")
        self.dead_letter = job.batch_table("dead_letter")
        scores = c.model is not None and not job.online
        self.predictions = job.batch_table("predictions") if scores else None
        self.stats = BatchRecordLog(ops_uri(job.settings, c, "silver_batches"))
        self._app_id: str | None = None
        self._scorer: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._store = _predictions_store(job) if scores else None
        self._router: Any = None
        if scores and c.model is not None and c.model.route_by is not None:
            from ml.scoring import ModelRouter

            self._router = ModelRouter(job.spark, job.settings, c)
        elif scores:
            from ml.scoring import ProductionScorer

            self._scorer = ProductionScorer(job.spark, job.settings, c)
            self._scorer.current()  # load the production model now, not in the first micro-batch

    def app_id(self, spark: SparkSession) -> str:
        """The silver query's id: the transaction id of its writes to every table."""
        if self._app_id is None:
            self._app_id = query_id(spark, self.job.checkpoint("silver"))
        return self._app_id

    def _write(self, table: BatchTable, df: DataFrame, batch_id: int) -> int:
        """Rows written; a table an earlier attempt of this batch committed is counted, not rewritten."""
        app = self.app_id(df.sparkSession)
        if table.is_committed(df.sparkSession, batch_id, app):
            return df.count()
        return table.append(df, batch_id, app)

    def _silver_rows(self, batch: DataFrame, batch_id: int) -> DataFrame:
        """The batch's valid raw records, filtered, enriched and in silver's column order."""

        c = self.job.contract
        valid = T.valid_rows(batch, c)
        return T.to_silver_shape(T.join_reference(T.apply_filter(valid, c), c, self.job.reference_table()), c, batch_id)

    def _score(self, silver: DataFrame, batch_id: int) -> tuple[int, int | None]:
        """Score ``silver`` with the production model into predictions: (rows, model version);
        (0, None) when no model is in production."""
        scored = self._scorer.score(silver)
        if scored is None or self.predictions is None:
            return 0, None
        app = self.app_id(scored.sparkSession)
        return (_write_predictions(self.predictions, self._store, self.job.contract, scored, batch_id, app),
                self._scorer.last_version)

    def _score_routed(self, silver: DataFrame, batch_id: int, scorers: dict[str, Any],
                      dead_letters: Future[bool] | None) -> tuple[int, None]:
        """Score each model's records of ``silver`` (``model.route_by``) with its scorer, into
        predictions in one write: (rows, None). With records naming unusable models, the write
        waits for ``dead_letters`` (their commit): a replay after a crash between the two then
        finds them dead-lettered, whatever the registry says by then, and loses none."""
        from functools import reduce

        assert self.predictions is not None
        route = self._router.route()
        parts = [scorer.score(silver.where(route == name), loaded) for name, (scorer, loaded) in sorted(scorers.items())]
        log.info("%s silver batch %d: scoring with %s", self.job.contract.name, batch_id,
                 ", ".join(f"{name} v{loaded[0]}" for name, (_, loaded) in sorted(scorers.items())))
        scored = reduce(DataFrame.unionByName, parts)
        if dead_letters is not None and not dead_letters.result():
            raise RuntimeError(f"{self.job.contract.name} silver batch {batch_id}: its dead letters were not written; "
                               "predictions wait for them")
        app = self.app_id(scored.sparkSession)
        return _write_predictions(self.predictions, self._store, self.job.contract, scored, batch_id, app), None

    def _in_background(self, work: Callable[[], Any]) -> Future[tuple[Any, float]]:
        """Run ``work`` on the writer's helper thread, which inherits this thread's Spark job
        properties (so stopping the query cancels its jobs too); ``(result, seconds)``."""
        from pyspark.util import inheritable_thread_target

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.job.contract.name}-silver")

        def timed() -> tuple[Any, float]:
            began = time.monotonic()
            return work(), round(time.monotonic() - began, 3)

        return self._pool.submit(inheritable_thread_target(timed))

    def _publish_dead_letters(self, dead: DataFrame) -> None:
        """The batch's rejected records to the stream's dead-letter topic (Spark's Kafka sink)."""
        options = spark_options(self.job.settings, self.job.servers)
        T.dead_letter_messages(dead, self.job.contract).write.format("kafka").options(**options).save()

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        spark, c = batch.sparkSession, self.job.contract
        if self.stats.is_committed(spark, self.app_id(spark), batch_id):
            # Every table has this batch (the driver died before Spark recorded it). Spark still has
            # to commit the batch's de-duplication state, which happens only when the whole plan
            # runs (returning early fails the query with STATE_STORE_COMMIT_VALIDATION_FAILED):
            # run it once, writing nothing.
            batch.write.format("noop").mode("overwrite").save()
            return
        batch = batch.persist()
        began = time.monotonic()
        timings: dict[str, float] = {}
        scoring: Future[tuple[tuple[int, int | None], float]] | None = None
        dead_letters_written: Future[bool] | None = None  # routed records' dead letters committed
        try:
            # The silver write is the batch's first job: it reads Kafka, parses, de-duplicates
            # (filling the cache) and counts valid and rejected rows on the way (an Observation).
            # Scoring runs at the same time on a second thread, so one write's driver-side work
            # (building the model's plan, committing) overlaps the other's tasks; it reads the same
            # cached batch through the same silver rows (whose observed counts are the same in both
            # jobs; the first to finish reports them).
            seen = Observation(f"silver_batch_{batch_id}")
            counted = batch.observe(seen, F.count_if(F.col("_accepted")).alias("valid"),
                                    F.count_if(~F.col("_accepted")).alias("dead"))
            silver_df = self._silver_rows(counted, batch_id)
            unknown: DataFrame | None = None  # records naming no usable model (model.route_by)
            if self._router is not None:
                route = self._router.route()
                names = [r[0] for r in silver_df.select(route.alias("m")).distinct().collect()]
                usable, refused = self._router.scorers(names)
                if refused:
                    unknown = _unknown_model_rows(silver_df.where(route.isin(list(refused))), c, route, refused)
                    dead_letters_written = Future()
                if usable:
                    scoring = self._in_background(lambda: self._score_routed(
                        silver_df, batch_id, usable, dead_letters_written if refused else None))
            elif self._scorer is not None:
                scoring = self._in_background(lambda: self._score(silver_df, batch_id))
            lap = time.monotonic()
            timings["plan"] = round(lap - began, 3)
            silver_rows = self._write(self.silver, silver_df, batch_id)
            timings["silver"] = round(time.monotonic() - lap, 3)
            rows_in, dead_rows = int(seen.get["valid"]), int(seen.get["dead"])
            lap = time.monotonic()
            dead_letters = 0
            if dead_rows or unknown is not None:
                dead = T.invalid_rows(batch)
                dead = dead.unionByName(unknown) if unknown is not None else dead
                if not self.dead_letter.is_committed(spark, batch_id, self.app_id(spark)):
                    self._publish_dead_letters(dead)
                dead_letters = self._write(self.dead_letter, dead, batch_id)
            if dead_letters_written is not None:
                dead_letters_written.set_result(True)
            timings["dead_letter"] = round(time.monotonic() - lap, 3)
            predictions, version = 0, None
            if scoring is not None:
                (predictions, version), timings["predictions"] = scoring.result()
                scoring = None
            lap = time.monotonic()
            timings["total"] = round(lap - began, 3)
            self.stats.write(spark, self.app_id(spark), batch_id, {
                "batch_id": batch_id, "rows_in": rows_in, "filtered": rows_in - silver_rows, "silver": silver_rows,
                "predictions": predictions, "model_version": version, "dead_letter": dead_letters,
                "committed_at": datetime.now(UTC).isoformat(), "seconds": dict(timings),
            })
            if self.job.metrics is not None:
                self.job.metrics.publish(c.name, {DEAD_LETTER_RATE: dead_letter_rate(dead_letters,
                                                                                     rows_in + dead_rows)})
            timings["record"] = round(time.monotonic() - lap, 3)
            log.info("%s silver batch %d: %d in, %d silver, %d predictions, %d dead letters; seconds %s",
                     c.name, batch_id, rows_in, silver_rows, predictions, dead_letters, timings)
        finally:
            if dead_letters_written is not None and not dead_letters_written.done():
                dead_letters_written.set_result(False)  # a write failed: the scoring thread gives up
            if scoring is not None:  # a failed silver write: let the scoring thread finish first
                wait([scoring])
            batch.unpersist()


class FirstSeenWriter:
    """foreachBatch function of a ``first_seen`` aggregate's gold query: each batch's first sightings
    (:func:`streaming_jobs.transforms.first_sightings`) merged into the gold table by their keys (null
    equals null), a row moved only by an earlier event. Merging the same batch again changes nothing,
    so a replayed batch needs no transaction id, and late events need no watermark. A merge that
    conflicts with another commit (``streamsight lake maintain``'s compaction) is tried again."""

    def __init__(self, job: StreamJob, aggregate: str) -> None:
        agg = next(a for a in job.contract.aggregates if a.name == aggregate)
        self.job, self.aggregate = job, aggregate
        self.keys = [*agg.group_by, *agg.first_seen]
        self.uri = job.uri(f"gold_{aggregate}")

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from delta.exceptions import DeltaConcurrentModificationException
        from delta.tables import DeltaTable
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

        from streamsight.lake import FIRST_SEEN_AT

        began = time.monotonic()
        firsts = T.first_sightings(batch, self.job.contract, self.aggregate).persist()
        on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in self.keys)
        try:
            for attempt in Retrying(stop=stop_after_attempt(5), wait=wait_exponential_jitter(initial=0.5, max=10),
                                    retry=retry_if_exception_type(DeltaConcurrentModificationException), reraise=True):
                with attempt:
                    (DeltaTable.forPath(batch.sparkSession, self.uri).alias("t").merge(firsts.alias("s"), on)
                     .whenMatchedUpdateAll(condition=f"s.`{FIRST_SEEN_AT}` < t.`{FIRST_SEEN_AT}`")
                     .whenNotMatchedInsertAll().execute())
        finally:
            firsts.unpersist()
        log.info("%s gold_%s batch %d: merged in %.1fs", self.job.contract.name, self.aggregate, batch_id,
                 time.monotonic() - began)


class PredictionsBatchWriter:
    """foreachBatch function of the ``predictions`` query (``model.scoring: online``).

    Each micro-batch holds the predictions-topic messages not seen before within the watermark
    (the hot path sends a batch's predictions again after a crash or a restart). Those that parse go
    to the store and then the predictions table; any other message goes to dead_letter with
    ``BAD_PREDICTION_MESSAGE``. Both writes are idempotent by this query's id and the batch id.
    """

    def __init__(self, job: StreamJob) -> None:
        self.job = job
        self.predictions = job.batch_table("predictions")
        self.dead_letter = job.batch_table("dead_letter")
        self._store = _predictions_store(job)
        self._app_id: str | None = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        from streamsight.lake import DEAD_LETTER_COLUMNS

        spark, c = batch.sparkSession, self.job.contract
        if self._app_id is None:
            self._app_id = query_id(spark, self.job.checkpoint("predictions"))
        app = self._app_id
        began = time.monotonic()
        batch = batch.persist()
        try:
            columns = [col for col, _ in self.predictions.columns if col != "_batch_id"]
            good = batch.where("_ok").select(*[F.col(f"`{col}`") for col in columns],
                                             F.lit(batch_id).cast("bigint").alias("_batch_id"))
            bad = batch.where("NOT _ok").select(*[F.col(f"_dl_{col}").alias(col) for col, _ in DEAD_LETTER_COLUMNS])
            dead = 0
            if not self.dead_letter.is_committed(spark, batch_id, app) and not bad.isEmpty():
                dead = self.dead_letter.append(bad, batch_id, app)
                log.warning("%s predictions batch %d: %d message(s) of %s are not predictions (dead_letter, %s)",
                            c.name, batch_id, dead, c.predictions_topic, "BAD_PREDICTION_MESSAGE")
            rows = _write_predictions(self.predictions, self._store, c, good, batch_id, app)
            log.info("%s predictions batch %d: %d predictions, %d dead letters in %.1fs", c.name, batch_id, rows,
                     dead, time.monotonic() - began)
        finally:
            batch.unpersist()


def _unknown_model_rows(silver: DataFrame, contract: Contract, route: Any, refused: dict[str, str]) -> DataFrame:
    """Silver rows naming a model that cannot score them (``refused``: name -> why), shaped as dead
    letters (``UNKNOWN_MODEL``; the raw value is the record's fields as JSON)."""
    from pyspark.sql import functions as F

    from ml.scoring import UNKNOWN_MODEL
    from streamsight.lake import DEAD_LETTER_COLUMNS

    record = F.to_json(F.struct(*[F.col(f"`{f.name}`") for f in contract.fields]))
    why = F.create_map(*[F.lit(v) for item in sorted(refused.items()) for v in item])[route]
    reason = F.concat(F.lit("model.route_by names model "), route, F.lit(", which "), why)
    now = F.current_timestamp()
    columns = {"raw_value": record.cast("binary"), "error_code": F.lit(UNKNOWN_MODEL), "reason": reason,
               "source": F.lit("stream"), "topic": F.lit(contract.raw_topic),
               "partition": F.col("_kafka_partition"), "offset": F.col("_kafka_offset"),
               "kafka_timestamp": F.col("_kafka_timestamp"), "ingest_time": now, "ingest_date": F.to_date(now)}
    return silver.select(*[columns[c].cast(t).alias(c) for c, t in DEAD_LETTER_COLUMNS])


def _predictions_store(job: StreamJob) -> Any:
    """The predictions store (``predictions_store.kind: dynamodb``), checked; None when off."""
    if job.contract.model is None or job.settings.predictions_store.kind != "dynamodb":
        return None
    from streamsight.store import DynamoPredictions

    store = DynamoPredictions.from_settings(job.settings)
    store.check()
    return store


def _write_predictions(table: BatchTable, store: Any, contract: Contract, scored: DataFrame, batch_id: int,
                       app: str) -> int:
    """``scored`` (the predictions table's columns) into the store, then the table, as batch
    ``batch_id`` of query ``app``: the rows. The store first: a batch that fails after it is
    replayed, and its puts replace themselves. Committed in the lake already (a replay), the store
    has the batch too."""
    spark = scored.sparkSession
    if table.is_committed(spark, batch_id, app):
        return scored.count()
    if store is None:
        return table.append(scored, batch_id, app)
    from streamsight.store import put_partition

    scored = scored.persist()
    try:
        scored.foreachPartition(put_partition(store.config(), contract.name, contract.key, list(contract.dedup_key),
                                              contract.event_time.field))
        return table.append(scored, batch_id, app)
    finally:
        scored.unpersist()


def _local_table(spark: SparkSession, rows: list[Any], schema: Any) -> DataFrame:
    """``rows`` as a table held in the plan (an inline ``VALUES`` table: a LocalTableScan, which
    Spark reads without a job, where ``createDataFrame`` would scan an RDD)."""
    import math

    def literal(value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, float) and not math.isfinite(value):
            return f"CAST('{value}' AS DOUBLE)"
        if isinstance(value, (int, float)):
            return repr(value)
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"

    fields = schema.fields
    values = [f"({', '.join(literal(v) for v in row)})" for row in rows] or [f"({', '.join(['NULL'] * len(fields))})"]
    columns = ", ".join(f"CAST(col{i + 1} AS {f.dataType.simpleString()}) AS `{f.name}`" for i, f in enumerate(fields))
    return spark.sql(f"SELECT {columns} FROM VALUES {', '.join(values)}" + ("" if rows else " WHERE false"))


def run(spark: SparkSession, settings: Settings, stream: str, *, until_idle: bool) -> dict[str, Any] | None:
    """Run the stream's queries; with ``until_idle``, ``{"input_rows": {query: rows},
    "late_rows_dropped": {query: rows}}`` once every query has caught up."""
    contract = get_contract(settings.contracts_dir, stream)
    servers = check_broker(settings)
    job = StreamJob(spark, settings, contract, servers)
    if until_idle:
        started = time.monotonic()
        totals = job.run_until_idle()
        log.info("caught up in %.1fs: %s", time.monotonic() - started, totals)
        if any(job.late_rows.values()):
            log.warning("rows dropped as later than the watermark (%s): %s", contract.watermark, job.late_rows)
        return {"input_rows": totals, "late_rows_dropped": dict(job.late_rows)}
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
    from streamsight.settings import load_settings
    from streamsight.spark import build_session

    _settings = load_settings()
    sys.exit(main(build_session(_settings, "streamsight-stream"), _settings))
