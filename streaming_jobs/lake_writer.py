"""Lake tables written once per micro-batch from ``foreachBatch``, and the job's per-batch records.

:class:`BatchTable` appends a micro-batch to a Delta Lake table with Delta's idempotent writes: the
commit carries a transaction id (``txnAppId`` = the streaming query's id, which its checkpoint
keeps across restarts; ``txnVersion`` = the batch id), and Delta skips a write whose batch id is
not above the one the table recorded for that query. A batch replayed after a crash therefore adds
nothing to a table it already committed, and the files of an attempt that died before its commit
are in no version of the table, so no reader (Spark, delta-rs, Athena, Trino) sees them.

:class:`BatchRecordLog` keeps one small JSON file per micro-batch, written without a Spark job.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from streamsight.errors import ConfigError
from streamsight.hadoop import HadoopFS, PathExistsError
from streamsight.lake import TABLE_FORMAT, ddl

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


class LakeWriteError(RuntimeError):
    """A table's transaction log or the query's checkpoint is not in the state a write needs."""


def query_id(spark: SparkSession, checkpoint_uri: str) -> str:
    """The id of the streaming query whose checkpoint is ``checkpoint_uri`` (its ``metadata`` file,
    written when the query first starts and kept across restarts)."""
    fs = HadoopFS(spark, checkpoint_uri)
    text = fs.read_text_or_none(fs.child(fs.root, "metadata"))
    if not text:
        raise LakeWriteError(f"{checkpoint_uri}/metadata: no query id (has the query started?)")
    return str(json.loads(text.splitlines()[0])["id"])


class BatchTable:
    """A Delta table under ``path`` appended exactly once per micro-batch of one streaming query."""

    def __init__(self, path: str, columns: list[tuple[str, str]], partition_by: list[str] | tuple[str, ...] = (),
                 properties: dict[str, str] | None = None) -> None:
        self.path = path
        self.columns = list(columns)
        self.partition_by = list(partition_by)
        self.properties = dict(properties or {})
        unknown = [p for p in self.partition_by if p not in {c for c, _ in self.columns}]
        if unknown:
            raise ValueError(f"{path}: partition column(s) {unknown} are not columns of the table")

    def __repr__(self) -> str:
        return f"BatchTable({self.path!r}, partition_by={self.partition_by!r})"

    def create(self, spark: SparkSession) -> None:
        """Create the table with its declared columns, partitioning and properties, unless it exists
        (its properties are then brought up to date)."""
        create_table(spark, self.path, self.columns, self.partition_by, self.properties)

    def _snapshot(self, spark: SparkSession) -> Any:
        """The table's newest snapshot (Delta's ``DeltaLog``, brought up to date)."""
        jvm = spark._jvm
        assert jvm is not None
        return jvm.org.apache.spark.sql.delta.DeltaLog.forTableWithSnapshot(spark._jsparkSession, self.path)._2()

    def committed_batch(self, spark: SparkSession, app_id: str) -> int | None:
        """The newest batch id query ``app_id`` committed to this table (None: none yet)."""
        snapshot = self._snapshot(spark)
        if int(snapshot.version()) < 0:
            return None
        found = snapshot.transactions().get(app_id)
        return int(found.get()) if found.isDefined() else None

    def is_committed(self, spark: SparkSession, batch_id: int, app_id: str) -> bool:
        committed = self.committed_batch(spark, app_id)
        return committed is not None and int(batch_id) <= committed

    def write_batch(self, df: DataFrame, batch_id: int, app_id: str) -> int:
        """Append ``df`` as micro-batch ``batch_id`` of query ``app_id``: the rows written, 0 when
        the table already holds the batch (then no Spark job runs)."""
        if int(batch_id) < 0:
            raise ValueError(f"batch_id must be >= 0, got {batch_id}")
        if self.is_committed(df.sparkSession, batch_id, app_id):
            return 0
        return self.append(df, batch_id, app_id)

    def append(self, df: DataFrame, batch_id: int, app_id: str) -> int:
        """Append ``df`` as batch ``batch_id`` of ``app_id``, which the caller found uncommitted
        (one query writes under its id, one batch at a time); the rows written. Delta's
        transaction id still refuses a second commit of the batch."""
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        counted = Observation()
        writer = (df.observe(counted, F.count(F.lit(1)).alias("rows")).write.format(TABLE_FORMAT).mode("append")
                  .option("txnAppId", app_id).option("txnVersion", int(batch_id)))
        if self.partition_by:
            writer = writer.partitionBy(*self.partition_by)
        writer.save(self.path)
        return int(counted.get["rows"])


def _properties_sql(properties: dict[str, str]) -> str:
    return ", ".join(f"'{k}' = '{v}'" for k, v in sorted(properties.items()))


def _partition_columns(spark: SparkSession, path: str) -> list[str]:
    """The table's partition columns, in order: the "# Partition Information" rows of DESCRIBE TABLE
    (up to a blank row or the next section; names quoted as Spark quotes them, in backquotes)."""
    rows = [r["col_name"] for r in spark.sql(f"DESCRIBE TABLE delta.`{path}`").collect()]
    if "# Partition Information" not in rows:
        return []
    columns = []
    for name in rows[rows.index("# Partition Information") + 1:]:
        if name == "# col_name":  # the section's header
            continue
        if not name or name.startswith("#"):
            break
        quoted = len(name) > 1 and name.startswith("`") and name.endswith("`")
        columns.append(name[1:-1].replace("``", "`") if quoted else name)
    return columns


def create_table(spark: SparkSession, path: str, columns: list[tuple[str, str]], partition_by: list[str],
                 properties: dict[str, str]) -> None:
    """An empty Delta table at ``path`` with these columns, partitioning and table properties, unless
    one is there already. An existing table gets the declared columns it lacks (a contract's new
    fields) and these properties, where they differ; a declared column whose type differs from the
    table's, or other partitioning, is a :class:`~streamsight.errors.ConfigError` naming them."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        partitioned = f" PARTITIONED BY ({', '.join(f'`{c}`' for c in partition_by)})" if partition_by else ""
        props = f" TBLPROPERTIES ({_properties_sql(properties)})" if properties else ""
        spark.sql(f"CREATE TABLE IF NOT EXISTS delta.`{path}` ({ddl(columns)}) USING {TABLE_FORMAT}{partitioned}{props}")
        return
    # Metadata only: DESCRIBE DETAIL would also count the table's files (a Spark job per table).
    have = {f.name: f.dataType.simpleString() for f in DeltaTable.forPath(spark, path).toDF().schema.fields}
    have_partitions = _partition_columns(spark, path)
    wrong = [f"{c} is {have[c]} in the table, declared {t}" for c, t in columns if c in have and have[c] != t]
    if wrong or have_partitions != list(partition_by):
        problems = wrong + ([f"partitioned by {have_partitions}, declared {list(partition_by)}"]
                            if have_partitions != list(partition_by) else [])
        raise ConfigError(f"lake table {path} does not match its contract: {'; '.join(problems)} (a change of "
                          "type or partitioning needs a new table: move the old one away, or give the stream "
                          "another name)")
    missing = [(c, t) for c, t in columns if c not in have]
    if missing:
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({ddl(missing)})")
    current = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect()}
    changed = {k: v for k, v in properties.items() if current.get(k) != v}
    if changed:
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({_properties_sql(changed)})")


