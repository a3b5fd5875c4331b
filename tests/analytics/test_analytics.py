"""Analytics over a tiny lake written in a temporary directory: views, run_sql, named queries, report.

Every expected number is computed with pandas/numpy from the same input frames that were written
to the lake, never hard-coded.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import re
import shutil
import struct
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import duckdb
import numpy as np
import pandas as pd
import pytest

from ml import portable
from streamsight.contracts import Contract, load_contracts
from streamsight.lake import models_uri, table_columns, table_uri
from streamsight.settings import PROJECT_ROOT, Settings, load_settings

pytestmark = pytest.mark.integration

AI4I = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ai4i2020" / "ai4i2020.csv"
UTC = dt.UTC
STREAM = "machine_telemetry"
OTHER = "sensor_pings"  # a second stream without model, reference or aggregates
ERROR_CODES = ["OUT_OF_RANGE", "MALFORMED_JSON", "MISSING_FIELD"]
# machine_telemetry's charts (its model is binary: predicted_classes, order 45, is a multiclass model's)
EXPECTED_CHARTS = ["throughput", "dead_letter_reasons", "latency", "probability_distribution", "top_risk",
                   "model_metrics"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

OTHER_CONTRACT = """\
name: sensor_pings
description: Heartbeats of edge sensors (no model).
key: sensor_id
event_time: {field: ts}
dedup_key: [ping_id]
schema:
  type: object
  required: [ping_id, sensor_id, ts]
  properties:
    ping_id: {type: string}
    sensor_id: {type: string}
    ts: {type: string, format: date-time}
    battery_pct: {type: number, minimum: 0, maximum: 100}
"""


# -- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spark(spark):
    """The suite's session (tests/conftest.py); views this module creates are dropped afterwards."""
    yield spark
    for view in [t.name for t in spark.catalog.listTables() if t.isTemporary]:
        if view == "model_registry" or view.startswith((f"{STREAM}_", f"{OTHER}_")):
            spark.catalog.dropTempView(view)


@dataclass
class Lake:
    settings: Settings
    contracts: dict[str, Contract]
    silver: pd.DataFrame
    bronze: pd.DataFrame
    dead_letter: pd.DataFrame
    predictions: pd.DataFrame
    gold: pd.DataFrame
    registry: dict[int, dict]


_ARROW_TYPES = {
    "string": "string", "double": "float64", "bigint": "int64", "int": "int32", "boolean": "bool_",
    "binary": "binary", "date": "date32",
}


def _arrow_type(spark_type: str):
    import pyarrow as pa

    if spark_type == "timestamp":
        return pa.timestamp("us", tz="UTC")
    if spark_type == "array<struct<key:string,value:binary>>":  # Kafka headers
        return pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))
    return getattr(pa, _ARROW_TYPES[spark_type])()


