"""Pure transforms on tiny inline data: validation reason codes, typing, enrichment, windows."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from streaming_jobs import transforms as T
from streamsight.lake import DEAD_LETTER_COLUMNS, silver_columns

GOOD = {
    "event_id": "e1", "machine_id": "M1", "event_time": "2020-01-01T00:05:00Z", "type": "L",
    "air_temperature_k": 298.1, "process_temperature_k": 308.6, "rotational_speed_rpm": 1551,
    "torque_nm": 42.8, "tool_wear_min": 0, "machine_failure": 0,
}


def _bronze(spark, values: list[bytes | None]):
    ts = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rows = [(b"k", v, "t.raw", 0, i, ts) for i, v in enumerate(values)]
    kafka = spark.createDataFrame(
        rows, "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
    )
    return T.to_bronze(kafka)


def _with(**changes) -> bytes:
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


CASES = [
    (_with(), None),
    (b'{"event_id": "e1", "machine', "MALFORMED_JSON"),
    (None, "MALFORMED_JSON"),
    (b"[1, 2, 3]", "NOT_AN_OBJECT"),
    (_with(torque_nm=...), "MISSING_FIELD"),
    (_with(torque_nm=None), "MISSING_FIELD"),
    (_with(torque_nm="42.8"), "TYPE_MISMATCH"),
    (_with(tool_wear_min=1.5), "TYPE_MISMATCH"),
    (_with(torque_nm=-1), "OUT_OF_RANGE"),
    (_with(rotational_speed_rpm=99999), "OUT_OF_RANGE"),
    (_with(type="X"), "NOT_IN_ENUM"),
    (_with(machine_failure=2), "NOT_IN_ENUM"),
    (_with(event_id=""), "BAD_LENGTH"),
    (_with(event_time="yesterday"), "BAD_EVENT_TIME"),
    (_with(machine_failure=...), None),  # optional field may be absent
    (_with(tool_wear_min=2**63), "TYPE_MISMATCH"),  # does not fit the column's type (bigint)
    (_with(tool_wear_min=12.0), None),  # JSON Schema: an integer is a number without a fraction
]


def test_parse_assigns_the_first_broken_rule(spark, machine_contract):
    parsed = T.parse(_bronze(spark, [v for v, _ in CASES]), machine_contract)
    got = {r["offset"]: (r["_error_code"], r["_reason"]) for r in parsed.collect()}
    for i, (_, expected) in enumerate(CASES):
        assert got[i][0] == expected, (i, CASES[i][0], got[i])
        assert (got[i][1] is None) == (expected is None)
    assert "torque_nm" in got[8][1] and "-1" in got[8][1]
    assert "[L, M, H]" in got[10][1]


def test_valid_rows_are_typed_and_invalid_rows_keep_raw_bytes(spark, machine_contract):
    values = [v for v, _ in CASES]
    parsed = T.parse(_bronze(spark, values), machine_contract)
    valid = T.valid_rows(parsed, machine_contract).orderBy("_kafka_offset").collect()
    n_valid = sum(1 for _, code in CASES if code is None)
    assert len(valid) == n_valid == 3
    assert valid[-1]["tool_wear_min"] == 12
    row = valid[0]
    assert row["event_time"] == datetime(2020, 1, 1, 0, 5)
    assert row["rotational_speed_rpm"] == 1551.0 and row["tool_wear_min"] == 0
    assert str(row["event_date"]) == "2020-01-01" and row["event_hour"] == 0
    dead = T.invalid_rows(parsed).collect()
    assert [c for c, _ in DEAD_LETTER_COLUMNS] == T.invalid_rows(parsed).columns
    assert len(dead) == len(CASES) - n_valid
    assert {d["offset"]: d["raw_value"] for d in dead}[1] == values[1]
    assert all(d["source"] == "stream" for d in dead)


def test_enrich_and_filter_and_silver_shape(spark, machine_contract):
    rows = [_with(event_id="a", type="M"), _with(event_id="b", type="H", rotational_speed_rpm=0)]
    parsed = T.parse(_bronze(spark, rows), machine_contract)
    valid = T.apply_filter(T.valid_rows(parsed, machine_contract), machine_contract)
    ref = spark.read.csv(str(machine_contract.reference_path), header=True, inferSchema=True)
    silver = T.to_silver_shape(T.enrich(valid, machine_contract, ref), machine_contract, batch_id=7)
    out = silver.collect()
    assert [r["event_id"] for r in out] == ["a"]  # rpm 0 filtered out by the contract's filter
    assert out[0]["quality"] == "medium" and out[0]["osf_strain_limit_nm_min"] == 12000
    assert out[0]["_batch_id"] == 7
    assert silver.columns == [c for c, _ in silver_columns(machine_contract)]


def test_producer_dead_letter_envelope(spark):
    envelope = {"error_code": "OUT_OF_RANGE", "reason": "field x: 9 is outside maximum 1",
                "raw": '{"x": 9}', "source": "producer"}
    df = T.producer_dead_letters(_bronze(spark, [json.dumps(envelope).encode(), b"garbage"]))
    rows = df.orderBy("offset").collect()
    assert rows[0]["error_code"] == "OUT_OF_RANGE" and rows[0]["raw_value"] == b'{"x": 9}'
    assert rows[1]["error_code"] == "UNREADABLE_DEAD_LETTER" and rows[1]["raw_value"] == b"garbage"


@pytest.mark.parametrize("aggregate", ["by_type_1h", "fleet_15m"])
def test_windowed_aggregate(spark, machine_contract, aggregate):
    times = ["2020-01-01T00:01:00Z", "2020-01-01T00:20:00Z", "2020-01-01T01:10:00Z"]
    rows = [_with(event_id=f"e{i}", event_time=t, machine_failure=i % 2, type="L") for i, t in enumerate(times)]
    valid = T.valid_rows(T.parse(_bronze(spark, rows), machine_contract), machine_contract)
    out = T.windowed_aggregate(valid, machine_contract, aggregate).orderBy("window_start").collect()
    if aggregate == "by_type_1h":
        assert [(r["readings"], r["failures"]) for r in out] == [(2, 1), (1, 0)]
    else:  # 15-minute windows sliding by 5: every event falls in 3 windows
        assert sum(r["readings"] for r in out) == 9


# Records where a lenient JSON reader and a strict one could disagree.
EDGE_CASES = [
    _with(), _with(machine_failure=...), _with(machine_failure=None), _with(extra={"a": [1, 2]}),
    b'  ' + _with(),                                            # leading whitespace
    _with()[:-1] + b', "torque_nm": 50.5}',                     # duplicate key: the last one counts
    _with()[:-1] + b', "torque_nm": "50.5"}',                   # ... and is the wrong type
    _with()[:-1] + b', "machine_id": 7}',
    _with()[:-1] + b'} trailing',
    _with().replace(b'"M1"', b"'M1'"),                          # single quotes
    _with().replace(b'"M1"', b'"M\\u00e9\\"1"'),                 # escapes in a string
    _with().replace(b"42.8", b"NaN"), _with(torque_nm="NaN"), _with(torque_nm="Infinity"),
    _with().replace(b"42.8", b"4.28e1"), _with().replace(b"42.8", b"042.8"),
    _with(tool_wear_min=12.0), _with(tool_wear_min=2**63), _with(tool_wear_min="3"), _with(tool_wear_min=True),
    _with(machine_id=7), _with(machine_id=["M1"]), _with(machine_id={"id": "M1"}), _with(machine_id=True),
    _with(type=None), _with(air_temperature_k=False), _with(rotational_speed_rpm=0),
    _with(event_time="2020-01-01 00:05:00"), _with(event_time=20200101),
    b'{"event_id": "e1"}', b"{}", b"", b"null", b'"a string"', b"[" + _with() + b"]",
    # what the JVM screen leaves to the SQL paths, or must get right itself
    _with() + b"  ", _with() + b"}", _with()[:-1] + b', "Torque_NM": 1}', _with()[:-1] + b', "other": {"torque_nm": "x"}}',
    _with().replace(b'"torque_nm"', b'"torque\\u005fnm"'), _with(event_id="e\U0001F600"), _with(event_id="\ud800"),
    _with().replace(b"42.8", b"1e400"), _with().replace(b"42.8", b"-0.0"), _with().replace(b": 0,", b": -0,", 1),
    _with(tool_wear_min=...).replace(b"}", b', "tool_wear_min": 1E2}'), _with(tool_wear_min=2**53 + 1),
    _with(rotational_speed_rpm=2**63), _with(event_time="2020-01-01T00:05:00.123456789+02:00"),
    _with(event_time="2020-02-30T00:00:00Z"), _with(type="l"), _with(machine_id="M" * 32), _with(machine_id="M" * 33),
]


# What the JVM screen has to get right beyond EDGE_CASES: number forms VARIANT reads as decimals,
# strings that are not plain ASCII, bounds, keys given twice with a bad first value.
JVM_CASES = [
    _with(tool_wear_min=...).replace(b"}", b', "tool_wear_min": 12.000}'),
    _with(tool_wear_min=...).replace(b"}", b', "tool_wear_min": 12.5}'),
    _with(tool_wear_min=...).replace(b"}", b', "tool_wear_min": 1000.0}'),
    _with(tool_wear_min=...).replace(b"}", b', "tool_wear_min": 1000.00000000000000000000000000000000000001}'),
    _with(tool_wear_min=...).replace(b"}", b', "tool_wear_min": -0.0}'),
    _with(tool_wear_min=...).replace(b"}", b', "tool_wear_min": 9223372036854775807}'),
    _with(tool_wear_min=1001), _with(tool_wear_min=-1), _with(torque_nm=200.0), _with(torque_nm=200.0000001),
    _with(air_temperature_k=250), _with(air_temperature_k=249.99999999),
    _with().replace(b"42.8", b"-0.0e0"), _with().replace(b"42.8", b"42.80000000000000000000000000000000000000001"),
    _with().replace(b"42.8", b"12345678901234567890123"),
    _with(machine_id="M\u00e9"), b'{"x": "\xff\xfe", ' + _with()[1:], _with(machine_id="M\xff".encode("latin-1").decode("latin-1")),
    _with()[:-1] + b', "x": ["\\udc00"]}', _with()[:-1] + b', "\\ud800x": 1}', _with(event_id="\ud83d\ude00"),
    b'{"torque_nm": "bad", ' + _with()[1:], b'{"torque_nm": [1, {"a": 2}], ' + _with()[1:],
    _with()[:-1] + b', "torque_nm": null}', _with()[:-1] + b', "event_id": null}',
    b"\t" + _with(), b"\xef\xbb\xbf" + _with(), _with(twf=1.0), _with(twf=True), _with(machine_failure=1.0),
]


def _calls_jvm_screen(spark, df) -> bool:
    previous = spark.conf.get("spark.sql.debug.maxToStringFields")
    spark.conf.set("spark.sql.debug.maxToStringFields", "10000")  # the plan's text in full
    try:
        return "streamsight_screen" in df._jdf.queryExecution().optimizedPlan().toString()
    finally:
        spark.conf.set("spark.sql.debug.maxToStringFields", previous)


@pytest.mark.parametrize("use_jvm", [True, False], ids=["jvm-screen", "sql-screen"])
def test_fast_path_agrees_with_the_exact_path(spark, machine_contract, use_jvm):
    """The fast path (from_json) must accept exactly what the exact path (VARIANT) accepts, with
    the same values; a record it does not accept gets the exact path's code and reason. So must
    the stream's screen, with the JVM screen in front of the fast path or without it."""
    assert T.fast_path_supported(machine_contract)
    records = [v for v, _ in CASES] + EDGE_CASES
    columns = [c for c in T.parse(_bronze(spark, records[:1]), machine_contract).columns
               if c.startswith("p__") or c in ("_error_code", "_reason")]

    def run(fast: bool) -> dict[int, tuple]:
        rows = T.parse(_bronze(spark, records), machine_contract, fast=fast).collect()
        # the fast path accepts exactly the valid records (the stream relies on it: T.screen)
        if fast:
            assert {r["offset"] for r in rows if r["_fast_path"]} == {r["offset"] for r in rows if r["_accepted"]}
        assert fast or not any(r["_fast_path"] for r in rows)
        assert all(r["_accepted"] == (r["_error_code"] is None) for r in rows)
        return {r["offset"]: tuple(r[c] for c in columns) for r in rows}

    fast, exact = run(True), run(False)
    for i, record in enumerate(records):
        assert repr(fast[i]) == repr(exact[i]), (record, fast[i], exact[i])  # repr: NaN == NaN
    accepted = sum(1 for row in exact.values() if row[columns.index("_error_code")] is None)
    assert 8 <= accepted < len(records)  # both kinds are in the sample

    # The stream's screen accepts the same records with the same values, and explains the rest.
    screened = T.screen(_bronze(spark, records), machine_contract, use_jvm=use_jvm)
    assert _calls_jvm_screen(spark, screened) == use_jvm
    typed = [c for c in columns if c.startswith("p__")]
    by_offset = {r["offset"]: r for r in screened.collect()}
    for i in range(len(records)):
        row = by_offset[i]
        assert row["_accepted"] == (exact[i][columns.index("_error_code")] is None), records[i]
        if row["_accepted"]:
            assert repr(tuple(row[c] for c in typed)) == repr(exact[i][: len(typed)]), records[i]
    dead = {r["offset"]: (r["error_code"], r["reason"]) for r in T.rejected_rows(screened, machine_contract).collect()}
    assert dead == {i: exact[i][len(typed):] for i in range(len(records)) if not by_offset[i]["_accepted"]}


