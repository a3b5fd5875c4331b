"""The hot path: a stream's raw topic scored in Spark's Real-Time Mode into ``<stream>.predictions``.

Usage on a cluster (the application needs a task slot per partition of the raw topic, plus one)::

    spark-submit --master spark://spark-master:7077 --packages ... streaming_jobs/online.py --stream machine_telemetry

Locally: ``streamsight online --stream machine_telemetry`` (``local[partitions + 1]``).

One query, ``<stream>.online``, with ``trigger(realTime=online.checkpoint_interval)`` (or, with
``online.trigger: microbatch``, micro-batches as fast as they go, for comparison): one
long-running task per raw partition reads each record as it arrives, validates it with the
stream's validator (:func:`streaming_jobs.transforms.validated`), applies the contract's filter,
scores it with the production version of the contract's model (its MLlib ``PipelineModel``, whose
stages are Spark SQL and JVM functions) and writes one JSON message to the predictions topic,
keyed by the contract's key. The checkpoint interval only sets how often offsets are committed; a
record is scored and sent when it arrives. Rejected records are the micro-batch job's (dead letter).

Each message: ``stream``, ``key``, ``event_id`` (the de-duplication key, joined by ``|`` when it has
several fields), ``event_time``, ``probability``, ``prediction``, ``model_name``,
``model_version``, ``produce_time`` (the raw record's Kafka timestamp), ``scored_at`` (the
task's clock when it scored the record) and ``scored_by`` (``mllib``), times in ISO 8601 UTC with
milliseconds; ``record``: the record's columns the predictions table keeps (:func:`streamsight.lake.scored_record_columns`).

Delivery is at least once, as with every Kafka sink: after a crash or a restart the records of
the batch in flight are scored and sent again (with the model version then in production). A
consumer keeps the first message per ``event_id``; with ``model.scoring: online`` the stream job
does so into the predictions table and the store (:func:`parsed_predictions`,
:class:`streaming_jobs.pipeline.PredictionsBatchWriter`).

A promotion: the driver re-reads the model's ``production`` alias every
``online.model_refresh_s``; on a new version it stops the query, loads the version and starts the
query again from its checkpoint, so records from then on carry the new version.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from ml import PRODUCTION_ALIAS
from ml.endpoint import MLLIB
from streaming_jobs import transforms as T
from streaming_jobs.transforms import DEDUP_TIME
from streamsight.contracts import Contract, get_contract
from streamsight.errors import ConfigError
from streamsight.kafka import check_broker, spark_options
from streamsight.lake import checkpoint_uri, models_uri, scored_record_columns
from streamsight.settings import Settings

log = logging.getLogger(__name__)

QUERY = "online"
_ISO_MS = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"  # the session's time zone is UTC (streamsight.spark)
_RECORD_TIMES = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"  # the record's timestamps keep their microseconds
BAD_PREDICTION = "BAD_PREDICTION_MESSAGE"  # a predictions-topic message the stream job cannot read


def _iso(col: Column) -> Column:
    from pyspark.sql import functions as F

    return F.date_format(col, _ISO_MS)


def prediction_messages(records: DataFrame, contract: Contract, model: Any, *, version: int,
                        threshold: float) -> DataFrame:
    """Kafka source rows -> predictions-topic messages (``key``, ``value``) of the valid records
    that pass the contract's filter, scored by ``model`` (a fitted ``PipelineModel``)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    assert contract.model is not None
    valid = T.apply_filter(T.valid_rows(T.validated(T.to_bronze(records), contract), contract), contract)
    scored = model.transform(valid)
    probability = vector_to_array(F.col("_ss_probability")).getItem(1).cast("double")
    event_id = (F.col(contract.dedup_key[0]).cast("string") if len(contract.dedup_key) == 1
                else F.concat_ws("|", *[F.col(k).cast("string") for k in contract.dedup_key]))
    # The clock of the task scoring the record: current_timestamp() is fixed per batch, and a
    # Real-Time Mode batch lasts the whole checkpoint interval.
    now_ms = F.expr("CAST(java_method('java.lang.System', 'currentTimeMillis') AS BIGINT)")
    record = F.struct(*[F.col(f"`{c}`") for c, _ in scored_record_columns(contract)])
    value = F.struct(
        F.lit(contract.name).alias("stream"),
        F.col(contract.key).cast("string").alias("key"),
        event_id.alias("event_id"),
        _iso(F.col(contract.event_time.field)).alias("event_time"),
        probability.alias("probability"),
        (probability >= F.lit(float(threshold))).cast("int").alias("prediction"),
        F.lit(contract.model.name).alias("model_name"),
        F.lit(int(version)).alias("model_version"),
        _iso(F.col("_kafka_timestamp")).alias("produce_time"),
        _iso(F.timestamp_millis(now_ms)).alias("scored_at"),
        F.lit(MLLIB).alias("scored_by"),
        record.alias("record"),
    )
    return scored.select(F.col(contract.key).cast("string").cast("binary").alias("key"),
                         F.to_json(value, {"timestampFormat": _RECORD_TIMES}).alias("value"))


