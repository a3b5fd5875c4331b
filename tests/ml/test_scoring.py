"""ProductionScorer follows the production alias between micro-batches; registry basics."""

from __future__ import annotations

import json

import pytest

from streamsight.contracts import get_contract
from streamsight.lake import models_uri, prediction_columns
from streamsight.settings import load_settings
from tests.conftest import ai4i_silver

pytestmark = pytest.mark.integration

MODEL = "machine_failure"


@pytest.fixture(scope="module")
def ml_spark(spark):
    return spark


@pytest.fixture(scope="module")
def env(ml_spark, tmp_path_factory):
    from pyspark.sql import functions as F

    settings = load_settings(lake_dir=str(tmp_path_factory.mktemp("ml_scoring") / "lake"))
    contract = get_contract(settings.contracts_dir, "machine_telemetry")
    frame = ai4i_silver(3100)
    silver = ml_spark.createDataFrame(frame.iloc[:3000]).cache()
    # a micro-batch as the streaming job hands it over: silver rows plus lineage columns
    batch = (ml_spark.createDataFrame(frame.iloc[3000:])
             .withColumn("machine_failure", F.lit(None).cast("bigint"))  # live data has no label
             .withColumn("event_hour", F.hour("event_time"))
             .withColumn("_kafka_timestamp", F.col("event_time") + F.expr("INTERVAL 2 SECONDS"))
             .withColumn("_kafka_partition", F.lit(0))
             .withColumn("_batch_id", F.lit(7).cast("bigint")))
    return {"settings": settings, "contract": contract, "silver": silver, "batch": batch.cache()}


@pytest.fixture(scope="module")
def scorer(ml_spark, env):
    from ml.scoring import ProductionScorer

    return ProductionScorer(ml_spark, env["settings"], env["contract"])


def registry(spark, settings):
    from ml.registry import ModelRegistry

    return ModelRegistry(spark, models_uri(settings.lake_uri))


# ---------------------------------------------------------------------------------------------
# scorer (tests run in file order and share one lake: no model -> trained v1 -> promoted v2)


def test_no_production_model_scores_nothing(env, scorer):
    assert scorer.current() is None
    assert scorer.score(env["batch"]) is None


def test_scores_with_the_trained_model(ml_spark, env, scorer):
    from ml.train import train_model

    meta = train_model(ml_spark, env["settings"], env["contract"], silver=env["silver"],
                       algorithms=("logistic_regression",), refit=False,
                       params={"logistic_regression": {"maxIter": 10}})
    assert meta["version"] == 1 and meta["aliases"] == ["production"]

    out = scorer.score(env["batch"])
    expected = prediction_columns(env["contract"])
    assert [(f.name, f.dataType.simpleString()) for f in out.schema.fields] == expected
    rows = out.toPandas()
    assert len(rows) == 100
    assert rows["probability"].between(0.0, 1.0).all()
    assert (rows["prediction"] == (rows["probability"] >= meta["threshold"]).astype(int)).all()
    assert set(rows["model_name"]) == {MODEL} and set(rows["model_version"]) == {1}
    assert set(rows["_batch_id"]) == {7} and rows["machine_failure"].isna().all()
    assert (rows["_kafka_timestamp"] - rows["event_time"]).dt.total_seconds().eq(2).all()
    assert rows["scored_at"].notna().all() and rows["scored_at"].nunique() == 1
    assert sorted(rows["event_id"]) == sorted(f"ai4i-{i}" for i in range(3001, 3101))


def test_new_production_version_is_picked_up_without_rebuilding(ml_spark, env, scorer, monkeypatch):
    reg = registry(ml_spark, env["settings"])
    version, model, meta = scorer.current()
    assert version == 1
    # v2: the same pipeline with a threshold of 0, so every prediction becomes 1
    v2_meta = {k: v for k, v in meta.items() if k not in ("version", "aliases")}
    v2_meta["threshold"] = 0.0
    assert reg.register(MODEL, model, v2_meta) == 2

    loads = []
    real_load = scorer.registry.load
    monkeypatch.setattr(scorer.registry, "load", lambda name, v: loads.append(v) or real_load(name, v))

    reg.set_alias(MODEL, "production", 1)
    first = scorer.score(env["batch"]).select("model_version", "prediction").toPandas()
    assert set(first["model_version"]) == {1} and loads == []  # unchanged alias: no reload

    reg.set_alias(MODEL, "production", 2)  # e.g. `streamsight promote` from another process
    second = scorer.score(env["batch"]).select("model_version", "prediction").toPandas()
    assert set(second["model_version"]) == {2} and set(second["prediction"]) == {1}
    assert loads == [2]
    scorer.score(env["batch"])
    assert loads == [2]  # loaded once per change, not per batch

    reg.set_alias(MODEL, "production", 1)  # roll back
    assert set(scorer.score(env["batch"]).select("model_version").toPandas()["model_version"]) == {1}


# ---------------------------------------------------------------------------------------------
# registry basics


@pytest.fixture(scope="module")
def tiny_model(ml_spark):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler

    df = ml_spark.createDataFrame([(1.0, 2.0)], "a double, b double")
    return Pipeline(stages=[VectorAssembler(inputCols=["a", "b"], outputCol="v")]).fit(df)


def test_registry_versions_never_overwrite(ml_spark, tmp_path, tiny_model):
    from ml.registry import ModelRegistry

    root = tmp_path / "models"
    reg = ModelRegistry(ml_spark, root.as_uri())
    assert reg.versions("m") == [] and reg.models() == []
    assert reg.register("m", tiny_model, {"note": "first"}) == 1
    assert reg.register("m", tiny_model, {"note": "second"}) == 2
    # a crashed registration (model directory but no metadata) is invisible and never reused
    (root / "m" / "v3" / "model").mkdir(parents=True)
    assert reg.register("m", tiny_model, {"note": "fourth"}) == 4
    versions = reg.versions("m")
    assert [(v["version"], v["note"]) for v in versions] == [(1, "first"), (2, "second"), (4, "fourth")]
    assert reg.metadata("m", 1)["note"] == "first"
    assert reg.load("m", 2).stages[0].getOutputCol() == "v"
    assert reg.models() == ["m"]


def test_registry_aliases(ml_spark, tmp_path, tiny_model):
    from ml.registry import ModelRegistry, RegistryError

    root = tmp_path / "models"
    reg = ModelRegistry(ml_spark, root.as_uri())
    assert reg.get_alias("unknown_model", "production") is None
    reg.register("m", tiny_model, {})
    reg.register("m", tiny_model, {})
    assert reg.get_alias("m", "production") is None
    reg.set_alias("m", "production", 1)
    reg.set_alias("m", "staging", 2)
    reg.set_alias("m", "production", 2)
    assert reg.get_alias("m", "production") == 2 and reg.get_alias("m", "staging") == 2
    assert reg.get_alias("m", "nope") is None
    assert json.loads((root / "m" / "aliases.json").read_text()) == {"production": 2, "staging": 2}
    assert [v["aliases"] for v in reg.versions("m")] == [[], ["production", "staging"]]
    with pytest.raises(RegistryError, match="no version 9"):
        reg.set_alias("m", "production", 9)
    with pytest.raises(RegistryError):
        reg.register("../escape", tiny_model, {})
    assert reg.get_alias("m", "production") == 2
    # replaced by rename: no temporary or checksum files left behind
    assert sorted(p.name for p in (root / "m").iterdir()) == ["aliases.json", "v1", "v2"]