def test_jvm_screen_accepts_what_the_exact_path_accepts(spark, machine_contract):
    """The JVM screen alone, on its own output: it accepts exactly the values the exact path
    accepts, with the same typed values, and returns no values for the others."""
    from streaming_jobs import jvm

    function = jvm.screen_function(spark, machine_contract)
    assert function is not None, "the JVM screen is not on the classpath (python -m streaming_jobs.jvm)"
    records = [v for v, _ in CASES] + EDGE_CASES + JVM_CASES
    bronze = _bronze(spark, records)
    exact = {r["offset"]: r for r in T.parse(bronze, machine_contract, fast=False).collect()}
    names = [f.name for f in machine_contract.fields]
    seen = {r["offset"]: r for r in T.jvm_screened(bronze, machine_contract, function).collect()}
    for offset, row in seen.items():
        assert row["_jok"] == exact[offset]["_accepted"], (records[offset], exact[offset]["_error_code"])
        if row["_jok"]:
            assert repr([row["_jv"][n] for n in names] + [row["_jts"]]) == repr(
                [exact[offset][f"p__{n}"] for n in names] + [exact[offset]["p__event_ts"]]), records[offset]
        elif not row["_jv"]["_ok"]:
            assert all(row["_jv"][n] is None for n in names)
    assert sum(1 for r in seen.values() if r["_jok"]) >= 15  # both kinds are in the sample


