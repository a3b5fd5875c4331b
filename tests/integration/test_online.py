"""The hot path: `streamsight online` (Spark's Real-Time Mode, its own process) on a real Apache
Kafka, scoring into the predictions topic."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingestion import sources
from ingestion.producer import produce
from ml.portable import PortableModel
from ml.registry import ModelRegistry
from streamsight.contracts import load_contracts
from streamsight.lake import models_uri
from streamsight.settings import load_settings
from tests.conftest import AI4I_CSV
from tests.integration.helpers import CONTRACTS, ROOT, cli, cli_env, isolated_contract, read_topic, register_small_gbt, wait_for

pytestmark = pytest.mark.integration


def _first_per_event(servers: str, topic: str) -> dict[str, dict[str, Any]]:
    """The first message of the predictions topic per event id (a replay may send one again)."""
    first: dict[str, dict[str, Any]] = {}
    for m in sorted(read_topic(servers, topic), key=lambda m: m.timestamp()[1]):
        doc = json.loads(m.value())
        first.setdefault(doc["event_id"], {**doc, "_key": m.key()})
    return first


def test_the_online_path_scores_each_valid_record_follows_a_promotion_and_fills_the_lake_once(
        spark, kafka_broker, trained_model, tmp_path, monkeypatch):
    """The hot path scores into its topic; the stream job (``model.scoring: online``) fills the
    lake's predictions table and DynamoDB (moto's server, a stand-in) from that topic, once per
    event id whatever the topic repeats."""
    shipped = yaml.safe_load((CONTRACTS / "machine_telemetry.yaml").read_text(encoding="utf-8"))
    contracts_dir = isolated_contract(tmp_path, kafka_broker, create_predictions_topic=False,
                                      model={**shipped["model"], "scoring": "online"})
    env = {**cli_env(tmp_path, kafka_broker, contracts_dir), "STREAMSIGHT_LOG_LEVEL": "INFO",
           "STREAMSIGHT_ONLINE__CHECKPOINT_INTERVAL": "5 seconds", "STREAMSIGHT_ONLINE__MODEL_REFRESH_S": "1"}
    for key in ("STREAMSIGHT_LAKE_DIR", "STREAMSIGHT_CONTRACTS_DIR", "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS"):
        monkeypatch.setenv(key, env[key])
    settings = load_settings()
    contract = load_contracts(contracts_dir)["machine_telemetry"]
    servers, topic = kafka_broker.bootstrap_servers, contract.predictions_topic

    # It refuses to start, saying what to do, without its topic (a Kafka sink would wait for it
    # forever) and then without a model in production.
    refused = cli(env, "online", "--stream", "machine_telemetry", check=False, timeout=180)
    assert refused.returncode == 2 and f"['{topic}'] do not exist" in refused.stderr, refused.stderr
    kafka_broker.create_topic(topic, 2)
    refused = cli(env, "online", "--stream", "machine_telemetry", check=False, timeout=180)
    assert refused.returncode == 2 and "has no production version" in refused.stderr, refused.stderr
    trained_model.install(spark, settings.lake_uri)

    first = [e.payload for e in sources.ai4i_source(AI4I_CSV, limit=300)]
    assert produce(settings, contract, sources.ai4i_source(AI4I_CSV, limit=300), progress=False).ok
    # Records the stream rejects (not JSON, or against the schema): the dead letter's, never scored.
    assert produce(settings, contract, sources.synthetic_source(contract, machines=5, seed=3, faults=sources.FaultSpec(
        malformed=0.5, schema=0.5)), count=20, validate=False, progress=False).ok
    # A valid reading the contract's filter leaves out (a stopped spindle): not scored either.
    stopped = {**first[0], "event_id": "stopped-1", "rotational_speed_rpm": 0.0}
    assert produce(settings, contract, iter([sources.Event(payload=stopped)]), progress=False).ok

    log = tmp_path / "online.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamsight_cli", "online", "--stream", "machine_telemetry"],
                                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        def predictions(count: int) -> dict[str, dict[str, Any]] | None:
            found = _first_per_event(servers, topic)
            return found if len(found) >= count or proc.poll() is not None else None

        got = wait_for(lambda: predictions(300), timeout=240, what="predictions of the first 300 events")
        assert proc.poll() is None, log.read_text()[-3000:]
        # Exactly the valid records, each scored as MLlib's model scores it (its portable twin here).
        assert sorted(got) == sorted(e["event_id"] for e in first)
        v1 = PortableModel(json.loads(Path(f"{settings.lake_dir}/_models/machine_failure/v1/scorer.json").read_text()))
        expected = dict(zip([e["event_id"] for e in first], v1.probabilities(first)))
        threshold = ModelRegistry(spark, models_uri(settings.lake_uri)).metadata("machine_failure", 1)["threshold"]
        for event in first:
            p = got[event["event_id"]]
            assert p["_key"] == event["machine_id"].encode() and p["key"] == event["machine_id"]
            assert (p["stream"], p["model_name"], p["model_version"]) == ("machine_telemetry", "machine_failure", 1)
            assert p["probability"] == pytest.approx(expected[event["event_id"]], rel=1e-9, abs=1e-12)
            assert p["prediction"] == int(p["probability"] >= threshold)
            assert datetime.fromisoformat(p["event_time"]) == datetime.fromisoformat(event["event_time"])
            assert datetime.fromisoformat(p["produce_time"]) <= datetime.fromisoformat(p["scored_at"])

        # A promotion while it runs: the query restarts with v2, and the records after it carry v2.
        version = register_small_gbt(spark, settings.lake_uri, contract)
        ModelRegistry(spark, models_uri(settings.lake_uri)).set_alias("machine_failure", "production", version)
        wait_for(lambda: f"scoring with machine_failure v{version}" in log.read_text() or proc.poll() is not None,
                 timeout=120, what="the online job to restart with the promoted version")
        later = [e.payload for e in sources.ai4i_source(AI4I_CSV, skip=300, limit=100)]
        assert produce(settings, contract, sources.ai4i_source(AI4I_CSV, skip=300, limit=100), progress=False).ok
        got = wait_for(lambda: predictions(400), timeout=120, what="predictions of the 100 events after the promotion")
        assert proc.poll() is None, log.read_text()[-3000:]
        assert {got[e["event_id"]]["model_version"] for e in later} == {version}
        assert {got[e["event_id"]]["model_version"] for e in first} == {1}
        # Everything before the later events in their partitions has been read by now: still only
        # the valid, unfiltered records were scored.
        assert sorted(got) == sorted(e["event_id"] for e in first + later)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    assert code == 0, log.read_text()[-3000:]
    _fill_the_lake_from_the_topic(spark, kafka_broker, settings, contract, got, tmp_path, monkeypatch)


def _fill_the_lake_from_the_topic(spark: Any, kafka_broker: Any, settings: Any, contract: Any,
                                  first: dict[str, dict[str, Any]], tmp_path: Path, monkeypatch: Any) -> None:
    """``first``: the first message per event id. The topic gets again some of its messages as
    they were (a replay), one event's again with another version and score, and a message that is no
    prediction; then the stream job runs until idle."""
    import boto3
    import confluent_kafka

    from streaming_jobs.online import BAD_PREDICTION
    from streaming_jobs.pipeline import batch_stats, run
    from streamsight.lake import read_table, table_uri
    from streamsight.store import DynamoPredictions
    from tests.moto_server import start_moto, stop, use_test_credentials

    servers, topic = kafka_broker.bootstrap_servers, contract.predictions_topic
    producer = confluent_kafka.Producer({"bootstrap.servers": servers, "enable.idempotence": True})
    messages = sorted(read_topic(servers, topic), key=lambda m: m.timestamp()[1])
    for m in messages[:10] + messages[-10:]:
        producer.produce(topic, m.value(), key=m.key())
    newest = json.loads(messages[-1].value())
    producer.produce(topic, json.dumps({**newest, "model_version": 99, "probability": 0.5}), key=messages[-1].key())
    producer.produce(topic, b"not a prediction", key=b"x")
    assert producer.flush(30) == 0

    use_test_credentials(monkeypatch)
    moto, endpoint = start_moto(tmp_path / "moto.log")
    try:
        for name, value in {"STREAMSIGHT_PREDICTIONS_STORE__KIND": "dynamodb",
                            "STREAMSIGHT_PREDICTIONS_STORE__TABLE": "preds",
                            "STREAMSIGHT_AWS__ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(name, value)
        settings = load_settings()
        DynamoPredictions.from_settings(settings).ensure_table()
        totals = run(spark, settings, contract.name, until_idle=True)
        assert totals is not None and totals["input_rows"]["predictions"] == len(messages) + 22

        lake = read_table(spark, table_uri(settings.lake_uri, contract, "predictions")).collect()
        assert sorted(r["event_id"] for r in lake) == sorted(first)  # each event once
        dynamo = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        items = [i for page in dynamo.get_paginator("scan").paginate(TableName="preds") for i in page["Items"]]
        assert sorted(i["event_id"]["S"] for i in items) == sorted(first)
        stored = {i["event_id"]["S"]: i for i in items}
        silver = {r["event_id"]: r for r in read_table(spark, table_uri(settings.lake_uri, contract, "silver")).collect()}
        for row in lake:  # the first message's score and version, the record's own fields
            sent = first[row["event_id"]]
            assert (row["model_version"], row["probability"], row["prediction"]) == (
                sent["model_version"], sent["probability"], sent["prediction"])
            assert int(stored[row["event_id"]]["model_version"]["N"]) == sent["model_version"]
            assert row["machine_id"] == sent["key"] == silver[row["event_id"]]["machine_id"]
            for col in ("event_time", "event_date", "torque_nm", "tool_wear_min", "type", "machine_failure"):
                assert row[col] == silver[row["event_id"]][col], col
        assert {r["_kafka_timestamp"] for r in lake} and all(r["scored_at"] >= r["_kafka_timestamp"] for r in lake)
        # silver did not score (the hot path did); the message that is no prediction is a dead letter.
        assert sum(r["predictions"] for r in batch_stats(spark, settings, contract).collect()) == 0
        dead = read_table(spark, table_uri(settings.lake_uri, contract, "dead_letter")).where(
            f"error_code = '{BAD_PREDICTION}'").collect()
        assert [(r["raw_value"], r["source"], r["topic"]) for r in dead] == [(b"not a prediction", topic, topic)]

        # Re-sent after that run: the next run's batch meets them in the query's state (or behind
        # its watermark) and adds nothing.
        for m in messages[-5:]:
            producer.produce(topic, m.value(), key=m.key())
        assert producer.flush(30) == 0
        again = run(spark, settings, contract.name, until_idle=True)
        assert again is not None and again["input_rows"]["predictions"] == 5
        assert read_table(spark, table_uri(settings.lake_uri, contract, "predictions")).count() == len(first)
        pages = dynamo.get_paginator("scan").paginate(TableName="preds")
        assert sum(len(page["Items"]) for page in pages) == len(first)
    finally:
        stop(moto)


def test_the_online_path_needs_a_slot_per_partition_plus_one(spark, kafka_broker, tmp_path, caplog):
    """Real-Time Mode holds a task per raw partition for a whole batch: with too few slots it would
    never finish one. A local master refuses to start (the test session has two slots; the topic
    has two partitions); on a cluster, whose executors may still be registering, it warns."""
    import logging

    from streaming_jobs.online import OnlineJob
    from streamsight.errors import ConfigError

    contract = load_contracts(isolated_contract(tmp_path, kafka_broker))["machine_telemetry"]
    job = OnlineJob(spark, load_settings(lake_dir=str(tmp_path / "lake")), contract)
    with pytest.raises(ConfigError, match=r"\(2\) plus one; this application has 2"):
        job.check_slots(2, local=True)
    with caplog.at_level(logging.WARNING, logger="streaming_jobs.online"):
        job.check_slots(2, local=False)
    assert any("plus one; this application has 2" in r.getMessage() for r in caplog.records)
    job.check_slots(1, local=True)  # one partition: two slots are enough
