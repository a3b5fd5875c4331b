"""Bad input, as a new user sends it: the shared corpus (tests/corpus.py) through `streamsight produce
--source file:...` and again as raw bytes straight to the raw topic, then through the stream. Nothing
stops the producer or the stream; every record is in silver or in the dead-letter table with the
code the corpus gives it; the producer's summary accounts for every line of the file."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from confluent_kafka import Producer

from ingestion.producer import OVERSIZE_KEPT_BYTES
from streaming_jobs.pipeline import StreamJob
from streamsight.contracts import load_contracts
from streamsight.lake import read_table
from streamsight.settings import load_settings
from streamsight.validation import parse_json
from tests.corpus import telemetry_cases
from tests.integration.helpers import cli, cli_env, isolated_contract

pytestmark = pytest.mark.integration


def test_the_corpus_by_file_and_as_raw_bytes_lands_with_its_codes(tmp_path, kafka_broker, spark, monkeypatch):
    contracts_dir = isolated_contract(tmp_path, kafka_broker)
    env = cli_env(tmp_path, kafka_broker, contracts_dir)
    for key in ("STREAMSIGHT_LAKE_DIR", "STREAMSIGHT_CONTRACTS_DIR", "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS"):
        monkeypatch.setenv(key, env[key])
    contract = load_contracts(contracts_dir)["machine_telemetry"]
    cases = telemetry_cases()
    by_file = [c for c in cases if c.single_line]
    assert len({c.code for c in by_file if c.code}) >= 11 and len([c for c in by_file if c.code]) >= 40

    # 1. The file producer: one line per case, and two blank lines.
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"\n".join([*(c.raw for c in by_file[:10]), b"", *(c.raw for c in by_file[10:]), b"  "]) + b"\n")
    out = cli(env, "produce", "--stream", "machine_telemetry", "--source", f"file:{path}", "--no-progress")
    summary = json.loads(out.stdout.strip().splitlines()[-1])["produce"]
    bad = Counter(c.code for c in by_file if c.code)
    assert (summary["records"], summary["blank"]) == (len(by_file), 2)
    assert (summary["sent"], summary["invalid"]) == (len(by_file) - sum(bad.values()), sum(bad.values()))
    assert summary["invalid_by_code"] == dict(bad)
    assert summary["delivered"] == summary["sent"] and summary["invalid_delivered"] == summary["invalid"]

    # 2. Every case as raw bytes, unchecked, as a misbehaving producer would send it.
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "message.max.bytes": 4_000_000})
    raw_cases = [c for c in cases if len(c.raw) <= contract.max_record_bytes or c.code == "RECORD_TOO_LARGE"]
    sendable = [c for c in raw_cases if len(c.raw) < 1_000_000]  # the broker takes about 1 MB a message
    for c in sendable:
        producer.produce(contract.raw_topic, value=c.raw)
    assert producer.flush(30) == 0

    job = StreamJob(spark, load_settings(), contract, kafka_broker.bootstrap_servers)
    job.run_until_idle()
    dead = read_table(spark, job.uri("dead_letter")).collect()
    assert len(dead) == sum(bad.values()) + sum(1 for c in sendable if c.code)

    producer_rows = [r for r in dead if r["source"] == "producer"]
    kept = lambda c: c.raw[:OVERSIZE_KEPT_BYTES] if c.code == "RECORD_TOO_LARGE" else c.raw  # noqa: E731
    expected = Counter((kept(c), c.code) for c in by_file if c.code)
    assert Counter((bytes(r["raw_value"]), r["error_code"]) for r in producer_rows) == expected
    stream_rows = [r for r in dead if r["source"] == "stream"]
    assert Counter((bytes(r["raw_value"] or b""), r["error_code"]) for r in stream_rows) == Counter(
        (c.raw, c.code) for c in sendable if c.code)
    assert all(r["reason"] for r in dead)

    silver = {r["event_id"] for r in read_table(spark, job.uri("silver")).select("event_id").collect()}
    valid_ids = {parse_json(c.raw.decode())["event_id"] for c in cases if c.code is None}
    assert silver == valid_ids
    bronze = read_table(spark, job.uri("bronze")).count()
    assert bronze == len(by_file) + len(sendable)  # every record a source yielded, valid or not
