"""The producer against a real Kafka-protocol broker: what reaches each topic, and the summary.

Both producer paths run here: the columnar one (synthetic batches) and the row one (AI4I replay,
file source), with both clients.  Every message on the raw topic must pass the contract's exact
validator; every rejected record must be on the dead-letter topic with its reason.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import confluent_kafka
import pytest

from ingestion import sources
from ingestion.producer import produce
from streamsight.contracts import RecordInvalid, load_contracts
from streamsight.settings import load_settings
from tests.conftest import AI4I_CSV
from tests.integration.helpers import cli, cli_env, isolated_contract


@pytest.fixture
def stream(tmp_path, kafka_broker, monkeypatch):
    contracts_dir = isolated_contract(tmp_path, kafka_broker, partitions=3)
    env = cli_env(tmp_path, kafka_broker, contracts_dir)
    for key in ("STREAMSIGHT_CONTRACTS_DIR", "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS", "STREAMSIGHT_RUN_DIR"):
        monkeypatch.setenv(key, env[key])
    return load_settings(), load_contracts(contracts_dir)["machine_telemetry"]


def read_topic(servers: str, topic: str, partitions: int) -> list[confluent_kafka.Message]:
    """Every message of ``topic`` (read up to the high watermarks)."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": servers, "group.id": "test-producer",
                                         "enable.auto.commit": False})
    try:
        ends = {p: consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
        consumer.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in range(partitions) if ends[p]])
        out: list[confluent_kafka.Message] = []
        total = sum(ends.values())
        while len(out) < total:  # consume() returns once it has num_messages, or after the timeout
            batch = consumer.consume(num_messages=total - len(out), timeout=10)
            assert batch, f"read {len(out)} of {total} messages of {topic}"
            out += [m for m in batch if m.error() is None]
        return out
    finally:
        consumer.close()


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_synthetic_batches_reach_the_right_topics(stream, kafka_broker, client):
    settings, contract = stream
    faults = sources.FaultSpec(malformed=0.02, schema=0.03, duplicates=0.05, late=0.02)
    summary = produce(settings, contract, sources.synthetic_source(contract, machines=300, faults=faults),
                      count=12_000, client=client, progress=False)
    assert summary.ok and summary.failed == 0
    assert summary.sent + summary.invalid == 12_000
    assert summary.invalid == summary.faults["malformed"] + summary.faults["schema"] > 0
    assert sum(summary.invalid_by_code.values()) == summary.invalid

    raw = read_topic(kafka_broker.bootstrap_servers, contract.raw_topic, 3)
    assert len(raw) == summary.sent == summary.delivered
    exact = contract.validator()
    ids = []
    for m in raw:
        record = json.loads(m.value())
        exact(record)
        assert m.key() == record["machine_id"].encode()
        ids.append(record["event_id"])
    assert len(ids) - len(set(ids)) == summary.faults["duplicate"]
    # All readings of a machine on one partition.
    partitions: dict[bytes, set[int]] = {}
    for m in raw:
        partitions.setdefault(m.key(), set()).add(m.partition())
    assert all(len(p) == 1 for p in partitions.values())

    dead = [json.loads(m.value()) for m in read_topic(kafka_broker.bootstrap_servers, contract.dead_letter_topic, 1)]
    assert len(dead) == summary.invalid == summary.invalid_delivered
    codes: dict[str, int] = {}
    for envelope in dead:
        assert envelope["source"] == "producer" and envelope["reason"] and envelope["stream"] == contract.name
        codes[envelope["error_code"]] = codes.get(envelope["error_code"], 0) + 1
    assert codes == summary.invalid_by_code and codes["MALFORMED_JSON"] == summary.faults["malformed"]


def test_unvalidated_batches_send_everything_raw(stream, kafka_broker):
    settings, contract = stream
    summary = produce(settings, contract, sources.synthetic_source(
        contract, machines=10, seed=4, faults=sources.FaultSpec(malformed=0.3, schema=0.3)),
        count=2_000, validate=False, progress=False)
    assert summary.ok and summary.sent == 2_000 and summary.invalid == 0
    raw = read_topic(kafka_broker.bootstrap_servers, contract.raw_topic, 3)
    assert len(raw) == 2_000
    exact = contract.validator()
    broken = 0
    for m in raw:
        try:
            exact(json.loads(m.value()))
        except (ValueError, RecordInvalid):
            broken += 1
    assert broken == summary.faults["malformed"] + summary.faults["schema"] > 0


def test_row_sources_go_through_the_exact_validator(stream, kafka_broker, tmp_path):
    settings, contract = stream
    summary = produce(settings, contract, sources.ai4i_source(AI4I_CSV, limit=2_500), progress=False)
    assert summary.ok and summary.sent == 2_500 and summary.invalid == 0
    lines = [json.dumps({"event_id": "f-1", "machine_id": "M1", "event_time": "2026-01-01T00:00:00Z", "type": "L",
                         "air_temperature_k": 300, "process_temperature_k": 310, "rotational_speed_rpm": 1500,
                         "torque_nm": 40, "tool_wear_min": 5}),
             '{"event_id": "f-2", "broken": ',
             json.dumps({"event_id": "f-3", "machine_id": "M1", "event_time": "2026-01-01T00:00:00Z", "type": "Q",
                         "air_temperature_k": 300, "process_temperature_k": 310, "rotational_speed_rpm": 1500,
                         "torque_nm": 40, "tool_wear_min": 5})]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = produce(settings, contract, sources.file_source(contract, path), progress=False)
    assert (summary.sent, summary.invalid) == (1, 2)
    assert summary.invalid_by_code == {"MALFORMED_JSON": 1, "NOT_IN_ENUM": 1}
    raw = read_topic(kafka_broker.bootstrap_servers, contract.raw_topic, 3)
    assert len(raw) == 2_501
    assert sum(1 for m in raw if json.loads(m.value())["event_id"] == "f-1") == 1


def _event_times(servers: str, topic: str) -> list[datetime]:
    return [datetime.fromisoformat(json.loads(m.value())["event_time"].replace("Z", "+00:00"))
            for m in read_topic(servers, topic, 3)]


def test_cli_synthetic_event_time_from_start_or_wall_clock(tmp_path, kafka_broker):
    """``--start`` fixes the first round's event time (1 s per round of --machines events after it);
    ``--realtime`` stamps each round with the wall clock, as a live source would."""
    contracts_dir = isolated_contract(tmp_path, kafka_broker, partitions=3)
    env = cli_env(tmp_path, kafka_broker, contracts_dir)
    topic = load_contracts(contracts_dir)["machine_telemetry"].raw_topic
    base = ["produce", "--stream", "machine_telemetry", "--source", "synthetic", "--machines", "100",
            "--count", "500", "--no-progress"]
    cli(env, *base, "--start", "2024-05-01T06:00:00")
    times = _event_times(kafka_broker.bootstrap_servers, topic)
    start = datetime(2024, 5, 1, 6, tzinfo=timezone.utc)
    assert len(times) == 500
    assert min(times) == start and max(times) == start + timedelta(seconds=4)  # 5 rounds of 100

    before = datetime.now(timezone.utc).replace(microsecond=0)
    cli(env, *base, "--seed", "8", "--realtime")
    after = datetime.now(timezone.utc)
    live = [t for t in _event_times(kafka_broker.bootstrap_servers, topic) if t.year != 2024]
    assert len(live) == 500 and all(before <= t <= after for t in live)

    refused = cli(env, *base, "--start", "2024-05-01T06:00:00", "--realtime", check=False)
    assert refused.returncode != 0 and "--realtime" in refused.stderr