def test_jvm_screen_spec_refuses_what_it_cannot_screen(machine_contract):
    from streaming_jobs import jvm

    spec = jvm.screen_spec(machine_contract)
    assert [f["name"] for f in spec["fields"]] == [f.name for f in machine_contract.fields]
    doc = machine_contract.model_dump(by_alias=True)
    doc["schema"]["properties"]["extra"] = {"type": "object"}
    assert jvm.screen_spec(type(machine_contract).model_validate(doc)) is None
    doc["schema"]["properties"].pop("extra")
    doc["schema"]["properties"]["type"]["enum"] = ["L", 1]
    assert jvm.screen_spec(type(machine_contract).model_validate(doc)) is None


def test_rejected_rows_keep_a_record_the_screen_should_have_accepted(spark, machine_contract):
    """A disagreement between the two paths loses nothing: such a record is a dead letter with its
    own code, raw bytes kept (it was not de-duplicated, so it cannot go to silver)."""
    from pyspark.sql import functions as F

    screened = T.screen(_bronze(spark, [_with(), b"not json"]), machine_contract)
    forced = screened.withColumn("_accepted", F.lit(False))  # as if the screen had rejected both
    dead = {r["offset"]: r for r in T.rejected_rows(forced, machine_contract).collect()}
    assert dead[0]["error_code"] == T.DISAGREEMENT and dead[0]["raw_value"] == _with()
    assert dead[1]["error_code"] == "MALFORMED_JSON"