def _is_record(name: str) -> bool:
    return name.startswith("batch-") and name.endswith(".json")


class BatchRecordLog:
    """One small JSON record per micro-batch of a streaming query, written without a Spark job
    (idempotent by query id and batch id).

    ``<path>/query=<query id>/batch-<id>.json`` is written atomically (temporary file, then rename
    without overwrite), so a record is either whole or absent and a replayed batch cannot write it
    twice; a query with a new checkpoint (a new id, batch ids from 0 again) has records of its own.
    For per-batch bookkeeping that must not cost a Spark job per micro-batch; read them with
    :meth:`records` or :meth:`read`.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fs: tuple[Any, HadoopFS] | None = None

    def _hadoop(self, spark: SparkSession) -> HadoopFS:
        """The file system, made once per SparkContext (each costs a copy of the Hadoop conf)."""
        if self._fs is None or self._fs[0] is not spark.sparkContext:
            self._fs = (spark.sparkContext, HadoopFS(spark, self.path))
        return self._fs[1]

    def _file(self, fs: HadoopFS, query: str, batch_id: int) -> Any:
        return fs.child(fs.root, f"query={query}", f"batch-{int(batch_id):020d}.json")

    def is_committed(self, spark: SparkSession, query: str, batch_id: int) -> bool:
        fs = self._hadoop(spark)
        return fs.exists(self._file(fs, query, batch_id))

    def write(self, spark: SparkSession, query: str, batch_id: int, record: dict[str, Any]) -> bool:
        """Write the record of ``batch_id`` of ``query``; False if it was already there."""
        fs = self._hadoop(spark)
        target = self._file(fs, query, batch_id)
        fs.mkdirs(target.getParent())
        data = json.dumps({**record, "query_id": query}, default=str) + "\n"
        try:
            fs.write_atomic(target, data.encode("utf-8"))
        except PathExistsError:
            return False
        return True

    def _record_files(self, fs: HadoopFS) -> list[Any]:
        """Paths of the whole records, in order. Listed one directory at a time with
        ``listStatus``: a recursive ``listFiles`` reads each file's permissions, which fails on a
        local disk when a writer renames its temporary file in between."""
        return sorted((status.getPath() for query_dir in fs.list_status(fs.root) if query_dir.isDirectory()
                       for status in fs.list_status(query_dir.getPath())
                       if _is_record(str(status.getPath().getName()))), key=fs.uri)

    def records(self, spark: SparkSession) -> list[dict[str, Any]]:
        """Every record of every query, in file order (read through the file system, no Spark job)."""
        fs = self._hadoop(spark)
        return [json.loads(fs.read_text(p)) for p in self._record_files(fs)]

    def read(self, spark: SparkSession, schema: str) -> DataFrame:
        """Every record as a DataFrame with ``schema`` (DDL); empty if none was written yet."""
        fs = self._hadoop(spark)
        if not self._record_files(fs):
            return spark.createDataFrame([], schema)
        return spark.read.schema(schema).json(fs.uri(fs.root) + "/query=*/batch-*.json")
