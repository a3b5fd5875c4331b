"""Models routed by a record's field (``model.route_by``): the stream job scores each record with
the production version of the model it names, on a real Apache Kafka; the shipped
``sensor_sequences`` stream, posted through ``streamsight serve``."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd
import pytest
import yaml

from ingestion import sources
from ingestion.columnar import rows_as_dicts
from streamsight.contracts import REJECTION_HEADERS, load_contract, load_contracts
from tests.integration.api_server import start_server, stop_server
from tests.integration.helpers import CONTRACTS, isolated_contract, read_topic, use_stream_env, wait_for

pytestmark = pytest.mark.integration


SENSORS = 40
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _sequences(seed: int, count: int) -> list[dict[str, Any]]:
    """``count`` records of the shipped sensor_sequences contract from the synthetic generator."""
    contract = load_contract(CONTRACTS / "sensor_sequences.yaml")
    batch = next(sources.synthetic_source(contract, machines=SENSORS, seed=seed, start=START))
    return rows_as_dicts(batch.table.slice(0, count))


def _as_silver(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["event_date"] = frame["ts"].dt.date
    return frame


def test_sensor_sequences_posted_over_http_are_scored_by_the_model_each_names(
        spark, kafka_broker, tmp_path, monkeypatch):
    """The shipped sensor_sequences stream: pump_vibration scores the pumps; fan_vibration is trained
    on the fan sequences the stream already holds, promoted while it runs, then scores the fans and
    answers the API's vector form as the lake says."""
    from ml.cli import promote_command
    from ml.scoring import UNKNOWN_MODEL
    from ml.train import routed_contract, train_model
    from streaming_jobs.pipeline import StreamJob
    from streamsight.lake import read_table, table_uri
    from streamsight.settings import load_settings

    contracts_dir = isolated_contract(tmp_path, kafka_broker, base="sensor_sequences")
    use_stream_env(monkeypatch, tmp_path, kafka_broker, contracts_dir)
    settings = load_settings()
    contract = load_contracts(contracts_dir)["sensor_sequences"]

    # pump_vibration, the contract's own model, trained on the rows that name it (or none).
    history = _sequences(1, 3000)
    meta = train_model(spark, settings, contract, silver=spark.createDataFrame(_as_silver(history)), promote=True,
                       algorithms=("logistic_regression",), refit=False)
    assert meta["training_data"]["rows_total"] == sum(r["model"] == "pump_vibration" for r in history) < len(history)
    assert meta["metrics"]["auc_pr"] > 2 * meta["baseline_metrics"]["auc_pr"]

    records = _sequences(2, 2200)
    first, later = records[:2000], records[2000:]
    for r in first[:10]:
        del r["model"]  # no model named: the contract's own
    for r in first[10:13]:
        r["model"] = "../etc"
    fans = [r for r in first if r.get("model") == "fan_vibration"]
    server = start_server(tmp_path, kafka_broker.bootstrap_servers, contracts_dir)
    job = StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers)
    queries = job.start_queries()
    try:
        def post(batch: list[dict[str, Any]]) -> None:
            for i in range(0, len(batch), 100):
                answer = server.post(f"/v1/streams/{contract.name}/events", batch[i:i + 100])
                assert answer.status_code == 202, answer.text

        def table(name: str) -> Any:
            return read_table(spark, table_uri(settings.lake_uri, contract, name))

        def scored(count: int) -> list[Any] | None:
            StreamJob.check(queries)
            rows = table("predictions").collect()
            return rows if len(rows) >= count else None

        post(first)
        pumps = [r for r in first if r.get("model", "pump_vibration") == "pump_vibration"]
        rows = wait_for(lambda: scored(len(pumps)), timeout=180, what="the pumps' predictions")
        assert sorted(r["sequence_id"] for r in rows) == sorted(r["sequence_id"] for r in pumps)
        assert {(r["model_name"], r["model_version"]) for r in rows} == {("pump_vibration", 1)}
        dead = wait_for(lambda: table("dead_letter").where(f"error_code = '{UNKNOWN_MODEL}'").collect(),
                        timeout=60, what="the unknown models' dead letters")
        assert sorted(json.loads(r["raw_value"])["sequence_id"] for r in dead) == sorted(
            r["sequence_id"] for r in first[10:13] + fans)  # the record itself, as JSON
        assert {r["reason"] for r in dead} == {
            "model.route_by names model fan_vibration, which has no production version",
            "model.route_by names model ../etc, which is not a model name"}
        topic = [dict(m.headers() or []) for m in read_topic(kafka_broker.bootstrap_servers, contract.dead_letter_topic)]
        assert sorted(h[REJECTION_HEADERS["code"]] for h in topic) == [UNKNOWN_MODEL.encode()] * len(dead)
        assert table("silver").count() == len(first)  # every valid record is in silver, whatever it names

        # fan_vibration: trained on the stream's silver (the fans' sequences), as `streamsight train
        # --model fan_vibration --stream sensor_sequences` does; promoted with `streamsight promote`'s
        # code; no code, configuration or restart.
        meta = train_model(spark, settings, routed_contract(settings, contract.name, "fan_vibration"),
                           promote=False, algorithms=("logistic_regression",), refit=False,
                           fallback_model="pump_vibration")
        assert (meta["model_name"], meta["version"], meta["training_data"]["rows_total"]) == ("fan_vibration", 1, len(fans))
        assert meta["metrics"]["auc_pr"] > 2 * meta["baseline_metrics"]["auc_pr"]
        promote_command(settings, "fan_vibration", 1, session_factory=lambda _settings, _name: spark)
        post(later)
        later_fans = {r["sequence_id"]: r for r in later if r["model"] == "fan_vibration"}
        rows = wait_for(lambda: scored(len(pumps) + len(later)), timeout=180, what="the later sequences' predictions")
        by_id = {r["sequence_id"]: r for r in rows}
        assert {(by_id[i]["model_name"], by_id[i]["model_version"]) for i in later_fans} == {("fan_vibration", 1)}
        assert len(rows) == len(pumps) + len(later)  # the fans sent before fan_vibration existed stay dead letters

        # The API scores the vector form {"data": [[v1..v8], ...]} with the same version, as the lake did.
        picked = list(later_fans)[:5]
        answer = server.post("/v1/models/fan_vibration/predict", {"data": [
            [later_fans[i][f"v{k}"] for k in range(1, 9)] for i in picked]}, key="admin")
        assert answer.status_code == 200, answer.text
        assert (answer.json()["model"], answer.json()["version"]) == ("fan_vibration", 1)
        assert [p["probability"] for p in answer.json()["predictions"]] == pytest.approx(
            [by_id[i]["probability"] for i in picked], rel=1e-9, abs=1e-12)
    finally:
        for q in queries:
            q.stop()
        stop_server(server)