def test_validation_compiles_to_generated_code_for_the_shipped_contract(spark, machine_contract):
    """Every rule of a contract lands in one generated method; past the JVM's 64 KB limit Spark
    falls back to interpreting it, about 20x slower (measured: 88k vs 4.4k rows/s). Fail instead."""
    previous = spark.conf.get("spark.sql.codegen.fallback")
    spark.conf.set("spark.sql.codegen.fallback", "false")
    try:
        for fast in (True, False):
            parsed = T.dedup_keyed(T.parse(_bronze(spark, [v for v, _ in CASES]), machine_contract, fast=fast),
                                   machine_contract)
            valid = T.valid_rows(parsed, machine_contract).count()
            invalid = T.invalid_rows(parsed).count()
            assert valid == sum(1 for _, code in CASES if code is None)
            assert invalid == len(CASES) - valid
        screened = T.dedup_keyed(T.screen(_bronze(spark, [v for v, _ in CASES]), machine_contract), machine_contract)
        assert T.valid_rows(screened, machine_contract).count() == valid
        assert T.rejected_rows(screened, machine_contract).count() == invalid
    finally:
        spark.conf.set("spark.sql.codegen.fallback", previous)


def test_dedup_keys_only_valid_raw_records_by_the_contract_key(spark, machine_contract):
    from pyspark.sql import functions as F

    bronze = _bronze(spark, [_with(), _with(), b"not json"]).withColumn("topic", F.lit(machine_contract.raw_topic))
    keyed = T.dedup_keyed(T.parse(bronze, machine_contract), machine_contract).collect()
    assert T.dedup_columns(machine_contract) == ["_dedup_other", "p__event_id"]
    valid = [r for r in keyed if r["_error_code"] is None]
    assert len(valid) == 2 and all(r["_dedup_other"] is None and r[T.DEDUP_TIME] is not None for r in valid)
    (bad,) = [r for r in keyed if r["_error_code"] is not None]
    assert bad["_dedup_other"] == f"{machine_contract.raw_topic}:0:2" and bad[T.DEDUP_TIME] is None
    dead_letters = T.dedup_keyed(T.parse(_bronze(spark, [_with()]), machine_contract), machine_contract).first()
    assert dead_letters["_dedup_other"] == "t.raw:0:0"  # another topic (the dead-letter one): never de-duplicated
