"""BatchTable: a micro-batch appended once per query and batch id (Delta Lake's idempotent writes)."""

from __future__ import annotations

import pytest

from streaming_jobs.lake_writer import BatchTable, LakeWriteError, query_id
from streamsight.lake import read_table

pytestmark = pytest.mark.integration

COLUMNS = [("id", "bigint"), ("p", "int"), ("label", "string")]


def rows(spark, batch: int, n: int = 5):
    return spark.createDataFrame([(batch * 100 + i, i % 2, f"b{batch}") for i in range(n)], "id bigint, p int, label string")


def test_a_batch_is_written_once_per_query(spark, tmp_path):
    table = BatchTable(str(tmp_path / "t"), COLUMNS, ["p"])
    table.create(spark)
    table.create(spark)  # idempotent
    assert read_table(spark, table.path).count() == 0 and table.committed_batch(spark, "q1") is None
    assert table.write_batch(rows(spark, 0), 0, "q1") == 5
    assert table.write_batch(rows(spark, 0), 0, "q1") == 0  # a replay adds nothing
    assert table.write_batch(rows(spark, 1, 3), 1, "q1") == 3
    assert table.committed_batch(spark, "q1") == 1
    assert table.is_committed(spark, 0, "q1") and not table.is_committed(spark, 2, "q1")
    # Another query (a new checkpoint) has batch ids of its own.
    assert table.write_batch(rows(spark, 7, 2), 0, "q2") == 2
    assert table.write_batch(rows(spark, 0), 0, "q1") == 0
    ids = sorted(r.id for r in read_table(spark, table.path).collect())
    assert ids == sorted([*range(0, 5), *range(100, 103), *range(700, 702)])
    # Partitioned as declared, and the declared types are the table's.
    assert {r.p for r in read_table(spark, table.path).collect()} == {0, 1}
    assert dict(read_table(spark, table.path).dtypes) == {"id": "bigint", "p": "int", "label": "string"}


def test_declared_partitions_must_be_columns(tmp_path):
    with pytest.raises(ValueError, match="no_such"):
        BatchTable(str(tmp_path / "t"), COLUMNS, ["no_such"])


def test_query_id_comes_from_the_checkpoint(spark, tmp_path):
    with pytest.raises(LakeWriteError, match="no query id"):
        query_id(spark, str(tmp_path / "never-started"))
    source = tmp_path / "source"
    rows(spark, 0).write.json(str(source))
    query = (spark.readStream.schema("id bigint, p int, label string").json(str(source)).writeStream.format("noop")
             .option("checkpointLocation", str(tmp_path / "cp")).trigger(availableNow=True).start())
    query.awaitTermination()
    assert query_id(spark, str(tmp_path / "cp")) == query.id


def test_a_table_takes_new_declared_columns_and_refuses_a_changed_type(spark, tmp_path):
    from streaming_jobs.lake_writer import create_table
    from streamsight.errors import ConfigError

    path = str(tmp_path / "t")
    table = BatchTable(path, COLUMNS, ["p"])
    table.create(spark)
    table.write_batch(rows(spark, 0), 0, "q")
    create_table(spark, path, [*COLUMNS, ("added", "double")], ["p"], {})  # a contract's new field
    assert read_table(spark, path).dtypes[-1] == ("added", "double")
    assert read_table(spark, path).where("added IS NULL").count() == 5  # the rows written before
    with pytest.raises(ConfigError, match=r"label is string in the table, declared int"):
        create_table(spark, path, [("id", "bigint"), ("p", "int"), ("label", "int")], ["p"], {})
    with pytest.raises(ConfigError, match=r"partitioned by \['p'\], declared \[\]"):
        create_table(spark, path, COLUMNS, [], {})
    # Properties follow the declaration; partitioning by two columns is checked in order.
    retention = {"delta.logRetentionDuration": "interval 60 days"}
    create_table(spark, path, COLUMNS, ["p"], retention)
    create_table(spark, path, COLUMNS, ["p"], retention)  # unchanged: no new commit
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()
    assert [r["operation"] for r in history].count("SET TBLPROPERTIES") == 1
    props = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect()}
    assert props["delta.logRetentionDuration"] == "interval 60 days"
    two = str(tmp_path / "two")
    create_table(spark, two, COLUMNS, ["label", "p"], {})
    create_table(spark, two, COLUMNS, ["label", "p"], {})
    odd = str(tmp_path / "odd")  # a field name Spark prints in backquotes
    create_table(spark, odd, [("id", "bigint"), ("machine-type", "string")], ["machine-type"], {})
    create_table(spark, odd, [("id", "bigint"), ("machine-type", "string")], ["machine-type"], {})
    with pytest.raises(ConfigError, match=r"partitioned by \['label', 'p'\], declared \['p', 'label'\]"):
        create_table(spark, two, COLUMNS, ["p", "label"], {})