def message_schema(contract: Contract) -> str:
    """The predictions-topic message as a ``from_json`` schema (times parsed as timestamps)."""
    from streamsight.lake import ddl

    return ("stream string, key string, event_id string, event_time timestamp, probability double, "
            "prediction int, model_name string, model_version int, produce_time timestamp, scored_at timestamp, "
            f"scored_by string, record struct<{ddl(scored_record_columns(contract))}>")


def parsed_predictions(records: DataFrame, contract: Contract) -> DataFrame:
    """Predictions-topic rows (Spark's Kafka source) -> the predictions table's columns (but
    ``_batch_id``), plus ``_ok`` (the message parsed, with the fields the table and the store
    need), the de-duplication columns (:func:`streaming_jobs.transforms.dedup_keyed`'s) and, for a
    message that did not parse, the dead-letter table's columns prefixed with ``_dl_``."""
    from pyspark.sql import functions as F

    from streamsight.lake import prediction_columns

    m = F.from_json(F.col("value").cast("string"), message_schema(contract)).alias("m")
    parsed = records.select("*", m)
    required = [f"m.record.`{c}`" for c in dict.fromkeys([contract.key, *contract.dedup_key, contract.event_time.field])]
    required += ["m.probability", "m.prediction", "m.model_name", "m.model_version", "m.scored_at"]
    ok = F.coalesce(F.expr(" AND ".join(f"{c} IS NOT NULL" for c in required)), F.lit(False))
    record = {c: F.col(f"m.record.`{c}`") for c, _ in scored_record_columns(contract)}
    columns = {**record, "event_date": F.to_date(record[contract.event_time.field]),
               **{c: F.col(f"m.{c}") for c in ("probability", "prediction", "model_name", "model_version",
                                                "scored_at")},
               "scored_by": F.coalesce(F.col("m.scored_by"), F.lit(MLLIB)),  # messages from before the field
               "predicted_class": F.lit(None), "predicted_value": F.lit(None),  # the hot path scores binary models
               "_kafka_timestamp": F.col("m.produce_time")}
    coords = F.concat_ws(":", F.col("topic"), F.col("partition").cast("string"), F.col("offset").cast("string"))
    now = F.current_timestamp()
    return parsed.select(
        *[F.when(ok, columns[c]).cast(t).alias(c) for c, t in prediction_columns(contract) if c != "_batch_id"],
        ok.alias("_ok"),
        F.when(~ok, coords).alias("_dedup_other"),
        F.when(ok, record[contract.event_time.field]).alias(DEDUP_TIME),
        # the dead-letter table's columns, prefixed: a record's own columns may share their names
        F.when(~ok, F.col("value")).alias("_dl_raw_value"),
        F.lit(BAD_PREDICTION).alias("_dl_error_code"),
        F.lit("not a prediction message: JSON with record, probability, prediction, model name and version, "
              "scored_at").alias("_dl_reason"),
        F.lit(contract.predictions_topic).alias("_dl_source"),
        F.col("topic").alias("_dl_topic"), F.col("partition").alias("_dl_partition"),
        F.col("offset").alias("_dl_offset"), F.col("timestamp").alias("_dl_kafka_timestamp"),
        now.alias("_dl_ingest_time"), F.to_date(now).alias("_dl_ingest_date"),
    )


