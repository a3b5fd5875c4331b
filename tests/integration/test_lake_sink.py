"""LakeTable: exactly-once foreachBatch writes in Spark's _spark_metadata file-sink log format."""

from __future__ import annotations

import json
import os

import pytest

pyspark = pytest.importorskip("pyspark")

from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.types import LongType, StringType, StructField, StructType  # noqa: E402

from streaming_jobs.lake_sink import (  # noqa: E402
    LakeSinkError,
    LakeTable,
    LakeTableNotFoundError,
    _table_fs,
    data_file_prefix,
)

pytestmark = pytest.mark.integration

SCHEMA = StructType([
    StructField("id", LongType(), False),
    StructField("name", StringType(), True),
    StructField("p", StringType(), True),
])


def batch_df(spark, batch_id, n=3):
    """n rows for one batch: ids batch_id*100 .. +n-1, spread over partitions a/b/c."""
    rows = [(batch_id * 100 + i, f"r{batch_id}-{i}", "abc"[i % 3]) for i in range(n)]
    return spark.createDataFrame(rows, SCHEMA).coalesce(1)


def ids(df):
    return sorted(r["id"] for r in df.select("id").collect())


def expected_ids(batch_ids, n=3):
    return sorted(b * 100 + i for b in batch_ids for i in range(n))


