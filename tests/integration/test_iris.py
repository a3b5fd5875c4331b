"""The shipped ``iris`` stream: Fisher's measurements through a real Apache Kafka into the lake, a
multiclass model trained on a time split and compared with its majority-class baseline, new flowers
scored by the stream job (each prediction names its class, stored in the lake and in the
predictions store -- moto's server, a stand-in for DynamoDB), the same model over real HTTP, and
behind an endpoint (the serving process) that the stream sends the next flowers to."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from ingestion import sources
from ingestion.producer import produce
from streamsight.contracts import load_contracts
from tests.conftest import DATA_DIR
from tests.integration.api_server import start_server, stop_server
from tests.integration.helpers import cli, cli_env, isolated_contract, model_endpoint

pytestmark = pytest.mark.integration

IRIS = DATA_DIR / "iris" / "iris.csv"


def read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [{**r, "predictions": int(r["predictions"])} for r in csv.DictReader(f)]
CLASSES = ["setosa", "versicolor", "virginica"]
FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]


def test_iris_trains_a_multiclass_model_that_the_stream_and_the_api_score(spark, kafka_broker, tmp_path, monkeypatch):
    from ml.cli import models_command
    from ml.online import RegistryFiles
    from ml.train import train_model
    from streaming_jobs.pipeline import StreamJob
    from streamsight.lake import models_uri, read_table, table_uri
    from streamsight.settings import load_settings
    from tests.moto_server import start_moto, stop, use_test_credentials

    use_test_credentials(monkeypatch)
    moto, endpoint = start_moto(tmp_path / "moto.log")
    server = None
    try:
        contracts_dir = isolated_contract(tmp_path, kafka_broker, base="iris")
        store_env = {"STREAMSIGHT_PREDICTIONS_STORE__KIND": "dynamodb", "STREAMSIGHT_PREDICTIONS_STORE__TABLE": "preds",
                     "STREAMSIGHT_AWS__ENDPOINT_URL": endpoint}
        env = {**cli_env(tmp_path, kafka_broker, contracts_dir), **store_env}
        for name in ("STREAMSIGHT_LAKE_DIR", "STREAMSIGHT_RUN_DIR", "STREAMSIGHT_REPORTS_DIR", "STREAMSIGHT_CONTRACTS_DIR",
                     "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS", *store_env):
            monkeypatch.setenv(name, env[name])
        assert json.loads(cli(env, "predictions-store").stdout)["table"] == "preds"
        settings = load_settings()
        contract = load_contracts(contracts_dir)["iris"]

        # 150 flowers, and one naming a species the contract does not know: the dead letter's.
        flowers = [e.payload for e in sources.iris_source(IRIS)]
        rose = {**flowers[0], "specimen_id": "iris-rose", "species": "rose"}
        sent = produce(settings, contract, (sources.Event(payload=f) for f in [*flowers, rose]), progress=False)
        assert (sent.sent, sent.invalid) == (150, 1)
        job = StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers)
        job.run_until_idle()

        def table(name: str) -> Any:
            return read_table(spark, table_uri(settings.lake_uri, contract, name))

        assert table("silver").count() == 150
        assert [r["error_code"] for r in table("dead_letter").collect()] == ["NOT_IN_ENUM"]

        # Trained on the first 70 % by time; every species is in each slice (the source's shuffled order).
        # (XGBoost, the other default candidate, is test_portable's.)
        meta = train_model(spark, settings, contract, train_fraction=0.7, promote=True,
                           algorithms=("logistic_regression",))
        assert meta["task"] == "multiclass" and meta["classes"] == CLASSES and meta["threshold"] is None
        assert all(n > 0 for n in meta["training_data"]["class_rows_test"].values())
        m, base = meta["metrics"], meta["baseline_metrics"]
        assert m["rows"] == 45 and sum(map(sum, m["confusion_matrix"])) == 45
        assert m["f1_macro"] > 0.85 and m["accuracy"] > 0.85 and m["log_loss"] < base["log_loss"]
        assert m["f1_macro"] > 2 * base["f1_macro"] and base["class"] in CLASSES
        assert meta["aliases"] == ["production"]
        listed = models_command(settings, "iris_species", as_json=True, session_factory=lambda *_: spark)
        assert [(r["task"], r["f1_macro"], r["baseline_f1_macro"]) for r in listed] == [
            ("multiclass", m["f1_macro"], base["f1_macro"])]

        # Flowers measured later, without a species: the stream job scores them with that version.
        live = [{**{k: v for k, v in f.items() if k != "species"}, "specimen_id": f"live-{i:02d}",
                 "measured_at": f"2024-05-02T00:{i:02d}:00.000Z"} for i, f in enumerate(flowers[::5])]
        produce(settings, contract, (sources.Event(payload=f) for f in live), progress=False)
        job.run_until_idle()
        rows = {r["specimen_id"]: r for r in table("predictions").collect() if r["specimen_id"].startswith("live-")}
        assert sorted(rows) == sorted(f["specimen_id"] for f in live)
        served = RegistryFiles(models_uri(settings.lake_uri)).served("iris_species")
        expected = served.scorer.class_probabilities(live)
        for flower, p in zip(live, expected, strict=True):
            row = rows[flower["specimen_id"]]
            assert row["prediction"] == int(np.argmax(p)) and row["predicted_class"] == CLASSES[row["prediction"]]
            assert row["probability"] == pytest.approx(float(p.max()), rel=1e-9)
            assert (row["model_version"], row["scored_by"], row["species"]) == (1, "mllib", None)
        truth = [f["species"] for f in flowers[::5]]
        assert np.mean([rows[f["specimen_id"]]["predicted_class"] == s for f, s in zip(live, truth, strict=True)]) > 0.9

        # The report: the model card and metrics chart against the baseline, the predicted classes;
        # the binary model's charts are skipped, saying why.
        from analytics.report import build_report

        html = build_report(spark, settings, {"iris": contract}).read_text(encoding="utf-8")
        assert f"<th>macro F1</th><td>{m['f1_macro']:.4f} (baseline {base['f1_macro']:.4f})</td>" in html
        for chart in ("predicted_classes", "model_metrics"):
            assert (settings.reports_dir / "iris" / f"{chart}.png").stat().st_size > 15_000, chart
        charted = {r["predicted_class"]: r["predictions"] for r in read_csv(settings.reports_dir / "iris" /
                                                                            "predicted_classes.csv")
                   if r["actual"] == "(unlabelled)"}
        assert charted == dict(Counter(r["predicted_class"] for r in rows.values()))
        assert html.count("not a binary one") == 2  # probability_distribution and top_risk

        dynamo = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        items = {i["event_id"]["S"]: i for page in dynamo.get_paginator("scan").paginate(TableName="preds")
                 for i in page["Items"]}
        assert {k: items[k]["predicted_class"]["S"] for k in rows} == {k: r["predicted_class"] for k, r in rows.items()}

        # Over HTTP: the example vector, a record by name, a bad one; the stored predictions.
        server = start_server(tmp_path, kafka_broker.bootstrap_servers, contracts_dir, extra_env=store_env)
        info = server.get("/v1/models/iris_species", key="scorer").json()
        assert (info["task"], info["classes"], info["features"], info.get("threshold")) == (
            "multiclass", CLASSES, FEATURES, None)
        answer = server.post("/v1/models/iris_species/predict", {"data": [6.7, 3.3, 5.7, 2.5]}, key="scorer")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["label"] == "virginica" and "threshold" not in body and body["classes"] == CLASSES
        assert list(body["probabilities"]) == CLASSES and sum(body["probabilities"].values()) == pytest.approx(1.0)
        assert body["probability"] == max(body["probabilities"].values())
        many = server.post("/v1/models/iris_species/predict", [dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2], strict=True)),
                                                               {f: flowers[0][f] for f in FEATURES}], key="scorer")
        assert [p["label"] for p in many.json()["predictions"]] == ["setosa", flowers[0]["species"]]
        bad = server.post("/v1/models/iris_species/predict", {**dict(zip(FEATURES, [5.1, 3.5, 1.4, 0.2],
                                                                          strict=True)), "petal_width_cm": -1},
                          key="scorer")
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "petal_width_cm"
        stored = server.get("/v1/predictions?stream=iris&key=live-03", key="reader").json()["predictions"]
        assert [(p["predicted_class"], p["prediction"]) for p in stored] == [
            (rows["live-03"]["predicted_class"], rows["live-03"]["prediction"])]

        # The version behind an endpoint (the serving process, a stand-in for SageMaker): the stream
        # sends it the next flowers and keeps each one's most probable class from its answer.
        with model_endpoint(env, "--model", "iris_species") as url:
            assert json.loads(cli(env, "backend", "--model", "iris_species", "--use", "sagemaker").stdout)[
                "endpoint"] == "iris-species"
            monkeypatch.setenv("STREAMSIGHT_SAGEMAKER__RUNTIME_URL", url)
            remote = load_settings()
            sent = [{**f, "specimen_id": f"sent-{i:02d}", "measured_at": f"2024-05-03T00:{i:02d}:00.000Z"}
                    for i, f in enumerate(live[:8])]
            produce(remote, contract, (sources.Event(payload=f) for f in sent), progress=False)
            StreamJob(spark, remote, contract, kafka_broker.bootstrap_servers).run_until_idle()
        answered = {r["specimen_id"]: r for r in table("predictions").collect() if r["specimen_id"].startswith("sent-")}
        assert {r["scored_by"] for r in answered.values()} == {"sagemaker:iris-species"}
        for flower, p in zip(sent, served.scorer.class_probabilities(sent), strict=True):
            row = answered[flower["specimen_id"]]
            assert (row["prediction"], row["predicted_class"]) == (int(np.argmax(p)), CLASSES[int(np.argmax(p))])
            assert row["probability"] == pytest.approx(float(p.max()), rel=1e-9)
    finally:
        if server is not None:
            stop_server(server)
        stop(moto)
