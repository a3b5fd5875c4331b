"""The producer on Apache Kafka: what reaches the raw topic, and the summary.

Both producer paths run here: the columnar one (synthetic batches) and the row one (AI4I replay,
file source), with both clients. Every record is on the raw topic: an unflagged one passes the
producer's validator, a rejected one carries its reason code in its headers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import confluent_kafka
import pytest

from ingestion import sources
from ingestion.producer import produce
from streamsight.contracts import REJECTION_HEADERS, load_contracts
from streamsight.settings import load_settings
from streamsight.validation import RecordValidator
from tests.conftest import AI4I_CSV
from tests.integration.helpers import cli, cli_env, isolated_contract
from tests.integration.helpers import read_topic as _read_topic


@pytest.fixture
def stream(tmp_path, kafka_broker, monkeypatch):
    contracts_dir = isolated_contract(tmp_path, kafka_broker, partitions=3)
    env = cli_env(tmp_path, kafka_broker, contracts_dir)
    for key in ("STREAMSIGHT_CONTRACTS_DIR", "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS", "STREAMSIGHT_RUN_DIR"):
        monkeypatch.setenv(key, env[key])
    return load_settings(), load_contracts(contracts_dir)["machine_telemetry"]


def read_topic(servers: str, topic: str, partitions: int) -> list[confluent_kafka.Message]:
    messages = _read_topic(servers, topic)
    assert {m.partition() for m in messages} <= set(range(partitions))
    return messages


def _flag(m: confluent_kafka.Message) -> str | None:
    headers = dict(m.headers() or [])
    code = headers.get(REJECTION_HEADERS["code"])
    return code.decode() if code is not None else None


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_synthetic_batches_reach_the_raw_topic_flagged_or_not(stream, kafka_broker, client):
    settings, contract = stream
    faults = sources.FaultSpec(malformed=0.02, schema=0.03, duplicates=0.05, late=0.02)
    summary = produce(settings, contract, sources.synthetic_source(contract, machines=300, faults=faults),
                      count=12_000, client=client, progress=False)
    assert summary.ok and summary.failed == 0
    assert summary.records == summary.sent + summary.invalid == 12_000
    assert summary.invalid == summary.faults["malformed"] + summary.faults["schema"] > 0
    assert sum(summary.invalid_by_code.values()) == summary.invalid

    messages = read_topic(kafka_broker.bootstrap_servers, contract.raw_topic, 3)
    assert len(messages) == summary.delivered + summary.invalid_delivered == 12_000
    validator = RecordValidator(contract)
    ids, codes = [], {}
    for m in messages:
        flag = _flag(m)
        record, rejection = validator.check_bytes(m.value())
        assert (rejection.code if rejection else None) == flag  # a flag is the producer's verdict
        if flag is None:
            assert m.key() == record["machine_id"].encode()
            ids.append(record["event_id"])
        else:
            codes[flag] = codes.get(flag, 0) + 1
            assert dict(m.headers())[REJECTION_HEADERS["reason"]]
    assert len(ids) == summary.sent and len(ids) - len(set(ids)) == summary.faults["duplicate"]
    assert codes == summary.invalid_by_code and codes["MALFORMED_JSON"] == summary.faults["malformed"]
    # All readings of a machine on one partition.
    partitions: dict[bytes, set[int]] = {}
    for m in messages:
        if m.key() is not None:
            partitions.setdefault(m.key(), set()).add(m.partition())
    assert all(len(p) == 1 for p in partitions.values())


def test_unvalidated_batches_send_everything_unflagged(stream, kafka_broker):
    settings, contract = stream
    summary = produce(settings, contract, sources.synthetic_source(
        contract, machines=10, seed=4, faults=sources.FaultSpec(malformed=0.3, schema=0.3)),
        count=2_000, validate=False, progress=False)
    assert summary.ok and summary.sent == 2_000 and summary.invalid == 0
    messages = read_topic(kafka_broker.bootstrap_servers, contract.raw_topic, 3)
    assert len(messages) == 2_000 and not any(_flag(m) for m in messages)
    validator = RecordValidator(contract)
    broken = sum(validator.check_bytes(m.value())[1] is not None for m in messages)
    assert broken == summary.faults["malformed"] + summary.faults["schema"] > 0


def test_row_sources_go_through_the_validator(stream, kafka_broker, tmp_path):
    settings, contract = stream
    summary = produce(settings, contract, sources.ai4i_source(AI4I_CSV, limit=2_500), progress=False)
    assert summary.ok and summary.sent == 2_500 and summary.invalid == 0
    good = {"event_id": "f-1", "machine_id": "M1", "event_time": "2026-01-01T00:00:00Z", "type": "L",
            "air_temperature_k": 300, "process_temperature_k": 310, "rotational_speed_rpm": 1500,
            "torque_nm": 40, "tool_wear_min": 5}
    lines = [json.dumps(good).encode(), b'{"event_id": "f-2", "broken": ', b"",
             json.dumps({**good, "event_id": "f-3", "type": "Q"}).encode(), b"\xff\xfe not text",
             json.dumps({**good, "event_id": "f-4", "machine_id": "\ud800"}).encode(), b"   "]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary = produce(settings, contract, sources.file_source(contract, path), progress=False)
    assert (summary.records, summary.blank, summary.sent, summary.invalid) == (5, 2, 1, 4)
    assert summary.invalid_by_code == {"MALFORMED_JSON": 2, "NOT_IN_ENUM": 1, "NOT_UTF8": 1}
    messages = read_topic(kafka_broker.bootstrap_servers, contract.raw_topic, 3)
    assert len(messages) == 2_505
    by_value = {m.value(): _flag(m) for m in messages if m.value() in lines}
    assert by_value == {lines[0]: None, lines[1]: "MALFORMED_JSON", lines[3]: "NOT_IN_ENUM",
                        lines[4]: "NOT_UTF8", lines[5]: "MALFORMED_JSON"}  # sent as read, byte for byte


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
    start = datetime(2024, 5, 1, 6, tzinfo=UTC)
    assert len(times) == 500
    assert min(times) == start and max(times) == start + timedelta(seconds=4)  # 5 rounds of 100

    before = datetime.now(UTC).replace(microsecond=0)
    cli(env, *base, "--seed", "8", "--realtime")
    after = datetime.now(UTC)
    live = [t for t in _event_times(kafka_broker.bootstrap_servers, topic) if t.year != 2024]
    assert len(live) == 500 and all(before <= t <= after for t in live)

    refused = cli(env, *base, "--start", "2024-05-01T06:00:00", "--realtime", check=False)
    assert refused.returncode != 0 and "--realtime" in refused.stderr
