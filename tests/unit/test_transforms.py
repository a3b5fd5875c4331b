"""Pure transforms on tiny inline data: verdicts and their dead-letter rows, producer flags,
typing, enrichment, de-duplication keys, windows. (Which code each bad record gets is
tests/unit/test_validation.py's, on the shared corpus.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from streaming_jobs import transforms as T
from streamsight.contracts import REJECTION_HEADERS
from streamsight.lake import BRONZE_COLUMNS, DEAD_LETTER_COLUMNS, silver_columns

GOOD = {
    "event_id": "e1", "machine_id": "M1", "event_time": "2020-01-01T00:05:00Z", "type": "L",
    "air_temperature_k": 298.1, "process_temperature_k": 308.6, "rotational_speed_rpm": 1551,
    "torque_nm": 42.8, "tool_wear_min": 0, "machine_failure": 0,
}


def _bronze(spark, values: list[bytes | None], headers: list[list[tuple[str, bytes]] | None] | None = None):
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    headers = headers or [None] * len(values)
    rows = [(b"k", v, [{"key": k, "value": hv} for k, hv in h] if h else None, "t.raw", 0, i, ts)
            for i, (v, h) in enumerate(zip(values, headers))]
    kafka = spark.createDataFrame(rows, "key binary, value binary, headers array<struct<key:string,value:binary>>, "
                                        "topic string, partition int, offset long, timestamp timestamp")
    return T.to_bronze(kafka)


def _with(**changes) -> bytes:
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


def test_bronze_has_the_lake_columns(spark):
    assert _bronze(spark, [_with()]).columns == [c for c, _ in BRONZE_COLUMNS]


def test_valid_rows_are_typed_and_invalid_rows_keep_raw_bytes_and_a_reason(spark, machine_contract):
    values = [_with(), _with(torque_nm=-1), b'{"event_id": "e1", "machine', _with(tool_wear_min=12.0), None]
    checked = T.validated(_bronze(spark, values), machine_contract)
    valid = T.valid_rows(checked, machine_contract).orderBy("_kafka_offset").collect()
    assert [r["_kafka_offset"] for r in valid] == [0, 3]
    row = valid[0]
    assert row["event_time"] == datetime(2020, 1, 1, 0, 5)
    assert row["rotational_speed_rpm"] == 1551.0 and row["tool_wear_min"] == 0 and valid[1]["tool_wear_min"] == 12
    assert str(row["event_date"]) == "2020-01-01" and row["event_hour"] == 0
    dead = {d["offset"]: d for d in T.invalid_rows(checked).collect()}
    assert T.invalid_rows(checked).columns == [c for c, _ in DEAD_LETTER_COLUMNS]
    assert {o: d["error_code"] for o, d in dead.items()} == {1: "OUT_OF_RANGE", 2: "MALFORMED_JSON", 4: "MALFORMED_JSON"}
    assert dead[2]["raw_value"] == values[2] and all(d["source"] == "stream" for d in dead.values())
    assert "torque_nm" in dead[1]["reason"] and "-1" in dead[1]["reason"] and "minimum 0" in dead[1]["reason"]


def test_a_producers_verdict_in_the_headers_is_kept(spark, machine_contract):
    flag = [(REJECTION_HEADERS["code"], b"RECORD_TOO_LARGE"), (REJECTION_HEADERS["reason"], b"2000000 bytes")]
    checked = T.validated(_bronze(spark, [_with()[:30], _with(), _with(type="X")], [flag, flag, None]), machine_contract)
    dead = {d["offset"]: d for d in T.invalid_rows(checked).collect()}
    assert (dead[0]["error_code"], dead[0]["reason"], dead[0]["source"]) == ("RECORD_TOO_LARGE", "2000000 bytes", "producer")
    assert dead[1]["error_code"] == "RECORD_TOO_LARGE"  # flagged: not valid, even if it would be
    assert (dead[2]["error_code"], dead[2]["source"]) == ("NOT_IN_ENUM", "stream")
    assert T.valid_rows(checked, machine_contract).count() == 0


def test_dead_letter_messages_carry_the_verdict_and_origin(spark, machine_contract):
    checked = T.validated(_bronze(spark, [b"nope"]), machine_contract)
    (msg,) = T.dead_letter_messages(T.invalid_rows(checked), machine_contract).collect()
    headers = {h["key"]: bytes(h["value"]) for h in msg["headers"]}
    assert msg["topic"] == machine_contract.dead_letter_topic and bytes(msg["value"]) == b"nope"
    assert bytes(msg["key"]) == b"t.raw:0:0" and headers[REJECTION_HEADERS["origin"]] == b"t.raw:0:0"
    assert headers[REJECTION_HEADERS["code"]] == b"MALFORMED_JSON" and headers[REJECTION_HEADERS["source"]] == b"stream"


def test_enrich_and_filter_and_silver_shape(spark, machine_contract):
    rows = [_with(event_id="a", type="M"), _with(event_id="b", type="H", rotational_speed_rpm=0)]
    valid = T.apply_filter(T.valid_rows(T.validated(_bronze(spark, rows), machine_contract), machine_contract),
                           machine_contract)
    ref = spark.read.csv(str(machine_contract.reference_path), header=True, inferSchema=True)
    silver = T.to_silver_shape(T.enrich(valid, machine_contract, ref), machine_contract, batch_id=7)
    out = silver.collect()
    assert [r["event_id"] for r in out] == ["a"]  # rpm 0 filtered out by the contract's filter
    assert out[0]["quality"] == "medium" and out[0]["osf_strain_limit_nm_min"] == 12000
    assert out[0]["_batch_id"] == 7
    assert silver.columns == [c for c, _ in silver_columns(machine_contract)]


@pytest.mark.parametrize("aggregate", ["by_type_1h", "fleet_15m"])
def test_windowed_aggregate(spark, machine_contract, aggregate):
    times = ["2020-01-01T00:01:00Z", "2020-01-01T00:20:00Z", "2020-01-01T01:10:00Z"]
    rows = [_with(event_id=f"e{i}", event_time=t, machine_failure=i % 2, type="L") for i, t in enumerate(times)]
    valid = T.valid_rows(T.validated(_bronze(spark, rows), machine_contract), machine_contract)
    out = T.windowed_aggregate(valid, machine_contract, aggregate).orderBy("window_start").collect()
    if aggregate == "by_type_1h":
        assert [(r["readings"], r["failures"]) for r in out] == [(2, 1), (1, 0)]
    else:  # 15-minute windows sliding by 5: every event falls in 3 windows
        assert sum(r["readings"] for r in out) == 9


def test_validation_compiles_to_generated_code_for_the_shipped_contract(spark, machine_contract):
    """Every rule of a contract lands in generated code; past the JVM's 64 KB method limit Spark
    falls back to interpreting it, many times slower. Fail instead."""
    previous = spark.conf.get("spark.sql.codegen.fallback")
    spark.conf.set("spark.sql.codegen.fallback", "false")
    try:
        values = [_with(), _with(type="X"), b"[]", _with(torque_nm="x")]
        keyed = T.dedup_keyed(T.validated(_bronze(spark, values), machine_contract), machine_contract)
        assert T.valid_rows(keyed, machine_contract).count() == 1
        assert T.invalid_rows(keyed).count() == 3
    finally:
        spark.conf.set("spark.sql.codegen.fallback", previous)


def test_dedup_keys_only_valid_records_by_the_contract_key(spark, machine_contract):
    keyed = T.dedup_keyed(T.validated(_bronze(spark, [_with(), _with(), b"not json"]), machine_contract),
                          machine_contract).collect()
    assert T.dedup_columns(machine_contract) == ["_dedup_other", "p__event_id"]
    valid = [r for r in keyed if r["_error_code"] is None]
    assert len(valid) == 2 and all(r["_dedup_other"] is None and r[T.DEDUP_TIME] is not None for r in valid)
    assert all(r["value"] is None for r in valid)  # bronze keeps the bytes; the shuffle does not carry them
    (bad,) = [r for r in keyed if r["_error_code"] is not None]
    assert bad["_dedup_other"] == "t.raw:0:2" and bad[T.DEDUP_TIME] is None and bad["value"] == b"not json"


def test_first_sightings_merge_keeps_each_keys_earliest_event_and_ignores_a_replay(spark, tmp_path):
    """A ``first_seen`` aggregate (the shipped cloudtrail contract's new regions per identity): a row
    per (principal, region), in the hour of its earliest event; a later event changes nothing, an
    earlier one moves the row, a replayed batch adds nothing; a null principal is a key like any."""
    from types import SimpleNamespace

    from streaming_jobs.lake_writer import create_table
    from streaming_jobs.pipeline import FirstSeenWriter
    from streamsight.contracts import load_contract
    from streamsight.lake import gold_columns, read_table
    from tests.integration.helpers import CONTRACTS

    contract = load_contract(CONTRACTS / "cloudtrail.yaml")
    name = "new_regions_by_principal_1h"
    path = str(tmp_path / "gold")
    create_table(spark, path, gold_columns(contract, name), [], {})
    job = SimpleNamespace(contract=contract, uri=lambda table: path)
    writer = FirstSeenWriter(job, name)  # type: ignore[arg-type]

    def at(h: int, m: int) -> datetime:
        return datetime(2023, 7, 10, h, m)

    def batch(rows: list[tuple[str | None, str, datetime | None]]):
        return spark.createDataFrame(rows, "principal string, awsRegion string, eventTime timestamp")

    def table() -> set[tuple]:
        return {(r["principal"], r["awsRegion"], r["first_seen_at"], r["window_start"], r["window_end"])
                for r in read_table(spark, path).collect()}

    first = batch([("alice", "us-east-1", at(11, 40)), ("alice", "us-east-1", at(11, 30)),
                   ("alice", "eu-west-1", at(12, 10)), (None, "us-east-1", at(11, 0)), ("bob", "us-east-1", None)])
    writer(first, 0)
    writer(first, 0)  # replayed after a crash
    assert table() == {("alice", "us-east-1", at(11, 30), at(11, 0), at(12, 0)),
                       ("alice", "eu-west-1", at(12, 10), at(12, 0), at(13, 0)),
                       (None, "us-east-1", at(11, 0), at(11, 0), at(12, 0))}
    writer(batch([("alice", "us-east-1", at(10, 55)), ("alice", "eu-west-1", at(12, 30)),
                  (None, "us-east-1", at(11, 5)), ("bob", "us-east-1", at(13, 0))]), 1)
    assert table() == {("alice", "us-east-1", at(10, 55), at(10, 0), at(11, 0)),  # an earlier event moved it
                       ("alice", "eu-west-1", at(12, 10), at(12, 0), at(13, 0)),
                       (None, "us-east-1", at(11, 0), at(11, 0), at(12, 0)),
                       ("bob", "us-east-1", at(13, 0), at(13, 0), at(14, 0))}
