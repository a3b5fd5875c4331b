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

from ingestion import sources
from ingestion.producer import produce
from ml.portable import PortableModel
from ml.registry import ModelRegistry
from streamsight.contracts import load_contracts
from streamsight.lake import models_uri
from streamsight.settings import load_settings
from tests.conftest import AI4I_CSV
from tests.integration.helpers import ROOT, cli, cli_env, isolated_contract, read_topic, register_small_gbt, wait_for

pytestmark = pytest.mark.integration


def _first_per_event(servers: str, topic: str) -> dict[str, dict[str, Any]]:
    """The first message of the predictions topic per event id (a replay may send one again)."""
    first: dict[str, dict[str, Any]] = {}
    for m in sorted(read_topic(servers, topic), key=lambda m: m.timestamp()[1]):
        doc = json.loads(m.value())
        first.setdefault(doc["event_id"], {**doc, "_key": m.key()})
    return first


def test_the_online_path_scores_each_valid_record_and_follows_a_promotion(spark, kafka_broker, trained_model, tmp_path,
                                                                          monkeypatch):
    contracts_dir = isolated_contract(tmp_path, kafka_broker, create_predictions_topic=False)
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
