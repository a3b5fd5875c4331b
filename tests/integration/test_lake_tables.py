"""The lake's tables beyond the stream: maintenance (compaction, retention) and the catalog."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from deltalake import DeltaTable

from streaming_jobs.lake_writer import BatchTable
from streaming_jobs.maintenance import maintain
from streamsight.contracts import load_contracts
from streamsight.lake import read_table, table_columns, table_properties, table_uri
from streamsight.settings import load_settings
from tests.integration.helpers import ROOT, cli, cli_env, isolated_contract

pytestmark = pytest.mark.integration


def _data_files(table_dir: Path) -> set[Path]:
    return {p for p in table_dir.rglob("*.parquet") if "_delta_log" not in p.parts}


def test_maintain_compacts_and_deletes_what_the_retention_lets_go(spark, tmp_path, kafka_broker, monkeypatch):
    import streaming_jobs.maintenance

    monkeypatch.setattr(streaming_jobs.maintenance, "MIN_FILES_RETENTION_S", 0)  # files of seconds ago may go
    contracts_dir = isolated_contract(tmp_path, kafka_broker, retention={"files": "0 hours"})
    contract = load_contracts(contracts_dir)["machine_telemetry"]
    settings = load_settings(lake_dir=str(tmp_path / "lake"), contracts_dir=contracts_dir)
    columns, partitions = table_columns(contract, "dead_letter")
    table = BatchTable(table_uri(settings.lake_uri, contract, "dead_letter"), columns, partitions)
    table.create(spark)
    row = "CAST(NULL AS BINARY) raw_value, 'MALFORMED_JSON' error_code, 'r' reason, 'stream' source, 't' topic, " \
          "0 partition, id offset, current_timestamp() kafka_timestamp, current_timestamp() ingest_time, " \
          "current_date() ingest_date"
    for batch in range(4):  # four small commits: four small files
        table.write_batch(spark.range(batch * 10, batch * 10 + 10).selectExpr(*row.split(", ")), batch, "q")
    directory = tmp_path / "lake" / "dead_letter" / "machine_telemetry"
    before = _data_files(directory)
    assert len(before) >= 4

    done = maintain(spark, settings, [contract], ["dead_letter", "silver"])
    report = done["machine_telemetry_dead_letter"]
    assert list(done) == ["machine_telemetry_dead_letter"]  # silver does not exist: nothing to do
    assert report["files_compacted"] == len(before) and report["files_after"] == report["files_written"] == 1
    assert report["files_deleted"] == len(before) and report["files_retention_hours"] == 0
    after = _data_files(directory)
    assert len(after) == 1 and not (after & before)  # the small files are gone from disk
    # Every reader still sees every row, once; the retention is the contract's, in the table.
    assert read_table(spark, table.path).count() == 40
    assert sorted(DeltaTable(str(directory)).to_pyarrow_table().column("offset").to_pylist()) == list(range(40))
    config = DeltaTable(str(directory)).metadata().configuration
    assert config == table_properties(contract, settings)
    assert config["delta.deletedFileRetentionDuration"] == "interval 0 hours"
    assert config["delta.logRetentionDuration"] == f"interval {settings.retention.log}"


def test_registered_tables_are_found_by_name_by_spark_sql(tmp_path, kafka_broker):
    """`streamsight lake register` puts the lake's tables in the embedded metastore; Spark's own
    spark-sql shell, given the options it prints, reads them by name."""
    contracts_dir = isolated_contract(tmp_path, kafka_broker)
    env = cli_env(tmp_path, kafka_broker, contracts_dir)
    contract = load_contracts(contracts_dir)["machine_telemetry"]
    silver = tmp_path / "lake" / "silver" / "machine_telemetry"
    # A silver table written by another Delta writer (delta-rs), as a stream would leave it.
    import pyarrow as pa
    from deltalake import write_deltalake

    write_deltalake(str(silver), pa.table({"event_id": [f"e{i}" for i in range(25)], "torque_nm": [1.5] * 25}))
    registered = json.loads(cli(env, "lake", "register").stdout)
    assert registered["tables"]["streamsight.machine_telemetry_silver"] == silver.as_uri()
    assert registered["tables"]["streamsight.machine_telemetry_bronze"] == "(not created yet)"
    assert len(registered["tables"]) == len(contract.table_names())

    shell = ROOT / ".venv" / "bin" / "spark-sql"
    done = subprocess.run([str(shell), *registered["spark_sql_args"], "-S", "-e",
                           "SELECT count(*) FROM streamsight.machine_telemetry_silver"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["25"]
