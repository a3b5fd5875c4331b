"""The producer's and the stream's validators give every record of the shared corpus (tests/corpus.py)
the same verdict and the same reason code, and the stream types what it accepts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streaming_jobs.validation import validate
from streamsight.contracts import Contract, load_contract
from streamsight.validation import RecordValidator
from tests.conftest import ROOT
from tests.corpus import SHAPES, Case, app_log_cases, shapes_cases, telemetry_cases

TELEMETRY = load_contract(ROOT / "conf" / "contracts" / "machine_telemetry.yaml")
SHAPES_CONTRACT = Contract.model_validate(SHAPES)
APP_LOGS = load_contract(ROOT / "conf" / "contracts" / "app_logs.yaml")
CORPORA = {"machine_telemetry": (TELEMETRY, telemetry_cases()), "shapes": (SHAPES_CONTRACT, shapes_cases()),
           "app_logs": (APP_LOGS, app_log_cases())}


def _stream_codes(spark, contract: Contract, cases: list[Case]) -> list[tuple[str | None, str | None]]:
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    df = spark.createDataFrame([(i, c.raw, ts) for i, c in enumerate(cases)], "i int, value binary, kafka_timestamp timestamp")
    rows = validate(df, contract).select("i", "_error_code", "_reason").collect()
    by_index = {r["i"]: (r["_error_code"], r["_reason"]) for r in rows}
    return [by_index[i] for i in range(len(cases))]


@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_the_producer_gives_each_case_its_code(corpus):
    contract, cases = CORPORA[corpus]
    validator = RecordValidator(contract)
    got = {c.name: (validator.check_bytes(c.raw)[1] or None) for c in cases}
    wrong = {name: (r.code if r else None, r.reason if r else None, c.code)
             for c in cases for name, r in [(c.name, got[c.name])] if (r.code if r else None) != c.code}
    assert not wrong, wrong
    assert all(r.reason for r in got.values() if r is not None)


@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_the_stream_gives_each_case_the_producers_code(spark, corpus):
    contract, cases = CORPORA[corpus]
    validator = RecordValidator(contract)
    stream = _stream_codes(spark, contract, cases)
    producer = [(r.code if r else None) for r in (validator.check_bytes(c.raw)[1] for c in cases)]
    disagree = {c.name: {"stream": s, "producer": p, "expected": c.code}
                for c, (s, _), p in zip(cases, stream, producer) if s != p or s != c.code}
    assert not disagree, disagree
    assert all(reason for code, reason in stream if code is not None)
    assert all(reason is None for code, reason in stream if code is None)
    kinds = {c.code for c in cases if c.code}
    assert len([c for c in cases if c.code]) >= {"machine_telemetry": 40, "app_logs": 10}.get(corpus, 15), kinds


def test_the_stream_types_accepted_records(spark):
    contract, cases = CORPORA["machine_telemetry"]
    picked = {c.name: c for c in cases}
    chosen = [picked["ai4i-1"], picked["integer written 12.0"], picked["event time with an offset"]]
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    df = spark.createDataFrame([(i, c.raw, ts) for i, c in enumerate(chosen)], "i int, value binary, kafka_timestamp timestamp")
    rows = {r["i"]: r for r in validate(df, contract).collect()}
    assert all(r["_accepted"] for r in rows.values())
    assert rows[0]["p__event_id"] == "ai4i-1"
    assert rows[0]["p__torque_nm"] == 42.8 and isinstance(rows[0]["p__tool_wear_min"], int)
    assert rows[1]["p__tool_wear_min"] == 12
    assert rows[2]["p__event_ts"] == datetime(2020, 1, 1, 0, 0)  # 05:30+05:30 is midnight UTC (session time zone)


@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_the_columnar_check_gives_each_row_the_record_verdict(corpus):
    """RecordValidator.accepted_rows (each distinct value of a column decided once) says valid of
    exactly the rows check_record finds valid: corpus records one per table, and one table of many."""
    import pyarrow as pa

    from ingestion.columnar import plain_table
    from streamsight.validation import parse_json

    contract, cases = CORPORA[corpus]
    validator = RecordValidator(contract)
    compared = 0
    for case in cases:
        try:
            record = parse_json(case.raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        record = {k: v for k, v in record.items() if not isinstance(v, (list, dict))}  # not table cells here
        try:
            table = pa.Table.from_pylist([record])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            continue
        if table.num_rows != 1 or not plain_table(table):
            continue
        assert bool(validator.accepted_rows(table)[0]) == (validator.check_record(record) is None), case.name
        compared += 1
    assert compared >= (60 if corpus == "machine_telemetry" else 10)


def test_the_columnar_check_on_a_table_of_many_rows():
    import pyarrow as pa

    from ingestion import sources
    from ingestion.columnar import rows_as_dicts

    validator = RecordValidator(TELEMETRY)
    table = next(sources.synthetic_source(TELEMETRY, machines=500, seed=11)).table
    bad = {3: ("torque_nm", 250.0), 7: ("type", "Q"), 11: ("event_time", "2020-02-30T00:00:00Z"),
           13: ("tool_wear_min", 1001), 17: ("event_id", ""), 19: ("machine_id", "M" * 40)}
    rows = rows_as_dicts(table)
    for i, (name, value) in bad.items():
        rows[i] = {**rows[i], name: value}
    broken = pa.Table.from_pylist(rows, schema=table.schema)
    got = validator.accepted_rows(broken)
    assert [i for i, ok in enumerate(got) if not ok] == sorted(bad)
    assert list(got) == [validator.check_record(r) is None for r in rows]


def _typed(value: object) -> object:
    """A parsed JSON value with each number's type kept (1 and 1.0 compare equal in Python)."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_the_fast_json_paths_give_the_standard_librarys_values(corpus, request):
    """parse_json_bytes (orjson where it agrees) gives every case's bytes the value, or the error,
    of the strict parser, numbers' types included; serialise_record's bytes (orjson unless a
    null is written) read back as the value they were written from."""
    import functools
    import json
    import re
    import sys

    from ingestion.producer import serialise_record
    from streamsight.validation import parse_json, parse_json_bytes

    request.addfinalizer(functools.partial(sys.setrecursionlimit, sys.getrecursionlimit()))
    sys.setrecursionlimit(10_000)  # _typed and json.loads on the cases nested 999 levels
    _, cases = CORPORA[corpus]
    parsed = 0
    for case in cases:
        for raw in (case.raw, b"[" + case.raw + b"," + case.raw + b"]"):
            try:
                expected = _typed(parse_json(raw.decode("utf-8")))
            except (UnicodeDecodeError, ValueError) as exc:
                with pytest.raises(type(exc), match=re.escape(str(exc))):
                    parse_json_bytes(raw)
                continue
            value = parse_json_bytes(raw)
            assert _typed(value) == expected, case.name
            written, rejection = serialise_record(value)
            if rejection is None:
                assert _typed(json.loads(written)) == expected, case.name
            parsed += 1
    assert parsed >= 20


