"""Exactly-once Parquet lake tables written from ``foreachBatch``.

A streaming job that writes several tables per micro-batch (silver and predictions, say) cannot
use Spark's own file sink, which writes one table per query. :class:`LakeTable` writes the same
on-disk format that sink does, so plain ``spark.read.parquet(path)`` and
``spark.readStream.parquet(path)`` see exactly the committed data:

``<path>/_spark_metadata/``
    Spark's file-sink log (``FileStreamSinkLog``). One file per micro-batch, named after the batch
    id (``0``, ``1``, ...); every ``compact_interval``-th batch (``(batch_id + 1) % interval == 0``)
    is written as ``<id>.compact`` instead and holds every live entry up to and including that
    batch. Each file is the line ``v1`` followed by one JSON ``SinkFileStatus`` per line, e.g.::

        v1
        {"path":"file:///lake/silver/p=1/part-b0000000007-00000-<uuid>.c000.snappy.parquet","size":512,"isDir":false,"modificationTime":1700000000000,"blockReplication":1,"blockSize":33554432,"action":"add"}

    When this directory exists Spark reads the table through ``MetadataLogFileIndex``: only files
    named in the log are visible, whatever else lies in the table directory.
``<path>/<col>=<val>/.../part-b<batch:010d>-<n:05d>-<attempt uuid>.<ext>``
    The data files. The batch id in the name lets a retry find the files of a failed attempt.
``<path>/_staging/batch-<batch:010d>-<attempt uuid>/``
    Where an attempt writes before publishing (hidden from Spark: the name starts with ``_``).
    ``data/`` holds Spark's output and ``_manifest`` the final locations of the files being moved.

``write_batch(df, batch_id)``:

1. If ``batch_id`` is already committed, return 0 (a re-executed micro-batch is a no-op).
2. Remove what failed attempts of this batch left: every staging directory of the batch, the
   final-location files its manifest lists and any file named ``part-b<batch>-...``.
3. Write ``df`` (partitioned as configured) into a fresh staging directory.
4. Write the manifest, then rename every data file into its final place.
5. Commit: write ``_spark_metadata/<id>`` (or ``<id>.compact``) to a hidden temporary file and
   rename it into place, failing if it already exists. Until this rename the batch's files are
   invisible to log-aware readers; after it they are all visible.
6. Delete the staging directory (and staging left-overs of earlier, committed batches).

If steps 3-4 raise in Python, the attempt's files are removed at once (best effort); a killed
driver leaves them for the retry's step 2. The row count returned comes from an observed metric
of the staging write (``DataFrame.observe``), so ``df`` is evaluated once.

Invariants and limits (the same as Spark's own file sink unless noted):

* One writer per table. Two writers of the same batch id race; the loser's log rename fails with
  :class:`ConcurrentCommitError`, but its retry clean-up may have removed the winner's in-flight
  files first.
* Batch ids must be those of one streaming query (one checkpoint). A batch id not greater than the
  latest committed one counts as committed, so a query restarted with a *new* checkpoint (whose
  ids start again from 0) writes nothing until its ids pass the table's - as with Spark's sink.
* The log must be contiguous from batch 0, because readers read every batch file since the latest
  compaction. If ``batch_id`` skips ids (the first batch written by a query that started before
  the table existed, or a ``foreachBatch`` that writes some batches only), the skipped ids are
  committed as empty batches first and a warning is logged.
* Log files are never deleted (Spark's sink prunes old ones). Readers derive the compaction
  interval from the two newest ``.compact`` files, so keeping them all is always safe.
* Orphan data files of a killed attempt stay in the table directories until the batch is retried.
  Spark ignores them (it reads through the log); readers that do not know the log (pyarrow,
  Hive/Trino over the directory) would see them, as they would for Spark's own sink.
* A reader derives the interval from ``spark.sql.streaming.fileSink.log.compactInterval``
  (default 10) while no ``.compact`` file exists yet, so ``compact_interval`` must not be larger
  than that setting; :meth:`LakeTable.write_batch` checks it against the writing session's value.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamsight.hadoop import HadoopFS, PathExistsError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

METADATA_DIR = "_spark_metadata"
STAGING_DIR = "_staging"
MANIFEST_FILE = "_manifest"
COMPACT_SUFFIX = ".compact"
LOG_VERSION = 1
ADD_ACTION = "add"
DELETE_ACTION = "delete"
FILE_FORMAT = "parquet"
COMPACT_INTERVAL_CONF = "spark.sql.streaming.fileSink.log.compactInterval"
SPARK_DEFAULT_COMPACT_INTERVAL = 10


class LakeSinkError(RuntimeError):
    """The table's files or log are not in the state a write or read needs."""


