"""A stream the code has never seen: a contract and a reference CSV written by the test, nothing else.

Everything runs through the real `streamsight` command in subprocesses: produce (file source),
stream (until idle), sql and report. Expected values are computed here from the generated input.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tests.integration.helpers import cli, cli_env

pytestmark = pytest.mark.integration

ROOMS = {"r1": ("north", 1), "r2": ("north", 2), "r3": ("south", 1)}


def _contract(name: str, suffix: str) -> dict:
    return {
        "name": name,
        "description": "CO2 and temperature readings from room sensors (test stream).",
        "topics": {"raw": f"{name}-{suffix}.raw", "dead_letter": f"{name}-{suffix}.dlq", "partitions": 2},
        "max_record_bytes": 4096,
        "key": "room",
        "event_time": {"field": "ts", "format": "epoch_millis"},
        "watermark": "30 minutes",
        "dedup_key": ["reading_id"],
        "schema": {
            "type": "object",
            "required": ["reading_id", "room", "ts", "co2_ppm"],
            "properties": {
                "reading_id": {"type": "string", "minLength": 1},
                "room": {"type": "string", "enum": sorted(ROOMS)},
                "ts": {"type": "integer", "minimum": 0},
                "co2_ppm": {"type": "integer", "minimum": 0, "maximum": 100000},
                "temperature_c": {"type": "number"},
            },
        },
        "filter": "co2_ppm < 5000",
        "reference": {"path": "rooms.csv", "key": "room", "columns": ["building", "floor"]},
        "partition_by": ["event_date"],
        "aggregates": [{"name": "co2_10m", "window": "10 minutes", "group_by": ["building"],
                        "metrics": [{"name": "readings", "agg": "count"},
                                    {"name": "max_co2_ppm", "agg": "max", "column": "co2_ppm"}]}],
    }


def test_new_contract_needs_no_code(tmp_path, kafka_broker, spark, monkeypatch):
    name = f"room_climate_{uuid.uuid4().hex[:6]}"
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    spec = _contract(name, uuid.uuid4().hex[:6])
    (contracts / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (contracts / "rooms.csv").write_text("room,building,floor\n" + "".join(f"{r},{b},{f}\n" for r, (b, f) in ROOMS.items()))
    kafka_broker.create_topic(spec["topics"]["raw"], 2)
    kafka_broker.create_topic(spec["topics"]["dead_letter"], 1)

    rng = random.Random(5)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    records = []
    for i in range(600):
        ts = start + timedelta(seconds=5 * i)
        records.append({"reading_id": f"x{i}", "room": rng.choice(sorted(ROOMS)), "ts": int(ts.timestamp() * 1000),
                        "co2_ppm": rng.choice([400, 800, 1200, 9000]), "temperature_c": round(rng.uniform(18, 24), 1)})
    duplicates = [dict(r) for r in records[100:120]]
    invalid_lines = ['{"reading_id": "bad1", "room": "r9", "ts": 1, "co2_ppm": 1}',  # not in enum
                     '{"reading_id": "bad2", "room": "r1", "ts": 1}',  # missing co2_ppm
                     "this is not json"]
    lines = [json.dumps(r) for r in records + duplicates] + invalid_lines
    rng.shuffle(lines)
    source = tmp_path / "readings.jsonl"
    source.write_text("\n".join(lines) + "\n")

    env = cli_env(tmp_path, kafka_broker, contracts)
    out = cli(env, "produce", "--stream", name, "--source", "file", "--path", str(source))
    summary = json.loads(out.stdout.strip().splitlines()[-1])["produce"]
    assert summary["sent"] == len(records) + len(duplicates) and summary["invalid"] == 3

    cli(env, "stream", "--stream", name, "--until-idle", timeout=600)

    # The analyst's command, once as a real process; the other queries run the same code in-process.
    first = cli(env, "sql", "--json", f"SELECT count(*) AS n FROM {name}_bronze")
    # bronze: every record the file held, the three its producer rejected too (flagged, for the dead letter)
    assert json.loads(first.stdout.splitlines()[0]) == {"n": len(lines)}
    for key in ("STREAMSIGHT_LAKE_DIR", "STREAMSIGHT_CONTRACTS_DIR", "STREAMSIGHT_REPORTS_DIR", "STREAMSIGHT_RUN_DIR"):
        monkeypatch.setenv(key, env[key])
    from analytics.report import build_report
    from analytics.sql import run_sql
    from streamsight.contracts import load_contracts
    from streamsight.settings import load_settings

    settings = load_settings()

    def sql(query: str) -> list[dict]:
        out = run_sql(spark, settings, query, as_json=True)
        return [json.loads(line) for line in out.splitlines() if line.strip()]  # JSON Lines

    kept = [r for r in records if r["co2_ppm"] < 5000]
    silver = sql(f"SELECT count(*) AS n, count(DISTINCT reading_id) AS ids, "
                 f"sum(CASE WHEN building IS NULL THEN 1 ELSE 0 END) AS unenriched FROM {name}_silver")[0]
    assert silver == {"n": len(kept), "ids": len(kept), "unenriched": 0}
    by_building = sql(f"SELECT building, count(*) AS n FROM {name}_silver GROUP BY building ORDER BY building")
    expected = Counter(ROOMS[r["room"]][0] for r in kept)
    assert {row["building"]: row["n"] for row in by_building} == dict(expected)
    dead = sql(f"SELECT error_code, count(*) AS n FROM {name}_dead_letter GROUP BY error_code ORDER BY error_code")
    assert {row["error_code"]: row["n"] for row in dead} == {"MALFORMED_JSON": 1, "MISSING_FIELD": 1, "NOT_IN_ENUM": 1}

    # Gold: 10-minute windows per building; windows that closed hold exactly the silver rows in them.
    gold = sql(f"SELECT window_start, window_end, building, readings FROM {name}_gold_co2_10m")
    assert gold, "no closed windows were written"
    closed_end = max(datetime.fromisoformat(g["window_end"].replace("Z", "+00:00")) for g in gold)
    expected_counts = Counter(
        ROOMS[r["room"]][0] for r in kept
        if datetime.fromtimestamp(r["ts"] / 1000, UTC) < closed_end.replace(tzinfo=UTC))
    got = Counter()
    for g in gold:
        got[g["building"]] += g["readings"]
    assert got == expected_counts

    html = build_report(spark, settings, load_contracts(contracts), stream=name)
    assert html.suffix == ".html" and name in html.read_text(encoding="utf-8")
