"""Training on AI4I 2020: time split, model vs. majority baseline, metadata, registry versions, CLI.

One local Spark session; the expensive default training (logistic regression and GBT candidates)
runs once per module, the second training uses the faster logistic regression only.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

import streamsight
from streamsight.contracts import get_contract
from streamsight.lake import models_uri, table_uri
from streamsight.settings import load_settings
from tests.conftest import ai4i_silver
from tests.integration.helpers import ROOT, model_endpoint

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def ml_spark(spark):
    return spark


@pytest.fixture(scope="module")
def env(ml_spark, tmp_path_factory):
    """A lake whose silver table holds the first 6,000 AI4I rows; the default training run on it."""
    from ml.train import train_model

    lake = tmp_path_factory.mktemp("ml_train") / "lake"
    settings = load_settings(lake_dir=str(lake))
    contract = get_contract(settings.contracts_dir, "machine_telemetry")
    frame = ai4i_silver(6000)
    silver_dir = Path(table_uri(settings.lake_uri, contract, "silver").removeprefix("file://"))
    rows = frame.assign(event_time=frame["event_time"].astype("datetime64[us, UTC]"))
    write_deltalake(str(silver_dir), pa.Table.from_pandas(rows, preserve_index=False))
    meta = train_model(ml_spark, settings, contract)  # silver=None: reads the lake table
    return {"settings": settings, "contract": contract, "frame": frame, "meta": meta}


@pytest.fixture(scope="module")
def second(ml_spark, env):
    """A second training run (logistic regression only) on the same rows, 25 labels nulled."""
    from pyspark.sql import functions as F

    from ml.train import train_model

    nulled = [f"ai4i-{udi}" for udi in range(101, 126)]
    silver = ml_spark.createDataFrame(env["frame"]).withColumn(
        "machine_failure",
        F.when(F.col("event_id").isin(nulled), F.lit(None)).otherwise(F.col("machine_failure")))
    return train_model(ml_spark, env["settings"], env["contract"], silver=silver,
                       algorithms=("logistic_regression",), refit=False,
                       params={"logistic_regression": {"maxIter": 10}})


def registry(spark, settings):
    from ml.registry import ModelRegistry

    return ModelRegistry(spark, models_uri(settings.lake_uri))


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---------------------------------------------------------------------------------------------


def test_model_beats_majority_baseline(env):
    meta = env["meta"]
    metrics, baseline = meta["metrics"], meta["baseline_metrics"]
    test_rows = env["frame"].sort_values(["event_time", "event_id"]).iloc[4800:]
    positive_rate = test_rows["machine_failure"].mean()

    assert baseline["auc_pr"] == pytest.approx(positive_rate)
    assert baseline["f1"] == 0.0 and baseline["tp"] == 0 and baseline["fn"] == test_rows["machine_failure"].sum()
    assert metrics["auc_pr"] > 3 * positive_rate, metrics
    assert metrics["auc_roc"] > 0.75, metrics
    assert metrics["f1"] > 0.0
    assert metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"] == len(test_rows)
    assert metrics["tp"] + metrics["fn"] == test_rows["machine_failure"].sum()
    assert metrics["precision"] == pytest.approx(metrics["tp"] / (metrics["tp"] + metrics["fp"]))
    assert metrics["recall"] == pytest.approx(metrics["tp"] / (metrics["tp"] + metrics["fn"]))
    assert 0.0 < meta["threshold"] < 1.0


def test_split_is_by_time(env):
    data = env["meta"]["training_data"]
    frame = env["frame"].sort_values(["event_time", "event_id"])
    assert data["split"] == "time"
    assert data["order_by"] == ["event_time", "event_id"]
    assert (data["rows_train"], data["rows_validation"], data["rows_test"]) == (3840, 960, 1200)
    # slices are consecutive in time and match the sorted rows exactly
    assert ts(data["train_max_event_time"]) < ts(data["validation_min_event_time"])
    assert ts(data["validation_max_event_time"]) < ts(data["test_min_event_time"])
    assert ts(data["train_max_event_time"]) < ts(data["test_min_event_time"])
    assert ts(data["test_min_event_time"]) == frame["event_time"].iloc[4800].to_pydatetime()
    assert ts(data["min_event_time"]) == frame["event_time"].iloc[0].to_pydatetime()
    assert ts(data["max_event_time"]) == frame["event_time"].iloc[-1].to_pydatetime()
    labels = frame["machine_failure"].to_numpy()
    assert data["positives_train"] == labels[:3840].sum()
    assert data["positives_validation"] == labels[3840:4800].sum()
    assert data["positives_test"] == labels[4800:].sum()
    assert data["rows_excluded_null_label"] == 0
    # threshold and model choice come from the validation slice; the final model is refit on
    # training + validation, never on test rows
    assert data["refit_on_train_and_validation"] is True and data["rows_model_fit"] == 4800


def test_metadata_has_every_field(ml_spark, env):
    meta = env["meta"]
    for key in ("model_name", "version", "created_at", "algorithm", "features", "label", "threshold",
                "metrics", "baseline_metrics", "training_data", "code_version", "spark_version"):
        assert key in meta, key
    assert meta["model_name"] == "machine_failure" and meta["version"] == 1
    assert meta["algorithm"] in ("logistic_regression", "gbt")
    assert set(meta["candidates"]) == {"logistic_regression", "gbt"}
    assert meta["label"] == "machine_failure"
    assert meta["features"] == env["contract"].model.features
    assert meta["categorical_features"] == env["contract"].model.categorical_features
    ts(meta["created_at"])
    for key in ("auc_pr", "auc_roc", "precision", "recall", "f1", "tp", "fp", "tn", "fn"):
        assert key in meta["metrics"] and key in meta["baseline_metrics"], key
    for key in ("min_event_time", "max_event_time", "rows_train", "rows_validation", "rows_test",
                "positives_train", "positives_validation", "positives_test"):
        assert key in meta["training_data"], key
    assert meta["code_version"]["package"] == streamsight.__version__
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", meta["code_version"]["git_commit"])
    assert meta["spark_version"] == ml_spark.version
    # what is stored is what was returned (+ live aliases) and is plain JSON
    stored = registry(ml_spark, env["settings"]).versions("machine_failure")[0]
    assert stored["metrics"] == meta["metrics"] and stored["threshold"] == meta["threshold"]
    json.dumps(stored, allow_nan=False)


def test_first_version_becomes_production(ml_spark, env):
    meta = env["meta"]
    assert meta["aliases"] == ["production"]
    assert meta["promotion"]["promoted"] and meta["promotion"]["previous_production"] is None
    model = registry(ml_spark, env["settings"]).load("machine_failure", 1)
    assert model.stages[-1].__class__.__name__ in ("LogisticRegressionModel", "GBTClassificationModel")


def test_second_training_adds_version_two(ml_spark, env, second):
    reg = registry(ml_spark, env["settings"])
    versions = reg.versions("machine_failure")
    assert [v["version"] for v in versions] == [1, 2]
    assert second["version"] == 2
    assert versions[0]["created_at"] == env["meta"]["created_at"]  # v1 untouched
    assert second["training_data"]["rows_excluded_null_label"] == 25
    assert sum(second["training_data"][f"rows_{s}"] for s in ("train", "validation", "test")) == 6000 - 25
    # promotion rule: the new version replaces production only with an AUC-PR at least as good
    better = second["metrics"]["auc_pr"] >= env["meta"]["metrics"]["auc_pr"]
    assert reg.get_alias("machine_failure", "production") == (2 if better else 1)
    assert second["promotion"]["promoted"] is better
    assert versions[1 if better else 0]["aliases"] == ["production"]


def test_cli_lists_and_promotes(ml_spark, env, second, capsys):
    from ml.cli import models_command, promote_command

    factory = lambda settings, app_name: ml_spark  # noqa: E731 - tests bring their own session
    rows = models_command(env["settings"], "machine_failure", as_json=True, session_factory=factory)
    printed = json.loads(capsys.readouterr().out)
    assert [r["version"] for r in printed] == [1, 2] == [r["version"] for r in rows]
    assert printed[0]["auc_pr"] == env["meta"]["metrics"]["auc_pr"]

    promote_command(env["settings"], "machine_failure", 2, session_factory=factory)
    assert "production -> v2" in capsys.readouterr().out
    models_command(env["settings"], None, as_json=False, session_factory=factory)
    table = capsys.readouterr().out
    assert re.search(r"machine_failure\s+v2\s+production", table), table
    promote_command(env["settings"], "machine_failure", 1, session_factory=factory)
    assert registry(ml_spark, env["settings"]).get_alias("machine_failure", "production") == 1

    from ml.cli import ModelNotFoundError

    with pytest.raises(ModelNotFoundError):
        promote_command(env["settings"], "machine_failure", 99, session_factory=factory)
    with pytest.raises(streamsight.ConfigError, match=r"unknown model 'nope': no contract declares it"):
        promote_command(env["settings"], "nope", 1, session_factory=factory)
    with pytest.raises(streamsight.ConfigError, match="unknown model 'nope'"):
        models_command(env["settings"], "nope", session_factory=factory)


def test_clear_errors_for_unusable_data(ml_spark, env):
    from ml.train import TrainingError, train_model

    frame = env["frame"]
    settings, contract = env["settings"], env["contract"]
    few = ml_spark.createDataFrame(frame.iloc[:50])
    with pytest.raises(TrainingError, match="too few"):
        train_model(ml_spark, settings, contract, silver=few)
    no_positives = frame.iloc[:600].assign(machine_failure=0)
    no_positives.loc[no_positives.index[-5:], "machine_failure"] = 1  # positives only in the test part
    with pytest.raises(TrainingError, match="no positive"):
        train_model(ml_spark, settings, contract, silver=ml_spark.createDataFrame(no_positives))
    with pytest.raises(TrainingError, match="lacks column"):
        train_model(ml_spark, settings, contract, silver=ml_spark.createDataFrame(frame.iloc[:200].drop(columns=["torque_nm"])))
    assert [v["version"] for v in registry(ml_spark, settings).versions("machine_failure")] == [1, 2]


def test_xgboost_trains_with_its_spark_estimator_and_keeps_the_booster_for_sagemakers_container(ml_spark, env,
                                                                                                 tmp_path):
    """`streamsight train --algorithm xgboost`: XGBoost's Spark estimator in the pipeline; the version
    holds the booster as SageMaker's built-in XGBoost container loads it (model.tar.gz holding
    xgboost-model), which scores the assembled vector as the pipeline does; the portable copy too."""
    import io
    import tarfile

    import numpy as np
    import xgboost
    from pyspark.ml.functions import vector_to_array

    from ml.portable import PortableModel
    from ml.registry import ModelRegistry
    from ml.train import FEATURES, PROBABILITY, XGBOOST_ARCHIVE, train_model
    from streamsight.lake import with_derived

    settings = load_settings(lake_dir=str(tmp_path / "lake"))
    contract = env["contract"]
    silver = ml_spark.createDataFrame(env["frame"])
    meta = train_model(ml_spark, settings, contract, silver=silver, algorithms=("xgboost",), refit=False)
    assert meta["algorithm"] == "xgboost" and meta["algorithm_params"]["n_estimators"] == 100
    assert meta["metrics"]["auc_pr"] > 10 * meta["baseline_metrics"]["auc_pr"]
    builtin = meta["sagemaker_builtin_xgboost"]
    assert builtin["archive"] == XGBOOST_ARCHIVE and builtin["content_type"] == "text/csv"

    version = tmp_path / "lake" / "_models" / "machine_failure" / "v1"
    with tarfile.open(fileobj=io.BytesIO((version / XGBOOST_ARCHIVE).read_bytes())) as tar:
        assert tar.getnames() == ["xgboost-model"]
        booster = xgboost.Booster()
        booster.load_model(bytearray(tar.extractfile("xgboost-model").read()))  # type: ignore[union-attr]

    model = ModelRegistry(ml_spark, models_uri(settings.lake_uri)).load("machine_failure", 1)
    assert list(model.stages[-2].getInputCols()) == builtin["vector"]
    rows = with_derived(silver.limit(400), contract)
    scored = model.transform(rows).select(vector_to_array(FEATURES).alias("x"), vector_to_array(PROBABILITY)[1].alias("p"),
                                          *contract.model_reads()).collect()
    expected = np.array([r["p"] for r in scored])
    assert np.ptp(expected) > 0.5
    np.testing.assert_allclose(booster.inplace_predict(np.array([r["x"] for r in scored])), expected, rtol=1e-6)
    local = PortableModel(json.loads((version / "scorer.json").read_text()))
    records = [{c: r[c] for c in contract.model_reads()} for r in scored]
    np.testing.assert_allclose(local.probabilities(records), expected, rtol=1e-6)
    np.testing.assert_allclose(local.vectors(records), [r["x"] for r in scored], rtol=1e-12)

    # SageMaker's built-in XGBoost container -- here its stand-in, `deploy --container builtin-xgboost`,
    # a real process -- scores the stream's rows, sent as CSV rows of that vector through boto3's
    # sagemaker-runtime, as the registry's backend.json says
    from pyspark.sql import functions as F

    from ml.endpoint import SAGEMAKER, backend_doc
    from ml.online import RegistryFiles
    from ml.scoring import ProductionScorer

    with model_endpoint(_env(tmp_path), "--model", "machine_failure", "--container", "builtin-xgboost",
                        "--endpoint", "builtin") as url:
        RegistryFiles.of(settings).set_backend("machine_failure", backend_doc(SAGEMAKER, "builtin", 1, "vector"))
        remote = load_settings(lake_dir=str(tmp_path / "lake"), sagemaker={"runtime_url": url})
        later = (with_derived(silver.orderBy("event_time").offset(5600), contract)
                 .withColumn("_kafka_timestamp", F.col("event_time")).withColumn("_batch_id", F.lit(1)))
        out = ProductionScorer(ml_spark, remote, contract).score(later)
        assert out is not None
        got = {r["event_id"]: (r["probability"], r["scored_by"]) for r in out.collect()}
        mllib = {r["event_id"]: r["p"] for r in model.transform(later).select(
            "event_id", vector_to_array(PROBABILITY)[1].alias("p")).collect()}
        assert len(got) == 400 and {by for _, by in got.values()} == {"sagemaker:builtin"}
        np.testing.assert_allclose([got[k][0] for k in sorted(mllib)], [mllib[k] for k in sorted(mllib)], rtol=1e-6)


def test_a_multiclass_model_refuses_a_binary_only_algorithm(tmp_path):
    from ml.train import TrainingError, train_model

    settings = load_settings(lake_dir=str(tmp_path / "lake"))
    iris = get_contract(settings.contracts_dir, "iris")
    with pytest.raises(TrainingError, match="gbt cannot train a multiclass model; a multiclass model can use "
                                            "logistic_regression, xgboost"):
        train_model(None, settings, iris, algorithms=("gbt",))  # type: ignore[arg-type]  # refused before Spark


def _env(tmp_path: Path) -> dict[str, str]:
    """A CLI process's environment: this test's lake."""
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT), "STREAMSIGHT_LAKE_DIR": str(tmp_path / "lake")}


def _torque_contract(tmp_path: Path) -> object:
    """machine_telemetry with a regression model: the torque from the speed, temperatures and type
    (AI4I's drive runs at about constant power, so torque falls as speed rises)."""
    import yaml

    from streamsight.contracts import load_contract
    from tests.integration.helpers import CONTRACTS

    doc = yaml.safe_load((CONTRACTS / "machine_telemetry.yaml").read_text(encoding="utf-8"))
    doc["reference"]["path"] = str((CONTRACTS / doc["reference"]["path"]).resolve())
    doc["model"] = {"name": "torque_estimate", "task": "regression", "label": "torque_nm",
                    "features": ["rotational_speed_rpm", "air_temperature_k", "process_temperature_k", "type"],
                    "categorical_features": ["type"]}
    path = tmp_path / "machine_telemetry.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_contract(path)


def test_a_regression_model_predicts_the_label_value_against_a_training_mean_baseline(ml_spark, env, tmp_path,
                                                                                       capsys):
    """A numeric label: linear and GBT regression ranked by validation RMSE; the test RMSE, MAE and R²
    against the training mean; promotion only when the RMSE is not worse; the stream's scorer and the
    portable copy give the same values; `streamsight models` shows them."""
    import numpy as np
    from pyspark.sql import functions as F

    from ml.cli import models_command
    from ml.online import ServedModel
    from ml.registry import ModelRegistry
    from ml.scoring import ProductionScorer
    from ml.train import train_model

    settings = load_settings(lake_dir=str(tmp_path / "lake"), reports_dir=tmp_path / "reports")
    contract = _torque_contract(tmp_path)
    frame = env["frame"]
    silver = ml_spark.createDataFrame(frame)
    meta = train_model(ml_spark, settings, contract, silver=silver)
    metrics, baseline = meta["metrics"], meta["baseline_metrics"]

    assert meta["task"] == "regression" and meta["primary_metric"] == "rmse" and meta["threshold"] is None
    assert set(meta["candidates"]) == {"linear_regression", "xgboost"}
    chosen = min(meta["candidates"], key=lambda a: meta["candidates"][a]["validation_rmse"])
    assert meta["algorithm"] == chosen
    ordered = frame.sort_values(["event_time", "event_id"])
    trained, tested = ordered["torque_nm"].iloc[:4800], ordered["torque_nm"].iloc[4800:]
    assert baseline["name"] == "training_mean" and baseline["value"] == pytest.approx(trained.mean())
    assert baseline["rmse"] == pytest.approx(float(np.sqrt(((tested - trained.mean()) ** 2).mean())))
    assert metrics["rows"] == baseline["rows"] == len(tested)
    assert metrics["mean_label"] == pytest.approx(tested.mean())
    assert metrics["rmse"] < 0.6 * baseline["rmse"] and metrics["mae"] < 0.6 * baseline["mae"], (metrics, baseline)
    assert metrics["r2"] > 0.6 and baseline["r2"] <= 0.0
    assert meta["training_data"]["label_mean_test"] == pytest.approx(tested.mean())
    assert meta["promotion"]["promoted"] and meta["aliases"] == ["production"]

    # a heavily regularised line: a higher RMSE, so production stays
    worse = train_model(ml_spark, settings, contract, silver=silver, algorithms=("linear_regression",),
                        params={"linear_regression": {"regParam": 100.0}})
    assert worse["metrics"]["rmse"] > metrics["rmse"]
    assert not worse["promotion"]["promoted"]
    assert re.fullmatch(r"test rmse [\d.]+ > production v1's [\d.]+", worse["promotion"]["reason"])

    registry = ModelRegistry(ml_spark, models_uri(settings.lake_uri))
    scorer = ProductionScorer(ml_spark, settings, contract, registry=registry)
    later = (silver.orderBy("event_time").offset(5500)
             .withColumn("_kafka_timestamp", F.col("event_time")).withColumn("_batch_id", F.lit(7)))
    scored = scorer.score(later)
    assert scored is not None and scorer.last_version == 1
    out = scored.orderBy("event_id").collect()
    assert len(out) == 500 and {(r["probability"], r["prediction"], r["predicted_class"]) for r in out} == {(None, None, None)}
    assert {r["scored_by"] for r in out} == {"mllib"}
    values = np.array([r["predicted_value"] for r in out])
    assert np.ptp(values) > 10  # Nm: it reads the speed
    served = ServedModel.of("torque_estimate", 1, registry.read_file("torque_estimate", "scorer.json", 1),
                            registry.metadata("torque_estimate", 1))
    local = served.predict([{c: r[c] for c in served.scorer.features} for r in out])
    np.testing.assert_allclose([p["value"] for p in local], values, rtol=1e-6)  # XGBoost: float32
    truth = ordered.set_index("event_id").loc[[r["event_id"] for r in out], "torque_nm"].to_numpy()
    assert np.sqrt(np.mean((values - truth) ** 2)) < 0.6 * np.std(truth)

    # the same version behind an endpoint (the serving process): the stream's scorer sends it the rows
    # and stores its values, as the job's own copy gives them
    from ml.endpoint import SAGEMAKER, backend_doc
    from ml.online import RegistryFiles

    with model_endpoint(_env(tmp_path), "--model", "torque_estimate", "--endpoint", "torque") as url:
        RegistryFiles.of(settings).set_backend("torque_estimate", backend_doc(SAGEMAKER, "torque", 1))
        remote = load_settings(lake_dir=str(tmp_path / "lake"), sagemaker={"runtime_url": url})
        via = ProductionScorer(ml_spark, remote, contract, registry=registry).score(later)
        assert via is not None
        answered = {r["event_id"]: (r["predicted_value"], r["scored_by"], r["probability"]) for r in via.collect()}
    assert {(by, p) for _, by, p in answered.values()} == {("sagemaker:torque", None)}
    np.testing.assert_allclose([answered[r["event_id"]][0] for r in out], values, rtol=1e-6)

    # the serving process's app (in-process here; test_serving.py runs it over HTTP): a value per line
    import asyncio

    import httpx

    from ml.serving import create_app

    csv = "".join(",".join(str(r[c]) for c in served.scorer.features) + "\n" for r in out[:3])

    async def invoke(accept: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(served, "torque"))
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            return await client.post("/invocations", content=csv, headers={"Content-Type": "text/csv",
                                                                           "Accept": accept})

    answer, lines = asyncio.run(invoke("text/csv")), asyncio.run(invoke("application/jsonlines"))
    assert answer.status_code == lines.status_code == 200
    np.testing.assert_allclose([float(v) for v in answer.text.split()], values[:3], rtol=1e-6)
    np.testing.assert_allclose([json.loads(v)["score"] for v in lines.text.splitlines()], values[:3], rtol=1e-6)

    # the report: the model card and the metrics chart against the baseline; the binary charts skipped
    from analytics.report import build_report

    html = build_report(ml_spark, settings, {contract.name: contract}).read_text(encoding="utf-8")
    assert f"<th>RMSE</th><td>{metrics['rmse']:.4f} (baseline {baseline['rmse']:.4f})</td>" in html
    assert f"<th>R²</th><td>{metrics['r2']:.4f} (baseline {baseline['r2']:.4f})</td>" in html
    assert html.count("not a binary one") == 2  # probability_distribution and top_risk
    charted = (settings.reports_dir / contract.name / "model_metrics.csv").read_text(encoding="utf-8").splitlines()
    assert charted[0].startswith("version,is_production,rmse,mae,r2,baseline_rmse") and len(charted) == 3
    assert (settings.reports_dir / contract.name / "model_metrics.png").stat().st_size > 15_000

    factory = lambda settings, app_name: ml_spark  # noqa: E731 - tests bring their own session
    models_command(settings, "torque_estimate", as_json=False, session_factory=factory)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-6:-3] == ["rmse", "r2", "baseline_rmse"]
    assert f"{metrics['rmse']:.4f}" in table[2] and f"{baseline['rmse']:.4f}" in table[2] and "regression" in table[2]