class ConcurrentCommitError(LakeSinkError, PathExistsError):
    """Another writer committed the same batch id of the same table first."""


class LakeTableNotFoundError(LakeSinkError, FileNotFoundError):
    """:meth:`LakeTable.read` without a schema on a table that has no committed data file yet."""


# --------------------------------------------------------------------------------------------
# The log format and Spark's compaction arithmetic (pure Python, no Spark needed)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SinkFileStatus:
    """One entry of the file-sink log: a data file that belongs to the table."""

    path: str  # fully-qualified, URL-encoded URI (Hadoop ``Path.toUri().toString()``)
    size: int
    is_dir: bool
    modification_time: int  # epoch milliseconds
    block_replication: int
    block_size: int
    action: str = ADD_ACTION

    def to_json(self) -> str:
        """The entry as Spark's json4s writes it: these keys, this order, no spaces."""
        return json.dumps(
            {
                "path": self.path,
                "size": self.size,
                "isDir": self.is_dir,
                "modificationTime": self.modification_time,
                "blockReplication": self.block_replication,
                "blockSize": self.block_size,
                "action": self.action,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, line: str) -> SinkFileStatus:
        d = json.loads(line)
        return cls(
            path=d["path"],
            size=int(d["size"]),
            is_dir=bool(d["isDir"]),
            modification_time=int(d["modificationTime"]),
            block_replication=int(d["blockReplication"]),
            block_size=int(d["blockSize"]),
            action=d["action"],
        )


def serialize_log(entries: Iterable[SinkFileStatus]) -> bytes:
    """A log file's bytes: ``v1``, then ``\\n`` + one JSON entry per entry (no trailing newline)."""
    parts = [f"v{LOG_VERSION}"]
    parts.extend(e.to_json() for e in entries)
    return "\n".join(parts).encode("utf-8")


def parse_log(text: str, *, source: str = "log file") -> list[SinkFileStatus]:
    """Entries of a log file (validates the version line as Spark does)."""
    lines = text.split("\n")
    head = lines[0].strip()
    if not head:
        raise LakeSinkError(f"{source}: incomplete log file (no version line)")
    if not head.startswith("v") or not head[1:].isdigit():
        raise LakeSinkError(f"{source}: log file is malformed (first line {head!r})")
    if int(head[1:]) > LOG_VERSION:
        raise LakeSinkError(f"{source}: log version {head} is newer than supported v{LOG_VERSION}")
    return [SinkFileStatus.from_json(line) for line in lines[1:] if line.strip()]


def is_compaction_batch(batch_id: int, compact_interval: int) -> bool:
    """Spark's rule: with interval 10, batches 9, 19, 29, ... are compactions."""
    return (batch_id + 1) % compact_interval == 0


def batches_before_compaction(compaction_batch_id: int, compact_interval: int) -> range:
    """Batches a compaction merges: the previous compaction and everything after it."""
    if not is_compaction_batch(compaction_batch_id, compact_interval):
        raise ValueError(f"{compaction_batch_id} is not a compaction batch")
    return range(max(0, compaction_batch_id - compact_interval), compaction_batch_id)


def all_valid_batches(latest_batch_id: int, compact_interval: int) -> range:
    """Batches a reader reads: the latest compaction at or before ``latest_batch_id`` onwards."""
    start = max(0, (latest_batch_id + 1) // compact_interval * compact_interval - 1)
    return range(start, latest_batch_id + 1)


def derive_compact_interval(default_interval: int, latest_compact_batch_id: int) -> int:
    """Spark's interval for a log with exactly one ``.compact`` file (SPARK-18187)."""
    n = latest_compact_batch_id + 1
    if n <= default_interval:
        return n
    if default_interval < n // 2:
        for i in range(default_interval, n // 2 + 1):
            if n % i == 0:
                return i
    return n


def effective_compact_interval(compact_batch_ids: Iterable[int], default_interval: int) -> int:
    """The interval Spark uses for a log whose ``.compact`` files have these batch ids."""
    ids = sorted(compact_batch_ids, reverse=True)
    if len(ids) >= 2:
        return ids[0] - ids[1]
    if len(ids) == 1:
        return derive_compact_interval(default_interval, ids[0])
    return default_interval


def log_file_name(batch_id: int, compact_interval: int) -> str:
    if is_compaction_batch(batch_id, compact_interval):
        return f"{batch_id}{COMPACT_SUFFIX}"
    return str(batch_id)


def parse_log_file_name(name: str) -> int | None:
    """Batch id of a log file name (``7`` or ``9.compact``), None for anything else."""
    stem = name[: -len(COMPACT_SUFFIX)] if name.endswith(COMPACT_SUFFIX) else name
    return int(stem) if stem.isdigit() else None


def data_file_prefix(batch_id: int) -> str:
    return f"part-b{batch_id:010d}-"


def _staging_prefix(batch_id: int) -> str:
    return f"batch-{batch_id:010d}-"


def _parse_staging_name(name: str) -> int | None:
    if not name.startswith("batch-"):
        return None
    digits = name[len("batch-"):].split("-", 1)[0]
    return int(digits) if digits.isdigit() else None


def _observed_rows(observation: Any) -> int | None:
    """The ``rows`` metric of a finished write, or None if it is not available (never blocks)."""
    if observation is None:
        return None
    try:
        # Observation.get waits forever for metrics that never come; look at the future first.
        if not observation._jo.future().isCompleted():
            return None
        return int(observation.get["rows"])
    except Exception:
        return None


def _is_hidden(name: str) -> bool:
    """Names Spark's file listing skips (``_SUCCESS``, ``.crc`` files, our ``_staging``)."""
    return name.startswith("_") or name.startswith(".")


# --------------------------------------------------------------------------------------------
# Hadoop FileSystem access through the JVM
# --------------------------------------------------------------------------------------------


class _TableFS(HadoopFS):
    """A table's file system, with its log and staging directories."""

    def __init__(self, spark: SparkSession, path: str) -> None:
        super().__init__(spark, path)
        self.meta = self.child(self.root, METADATA_DIR)
        self.staging = self.child(self.root, STAGING_DIR)


def _table_fs(spark: SparkSession, path: str) -> _TableFS:
    return _TableFS(spark, path)


class _HadoopHandle:
    """A table's :class:`~streamsight.hadoop.HadoopFS`, made once per SparkContext: building one copies the session's
    Hadoop configuration and, for atomic renames, creates a FileContext (tens of milliseconds each,
    several times per micro-batch otherwise)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._cached: tuple[Any, _TableFS] | None = None

    def get(self, spark: SparkSession) -> _TableFS:
        context = spark.sparkContext
        cached = self._cached
        if cached is None or cached[0] is not context:
            cached = self._cached = (context, _table_fs(spark, self.path))
        return cached[1]


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LogState:
    """What a listing of ``_spark_metadata`` says."""

    files: dict[int, Any]  # batch id -> Hadoop FileStatus of its log file
    compact_ids: tuple[int, ...]

    @property
    def latest(self) -> int:
        return max(self.files) if self.files else -1


class BatchRecordLog:
    """One small JSON record per micro-batch, written without a Spark job (idempotent by batch id).

    ``<path>/batch-<id>.json`` is written atomically (temporary file, then rename without
    overwrite), so a record is either whole or absent and a replayed batch cannot write it twice.
    For per-batch bookkeeping that must not cost a Spark job per micro-batch; read it with
    :meth:`read` (or ``spark.read.json(path)``).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._hadoop = _HadoopHandle(path)

    def _file(self, hdfs: _TableFS, batch_id: int) -> Any:
        return hdfs.child(hdfs.root, f"batch-{int(batch_id):020d}.json")

    def is_committed(self, spark: SparkSession, batch_id: int) -> bool:
        hdfs = self._hadoop.get(spark)
        return hdfs.exists(self._file(hdfs, batch_id))

    def write(self, spark: SparkSession, batch_id: int, record: dict[str, Any]) -> bool:
        """Write the record of ``batch_id``; False if it was already there."""
        hdfs = self._hadoop.get(spark)
        hdfs.mkdirs(hdfs.root)
        try:
            hdfs.write_atomic(self._file(hdfs, batch_id), (json.dumps(record, default=str) + "\n").encode("utf-8"))
        except PathExistsError:
            return False
        return True

    def read(self, spark: SparkSession, schema: str) -> DataFrame:
        """Every record as a DataFrame with ``schema`` (DDL); empty if none was written yet."""
        hdfs = self._hadoop.get(spark)
        if not hdfs.exists(hdfs.root):
            return spark.createDataFrame([], schema)
        return spark.read.schema(schema).json(hdfs.uri(hdfs.root) + "/batch-*.json")


class LakeTable:
    """A Parquet table under ``path`` written exactly once per micro-batch from ``foreachBatch``.

    ``path`` is a local path or any Hadoop URI (``file:``, ``hdfs://``, ``s3a://``); all file
    operations go through the Hadoop FileSystem API of the session's JVM. See the module
    docstring for the layout, the commit protocol and its limits.

    Example::

        silver = LakeTable(silver_uri, partition_by=["event_date"])
        predictions = LakeTable(predictions_uri, partition_by=["event_date"])

        def write(df, batch_id):
            silver.write_batch(df, batch_id)
            predictions.write_batch(score(df), batch_id)

        stream.writeStream.foreachBatch(write).option("checkpointLocation", ckpt).start()
    """

    def __init__(self, path: str, *, partition_by: Sequence[str] = (), compact_interval: int = 10) -> None:
        if not path:
            raise ValueError("path must not be empty")
        if isinstance(partition_by, str):
            partition_by = [partition_by]
        if int(compact_interval) < 1:
            raise ValueError(f"compact_interval must be >= 1, got {compact_interval}")
        self.path = path
        self.partition_by: tuple[str, ...] = tuple(partition_by)
        self.compact_interval = int(compact_interval)
        self._hadoop = _HadoopHandle(path)

    def __repr__(self) -> str:
        return (f"LakeTable({self.path!r}, partition_by={list(self.partition_by)!r}, "
                f"compact_interval={self.compact_interval})")

    # -- public API -----------------------------------------------------------------------
    def write_batch(self, df: DataFrame, batch_id: int) -> int:
        """Write ``df`` as micro-batch ``batch_id``; the number of rows written.

        Returns 0 without writing anything when the batch is already committed (a re-executed
        micro-batch). An empty ``df`` still commits the batch.
        """
        batch_id = int(batch_id)
        if batch_id < 0:
            raise ValueError(f"batch_id must be >= 0, got {batch_id}")
        hdfs = self._hadoop.get(df.sparkSession)
        state = self._log_state(hdfs)
        if batch_id <= state.latest:
            log.info("%s: batch %d already committed, skipping", self.path, batch_id)
            self._remove_committed_staging(hdfs, batch_id)
            return 0
        interval = self._writer_interval(hdfs, state)

        self._cleanup_failed_attempts(hdfs, batch_id)
        if batch_id > state.latest + 1:
            log.warning("%s: batch ids %d..%d were never written; committing them as empty batches "
                        "so the log stays contiguous", self.path, state.latest + 1, batch_id - 1)
            for missing in range(state.latest + 1, batch_id):
                self._commit(hdfs, missing, [], interval)

        staging, attempt = self._new_staging_dir(hdfs, batch_id)
        try:
            rows = self._write_staging(df, hdfs, staging)
            entries = self._publish(hdfs, staging, batch_id, attempt)
        except BaseException:
            self._abort_attempt(hdfs, staging)  # nothing is committed yet: safe to take back
            raise
        try:
            self._commit(hdfs, batch_id, entries, interval)
        except PathExistsError as exc:
            # Our files are referenced by nobody: take them back before reporting the race.
            for e in entries:
                hdfs.delete(hdfs.path_from_uri(e.path))
            hdfs.delete(staging, True)
            raise ConcurrentCommitError(str(exc)) from exc
        self._remove_committed_staging(hdfs, batch_id)
        log.info("%s: committed batch %d (%d rows, %d files)", self.path, batch_id, rows, len(entries))
        return rows

    def commit_empty(self, spark: SparkSession, batch_id: int) -> None:
        """Commit ``batch_id`` with no rows, without running a Spark job (a no-op if committed)."""
        batch_id = int(batch_id)
        if batch_id < 0:
            raise ValueError(f"batch_id must be >= 0, got {batch_id}")
        hdfs = self._hadoop.get(spark)
        state = self._log_state(hdfs)
        if batch_id <= state.latest:
            return
        interval = self._writer_interval(hdfs, state)
        self._cleanup_failed_attempts(hdfs, batch_id)
        for missing in range(state.latest + 1, batch_id + 1):
            self._commit(hdfs, missing, [], interval)
        self._remove_committed_staging(hdfs, batch_id)

    def is_committed(self, spark: SparkSession, batch_id: int) -> bool:
        """True if ``batch_id`` is committed (every id up to the latest committed one is)."""
        return 0 <= int(batch_id) <= self._log_state(self._hadoop.get(spark)).latest

    def committed_batches(self, spark: SparkSession) -> list[int]:
        """Batch ids that have a log file, ascending (0..latest: the log is kept contiguous)."""
        return sorted(self._log_state(self._hadoop.get(spark)).files)

    def commit_time(self, spark: SparkSession, batch_id: int) -> float | None:
        """Epoch seconds at which ``batch_id`` was committed (its log file's modification time)."""
        status = self._log_state(self._hadoop.get(spark)).files.get(int(batch_id))
        return None if status is None else status.getModificationTime() / 1000.0

    def read(self, spark: SparkSession, schema: StructType | None = None) -> DataFrame:
        """The committed rows: ``spark.read.parquet(path)``, which reads through the log.

        If the table has no committed data file yet (never written, or only empty batches):
        returns an empty DataFrame when ``schema`` is given, else raises
        :class:`LakeTableNotFoundError`. With ``schema`` the result uses it (partition columns
        included) instead of the inferred schema.
        """
        from pyspark.errors import AnalysisException

        hdfs = self._hadoop.get(spark)
        if self._log_state(hdfs).latest < 0:
            return self._empty_or_raise(spark, schema, "has no committed batch")
        reader = spark.read.format(FILE_FORMAT)
        if schema is not None:
            reader = reader.schema(schema)
        try:
            return reader.load(hdfs.uri(hdfs.root))
        except AnalysisException as exc:
            if "UNABLE_TO_INFER_SCHEMA" in str(exc) or "Unable to infer schema" in str(exc):
                return self._empty_or_raise(spark, schema, "has no committed data file")
            raise

    # -- steps of write_batch -------------------------------------------------------------
    def _new_staging_dir(self, hdfs: _TableFS, batch_id: int) -> tuple[Any, str]:
        attempt = uuid.uuid4().hex
        staging = hdfs.child(hdfs.staging, f"{_staging_prefix(batch_id)}{attempt}")
        hdfs.mkdirs(staging)
        return staging, attempt

    def _write_staging(self, df: DataFrame, hdfs: _TableFS, staging: Any) -> int:
        """Step 3: Spark writes ``df`` into ``<staging>/data``; the number of rows written."""
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        data_dir = hdfs.uri(hdfs.child(staging, "data"))
        # The row count comes from an observed metric of the write itself (no second job, no
        # second evaluation of ``df``).
        observation: Observation | None = None
        try:
            counted = Observation()
            observed, observation = df.observe(counted, F.count(F.lit(1)).alias("rows")), counted
        except Exception:
            observed = df
        writer = observed.write.format(FILE_FORMAT).mode("errorifexists")
        if self.partition_by:
            writer = writer.partitionBy(*self.partition_by)
        writer.save(data_dir)
        rows = _observed_rows(observation)
        if rows is not None:
            return rows
        if not any(not _is_hidden(str(f.getPath().getName())) for f in hdfs.list_files(hdfs.child(staging, "data"))):
            return 0
        return df.sparkSession.read.format(FILE_FORMAT).load(data_dir).count()

    def _publish(self, hdfs: _TableFS, staging: Any, batch_id: int, attempt: str) -> list[SinkFileStatus]:
        """Step 4: move the staged data files to their final names; their log entries."""
        data_root = hdfs.child(staging, "data")
        root_depth = int(data_root.depth())
        moves: list[tuple[Any, Any]] = []
        staged = sorted(
            (f for f in hdfs.list_files(data_root) if not _is_hidden(f.getPath().getName())),
            key=lambda f: hdfs.uri(f.getPath()),
        )
        for n, status in enumerate(staged):
            src = status.getPath()
            dirs: list[str] = []
            parent = src.getParent()
            while int(parent.depth()) > root_depth:
                dirs.append(str(parent.getName()))
                parent = parent.getParent()
            if any(_is_hidden(d) for d in dirs):
                continue
            name = str(src.getName())
            ext = name.split(".", 1)[1] if "." in name else ""
            final_name = f"{data_file_prefix(batch_id)}{n:05d}-{attempt}" + (f".{ext}" if ext else "")
            moves.append((src, hdfs.child(hdfs.root, *reversed(dirs), final_name)))

        # The manifest goes first so that a retry can find whatever got moved before a crash.
        manifest = "\n".join(hdfs.uri(dst) for _, dst in moves).encode("utf-8")
        hdfs.write_bytes(hdfs.child(staging, MANIFEST_FILE), manifest, overwrite=True)

        entries: list[SinkFileStatus] = []
        made: set[str] = set()
        for src, dst in moves:
            parent = dst.getParent()
            if hdfs.uri(parent) not in made:
                hdfs.mkdirs(parent)
                made.add(hdfs.uri(parent))
            hdfs.rename(src, dst)
            st = hdfs.file_status(dst)
            if st is None:
                raise LakeSinkError(f"{hdfs.uri(dst)} vanished right after it was renamed into place")
            entries.append(SinkFileStatus(
                path=hdfs.uri(st.getPath()),
                size=int(st.getLen()),
                is_dir=bool(st.isDirectory()),
                modification_time=int(st.getModificationTime()),
                block_replication=int(st.getReplication()),
                block_size=int(st.getBlockSize()),
                action=ADD_ACTION,
            ))
        return entries

    def _commit(self, hdfs: _TableFS, batch_id: int, entries: list[SinkFileStatus], interval: int) -> None:
        """Step 5: write the batch's log file (the compaction of all live entries if it is one)."""
        if is_compaction_batch(batch_id, interval):
            merged: list[SinkFileStatus] = []
            for b in batches_before_compaction(batch_id, interval):
                merged.extend(self._read_batch_log(hdfs, b, interval))
            merged.extend(entries)
            deleted = {e.path for e in merged if e.action == DELETE_ACTION}
            entries = [e for e in merged if e.action != DELETE_ACTION and e.path not in deleted]
        hdfs.mkdirs(hdfs.meta)
        hdfs.write_atomic(hdfs.child(hdfs.meta, log_file_name(batch_id, interval)), serialize_log(entries))

    def _cleanup_failed_attempts(self, hdfs: _TableFS, batch_id: int) -> None:
        """Step 2: remove everything a failed (uncommitted) attempt of ``batch_id`` left.

        Every attempt creates its staging directory before any file reaches a final location and
        the directory is removed only after the commit or after this clean-up, so without a
        staging directory of the batch there is nothing to clean and no table scan is needed.
        """
        leftovers = [s.getPath() for s in hdfs.list_status(hdfs.staging)
                     if _parse_staging_name(str(s.getPath().getName())) == batch_id]
        if not leftovers:
            return
        log.warning("%s: cleaning %d failed attempt(s) of batch %d", self.path, len(leftovers), batch_id)
        for staging in leftovers:
            for uri in self._manifest_uris(hdfs, staging):
                hdfs.delete(hdfs.path_from_uri(uri))
        prefix = data_file_prefix(batch_id)
        root_depth = int(hdfs.root.depth())
        for status in list(hdfs.list_files(hdfs.root)):
            p = status.getPath()
            if not str(p.getName()).startswith(prefix):
                continue
            parent, hidden = p.getParent(), False
            while int(parent.depth()) > root_depth:
                hidden = hidden or _is_hidden(str(parent.getName()))
                parent = parent.getParent()
            if not hidden:
                hdfs.delete(p)
        for staging in leftovers:
            hdfs.delete(staging, True)

    def _abort_attempt(self, hdfs: _TableFS, staging: Any) -> None:
        """Best effort: remove an uncommitted attempt's published files and staging directory.

        Failures are only logged; the retry of the batch cleans up whatever is left.
        """
        try:
            for uri in self._manifest_uris(hdfs, staging):
                hdfs.delete(hdfs.path_from_uri(uri))
            hdfs.delete(staging, True)
        except Exception:
            log.warning("%s: could not clean up failed attempt %s; the batch's retry will",
                        self.path, hdfs.uri(staging), exc_info=True)

    @staticmethod
    def _manifest_uris(hdfs: _TableFS, staging: Any) -> list[str]:
        """Final locations an attempt's manifest lists (nothing if it never got that far)."""
        manifest = hdfs.child(staging, MANIFEST_FILE)
        if not hdfs.exists(manifest):
            return []
        return [line.strip() for line in hdfs.read_text(manifest).splitlines() if line.strip()]

    def _remove_committed_staging(self, hdfs: _TableFS, up_to_batch_id: int) -> None:
        """Step 6: delete staging directories of committed batches (<= ``up_to_batch_id``)."""
        for s in hdfs.list_status(hdfs.staging):
            b = _parse_staging_name(str(s.getPath().getName()))
            if b is not None and b <= up_to_batch_id:
                hdfs.delete(s.getPath(), True)

    # -- log helpers ----------------------------------------------------------------------
    def _log_state(self, hdfs: _TableFS) -> _LogState:
        files: dict[int, Any] = {}
        compact: list[int] = []
        for status in hdfs.list_status(hdfs.meta):
            name = str(status.getPath().getName())
            b = parse_log_file_name(name)
            if b is None or not status.isFile():
                continue
            files[b] = status
            if name.endswith(COMPACT_SUFFIX):
                compact.append(b)
        return _LogState(files=files, compact_ids=tuple(sorted(compact)))

    def _writer_interval(self, hdfs: _TableFS, state: _LogState) -> int:
        """The compaction interval to write with; checks readers with the session's settings can follow.

        An existing log keeps the interval its ``.compact`` files imply (as Spark's sink does).
        """
        interval = effective_compact_interval(state.compact_ids, self.compact_interval)
        reader_default = int(hdfs.spark.conf.get(COMPACT_INTERVAL_CONF) or SPARK_DEFAULT_COMPACT_INTERVAL)
        reader_interval = effective_compact_interval(state.compact_ids, reader_default)
        if interval > reader_default or (state.compact_ids and reader_interval != interval):
            raise LakeSinkError(
                f"{self.path}: compaction interval {interval} cannot be followed by readers using "
                f"{COMPACT_INTERVAL_CONF}={reader_default}; use compact_interval <= {reader_default}"
            )
        return interval

    def _read_batch_log(self, hdfs: _TableFS, batch_id: int, interval: int) -> list[SinkFileStatus]:
        p = hdfs.child(hdfs.meta, log_file_name(batch_id, interval))
        if not hdfs.exists(p):
            raise LakeSinkError(f"{hdfs.uri(p)} is missing (needed to compact, interval {interval})")
        return parse_log(hdfs.read_text(p), source=hdfs.uri(p))

    def _empty_or_raise(self, spark: SparkSession, schema: StructType | None, why: str) -> DataFrame:
        if schema is not None:
            return spark.createDataFrame([], schema)
        raise LakeTableNotFoundError(f"lake table {self.path} {why}; pass schema= to get an empty DataFrame")