def test_many_records_parse_fast_and_a_record_too_deep_is_still_refused():
    """A body of more than MAX_DEPTH records (each an opening bracket) is parsed and measured, not
    refused; one nested MAX_DEPTH levels is refused whichever parser read it."""
    import json

    from streamsight.validation import MAX_DEPTH, parse_json_bytes

    body = json.dumps([{"a": [i]} for i in range(2 * MAX_DEPTH)]).encode()
    assert parse_json_bytes(body)[-1] == {"a": [2 * MAX_DEPTH - 1]}
    for depth, ok in ((MAX_DEPTH - 1, True), (MAX_DEPTH, False), (MAX_DEPTH + 30, False)):
        raw = b"[" * depth + b"]" * depth
        if ok:
            assert parse_json_bytes(raw) is not None
        else:
            with pytest.raises(ValueError, match=f"nested {MAX_DEPTH} levels or more"):
                parse_json_bytes(raw)


@pytest.mark.parametrize("value, code", [
    ({"n": float("nan")}, "MALFORMED_RECORD"),
    ({"t": __import__("datetime").datetime(2024, 1, 1)}, "MALFORMED_RECORD"),
    ({"s": {1}}, "MALFORMED_RECORD"),
    ({"s": "\ud800"}, "NOT_UTF8"),
    ({"a": None, "b": 1.5}, None),
    ({1: "int key"}, None),
    ({"big": 2**80, "small": -(2**70)}, None),
    ({"tiny": 1e-07, "huge": 1e300, "neg": -1.311524137473571e-05}, None),
    ({"u": __import__("uuid").UUID(int=7)}, None),
    ({"f": __import__("numpy").float64(0.1), "i": __import__("enum").IntEnum("E", "A B").B}, None),
])
def test_serialised_records_are_the_standard_librarys_json_values(value, code):
    """serialise_record (orjson where it agrees) writes what json.dumps writes, as a JSON value, and
    refuses what it refuses, with the same code."""
    import json
    import uuid

    from ingestion.producer import serialise_record

    written, rejection = serialise_record(value)
    assert (rejection.code if rejection else None) == code
    if code is None:
        plain = {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in value.items()}
        assert json.loads(written) == json.loads(json.dumps(plain))
        assert [type(v) for v in json.loads(written).values()] == [type(v) for v in json.loads(json.dumps(plain)).values()]
