"""Models routed by a record's field (``model.route_by``): the stream job scores each record with
the production version of the model it names, on a real Apache Kafka."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from ingestion import sources
from ingestion.producer import produce
from streamsight.contracts import REJECTION_HEADERS, load_contracts
from tests.conftest import AI4I_CSV, ai4i_silver
from tests.integration.helpers import CONTRACTS, isolated_contract, read_topic, wait_for

pytestmark = pytest.mark.integration


def _events(skip: int, limit: int, model: str | None) -> list[sources.Event]:
    out = []
    for e in sources.ai4i_source(AI4I_CSV, skip=skip, limit=limit):
        out.append(sources.Event(payload={**e.payload, **({"model_name": model} if model is not None else {})}))
    return out


def test_a_model_trained_and_promoted_under_a_new_name_is_used_while_the_stream_runs(
        spark, kafka_broker, trained_model, tmp_path, monkeypatch):
    from ml.cli import promote_command
    from ml.scoring import UNKNOWN_MODEL
    from ml.train import routed_contract, train_model
    from streaming_jobs.pipeline import StreamJob
    from streamsight.lake import read_table, table_uri
    from streamsight.settings import load_settings

    shipped = yaml.safe_load((CONTRACTS / "machine_telemetry.yaml").read_text(encoding="utf-8"))
    schema = shipped["schema"]
    schema["properties"]["model_name"] = {"type": "string", "minLength": 1, "maxLength": 128}
    contracts_dir = isolated_contract(tmp_path, kafka_broker, schema=schema,
                                      model={**shipped["model"], "route_by": "model_name"})
    monkeypatch.setenv("STREAMSIGHT_LAKE_DIR", str(tmp_path / "lake"))
    monkeypatch.setenv("STREAMSIGHT_CONTRACTS_DIR", str(contracts_dir))
    monkeypatch.setenv("STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS", kafka_broker.bootstrap_servers)
    settings = load_settings()
    contract = load_contracts(contracts_dir)["machine_telemetry"]
    trained_model.install(spark, settings.lake_uri)  # machine_failure v1, the contract's own model

    # Without the field, or naming the contract's model: machine_failure. Naming a model nobody
    # trained, or no model name at all: the dead letter, with the reason.
    plain, named, pumps, odd = _events(0, 30, None), _events(30, 5, "machine_failure"), _events(35, 20, "pump_x"), \
        _events(55, 3, "../etc")
    assert produce(settings, contract, iter(plain + named + pumps + odd), progress=False).ok

    def table(name: str) -> Any:
        return read_table(spark, table_uri(settings.lake_uri, contract, name))

    job = StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers)
    queries = job.start_queries()
    try:
        def scored(count: int) -> list[Any] | None:
            StreamJob.check(queries)
            rows = table("predictions").collect()
            return rows if len(rows) >= count else None

        rows = wait_for(lambda: scored(35), timeout=180, what="the first 35 predictions")
        assert sorted(r["event_id"] for r in rows) == sorted(e.payload["event_id"] for e in plain + named)
        assert {(r["model_name"], r["model_version"]) for r in rows} == {("machine_failure", 1)}
        dead = wait_for(lambda: table("dead_letter").where(f"error_code = '{UNKNOWN_MODEL}'").collect(),
                        timeout=60, what="the unknown models' dead letters")
        assert sorted(json.loads(r["raw_value"])["event_id"] for r in dead) == sorted(
            e.payload["event_id"] for e in pumps + odd)  # the record itself, as JSON
        by_reason = {r["reason"] for r in dead}
        assert by_reason == {"model.route_by names model pump_x, which has no production version",
                             "model.route_by names model ../etc, which is not a model name"}
        assert len(dead) == len(pumps) + len(odd)
        topic = [dict(m.headers() or []) for m in read_topic(kafka_broker.bootstrap_servers, contract.dead_letter_topic)]
        assert sorted(h[REJECTION_HEADERS["code"]] for h in topic) == [UNKNOWN_MODEL.encode()] * len(dead)
        assert table("silver").count() == 58  # every valid record is in silver, whatever it names

        # Train pump_x on this stream, as `streamsight train --model pump_x --stream ...` does, and
        # promote it with `streamsight promote`'s code; no code, configuration or restart.
        meta = train_model(spark, settings, routed_contract(settings, contract.name, "pump_x"),
                           silver=spark.createDataFrame(ai4i_silver(2000)), promote=False,
                           algorithms=("logistic_regression",), refit=False)
        assert (meta["model_name"], meta["version"], meta["aliases"]) == ("pump_x", 1, [])
        promote_command(settings, "pump_x", 1, session_factory=lambda _settings, _name: spark)
        later = _events(60, 20, "pump_x")
        assert produce(settings, contract, iter(later), progress=False).ok
        rows = wait_for(lambda: scored(55), timeout=180, what="predictions of the events naming pump_x")
        pump_rows = {r["event_id"]: r for r in rows if r["model_name"] == "pump_x"}
        assert sorted(pump_rows) == sorted(e.payload["event_id"] for e in later)
        assert {r["model_version"] for r in pump_rows.values()} == {1}
        assert len(rows) == 55  # the 20 sent before pump_x existed stay dead letters
    finally:
        for q in queries:
            q.stop()


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
