"""Pure DataFrame -> DataFrame transforms of the medallion flow, all derived from a contract.

Each function works the same on a batch and a streaming DataFrame, so unit tests use tiny inline
data and the streaming jobs compose them::

    kafka records ──to_bronze──▶ bronze ──validated──▶ checked ──valid_rows──▶ silver-shaped rows
                                                        └─────invalid_rows──▶ dead-letter rows

:func:`validated` is the stream's validator (:mod:`streaming_jobs.validation`) plus the verdicts
producers attached: a producer publishes a record it rejected to the raw topic anyway, with its
reason code in the message headers (:data:`streamsight.contracts.REJECTION_HEADERS`), so every
record a source yielded is in bronze and its dead letter comes from the pipeline.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streaming_jobs.validation import validate
from streamsight.contracts import REJECTION_HEADERS, Contract
from streamsight.lake import (
    BRONZE_COLUMNS,
    DEAD_LETTER_COLUMNS,
    FIRST_SEEN_AT,
    gold_columns,
    silver_columns,
    with_derived,
)


def to_bronze(kafka_df: DataFrame) -> DataFrame:
    """Kafka source rows -> bronze: raw bytes, headers, Kafka coordinates, produce and ingest time
    (ingest time: the micro-batch's)."""
    headers = F.col("headers") if "headers" in kafka_df.columns else F.lit(None).cast(dict(BRONZE_COLUMNS)["headers"])
    return (
        kafka_df.select(
            "key", "value", headers.alias("headers"), "topic", "partition", "offset",
            F.col("timestamp").alias("kafka_timestamp"),
            F.current_timestamp().alias("ingest_time"),
        )
        .withColumn("ingest_date", F.to_date("ingest_time"))
    )


def _header(name: str) -> Column:
    """The first value of header ``name`` as a string (null without it)."""
    return F.expr(f"CAST(try_element_at(filter(headers, h -> h.key = '{name}'), 1).value AS STRING)")


def validated(bronze: DataFrame, contract: Contract) -> DataFrame:
    """Bronze rows + the stream's verdict (:func:`streaming_jobs.validation.validate`: ``p__<field>``,
    ``p__event_ts``, ``_error_code``, ``_reason``, ``_accepted``) and ``_source``: ``producer`` for
    a record its producer rejected (its code and reason kept), ``stream`` for one the stream did."""
    checked = validate(bronze, contract)
    flagged = _header(REJECTION_HEADERS["code"])
    code = F.coalesce(flagged, F.col("_error_code"))
    typed = [c for c in checked.columns if c.startswith("p__")]
    return checked.select(
        *[F.col(c) for c in bronze.columns],
        *[F.when(flagged.isNull(), F.col(c)).alias(c) for c in typed],
        code.alias("_error_code"),
        F.when(flagged.isNotNull(), F.coalesce(_header(REJECTION_HEADERS["reason"]), F.lit("rejected by its producer")))
        .otherwise(F.col("_reason")).alias("_reason"),
        F.when(flagged.isNotNull(), F.lit("producer")).when(code.isNotNull(), F.lit("stream")).alias("_source"),
        code.isNull().alias("_accepted"),
    )


def valid_rows(checked: DataFrame, contract: Contract) -> DataFrame:
    """Valid :func:`validated` rows, shaped like silver before de-duplication, filter and enrichment
    (the contract's derived columns added)."""
    et = contract.event_time.field
    cols: list[Column] = []
    for f in contract.fields:
        src = "p__event_ts" if f.name == et else f"p__{f.name}"
        cols.append(F.col(src).alias(f.name))
    return with_derived(
        checked.where(F.col("_accepted"))
        .select(
            *cols,
            F.to_date(F.col("p__event_ts")).alias("event_date"),
            F.hour(F.col("p__event_ts")).alias("event_hour"),
            F.col("partition").alias("_kafka_partition"),
            F.col("offset").alias("_kafka_offset"),
            F.col("kafka_timestamp").alias("_kafka_timestamp"),
            F.col("ingest_time").alias("_ingest_time"),
        ), contract)


DEDUP_TIME = "_dedup_time"


def dedup_columns(contract: Contract) -> list[str]:
    """Columns :func:`dedup_keyed` output is de-duplicated on (the contract's key, or coordinates)."""
    return ["_dedup_other", *[f"p__{k}" if k != contract.event_time.field else "p__event_ts" for k in contract.dedup_key]]


def dedup_keyed(checked: DataFrame, contract: Contract) -> DataFrame:
    """:func:`validated` rows + the columns streaming de-duplication uses.

    Valid records are keyed by the contract's de-duplication key and timed by their event time
    (``_dedup_time``). A rejected record is keyed by its Kafka coordinates (``_dedup_other``) with a
    null time: unique, so never dropped as a duplicate; null, so never dropped as late and never
    moving the watermark.

    Only what the batch writer needs travels on: the raw bytes and headers of valid records (silver
    keeps their typed values, bronze their bytes) are dropped, which halves what the
    de-duplication shuffle and the micro-batch cache carry.
    """
    valid = F.col("_accepted")
    coords = F.concat_ws(":", F.col("topic"), F.col("partition").cast("string"), F.col("offset").cast("string"))
    slim = [F.when(~valid, F.col(c)).alias(c) if c in ("value", "headers", "key") else F.col(c) for c in checked.columns]
    return checked.select(
        *slim,
        F.when(valid, F.lit(None).cast("string")).otherwise(coords).alias("_dedup_other"),
        F.when(valid, F.col("p__event_ts")).alias(DEDUP_TIME),
    )


def invalid_rows(checked: DataFrame) -> DataFrame:
    """Rejected :func:`validated` rows, shaped like the dead-letter table."""
    return checked.where(~F.col("_accepted")).select(
        F.col("value").alias("raw_value"),
        F.col("_error_code").alias("error_code"),
        F.col("_reason").alias("reason"),
        F.col("_source").alias("source"),
        "topic", "partition", "offset", "kafka_timestamp", "ingest_time", "ingest_date",
    ).select(*[c for c, _ in DEAD_LETTER_COLUMNS])


def dead_letter_messages(dead: DataFrame, contract: Contract) -> DataFrame:
    """Dead-letter rows as messages of the stream's dead-letter topic: the raw bytes as they came,
    keyed by their origin (``topic:partition:offset``, so a re-published one can be recognised),
    the verdict in headers."""
    def header(name: str, col: Column) -> Column:
        return F.struct(F.lit(name).alias("key"), col.cast("binary").alias("value"))

    origin = F.concat_ws(":", "topic", F.col("partition").cast("string"), F.col("offset").cast("string"))
    return dead.select(
        origin.cast("binary").alias("key"),
        F.col("raw_value").alias("value"),
        F.array(header(REJECTION_HEADERS["code"], F.col("error_code")),
                header(REJECTION_HEADERS["reason"], F.col("reason")),
                header(REJECTION_HEADERS["source"], F.col("source")),
                header(REJECTION_HEADERS["origin"], origin)).alias("headers"),
        F.lit(contract.dead_letter_topic).alias("topic"),
    )


def apply_filter(df: DataFrame, contract: Contract) -> DataFrame:
    return df.where(F.expr(contract.filter)) if contract.filter else df


def reference_table(reference: DataFrame, contract: Contract) -> DataFrame:
    """The contract's reference data as the join needs it: key ``__ref_key``, the wanted columns
    (prefixed), one row per key."""
    ref = contract.reference
    assert ref is not None, "contract has no reference block"
    ref_key = ref.reference_key or ref.key
    wanted = ref.columns or [c for c in reference.columns if c != ref_key]
    return reference.select(
        F.col(ref_key).alias("__ref_key"), *[F.col(c).alias(ref.prefix + c) for c in wanted]
    ).dropDuplicates(["__ref_key"])


def join_reference(df: DataFrame, contract: Contract, table: DataFrame | None) -> DataFrame:
    """Stream-static left join with a :func:`reference_table` (rows never dropped)."""
    if contract.reference is None or table is None:
        return df
    return df.join(F.broadcast(table), df[contract.reference.key] == table["__ref_key"], "left").drop("__ref_key")


def enrich(df: DataFrame, contract: Contract, reference: DataFrame | None) -> DataFrame:
    """Stream-static left join with the contract's reference data (rows never dropped)."""
    if contract.reference is None or reference is None:
        return df
    return join_reference(df, contract, reference_table(reference, contract))


def to_silver_shape(df: DataFrame, contract: Contract, batch_id: int) -> DataFrame:
    """Final silver column order (see :func:`streamsight.lake.silver_columns`)."""
    with_batch = df.withColumn("_batch_id", F.lit(batch_id).cast("bigint"))
    return with_batch.select(*[F.col(c).cast(t).alias(c) for c, t in silver_columns(contract)])


def first_sightings(silver: DataFrame, contract: Contract, aggregate_name: str) -> DataFrame:
    """The earliest event of each combination of a ``first_seen`` aggregate's group_by and first_seen
    columns in ``silver`` (a batch), with the window it falls in: the gold table's columns."""
    agg = next(a for a in contract.aggregates if a.name == aggregate_name)
    et = contract.event_time.field
    keys = [*agg.group_by, *agg.first_seen]
    firsts = (silver.where(F.col(f"`{et}`").isNotNull()).groupBy(*[F.col(f"`{k}`") for k in keys])
              .agg(F.min(F.col(f"`{et}`")).alias(FIRST_SEEN_AT)))
    window = F.window(FIRST_SEEN_AT, agg.window)
    return firsts.select(window.start.alias("window_start"), window.end.alias("window_end"),
                         *[F.col(f"`{k}`") for k in keys], FIRST_SEEN_AT).select(
        *[F.col(f"`{c}`").cast(t).alias(c) for c, t in gold_columns(contract, aggregate_name)])


def windowed_aggregate(silver: DataFrame, contract: Contract, aggregate_name: str) -> DataFrame:
    """Event-time windowed aggregate (needs a watermark on streaming input)."""
    agg = next(a for a in contract.aggregates if a.name == aggregate_name)
    et = contract.event_time.field
    window = F.window(et, agg.window, agg.slide) if agg.slide else F.window(et, agg.window)
    functions = {"sum": F.sum, "avg": F.avg, "min": F.min, "max": F.max, "count_distinct": F.approx_count_distinct}
    metrics = [(F.count(F.lit(1)) if m.agg == "count" else functions[m.agg](F.col(m.column or ""))).alias(m.name)
               for m in agg.metrics]
    return (
        silver.groupBy(window.alias("window"), *agg.group_by)
        .agg(*metrics)
        .select(F.col("window.start").alias("window_start"), F.col("window.end").alias("window_end"),
                *agg.group_by, *[m.name for m in agg.metrics])
    )