@dataclass
class OnlineJob:
    """Runs (and restarts on promotion) the Real-Time Mode query of one contract."""

    spark: SparkSession
    settings: Settings
    contract: Contract
    servers: str | None = None

    def __post_init__(self) -> None:
        from ml.registry import ModelRegistry

        if self.contract.model is None:
            raise ConfigError(f"contract {self.contract.name!r} has no model: block; the online path scores")
        self.registry = ModelRegistry(self.spark, models_uri(self.settings.lake_uri))
        self.version: int | None = None

    @property
    def checkpoint(self) -> str:
        return checkpoint_uri(self.settings.lake_uri, self.contract, QUERY)

    def check_slots(self, partitions: int, *, local: bool) -> None:
        """Real-Time Mode runs one task per raw partition for the whole batch (with fewer task slots,
        the batch never ends), and loading a promoted model while it runs takes one more. A local
        master's slots are known at start: too few fail it. A cluster's executors may still be
        registering, so there it is a warning."""
        slots = self.spark.sparkContext.defaultParallelism
        if slots >= partitions + 1:
            return
        message = (f"the online path needs a task slot per partition of {self.contract.raw_topic} ({partitions}) "
                   f"plus one; this application has {slots} (spark.master, executor cores)")
        if local:
            raise ConfigError(message)
        log.warning("%s so far", message)

    def production(self) -> int:
        assert self.contract.model is not None
        version = self.registry.get_alias(self.contract.model.name, PRODUCTION_ALIAS)
        if version is None:
            raise ConfigError(f"model {self.contract.model.name!r} has no production version: train or promote one "
                              "before starting the online path")
        return int(version)

    def load(self, version: int) -> tuple[Any, float]:
        """The version's ``PipelineModel`` and threshold."""
        assert self.contract.model is not None
        name = self.contract.model.name
        return self.registry.load(name, version), float(self.registry.metadata(name, version)["threshold"])

    def start(self, version: int, loaded: tuple[Any, float] | None = None) -> StreamingQuery:
        """The query, scoring with ``version`` (``loaded``: its :meth:`load`, done already)."""
        assert self.contract.model is not None
        name = self.contract.model.name
        model, threshold = loaded or self.load(version)
        opts = spark_options(self.settings, self.servers)
        records = (self.spark.readStream.format("kafka")
                   .options(subscribe=self.contract.raw_topic, startingOffsets=self.settings.online.starting_offsets,
                            failOnDataLoss="true", includeHeaders="true", **opts).load())
        messages = prediction_messages(records, self.contract, model, version=version, threshold=threshold)
        writer = (messages.writeStream.format("kafka").options(topic=self.contract.predictions_topic, **opts)
                  .queryName(f"{self.contract.name}.{QUERY}").option("checkpointLocation", self.checkpoint)
                  .outputMode("update"))
        if self.settings.online.trigger == "realtime":
            writer = writer.trigger(realTime=self.settings.online.checkpoint_interval)  # type: ignore[call-overload]
        else:
            writer = writer.trigger(processingTime="0 seconds")
        query = writer.start()
        self.version = version
        log.info("online %s: scoring with %s v%d into %s", self.contract.name, name, version,
                 self.contract.predictions_topic)
        return query

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (of this Python process), restarting the query on a promotion."""
        stop_requested: list[int] = []
        previous = {sig: signal.signal(sig, lambda signum, _f: stop_requested.append(signum))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        refresh = self.settings.online.model_refresh_s
        next_check = time.monotonic() + refresh
        logged: Any = None
        unloadable: int | None = None  # a promoted version that failed to load (logged once)
        query: StreamingQuery | None = None
        try:
            query = self.start(self.production())
            while not stop_requested:
                query.awaitTermination(1)  # seconds; then look at the flag and the alias
                if query.exception() is not None:
                    raise query.exception()  # type: ignore[misc]
                if not query.isActive:
                    return
                progress = query.lastProgress
                if progress is not None and progress["batchId"] != logged:
                    logged = progress["batchId"]
                    log.info("online %s batch %d: %d records, %.0f/s; ms %s", self.contract.name, logged,
                             progress["numInputRows"], progress.get("processedRowsPerSecond") or 0.0,
                             progress.get("durationMs"))
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + refresh
                    version = self._alias_or_keep()
                    if version not in (self.version, unloadable):
                        log.info("online %s: production is now v%d (was v%s); restarting", self.contract.name,
                                 version, self.version)
                        try:
                            loaded = self.load(version)  # while the query runs (a slot is left for it)
                        except Exception:
                            log.exception("online %s: cannot load v%d; keeping v%s until production changes again",
                                          self.contract.name, version, self.version)
                            unloadable = version
                            continue
                        query.stop()
                        query = self.start(version, loaded)
        finally:
            if query is not None and query.isActive:
                query.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _alias_or_keep(self) -> int:
        """The production version; the one in use when the alias cannot be read or was removed."""
        assert self.version is not None
        try:
            version = self.production()
        except ConfigError:
            log.warning("online %s: no production version any more; keeping v%s", self.contract.name, self.version)
            return self.version
        except Exception as exc:
            log.warning("online %s: cannot read the production alias (%s); keeping v%s", self.contract.name, exc,
                        self.version)
            return self.version
        return version


def local_master(master: str) -> bool:
    """``local`` or ``local[N]`` (threads of this process; not ``local-cluster``)."""
    return master == "local" or master.startswith("local[")


@dataclass(frozen=True)
class Checked:
    """What :func:`preflight` found: the contract, the brokers that answered, the raw topic's
    partitions (the broker's count: a topic may have been given more than its contract says)."""

    contract: Contract
    servers: str
    partitions: int


def check_topics(settings: Settings, contract: Contract, servers: str) -> int:
    """The raw and predictions topics exist (a Kafka sink would otherwise wait for one forever);
    the raw topic's partitions."""
    from confluent_kafka.admin import AdminClient

    from streamsight.kafka import confluent_config

    admin = AdminClient(confluent_config(settings, servers))
    topics = admin.list_topics(timeout=settings.kafka.connect_timeout_s).topics
    missing = [t for t in (contract.raw_topic, contract.predictions_topic) if t not in topics]
    if missing:
        raise ConfigError(f"topic(s) {missing} do not exist on {servers}: `streamsight topics` creates them")
    return len(topics[contract.raw_topic].partitions)


def preflight(settings: Settings, stream: str) -> Checked:
    """The contract and its topics, checked before Spark starts."""
    contract = get_contract(settings.contracts_dir, stream)
    if contract.model is None:
        raise ConfigError(f"contract {contract.name!r} has no model: block; the online path scores")
    if contract.model.route_by is not None:
        raise ConfigError(f"contract {contract.name!r} routes each record to the model its "
                          f"{contract.model.route_by!r} field names (model.route_by); the online path scores "
                          "with one model, so the stream job scores this stream")
    fields = {f.name for f in contract.fields} | {d.name for d in contract.derived}
    joined = [c for c in (*contract.model.features, *contract.model.categorical_features) if c not in fields]
    if joined:
        raise ConfigError(f"contract {contract.name!r}: model feature(s) {joined} come from the reference join, "
                          "which the online path does not do; it scores the record's own fields and derived columns")
    servers = check_broker(settings)
    return Checked(contract, servers, check_topics(settings, contract, servers))


def run(spark: SparkSession, settings: Settings, stream: str, checked: Checked | None = None) -> None:
    checked = checked or preflight(settings, stream)
    job = OnlineJob(spark, settings, checked.contract, checked.servers)
    if checked.contract.model is not None and checked.contract.model.scoring != "online":
        log.warning("contract %r has model.scoring: batch: the stream job scores the lake's predictions itself, "
                    "and this topic only feeds its own consumers (model.scoring: online fills the lake from it)",
                    checked.contract.name)
    job.check_slots(checked.partitions, local=local_master(settings.spark.master))
    job.run()


def main(spark: SparkSession, settings: Settings, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streaming_jobs.online", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", required=True, help="contract name")
    args = parser.parse_args(argv)
    run(spark, settings, args.stream)
    return 0


if __name__ == "__main__":
    from streamsight.settings import load_settings
    from streamsight.spark import build_session

    _settings = load_settings()
    sys.exit(main(build_session(_settings, "streamsight-online"), _settings))
