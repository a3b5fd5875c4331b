"""The producer's columnar path: which tables it writes in one pass, JSON serialisation, and the
synthetic batches. The serialiser must write exactly the record's values, as json.dumps would.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from ingestion.columnar import EventBatch, json_values, key_values, plain_table, rows_as_dicts
from ingestion.sources import FaultSpec, synthetic_source
from streamsight.validation import RecordValidator

GOOD = {
    "event_id": "SYN-00001-7-1", "machine_id": "SYN-00001", "event_time": "2026-01-01T00:00:00.000Z",
    "type": "L", "air_temperature_k": 300.1, "process_temperature_k": 310.2, "rotational_speed_rpm": 1500.0,
    "torque_nm": 40.5, "tool_wear_min": 12, "machine_failure": 0, "twf": 0, "hdf": 0, "pwf": 0, "osf": 0,
    "rnf": 0, "source": "synthetic",
}

# One field changed per row: (field, value), valid or not (the serialiser writes whatever it is given).
VARIANTS = [
    ("air_temperature_k", 250.0), ("air_temperature_k", 249.99), ("air_temperature_k", 350.01),
    ("tool_wear_min", 0), ("tool_wear_min", -1), ("tool_wear_min", 1001), ("type", "M"), ("type", ""),
    ("event_id", "x" * 65), ("event_id", "é" * 64), ("event_id", 'quote " and back\\slash'),
    ("event_id", "tab\there"), ("event_id", "new\nline"), ("event_id", "ünïcødé ✓ 𝄞"),
    ("event_time", "2026-02-30T00:00:00Z"), ("event_time", "2024-02-29T12:00:00+01:00"),
    ("event_time", "yesterday"), ("machine_failure", 1), ("machine_failure", 2),
    ("rotational_speed_rpm", 0.0), ("rotational_speed_rpm", -0.0), ("rotational_speed_rpm", 5000.5),
    ("torque_nm", 1e-7), ("torque_nm", 199.99999999999997), ("torque_nm", 1e300), ("tool_wear_min", 2**62),
    ("event_id", "a"), ("event_id", "b"), ("event_id", "c"), ("event_id", "d"), ("event_id", "e"),
]


@pytest.mark.parametrize("column, values, plain", [
    ("event_id", ["a", 'quote " and back\\slash', "ünïcødé ✓ 𝄞"], True),
    ("event_id", ["tab\there", "x"], False),           # a control character needs a \\u escape
    ("machine_failure", [None, 1], False),             # a null: the field is absent from that record
    ("air_temperature_k", [float("nan"), 300.0], False),
    ("air_temperature_k", [float("inf"), 300.0], False),
    ("twf", [True, False], True),
    ("type", [[1], [2]], False),                       # a list column
])
def test_plain_tables_are_those_json_values_writes_as_json_dumps(column, values, plain):
    table = pa.Table.from_pylist([{**GOOD, column: v} for v in values])
    assert plain_table(table) is plain
    if plain:
        assert [json.loads(v) for v in json_values(table)] == rows_as_dicts(table)


def test_json_values_round_trip_exactly():
    plain = [{**GOOD, name: value} for name, value in VARIANTS
             if not (isinstance(value, str) and any(c < " " for c in value))]
    rows = [{**row, "flag": i % 2 == 0} for i, row in enumerate([GOOD, *plain])]
    values = json_values(pa.Table.from_pylist(rows))
    assert len(values) == len(rows) >= 30
    for row, value in zip(rows, values):
        decoded = json.loads(value)
        assert list(decoded) == list(row)
        for key, want in row.items():
            got = decoded[key]
            if isinstance(want, float):  # shortest round-trip form: 1500.0 is written 1500
                assert isinstance(got, (int, float)) and not isinstance(got, bool) and float(got) == want, key
            else:
                assert got == want and type(got) is type(want), (key, got, want)


def test_keys_are_the_key_field_as_text():
    table = pa.table({"k": ["a", "b"], "n": [1, 2], "x": [1.5, 2.0]})
    assert key_values(table, "k") == [b"a", b"b"]
    assert key_values(table, "n") == [b"1", b"2"]
    assert key_values(table, "x") == [b"1.5", b"2.0"]  # as str(value) on the row path
    assert key_values(table, "missing") == [None, None]


def test_synthetic_batches_are_valid_deterministic_and_fault_shares_hold(machine_contract):
    faults = FaultSpec(malformed=0.01, schema=0.02, duplicates=0.03, late=0.02, late_by="5 minutes")
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def take(seed: int, n: int) -> list[EventBatch]:
        out, total = [], 0
        for batch in synthetic_source(machine_contract, machines=100, seed=seed, faults=faults, start=start):
            out.append(batch)
            total += len(batch)
            if total >= n:
                return out
        raise AssertionError("unreachable")

    batches = take(1, 30_000)
    again = take(1, 30_000)
    assert [rows_as_dicts(b.table) for b in batches] == [rows_as_dicts(b.table) for b in again]
    counts: dict[str, int] = {}
    for b in batches:
        for k, v in b.fault_counts().items():
            counts[k] = counts.get(k, 0) + v
    events = sum(len(b) for b in batches)
    fresh = events - counts["duplicate"]
    assert 0.02 < counts["duplicate"] / events < 0.04
    assert 0.006 < counts["malformed"] / fresh < 0.014
    assert 0.015 < counts["schema"] / fresh < 0.025
    assert 0.015 < counts["late"] / fresh < 0.025

    validator = RecordValidator(machine_contract)
    seen: dict[str, dict] = {}
    for b in batches:
        assert plain_table(b.table)  # ordinary and late records all take the one-pass path
        for record, fault in zip(rows_as_dicts(b.table), b.faults.to_pylist()):
            assert validator.check_record(record) is None
            if fault == "duplicate":
                assert seen[record["event_id"]] == record  # an exact copy of an earlier record
            else:
                assert record["event_id"] not in seen
                seen[record["event_id"]] = record
        for event in b.extra:
            if event.fault == "schema":
                assert validator.check_record(event.payload) is not None
            else:
                assert event.fault == "malformed" and event.payload is None
                with pytest.raises(json.JSONDecodeError):
                    json.loads(event.raw)


def test_head_keeps_fault_shares(machine_contract):
    faults = FaultSpec(malformed=0.5, schema=0.2)
    batch = next(synthetic_source(machine_contract, machines=50, seed=3, faults=faults))
    head = batch.head(len(batch) // 2)
    assert len(head) == len(batch) // 2
    assert abs(len(head.extra) / len(head) - len(batch.extra) / len(batch)) < 0.01
    assert batch.head(len(batch) + 5) is batch


def test_split_keeps_every_event_once(machine_contract):
    batch = next(synthetic_source(machine_contract, machines=50, seed=5, faults=FaultSpec(malformed=0.3, duplicates=0.1)))
    pieces = batch.split(333)
    assert all(len(p) <= 334 for p in pieces) and sum(len(p) for p in pieces) == len(batch)
    assert [r for p in pieces for r in rows_as_dicts(p.table)] == rows_as_dicts(batch.table)
    assert [e.raw for p in pieces for e in p.extra] == [e.raw for e in batch.extra]
    assert sum(p.fault_counts().get("duplicate", 0) for p in pieces) == batch.fault_counts()["duplicate"]


def test_synthetic_start_and_realtime_exclude_each_other(machine_contract):
    events = synthetic_source(machine_contract, start=datetime(2024, 5, 1, tzinfo=UTC), realtime=True)
    with pytest.raises(ValueError, match="start and realtime"):
        next(events)
    first = next(synthetic_source(machine_contract, machines=5, realtime=True))  # either alone is fine
    assert first.table.num_rows > 0


def test_synthetic_sensor_sequences_are_valid_and_a_wearing_bearing_shows_in_its_readings():
    import numpy as np

    from streamsight.contracts import load_contract
    from streamsight.settings import PROJECT_ROOT

    contract = load_contract(PROJECT_ROOT / "conf" / "contracts" / "sensor_sequences.yaml")
    batch = next(synthetic_source(contract, machines=100, seed=11, start=datetime(2026, 1, 1, tzinfo=UTC)))
    rows = rows_as_dicts(batch.table)
    validator = RecordValidator(contract)
    assert plain_table(batch.table) and all(validator.check_record(r) is None for r in rows)
    assert len({r["sequence_id"] for r in rows}) == len(rows) == batch.table.num_rows
    assert {(r["asset"], r["model"]) for r in rows} == {("pump", "pump_vibration"), ("fan", "fan_vibration")}
    readings = np.array([[r[f"v{i}"] for i in range(1, 9)] for r in rows])
    failure = np.array([r["failure"] for r in rows]) == 1
    assert 0.01 < failure.mean() < 0.15
    for asset in ("pump", "fan"):  # per asset: failing bearings run hotter and rise within a sequence
        mine = np.array([r["asset"] == asset for r in rows])
        level, rise = readings.mean(axis=1), readings[:, -1] - readings[:, 0]
        assert level[mine & failure].mean() > 1.5 * level[mine & ~failure].mean()
        assert rise[mine & failure].mean() > rise[mine & ~failure].mean()
    pumps, fans = (np.array([r["asset"] == a for r in rows]) for a in ("pump", "fan"))
    assert readings[pumps & ~failure].mean() > 1.5 * readings[fans & ~failure].mean()  # each asset its own scale