def _write(lake_uri: str, contract: Contract, table: str, frame: pd.DataFrame) -> None:
    """Write a lake table as a partitioned Delta table with delta-rs (fast: no Spark job per table)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    columns, partitions = table_columns(contract, table)
    if "headers" in dict(columns) and "headers" not in frame:
        frame = frame.assign(headers=None)
    schema = pa.schema([(name, _arrow_type(kind)) for name, kind in columns])
    data = pa.Table.from_pandas(frame[[c for c, _ in columns]], schema=schema, preserve_index=False)
    path = url2pathname(urlparse(table_uri(lake_uri, contract, table)).path)
    write_deltalake(path, data, partition_by=partitions or None)


def _ms(values) -> pd.TimedeltaIndex:
    return pd.to_timedelta(np.asarray(values, dtype="int64"), unit="ms")


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory) -> Lake:
    root = tmp_path_factory.mktemp("analytics")
    contracts_dir = root / "contracts"
    shutil.copytree(PROJECT_ROOT / "conf" / "contracts", contracts_dir,  # the two streams of this module
                    ignore=lambda _dir, names: [n for n in names if n.endswith(".yaml") and n != f"{STREAM}.yaml"])
    (contracts_dir / f"{OTHER}.yaml").write_text(OTHER_CONTRACT, encoding="utf-8")
    settings = load_settings(lake_dir=str(root / "lake"), contracts_dir=contracts_dir,
                             reports_dir=root / "reports")
    contracts = load_contracts(contracts_dir)
    contract = contracts[STREAM]
    rng = np.random.default_rng(20240301)

    raw = pd.read_csv(AI4I, encoding="utf-8-sig", nrows=200)
    n = len(raw)
    base = pd.Timestamp("2024-03-01 10:00:00", tz="UTC")
    produce = base + _ms(np.arange(n) * 1700 + rng.integers(0, 500, n))
    ingest = produce + _ms(rng.integers(40, 4000, n))
    silver = pd.DataFrame({
        "event_id": [f"ai4i-{u}" for u in raw["UDI"]],
        "machine_id": [f"M{(u - 1) % 25:03d}" for u in raw["UDI"]],
        "event_time": produce - _ms(rng.integers(0, 800, n)),
        "type": raw["Type"],
        "air_temperature_k": raw["Air temperature [K]"].astype(float),
        "process_temperature_k": raw["Process temperature [K]"].astype(float),
        "rotational_speed_rpm": raw["Rotational speed [rpm]"].astype(float),
        "torque_nm": raw["Torque [Nm]"].astype(float),
        "tool_wear_min": raw["Tool wear [min]"].astype("int64"),
        "machine_failure": raw["Machine failure"].astype("int64"),
        "twf": raw["TWF"], "hdf": raw["HDF"], "pwf": raw["PWF"], "osf": raw["OSF"], "rnf": raw["RNF"],
        "source": "ai4i",
    })
    silver["event_date"] = silver["event_time"].dt.date
    silver["event_hour"] = silver["event_time"].dt.hour.astype("int64")
    reference = pd.read_csv(contracts_dir / "reference" / "product_types.csv")
    silver = silver.merge(reference, on="type", how="left")
    # the contract's derived columns, as ml.portable computes them outside Spark (DuckDB)
    derived = portable.derived_for(contract)
    connection = duckdb.connect()
    connection.register("inputs", silver[contract.model_reads()])
    computed = connection.sql(portable._derived_query(derived)).df()
    for d in derived:
        silver[d["name"]] = computed[d["name"]].to_numpy()
    silver["_kafka_partition"] = np.arange(n) % 4
    silver["_kafka_offset"] = np.arange(n) // 4
    silver["_kafka_timestamp"] = produce
    silver["_ingest_time"] = ingest
    silver["_batch_id"] = np.arange(n) // 50

    m = 30
    dl_produce = base + _ms(np.sort(rng.integers(0, n * 1700, m)))
    dead_letter = pd.DataFrame({
        "raw_value": [b'{"event_id": "bad-%d"}' % i for i in range(m)],
        "error_code": rng.choice(ERROR_CODES, size=m, p=[0.5, 0.3, 0.2]),
        "reason": [f"record {i} rejected" for i in range(m)],
        "source": "spark",
        "topic": f"{STREAM}.raw",
        "partition": np.arange(m) % 4,
        "offset": 1000 + np.arange(m),
        "kafka_timestamp": dl_produce,
        "ingest_time": dl_produce + _ms(rng.integers(40, 4000, m)),
    })
    dead_letter["ingest_date"] = dead_letter["ingest_time"].dt.date

    bronze = pd.concat([
        pd.DataFrame({
            "key": [k.encode() for k in silver["machine_id"]],
            "value": [json.dumps({"event_id": e}).encode() for e in silver["event_id"]],
            "topic": f"{STREAM}.raw", "partition": silver["_kafka_partition"], "offset": silver["_kafka_offset"],
            "kafka_timestamp": silver["_kafka_timestamp"], "ingest_time": silver["_ingest_time"],
        }),
        pd.DataFrame({
            "key": [b"?"] * m, "value": list(dead_letter["raw_value"]), "topic": f"{STREAM}.raw",
            "partition": dead_letter["partition"], "offset": dead_letter["offset"],
            "kafka_timestamp": dead_letter["kafka_timestamp"], "ingest_time": dead_letter["ingest_time"],
        }),
    ], ignore_index=True)
    bronze["ingest_date"] = bronze["ingest_time"].dt.date

    failing = silver["machine_failure"].to_numpy() == 1
    probability = np.where(failing, rng.beta(5, 2, n), rng.beta(1, 12, n))
    probability[:3] = [0.0, 1.0, 0.05]  # bucket edges
    predictions = silver.copy()
    predictions["probability"] = probability
    predictions["prediction"] = (probability >= 0.5).astype("int64")
    predictions["model_name"] = "machine_failure"
    predictions["model_version"] = np.where(np.arange(n) < n // 2, 1, 2)
    predictions["scored_at"] = predictions["_ingest_time"] + _ms(rng.integers(100, 3000, n))
    predictions["scored_by"] = "mllib"
    predictions["predicted_class"] = None  # a binary model
    predictions["predicted_value"] = None

    gold = pd.DataFrame({
        "window_start": [base] * 3, "window_end": [base + pd.Timedelta(hours=1)] * 3, "type": ["L", "M", "H"],
        "readings": [10, 5, 2], "failures": [1, 0, 0], "avg_torque_nm": [40.0, 41.5, 39.0],
        "max_tool_wear_min": [100, 80, 20],
    })

    lake_uri = settings.lake_uri
    _write(lake_uri, contract, "silver", silver)
    _write(lake_uri, contract, "bronze", bronze)
    _write(lake_uri, contract, "dead_letter", dead_letter)
    _write(lake_uri, contract, "predictions", predictions)
    _write(lake_uri, contract, "gold_by_type_1h", gold)
    # An existing but uncommitted table directory of the other stream: must become an empty view.
    (root / "lake" / "silver" / OTHER).mkdir(parents=True)

    registry_root = Path(models_uri(str(root / "lake")))
    registry = {}
    for version, (auc_pr, auc_roc, f1) in {1: (0.61, 0.93, 0.58), 2: (0.74, 0.96, 0.69)}.items():
        meta = {
            "version": version, "model_name": "machine_failure", "threshold": 0.5,
            "created_at": f"2024-02-2{version}T08:00:00Z",
            "metrics": {"auc_pr": auc_pr, "auc_roc": auc_roc, "f1": f1, "precision": f1 + 0.05,
                        "recall": f1 - 0.05, "tp": 40 + version, "fp": 12, "tn": 1900, "fn": 20 - version},
            "baseline_metrics": {"auc_pr": 0.21, "auc_roc": 0.71, "f1": 0.2},
        }
        folder = registry_root / "machine_failure" / f"v{version}"
        folder.mkdir(parents=True)
        (folder / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
        registry[version] = meta
    (registry_root / "machine_failure" / "v3").mkdir()  # a version being written: no metadata yet
    (registry_root / "machine_failure" / "aliases.json").write_text(json.dumps({"production": 2}))

    return Lake(settings, contracts, silver, bronze, dead_letter, predictions, gold, registry)


@pytest.fixture(scope="module")
def views(spark, lake):
    from analytics.views import register_views

    return register_views(spark, lake.settings, lake.contracts)


def _json_rows(spark, sql: str) -> list[dict]:
    """Query the views registered by the ``views`` fixture, through the JSON Lines formatter."""
    from analytics.sql import execute, format_json_lines

    return [json.loads(line) for line in format_json_lines(execute(spark, sql)).splitlines()]


def _named_sql(lake, name: str, stream: str = STREAM) -> str:
    from analytics.catalog import load_named_queries

    return load_named_queries()[name].render(lake.contracts[stream])


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# -- views ------------------------------------------------------------------------------------------

def test_views_exist_for_every_table_including_empty_ones(spark, lake, views):
    from analytics.views import EMPTY

    registered = {t.name for t in spark.catalog.listTables() if t.isTemporary}
    for contract in lake.contracts.values():
        for table, view in contract.table_names().items():
            assert view in registered, view
            assert view in views
            declared = [c for c, _ in table_columns(contract, table)[0]]
            actual = spark.table(view).columns
            if views[view] == EMPTY:
                assert actual == declared, view
            else:
                assert views[view] == table_uri(lake.settings.lake_uri, contract, table)
                assert set(declared) <= set(actual), view
    assert "model_registry" in registered
    expected_empty = {f"{STREAM}_gold_fleet_15m"} | set(lake.contracts[OTHER].table_names().values())
    assert {v for v, s in views.items() if s == EMPTY} == expected_empty
    counts = spark.sql(" UNION ALL ".join(f"SELECT count(*) AS n FROM {v}" for v in sorted(expected_empty)))
    assert [r.n for r in counts.collect()] == [0] * len(expected_empty)


def test_view_reads_only_committed_files_of_a_streaming_table(spark, lake, tmp_path):
    """A table written by a streaming query shows only the files its transaction log commits."""
    from analytics.views import register_views

    contract = lake.contracts[OTHER]
    settings = load_settings(lake_dir=str(tmp_path / "lake"), contracts_dir=lake.settings.contracts_dir,
                             reports_dir=tmp_path / "reports")
    columns, partitions = table_columns(contract, "silver")
    t0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    rows = [(f"p{i}", f"s{i % 3}", t0 + dt.timedelta(seconds=i), 50.0 + i, t0.date(), 12, 0, i,
             t0 + dt.timedelta(seconds=i), t0 + dt.timedelta(seconds=i, milliseconds=250), 0) for i in range(40)]
    ddl = ", ".join(f"`{c}` {t}" for c, t in columns)
    source = tmp_path / "source"
    spark.createDataFrame(rows, ddl).write.parquet(str(source))
    uri = table_uri(settings.lake_uri, contract, "silver")
    query = (spark.readStream.schema(ddl).parquet(str(source)).writeStream.format("delta")
             .option("checkpointLocation", str(tmp_path / "checkpoint")).partitionBy(*partitions)
             .trigger(availableNow=True).start(uri))
    query.awaitTermination()
    partition_dir = next((tmp_path / "lake" / "silver" / OTHER).glob("event_date=*"))
    committed = next(partition_dir.glob("*.parquet"))
    shutil.copy(committed, partition_dir / "part-99999-uncommitted.c000.snappy.parquet")
    try:
        views = register_views(spark, settings, [contract])
        assert views[f"{OTHER}_silver"] == uri
        assert spark.table(f"{OTHER}_silver").count() == len(rows)
        assert views[f"{OTHER}_bronze"] == "(empty)"
    finally:
        register_views(spark, lake.settings, lake.contracts)  # restore the shared views


def test_empty_view_has_declared_types(spark, lake, views):
    contract = lake.contracts[OTHER]
    columns, _ = table_columns(contract, "silver")
    schema = spark.table(f"{OTHER}_silver").schema
    assert [(f.name, f.dataType.simpleString()) for f in schema.fields] == columns


def test_model_registry_view_reads_metadata(spark, lake, views):
    rows = _json_rows(spark, "SELECT * FROM model_registry ORDER BY version")
    assert [r["version"] for r in rows] == sorted(lake.registry)  # v3 without metadata.json is ignored
    for row in rows:
        meta = lake.registry[row["version"]]
        for key in ("auc_pr", "auc_roc", "f1", "tp", "fn"):
            assert row[key] == pytest.approx(meta["metrics"][key])
        assert row["baseline_auc_pr"] == pytest.approx(meta["baseline_metrics"]["auc_pr"])
        assert row["task"] == "binary" and row["f1_macro"] is None
        assert row["is_production"] is (row["version"] == 2)


def test_registry_absent_is_tolerated(spark, tmp_path):
    from analytics.views import registry_rows

    assert registry_rows(spark, tmp_path.as_uri(), ["machine_failure"]) == []


# -- run_sql ----------------------------------------------------------------------------------------

def test_run_sql_counts_match_pandas(spark, lake, views):
    from analytics.sql import run_sql

    rows = _json_rows(spark, f"SELECT type, count(*) AS n, avg(torque_nm) AS torque "
                                   f"FROM {STREAM}_silver GROUP BY type ORDER BY type")
    expected = lake.silver.groupby("type").agg(n=("event_id", "size"), torque=("torque_nm", "mean"))
    assert [r["type"] for r in rows] == sorted(expected.index)
    for row in rows:
        assert row["n"] == expected.loc[row["type"], "n"]
        assert row["torque"] == pytest.approx(expected.loc[row["type"], "torque"])
    frames = {"bronze": lake.bronze, "dead_letter": lake.dead_letter, "predictions": lake.predictions,
              "gold_by_type_1h": lake.gold, "gold_fleet_15m": [], "silver": lake.silver}
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {STREAM}_{t}" for t in frames)
    text = run_sql(spark, lake.settings, sql, as_json=True)  # registers the views itself
    counts = {r["t"]: r["n"] for r in map(json.loads, text.splitlines())}
    assert counts == {t: len(f) for t, f in frames.items()}


def test_run_sql_text_table(spark, lake, views):
    from analytics.sql import run_sql

    text = run_sql(spark, lake.settings, f"SELECT error_code, count(*) AS n FROM {STREAM}_dead_letter "
                                         "GROUP BY error_code ORDER BY error_code;")
    lines = text.rstrip("\n").splitlines()
    counts = lake.dead_letter["error_code"].value_counts()
    assert re.match(r"^error_code\s+\|\s+n$", lines[0])
    assert set(lines[1]) <= {"-", "+"}
    body = lines[2:-1]
    assert len(body) == len(counts)
    for line in body:
        code, n = (p.strip() for p in line.split("|"))
        assert int(n) == counts[code]
    assert lines[-1] == f"({len(counts)} rows)"
    widths = {len(line) for line in lines[:-1]}
    assert len(widths) == 1, "fixed-width columns"


def test_run_sql_json_lines_parse(spark, lake, views):
    from analytics.sql import run_sql

    text = run_sql(spark, lake.settings, f"SELECT event_id, event_time, event_date, probability, "
                                         f"CAST(NULL AS STRING) AS nothing FROM {STREAM}_predictions "
                                         "ORDER BY event_id LIMIT 7", as_json=True)
    lines = text.splitlines()
    assert len(lines) == 7
    records = [json.loads(line) for line in lines]
    expected = lake.predictions.sort_values("event_id").head(7)
    for rec, (_, exp) in zip(records, expected.iterrows()):
        assert rec["event_id"] == exp["event_id"]
        assert dt.datetime.fromisoformat(rec["event_time"]) == exp["event_time"].to_pydatetime()
        assert rec["event_date"] == exp["event_date"].isoformat()
        assert rec["probability"] == pytest.approx(exp["probability"])
        assert rec["nothing"] is None


def test_run_sql_limit(spark, lake, views):
    from analytics.sql import execute, format_json_lines, format_table

    result = execute(spark, f"SELECT event_id FROM {STREAM}_silver ORDER BY event_id", limit=5)
    assert result.truncated
    assert len(format_json_lines(result).splitlines()) == 5
    text = format_table(result)
    assert len(text.splitlines()) == 2 + 5 + 1
    assert "first 5 rows" in text.splitlines()[-1]


@pytest.mark.parametrize("query, condition", [
    ("SELEC count(*) FROM machine_telemetry_silver", "PARSE_SYNTAX_ERROR"),
    ("SELECT no_such_column FROM machine_telemetry_silver", "UNRESOLVED_COLUMN"),
    ("SELECT * FROM no_such_view", "TABLE_OR_VIEW_NOT_FOUND"),
    ("SELECT CAST(machine_id AS INT) FROM machine_telemetry_silver", "CAST_INVALID_INPUT"),
    ("   ;  ", "empty query"),
])
def test_bad_query_gives_one_line_error(spark, lake, views, query, condition):
    from analytics.sql import SqlError, execute

    with pytest.raises(SqlError) as info:
        execute(spark, query)
    message = str(info.value)
    assert "\n" not in message
    assert condition in message
    assert "Traceback" not in message and "at org.apache" not in message


def test_sql_command_exit_codes_and_streams(spark, lake, views, monkeypatch):
    from analytics.cli import sql_command

    built = []
    fake = types.ModuleType("streamsight.spark")

    def build_session(settings, app_name, *, catalog=False):
        built.append((app_name, catalog))
        return spark

    fake.build_session = build_session
    monkeypatch.setitem(sys.modules, "streamsight.spark", fake)

    out, err = io.StringIO(), io.StringIO()
    assert sql_command(lake.settings, f"SELECT count(*) AS n FROM {STREAM}_silver", True, out=out, err=err) == 0
    assert json.loads(out.getvalue()) == {"n": len(lake.silver)}
    assert err.getvalue() == ""
    assert built == [("streamsight-sql", True)]  # the session with the catalog

    out, err = io.StringIO(), io.StringIO()
    assert sql_command(lake.settings, "SELECT FROM WHERE", False, out=out, err=err) == 1
    assert out.getvalue() == ""
    assert err.getvalue().count("\n") == 1 and err.getvalue().startswith("error: ")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_sql_output_writes_every_row_or_the_limit(spark, lake, views, tmp_path, suffix):
    """`streamsight sql --output FILE` writes all rows (--limit 0) or the first N, in the format the
    extension names, each value as the JSON / text output shows it."""
    from analytics.cli import sql_command

    query = f"SELECT event_id, event_time, torque_nm, machine_failure FROM {STREAM}_silver ORDER BY event_id"
    expected = _json_rows(spark, query)  # every row, as JSON lines show them
    for limit, n in ((None, len(lake.silver)), (7, 7)):
        path = tmp_path / f"rows-{limit}{suffix}"
        err = io.StringIO()
        assert sql_command(lake.settings, query, False, limit=limit, output=path, spark=spark, err=err) == 0
        assert err.getvalue() == f"wrote {n} rows to {path}\n"
        if suffix == ".jsonl":
            got = [json.loads(line) for line in path.read_text().splitlines()]
            assert got == expected[:n]
        elif suffix == ".csv":
            frame = pd.read_csv(path)
            assert list(frame.columns) == ["event_id", "event_time", "torque_nm", "machine_failure"]
            assert frame["event_id"].tolist() == [r["event_id"] for r in expected[:n]]
            assert frame["torque_nm"].tolist() == pytest.approx([r["torque_nm"] for r in expected[:n]])
        else:
            table = pd.read_parquet(path)
            assert table["event_id"].tolist() == [r["event_id"] for r in expected[:n]]
            assert table["event_time"].tolist() == [pd.Timestamp(r["event_time"]) for r in expected[:n]]
        assert not list(tmp_path.glob(".*.partial"))


def test_sql_output_refuses_an_unknown_extension_and_leaves_nothing(spark, lake, views, tmp_path):
    from analytics.cli import sql_command

    err = io.StringIO()
    assert sql_command(lake.settings, f"SELECT 1 FROM {STREAM}_silver", False, output=tmp_path / "rows.xlsx",
                       spark=spark, err=err) == 2
    assert "unknown extension" in err.getvalue() and ".parquet" in err.getvalue()
    err = io.StringIO()
    assert sql_command(lake.settings, "SELECT no_such FROM nowhere", False, output=tmp_path / "rows.csv",
                       spark=spark, err=err) == 1
    assert list(tmp_path.iterdir()) == []


# -- named queries ----------------------------------------------------------------------------------

def test_named_queries_render_and_skip(lake):
    from analytics.catalog import QuerySkipped, load_named_queries

    queries = load_named_queries()
    assert list(queries) == [*EXPECTED_CHARTS[:4], "predicted_classes", *EXPECTED_CHARTS[4:]]
    with pytest.raises(QuerySkipped, match="not a multiclass one"):
        queries["predicted_classes"].render(lake.contracts[STREAM])  # machine_failure is binary
    for query in queries.values():
        if query.name == "predicted_classes":
            continue
        sql = query.render(lake.contracts[STREAM])
        assert "{" not in sql and "@if" not in sql
        assert "machine_telemetry_" in sql or "model_registry" in sql
    other = lake.contracts[OTHER]
    latency = queries["latency"].render(other)
    assert "predictions" not in latency and f"{OTHER}_silver" in latency
    for name in ("probability_distribution", "top_risk", "model_metrics", "predicted_classes"):
        with pytest.raises(QuerySkipped, match="no model"):
            queries[name].render(other)
    assert "`type`" in queries["probability_distribution"].render(lake.contracts[STREAM])
    assert "`machine_id`" in queries["top_risk"].render(lake.contracts[STREAM])


def test_latency_percentiles_match_numpy(spark, lake, views):
    rows = {r["stage"]: r for r in _json_rows(spark, _named_sql(lake, "latency"))}
    assert list(rows) == ["ingest (bronze)", "predictions"]
    samples = {
        "ingest (bronze)": (lake.silver["_ingest_time"] - lake.silver["_kafka_timestamp"]).dt.total_seconds(),
        "predictions": (lake.predictions["scored_at"] - lake.predictions["_kafka_timestamp"]).dt.total_seconds(),
    }
    for stage, seconds in samples.items():
        p50, p95, p99 = np.percentile(seconds.to_numpy(), [50, 95, 99])
        row = rows[stage]
        assert row["events"] == len(seconds)
        assert row["p50_s"] == pytest.approx(p50, abs=1e-9)
        assert row["p95_s"] == pytest.approx(p95, abs=1e-9)
        assert row["p99_s"] == pytest.approx(p99, abs=1e-9)
        assert row["max_s"] == pytest.approx(seconds.max())


def test_latency_without_model_covers_silver_only(spark, lake, views):
    assert _json_rows(spark, _named_sql(lake, "latency", OTHER)) == []


def test_throughput_matches_pandas(spark, lake, views):
    rows = _json_rows(spark, _named_sql(lake, "throughput"))
    got = {(dt.datetime.fromisoformat(r["minute"]), r["layer"]): r["events"] for r in rows}
    expected = {}
    for layer, times in (("bronze", lake.bronze["ingest_time"]), ("silver", lake.silver["_ingest_time"]),
                         ("dead_letter", lake.dead_letter["ingest_time"])):
        for minute, count in times.dt.floor("min").value_counts().items():
            expected[(minute.to_pydatetime(), layer)] = count
    assert got == expected


def test_dead_letter_reasons_match_pandas(spark, lake, views):
    rows = _json_rows(spark, _named_sql(lake, "dead_letter_reasons"))
    counts = lake.dead_letter["error_code"].value_counts()
    assert {r["error_code"]: r["records"] for r in rows} == counts.to_dict()
    assert [r["records"] for r in rows] == sorted(counts, reverse=True)
    assert sum(r["pct"] for r in rows) == pytest.approx(100, abs=0.05)


def test_probability_distribution_matches_pandas(spark, lake, views):
    rows = _json_rows(spark, _named_sql(lake, "probability_distribution"))
    frame = lake.predictions
    bucket = np.clip(np.floor(frame["probability"] * 20), 0, 19) / 20
    expected = frame.assign(bucket=bucket).groupby(["type", "bucket"]).size()
    got = {(r["category"], round(r["bucket_start"], 2)): r["predictions"] for r in rows}
    assert got == {(t, round(b, 2)): n for (t, b), n in expected.items()}


def test_top_risk_matches_pandas(spark, lake, views):
    rows = _json_rows(spark, _named_sql(lake, "top_risk"))
    per_machine = lake.predictions.groupby("machine_id").agg(
        max_probability=("probability", "max"), avg_probability=("probability", "mean"),
        predictions=("probability", "size"))
    expected = per_machine.sort_values(["max_probability", "avg_probability"], ascending=False).head(15)
    assert len(rows) == min(15, len(per_machine))
    assert [r["machine_id"] for r in rows] == list(expected.index)
    for row in rows:
        exp = per_machine.loc[row["machine_id"]]
        assert row["max_probability"] == pytest.approx(exp["max_probability"])
        assert row["avg_probability"] == pytest.approx(exp["avg_probability"])
        assert row["predictions"] == exp["predictions"]


# -- report -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(spark, lake, views) -> Path:
    """The report of every stream."""
    from analytics.report import build_report

    return build_report(spark, lake.settings, lake.contracts)


def test_build_report_all_streams(lake, report):
    assert report == Path(lake.settings.reports_dir) / "report.html"
    html = report.read_text(encoding="utf-8")

    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) == len(EXPECTED_CHARTS)
    for data in images:
        width, height = _png_size(base64.b64decode(data))
        assert width >= 800 and height >= 300

    for name in EXPECTED_CHARTS:
        png = Path(lake.settings.reports_dir) / STREAM / f"{name}.png"
        assert png.is_file(), name
        data = png.read_bytes()
        width, height = _png_size(data)
        assert 800 <= width <= 2400 and 300 <= height <= 1600, (name, width, height)
        assert len(data) > 15_000, name
        assert (Path(lake.settings.reports_dir) / STREAM / f"{name}.csv").is_file()
    assert not list((Path(lake.settings.reports_dir) / OTHER).glob("*.png"))

    # summary: row counts of every table, dead-letter share, model version and metrics
    for table, frame in (("silver", lake.silver), ("bronze", lake.bronze), ("dead_letter", lake.dead_letter),
                         ("predictions", lake.predictions)):
        assert re.search(rf"<code>{STREAM}_{table}</code></td><td class='num'>{len(frame):,}</td>", html), table
    assert f"<code>{STREAM}_gold_fleet_15m</code></td><td class='num'>0</td>" in html
    share = 100 * len(lake.dead_letter) / (len(lake.dead_letter) + len(lake.silver))
    assert f"{share:.2f}%" in html
    assert "<th>production version</th><td>v2</td>" in html
    assert f"{lake.registry[2]['metrics']['auc_pr']:.4f}" in html
    # SQL of each chart in a <details> block, and the stream without a model is handled
    assert html.count("<summary>SQL</summary>") >= len(EXPECTED_CHARTS) + 2
    assert "FROM machine_telemetry_predictions" in html
    assert f"id='stream-{OTHER}'" in html
    other = html.split(f"id='stream-{OTHER}'", 1)[1]
    assert "No data yet" in other
    assert "declares no model" in other
    assert "<img" not in other


def test_build_report_single_stream(spark, lake, views):
    from analytics.cli import report_command

    path = report_command(lake.settings, OTHER, spark=spark)
    assert path == Path(lake.settings.reports_dir) / OTHER / "report.html"
    html = path.read_text(encoding="utf-8")
    assert f"id='stream-{OTHER}'" in html and f"id='stream-{STREAM}'" not in html
    assert "data:image/png" not in html
    assert html.count("No data yet") == 3  # throughput, dead-letter reasons, latency (silver only)
    assert html.count("<div class='panel'") == 3  # the model-based queries are skipped with a note


def test_build_report_unknown_stream(spark, lake):
    from analytics.report import build_report
    from streamsight.errors import ConfigError

    with pytest.raises(ConfigError, match="nope"):
        build_report(spark, lake.settings, lake.contracts, "nope")


def test_report_on_fresh_lake(spark, lake, tmp_path):
    from analytics.report import build_report
    from analytics.views import register_views

    settings = load_settings(lake_dir=str(tmp_path / "lake"), contracts_dir=lake.settings.contracts_dir,
                             reports_dir=tmp_path / "reports")
    try:
        path = build_report(spark, settings, lake.contracts, STREAM)
        html = path.read_text(encoding="utf-8")
        assert "data:image/png" not in html
        assert html.count("No data yet") == len(EXPECTED_CHARTS)
        assert "No model version is registered yet" in html
        assert not list((tmp_path / "reports").rglob("*.png"))
    finally:
        register_views(spark, lake.settings, lake.contracts)  # restore the shared views


# -- the live dashboard -----------------------------------------------------------------------------

DASHBOARD_CHARTS = ["throughput", "dead_letter_reasons", "latency", "top_risk"]


def test_dashboard_shows_only_the_rows_written_in_its_window(spark, lake, views):
    from analytics.report import build_dashboard
    from analytics.views import register_views

    cutoff = lake.silver["_ingest_time"].sort_values().iloc[len(lake.silver) // 2]
    written = {"silver": lake.silver["_ingest_time"], "bronze": lake.bronze["ingest_time"],
               "dead_letter": lake.dead_letter["ingest_time"], "predictions": lake.predictions["scored_at"]}
    try:
        path = build_dashboard(spark, lake.settings, lake.contracts, window="1 hour", refresh_s=30,
                               now=cutoff.to_pydatetime() + dt.timedelta(hours=1))
    finally:
        register_views(spark, lake.settings, lake.contracts)  # restore the shared views
    assert path == lake.settings.dashboard_file
    html = path.read_text(encoding="utf-8")
    assert "<meta http-equiv='refresh' content='30'>" in html and "Rows written in the last 1 hour" in html
    for table, times in written.items():
        n = int((times >= cutoff).sum())
        assert 0 < n < len(times), table
        assert re.search(rf"<code>{STREAM}_{table}</code></td><td class='num'>{n:,}</td>", html), table
    assert re.findall(rf"<div class='panel' id='{STREAM}-([a-z_]+)'>", html) == DASHBOARD_CHARTS
    assert html.count("data:image/png") == len(DASHBOARD_CHARTS)

    recent = lake.predictions[lake.predictions["scored_at"] >= cutoff]
    per_machine = recent.groupby("machine_id").agg(max_probability=("probability", "max"),
                                                   avg_probability=("probability", "mean"))
    expected = per_machine.sort_values(["max_probability", "avg_probability"], ascending=False).head(15)
    top = pd.read_csv(path.parent / STREAM / "top_risk.csv")
    assert list(top["machine_id"]) == list(expected.index)
    assert list(top["max_probability"]) == pytest.approx(list(expected["max_probability"]), rel=1e-5)  # CSV: 6 digits
    reasons = pd.read_csv(path.parent / STREAM / "dead_letter_reasons.csv")
    counts = lake.dead_letter.loc[lake.dead_letter["ingest_time"] >= cutoff, "error_code"].value_counts()
    assert dict(zip(reasons["error_code"], reasons["records"])) == counts.to_dict()


def test_served_dashboard_and_report_render_every_chart_in_chromium(spark, lake, report, kafka_broker, tmp_path):
    """`serve --dashboard` with its builder process; the page through HTTP Basic in headless Chromium,
    reloading itself with a rebuilt page; then report.html from disk."""
    import signal
    import subprocess
    import time

    import httpx
    import yaml

    from streamsight_cli.api import digest
    from tests.chromium import browser, rendered_images
    from tests.integration.helpers import ROOT, wait_for

    keys = {"viewer": "ss_viewer-key-for-tests-0123456789", "narrow": "ss_narrow-key-for-tests-0123456789",
            "writer": "ss_writer-key-for-tests-0123456789"}
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump([
        {"name": "viewer", "sha256": digest(keys["viewer"]), "scopes": ["dashboard:read"]},
        {"name": "narrow", "sha256": digest(keys["narrow"]), "scopes": ["dashboard:read"], "streams": [STREAM]},
        {"name": "writer", "sha256": digest(keys["writer"]), "scopes": ["events:write"]},
    ]), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STREAMSIGHT_LAKE_DIR": str(lake.settings.lake_dir),
           "STREAMSIGHT_CONTRACTS_DIR": str(lake.settings.contracts_dir),
           "STREAMSIGHT_REPORTS_DIR": str(tmp_path / "reports"), "STREAMSIGHT_RUN_DIR": str(tmp_path / "run"),
           "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
           "STREAMSIGHT_API__KEYS_FILE": str(tmp_path / "keys.yaml"), "STREAMSIGHT_SPARK__MASTER": "local[2]",
           "STREAMSIGHT_SPARK__SHUFFLE_PARTITIONS": "2",
           "STREAMSIGHT_DASHBOARD__WINDOW": "36500 days",  # the test lake's rows are from 2024
           "STREAMSIGHT_DASHBOARD__REFRESH_S": "5", "STREAMSIGHT_LOG_LEVEL": "WARNING"}
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "streamsight_cli", "serve", "--port", "0", "--dashboard"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    try:
        url = (proc.stdout.readline() if proc.stdout else "").strip() + "/dashboard"
        assert url.startswith("http://"), log.read_text()
        builder = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])

        def get(key: str | None) -> httpx.Response:
            return httpx.get(url, auth=("someone", keys[key]) if key else None, timeout=30)

        not_yet = get("viewer")  # the builder's Spark session takes seconds to start
        assert not_yet.status_code == 503 and "streamsight dashboard" in not_yet.json()["detail"]
        assert not_yet.headers["Retry-After"] == "5"
        anonymous = get(None)
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic ")
        assert get("writer").status_code == 403 and "dashboard:read" in get("writer").json()["detail"]
        assert get("narrow").status_code == 403 and "every stream" in get("narrow").json()["detail"]
        served = wait_for(lambda: (r := get("viewer")).status_code == 200 and r, timeout=240, what="the dashboard")
        assert served.headers["Cache-Control"] == "no-store"
        assert httpx.get(url.replace("/dashboard", "/readyz")).json()["dashboard_builder"] == "running"

        with browser() as chromium:
            context = chromium.new_context(http_credentials={"username": "someone", "password": keys["viewer"]})
            page = context.new_page()
            assert page.goto(url).status == 200
            first = page.locator("p.meta").inner_text()
            images = rendered_images(page)
            assert len(images) == len(DASHBOARD_CHARTS) and all(i["rendered"] for i in images), images
            assert page.locator(f"#stream-{OTHER} .nodata").count() == 3  # no rows: panels, not broken charts
            deadline = time.monotonic() + 120
            while page.locator("p.meta").inner_text() == first:  # the page reloads itself, rebuilt
                assert time.monotonic() < deadline, "the dashboard did not reload with a newer page"
                page.wait_for_event("load", timeout=30_000)
            assert all(i["rendered"] for i in rendered_images(page))

            page = context.new_page()
            page.goto(report.as_uri())
            images = rendered_images(page)
            assert len(images) == len(EXPECTED_CHARTS) and all(i["rendered"] for i in images), images
            context.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert not Path(f"/proc/{builder}").exists()  # serve stopped its builder