def test_training_a_model_under_another_name_needs_route_by(machine_contract, tmp_path):
    from ml.train import routed_contract
    from streamsight.errors import ConfigError
    from streamsight.settings import load_settings

    settings = load_settings(contracts_dir=str(CONTRACTS))
    assert routed_contract(settings, "machine_telemetry", "machine_failure").model == machine_contract.model
    with pytest.raises(ConfigError, match=r"--model pump_x needs model\.route_by"):
        routed_contract(settings, "machine_telemetry", "pump_x")
    doc = yaml.safe_load((CONTRACTS / "machine_telemetry.yaml").read_text(encoding="utf-8"))
    doc["schema"]["properties"]["model_name"] = {"type": "string"}
    doc["model"]["route_by"] = "model_name"
    doc["reference"]["path"] = str(CONTRACTS / doc["reference"]["path"])
    (tmp_path / "machine_telemetry.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    routed = routed_contract(load_settings(contracts_dir=str(tmp_path)), "machine_telemetry", "pump_x")
    assert routed.model is not None and (routed.model.name, routed.model.features) == ("pump_x",
                                                                                      machine_contract.model.features)
    other = {**doc, "name": "other", "topics": {}, "model": {**doc["model"], "name": "other_model", "route_by": None}}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other), encoding="utf-8")
    with pytest.raises(ConfigError, match="model 'other_model' is contract 'other''s own model"):
        routed_contract(load_settings(contracts_dir=str(tmp_path)), "machine_telemetry", "other_model")