def data_files(root):
    """Every visible data file under the table directory (skipping _staging / _spark_metadata)."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(("_", "."))]
        out += [os.path.join(d, f) for f in files if not f.startswith(("_", "."))]
    return sorted(out)


def test_thirty_batches_compact_and_read_back(spark, tmp_path):
    path = str(tmp_path / "silver")
    table = LakeTable(path, partition_by=["p"])
    for b in range(30):
        assert table.write_batch(batch_df(spark, b), b) == 3

    meta = sorted(os.listdir(tmp_path / "silver" / "_spark_metadata"))
    visible = [m for m in meta if not m.startswith(".")]
    assert {"9.compact", "19.compact", "29.compact"} <= set(visible)
    assert "9" not in visible and "10" in visible
    assert not [m for m in meta if m.endswith(".tmp")]

    # Spark's own reader with default settings (MetadataLogFileIndex).
    df = spark.read.parquet(path)
    assert "p" in df.columns
    assert ids(df) == expected_ids(range(30))
    assert df.count() == 90
    by_p = {r["p"]: r["count"] for r in df.groupBy("p").count().collect()}
    assert by_p == {"a": 30, "b": 30, "c": 30}
    assert ids(table.read(spark)) == expected_ids(range(30))

    # The latest compaction lists every live file once; the format is Spark's.
    with open(tmp_path / "silver" / "_spark_metadata" / "29.compact", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    assert lines[0] == "v1"
    entries = [json.loads(line) for line in lines[1:]]
    assert list(entries[0]) == ["path", "size", "isDir", "modificationTime", "blockReplication",
                                "blockSize", "action"]
    assert all(e["action"] == "add" and e["path"].startswith("file:") for e in entries)
    assert len({e["path"] for e in entries}) == len(entries)
    assert sorted(e["path"].split("file://", 1)[1] for e in entries) == data_files(path)
    assert all(os.path.basename(p).startswith("part-b") for p in data_files(path))

    assert table.committed_batches(spark) == list(range(30))
    assert table.is_committed(spark, 29) and not table.is_committed(spark, 30)
    t29 = table.commit_time(spark, 29)
    assert t29 is not None and t29 >= table.commit_time(spark, 0) > 0
    assert table.commit_time(spark, 30) is None
    assert not os.listdir(tmp_path / "silver" / "_staging")


def test_recommitting_a_batch_is_a_noop_and_empty_batches_commit(spark, tmp_path):
    path = str(tmp_path / "t")
    table = LakeTable(path, compact_interval=3)  # no partition columns: files at the root
    with pytest.raises(LakeTableNotFoundError):
        table.read(spark)
    assert table.read(spark, SCHEMA).count() == 0

    assert table.write_batch(batch_df(spark, 0), 0) == 3
    assert table.write_batch(batch_df(spark, 1), 1) == 3
    files_before = data_files(path)
    assert all(os.path.dirname(f) == path for f in files_before)

    # Re-executed batch (same id, same data): nothing written.
    assert table.write_batch(batch_df(spark, 1), 1) == 0
    assert table.write_batch(batch_df(spark, 0), 0) == 0
    assert data_files(path) == files_before
    assert spark.read.parquet(path).count() == 6

    # An empty batch still commits; 2 is a compaction batch with interval 3.
    assert table.write_batch(spark.createDataFrame([], SCHEMA), 2) == 0
    assert table.is_committed(spark, 2)
    assert os.path.exists(os.path.join(path, "_spark_metadata", "2.compact"))

    # A skipped id (4 before 3) is committed empty so the log stays contiguous.
    assert table.write_batch(batch_df(spark, 4), 4) == 3
    assert table.committed_batches(spark) == [0, 1, 2, 3, 4]
    assert table.write_batch(batch_df(spark, 3), 3) == 0
    assert table.write_batch(batch_df(spark, 5), 5) == 3  # second compaction
    assert os.path.exists(os.path.join(path, "_spark_metadata", "5.compact"))
    assert ids(spark.read.parquet(path)) == expected_ids([0, 1, 4, 5])

    # A write that fails before the commit leaves nothing behind and commits nothing.
    with pytest.raises(Exception, match="no_such_column"):
        LakeTable(path, partition_by=["no_such_column"]).write_batch(batch_df(spark, 9), 9)
    assert not table.is_committed(spark, 9)
    assert not os.listdir(os.path.join(path, "_staging"))

    # Readers with default settings could not follow a larger interval than theirs.
    with pytest.raises(LakeSinkError):
        LakeTable(str(tmp_path / "wide"), compact_interval=20).write_batch(batch_df(spark, 0), 0)


def test_crashed_attempt_is_invisible_and_cleaned_up_on_retry(spark, tmp_path):
    path = str(tmp_path / "pred")
    table = LakeTable(path, partition_by=["p"])
    for b in range(3):
        table.write_batch(batch_df(spark, b), b)
    committed_files = data_files(path)

    # Attempt of batch 3 that dies after moving its files, before the log commit, twice over
    # (the second one dies right after staging).
    hdfs = _table_fs(spark, path)
    staging, attempt = table._new_staging_dir(hdfs, 3)
    assert table._write_staging(batch_df(spark, 3, n=5), hdfs, staging) == 5
    table._publish(hdfs, staging, 3, attempt)
    staging2, _ = table._new_staging_dir(hdfs, 3)
    table._write_staging(batch_df(spark, 3, n=5), hdfs, staging2)

    orphans = [f for f in data_files(path) if os.path.basename(f).startswith(data_file_prefix(3))]
    assert orphans and set(data_files(path)) == set(committed_files) | set(orphans)
    assert len(os.listdir(tmp_path / "pred" / "_staging")) == 2
    # An orphan no manifest knows about (e.g. its staging dir was lost) is found by name.
    stray = os.path.join(path, "p=z", data_file_prefix(3) + "00000-stray.c000.snappy.parquet")
    os.makedirs(os.path.dirname(stray))
    with open(orphans[0], "rb") as src, open(stray, "wb") as dst:
        dst.write(src.read())

    # Readers only see committed data.
    assert ids(spark.read.parquet(path)) == expected_ids(range(3))
    assert not table.is_committed(spark, 3)

    # The retry (same batch id, same data) cleans up and commits exactly once.
    assert table.write_batch(batch_df(spark, 3, n=5), 3) == 5
    assert ids(spark.read.parquet(path)) == expected_ids(range(3)) + sorted(300 + i for i in range(5))
    for f in [*orphans, stray]:
        assert not os.path.exists(f)
    assert len([f for f in data_files(path) if os.path.basename(f).startswith(data_file_prefix(3))]) > 0
    assert not os.listdir(tmp_path / "pred" / "_staging")
    assert table.write_batch(batch_df(spark, 3, n=5), 3) == 0
    assert spark.read.parquet(path).count() == 9 + 5


def _drain(spark, source_path, checkpoint):
    """One availableNow run of a downstream streaming query over the table; the rows it saw."""
    seen = []

    def collect(df, _batch_id):
        seen.extend(df.collect())

    q = (
        spark.readStream.schema(SCHEMA).parquet(source_path)
        .writeStream.foreachBatch(collect)
        .option("checkpointLocation", checkpoint)
        .trigger(availableNow=True)
        .start()
    )
    q.awaitTermination(60)
    assert q.exception() is None
    return seen


def test_downstream_read_stream_sees_committed_batches_once(spark, tmp_path):
    path = str(tmp_path / "silver")
    table = LakeTable(path, partition_by=["p"], compact_interval=3)
    for b in range(4):
        table.write_batch(batch_df(spark, b), b)
    # An uncommitted attempt of batch 4 lying around must not be picked up.
    hdfs = _table_fs(spark, path)
    staging, attempt = table._new_staging_dir(hdfs, 4)
    table._write_staging(batch_df(spark, 4), hdfs, staging)
    table._publish(hdfs, staging, 4, attempt)

    ckpt = str(tmp_path / "downstream_ckpt")
    first = _drain(spark, path, ckpt)
    assert sorted(r["id"] for r in first) == expected_ids(range(4))
    assert {r["p"] for r in first} == {"a", "b", "c"}
    assert all(r["name"] == f"r{r['id'] // 100}-{r['id'] % 100}" for r in first)

    for b in range(4, 7):  # crosses the compaction at batch 5 (interval 3: 2, 5, 8, ...)
        table.write_batch(batch_df(spark, b), b)
    second = _drain(spark, path, ckpt)
    assert sorted(r["id"] for r in second) == expected_ids(range(4, 7))


def test_foreach_batch_query_writes_two_tables_exactly_once(spark, tmp_path):
    # Input: 4 JSON files -> 4 micro-batches with maxFilesPerTrigger=1.
    src = tmp_path / "input"
    src.mkdir()
    all_rows = []
    for f in range(4):
        rows = [{"id": f * 100 + i, "name": f"r{f}-{i}", "p": "abc"[i % 3]} for i in range(f + 2)]
        all_rows += rows
        (src / f"in-{f}.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    silver = LakeTable(str(tmp_path / "silver"), partition_by=["p"])
    predictions = LakeTable(str(tmp_path / "predictions"))
    written = []

    def write_both(df, batch_id):
        written.append((batch_id, silver.write_batch(df, batch_id)))
        predictions.write_batch(df.select("id", (F.col("id") % 2).alias("prediction")), batch_id)

    ckpt = tmp_path / "ckpt"

    def run():
        q = (
            spark.readStream.schema(SCHEMA).option("maxFilesPerTrigger", 1).json(str(src))
            .writeStream.foreachBatch(write_both)
            .option("checkpointLocation", str(ckpt))
            .trigger(availableNow=True)
            .start()
        )
        q.awaitTermination(120)
        assert q.exception() is None

    run()
    assert [b for b, _ in written] == [0, 1, 2, 3]
    expected = sorted(r["id"] for r in all_rows)
    assert ids(spark.read.parquet(str(tmp_path / "silver"))) == expected
    pred = spark.read.parquet(str(tmp_path / "predictions"))
    assert ids(pred) == expected
    assert all(r["prediction"] == r["id"] % 2 for r in pred.collect())

    # Driver "crashed" after the sink wrote batch 3 but before Spark recorded it as done:
    # drop its commit-log entry and restart; Spark re-executes batch 3 with the same data.
    os.remove(ckpt / "commits" / "3")
    if (ckpt / "commits" / ".3.crc").exists():
        os.remove(ckpt / "commits" / ".3.crc")
    written.clear()
    run()
    assert written == [(3, 0)]
    assert ids(silver.read(spark)) == expected
    assert ids(predictions.read(spark)) == expected
    assert silver.committed_batches(spark) == predictions.committed_batches(spark) == [0, 1, 2, 3]
