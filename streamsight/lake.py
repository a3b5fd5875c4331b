"""Lake layout: where every table, checkpoint and model lives, each table's columns, and how to read one.

Layout under the lake root (a directory, ``hdfs://`` or ``s3a://`` URI)::

    bronze/<stream>/                 raw Kafka records          partitioned by ingest_date
    silver/<stream>/                 typed, valid, de-duplicated partitioned per contract
    dead_letter/<stream>/            rejected records + reason  partitioned by ingest_date
    predictions/<stream>/            model scores               partitioned per contract
    gold/<stream>__<aggregate>/      windowed aggregates
    _checkpoints/<stream>/<query>/   Spark streaming checkpoints
    _ops/<stream>/                   the streaming job's per-micro-batch records
    _models/<model>/                 model registry (versions, aliases)

Every table is a Delta Lake table (Parquet files and the ``_delta_log`` transaction log): Spark
(:func:`read_table`), Athena, Trino and delta-rs all read exactly the committed files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamsight.contracts import Contract

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from streamsight.settings import Settings

TABLE_FORMAT = "delta"

BRONZE_COLUMNS = [
    ("key", "binary"), ("value", "binary"), ("headers", "array<struct<key:string,value:binary>>"),
    ("topic", "string"), ("partition", "int"),
    ("offset", "bigint"), ("kafka_timestamp", "timestamp"), ("ingest_time", "timestamp"),
    ("ingest_date", "date"),
]
DEAD_LETTER_COLUMNS = [
    ("raw_value", "binary"), ("error_code", "string"), ("reason", "string"), ("source", "string"),
    ("topic", "string"), ("partition", "int"), ("offset", "bigint"),
    ("kafka_timestamp", "timestamp"), ("ingest_time", "timestamp"), ("ingest_date", "date"),
]
# Lineage columns carried from bronze into silver and predictions.
LINEAGE_COLUMNS = [
    ("_kafka_partition", "int"), ("_kafka_offset", "bigint"), ("_kafka_timestamp", "timestamp"),
    ("_ingest_time", "timestamp"), ("_batch_id", "bigint"),
]
PREDICTION_COLUMNS = [
    ("probability", "double"), ("prediction", "int"), ("model_name", "string"),
    ("model_version", "int"), ("scored_at", "timestamp"),
    ("scored_by", "string"),  # mllib (in the job), sagemaker:<endpoint>, local-copy (ml.endpoint)
    ("predicted_class", "string"),  # a multiclass model's predicted class (prediction is its index)
    ("predicted_value", "double"),  # a regression model's prediction (probability and prediction are null)
]


def table_uri(lake_uri: str, contract: Contract, table: str) -> str:
    """URI of one lake table: ``bronze``, ``silver``, ``dead_letter``, ``predictions`` or ``gold_<agg>``."""
    root = lake_uri.rstrip("/")
    if table.startswith("gold_"):
        return f"{root}/gold/{contract.name}__{table[len('gold_'):]}"
    if table not in ("bronze", "silver", "dead_letter", "predictions"):
        raise ValueError(f"unknown table {table!r}")
    return f"{root}/{table}/{contract.name}"


def checkpoint_uri(lake_uri: str, contract: Contract, query: str) -> str:
    return f"{lake_uri.rstrip('/')}/_checkpoints/{contract.name}/{query}"


def models_uri(lake_uri: str) -> str:
    return f"{lake_uri.rstrip('/')}/_models"


def silver_columns(contract: Contract) -> list[tuple[str, str]]:
    cols = []
    for f in contract.fields:
        spark_type = "timestamp" if f.name == contract.event_time.field else f.spark_type
        cols.append((f.name, spark_type))
    cols += [("event_date", "date"), ("event_hour", "int")]
    cols += [(d.name, d.type) for d in contract.derived]
    cols += reference_columns(contract)
    cols += LINEAGE_COLUMNS
    return cols


def reference_columns(contract: Contract) -> list[tuple[str, str]]:
    """Columns the reference join adds (types read from the reference file's header/rows)."""
    ref = contract.reference
    if ref is None or contract.reference_path is None:
        return []
    import pandas as pd

    path = contract.reference_path
    frame = pd.read_csv(path, nrows=200) if ref.format == "csv" else pd.read_parquet(path)
    join_key = ref.reference_key or ref.key
    kinds = {"i": "bigint", "u": "bigint", "f": "double", "b": "boolean"}
    out = []
    for name in ref.columns or [c for c in frame.columns if c != join_key]:
        out.append((ref.prefix + name, kinds.get(frame[name].dtype.kind, "string")))
    return out


def prediction_columns(contract: Contract) -> list[tuple[str, str]]:
    """The predictions table's columns: the scored record's (:func:`scored_record_columns`, with
    ``event_date`` after the event time), the score's, and the lineage columns."""
    record = scored_record_columns(contract)
    if not record:
        return []
    names = [c for c, _ in record]
    at = names.index(contract.event_time.field) + 1
    date = [] if "event_date" in names else [("event_date", "date")]
    return [*record[:at], *date, *record[at:], *PREDICTION_COLUMNS,
            ("_kafka_timestamp", "timestamp"), ("_batch_id", "bigint")]


def scored_record_columns(contract: Contract) -> list[tuple[str, str]]:
    """The record's columns a prediction keeps (key, de-duplication key, event time, the fields the
    model reads, its features, label), with silver's types; none without a model."""
    if contract.model is None:
        return []
    silver = dict(silver_columns(contract))
    keep = [contract.key, *contract.dedup_key, contract.event_time.field, *contract.model_reads(),
            *contract.model.features, *contract.model.categorical_features, *contract.model.text_features,
            contract.model.label]
    return [(c, silver[c]) for c in dict.fromkeys(keep)]


FIRST_SEEN_AT = "first_seen_at"  # a first_seen aggregate's column: the earliest event time of its row


def gold_columns(contract: Contract, aggregate_name: str) -> list[tuple[str, str]]:
    agg = next(a for a in contract.aggregates if a.name == aggregate_name)
    silver = dict(silver_columns(contract))
    cols = [("window_start", "timestamp"), ("window_end", "timestamp")]
    cols += [(c, silver[c]) for c in agg.group_by]
    if agg.first_seen:  # a row per first sighting (streaming_jobs.transforms.first_sightings)
        return [*cols, *[(c, silver[c]) for c in agg.first_seen], (FIRST_SEEN_AT, "timestamp")]
    for metric in agg.metrics:
        if metric.agg in ("count", "count_distinct"):
            kind = "bigint"
        elif metric.agg in ("min", "max"):
            kind = silver[metric.column or ""]
        elif metric.agg == "sum" and silver[metric.column or ""] in ("int", "bigint"):
            kind = "bigint"  # Spark sums integers as bigint
        else:
            kind = "double"
        cols.append((metric.name, kind))
    return cols


def table_columns(contract: Contract, table: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(columns, partition columns) of one table."""
    if table == "bronze":
        return BRONZE_COLUMNS, ["ingest_date"]
    if table == "dead_letter":
        return DEAD_LETTER_COLUMNS, ["ingest_date"]
    if table == "silver":
        return silver_columns(contract), list(contract.partition_by)
    if table == "predictions":
        return prediction_columns(contract), ["event_date"]
    if table.startswith("gold_"):
        return gold_columns(contract, table[len("gold_"):]), []
    raise ValueError(f"unknown table {table!r}")


# The column that says when a row was written: what a time window over a table filters on.
_WRITE_TIME = {"bronze": "ingest_time", "dead_letter": "ingest_time", "silver": "_ingest_time",
               "predictions": "scored_at"}


def write_time_column(table: str) -> str:
    """When a row of ``table`` reached the lake (a gold row: the end of its window)."""
    if table.startswith("gold_"):
        return "window_end"
    try:
        return _WRITE_TIME[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}") from None


def ddl(columns: list[tuple[str, str]]) -> str:
    """``[("a", "int")]`` -> ``"`a` int"``."""
    return ", ".join(f"`{name}` {kind}" for name, kind in columns)


def is_table(spark: SparkSession, uri: str) -> bool:
    """Whether ``uri`` holds a lake table (a Delta transaction log)."""
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, uri))


def read_table(spark: SparkSession, uri: str, *, version: int | None = None) -> DataFrame:
    """The committed rows of the lake table at ``uri`` (at ``version``, when given)."""
    reader = spark.read.format(TABLE_FORMAT)
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(uri)


# -- access on HDFS --------------------------------------------------------------------------------

PIPELINE_GROUP = "streamsight"  # the pipeline's user's group: with it, writes every table
ANALYSTS_GROUP = "analysts"  # reads these areas only
ANALYST_AREAS = ("silver", "predictions", "gold")


def hdfs_acls(root: str) -> list[tuple[str, str, list[str]]]:
    """``(path, permission, ACL entries)`` of the lake on HDFS, the root first: the owner (the
    pipeline's user) and its group have every table; the analysts' group may traverse the root and
    read :data:`ANALYST_AREAS`; others have nothing. Default ACLs make new tables inherit this."""
    private = ["default:user::rwx", "default:group::r-x", "default:other::---"]
    readable = [f"group:{ANALYSTS_GROUP}:r-x", f"default:group:{ANALYSTS_GROUP}:r-x", *private]
    root = root.rstrip("/")
    return [(root, "750", [f"group:{ANALYSTS_GROUP}:--x", *private]),
            *[(f"{root}/{area}", "750", readable) for area in ANALYST_AREAS]]


def retention(contract: Contract, settings: Settings) -> tuple[str, str]:
    """``(files, log)`` retention intervals of the stream's tables: the contract's, else the settings'."""
    return (contract.retention.files or settings.retention.files, contract.retention.log or settings.retention.log)


def table_properties(contract: Contract, settings: Settings) -> dict[str, str]:
    """Delta table properties of the stream's tables: their :func:`retention`."""
    files, log = retention(contract, settings)
    return {"delta.deletedFileRetentionDuration": f"interval {files}", "delta.logRetentionDuration": f"interval {log}"}


def lake_endpoint(settings: Settings) -> tuple[str, int] | None:
    """``(host, port)`` the lake's file system answers on: the NameNode of an ``hdfs://host:port``
    lake, the configured S3 endpoint (``spark.hadoop.fs.s3a.endpoint``) of an ``s3a://`` one; None
    for a local lake, an HDFS nameservice or AWS's own S3 endpoints."""
    from urllib.parse import urlsplit

    uri = settings.lake_uri
    if uri.startswith("hdfs://"):
        parts = urlsplit(uri)  # without a port the authority may be an HA nameservice: Hadoop resolves it
        return (parts.hostname, parts.port) if parts.hostname and parts.port else None
    if uri.startswith(("s3a://", "s3://")):
        endpoint = settings.spark.conf.get("spark.hadoop.fs.s3a.endpoint")
        if not endpoint:
            return None
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        return (parts.hostname or "", parts.port or (80 if parts.scheme == "http" else 443))
    return None


def check_lake(settings: Settings, timeout: float = 5.0) -> None:
    """Fail fast, naming the setting, when the lake's file system does not accept a connection
    (Hadoop's clients would retry for minutes first)."""
    import socket

    from streamsight.errors import LakeUnavailableError

    endpoint = lake_endpoint(settings)
    if endpoint is None:
        return
    what = "the NameNode" if settings.lake_uri.startswith("hdfs://") else "the S3 endpoint (spark.hadoop.fs.s3a.endpoint)"
    try:
        with socket.create_connection(endpoint, timeout=timeout):
            return
    except OSError as exc:
        raise LakeUnavailableError(f"STREAMSIGHT_LAKE_DIR: {settings.lake_uri}: {what} at {endpoint[0]}:{endpoint[1]} "
                                   f"cannot be reached ({exc.strerror or exc}); is it running?") from None


def with_derived(df: DataFrame, contract: Contract) -> DataFrame:
    """``df`` (the record's fields as columns) with the contract's derived columns it lacks, in order."""
    from pyspark.sql import functions as F

    have = set(df.columns)
    for d in contract.derived:
        if d.name not in have:
            df = df.withColumn(d.name, F.expr(f"try_cast(({d.expr}) AS {d.type})"))  # null, not an error
    return df
