"""ml.compiled: a fitted pipeline as one SQL expression gives MLlib's probabilities.

Every comparison is against ``PipelineModel.transform`` of the same fitted model, on real AI4I rows
and on rows MLlib has to handle specially (null numbers, a null or unseen category).
"""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from ml.compiled import PROBABILITY, compile_probability
from streamsight.contracts import get_contract
from streamsight.settings import load_settings
from tests.conftest import ai4i_silver

pytestmark = pytest.mark.integration

TOLERANCE = 1e-12  # MLlib's BLAS may add with fused multiply-adds; see ml/compiled.py


@pytest.fixture(scope="module")
def rows(spark):
    frame = ai4i_silver(2500)
    silver = spark.createDataFrame(frame).cache()
    # rows MLlib handles specially: null numbers (imputed), a null or unseen category (index numLabels)
    odd = (silver.limit(300)
           .withColumn("type", F.when(F.col("tool_wear_min") % 3 == 0, F.lit(None))
                       .when(F.col("tool_wear_min") % 3 == 1, F.lit("Z")).otherwise(F.col("type")))
           .withColumn("torque_nm", F.when(F.col("tool_wear_min") % 5 == 0, F.lit(None)).otherwise(F.col("torque_nm")))
           .withColumn("tool_wear_min", F.when(F.col("tool_wear_min") % 7 == 0, F.lit(None))
                       .otherwise(F.col("tool_wear_min"))))
    return silver, odd


@pytest.fixture(scope="module")
def trained(spark, rows):
    """The project's own pipelines (ml.train), one per algorithm, fitted on AI4I rows; with the
    threshold at the median probability, so both labels are predicted."""
    from pyspark.ml.functions import vector_to_array

    from ml.train import LABEL, PROBABILITY as MLLIB_PROBABILITY, WEIGHT, _pipeline

    contract = get_contract(load_settings().contracts_dir, "machine_telemetry")
    labelled = (rows[0].withColumn(LABEL, F.col(contract.model.label).cast("double"))
                .withColumn(WEIGHT, F.when(F.col(LABEL) == 1.0, 20.0).otherwise(1.0)))
    params = {"gbt": {"maxIter": 5, "maxDepth": 4}, "logistic_regression": {"maxIter": 10}}
    models = {}
    for algorithm in ("gbt", "logistic_regression"):
        model = _pipeline(algorithm, list(contract.model.features), list(contract.model.categorical_features), 7,
                          params).fit(labelled)
        p = model.transform(rows[0]).select(vector_to_array(MLLIB_PROBABILITY)[1].alias("p"))
        models[algorithm] = (model, p.approxQuantile("p", [0.5], 0.0)[0])
    return models


def _compare(model, compiled, df):
    """(max |MLlib - compiled|, rows, MLlib's probabilities, compiled ones) over ``df``."""
    from pyspark.ml.functions import vector_to_array

    probability = model.stages[-1].getProbabilityCol()
    df = df.withColumn("_rid", F.monotonically_increasing_id()).cache()
    mllib = model.transform(df).select("_rid", vector_to_array(probability)[1].alias("m"))
    ours = compiled(df).select("_rid", F.col(PROBABILITY).alias("c"))
    joined = mllib.join(ours, "_rid").toPandas()
    return (joined["m"] - joined["c"]).abs().max(), len(joined), joined["m"], joined["c"]


@pytest.mark.parametrize("algorithm", ["gbt", "logistic_regression"])
def test_compiled_probabilities_are_mllibs(spark, rows, trained, algorithm):
    model, threshold = trained[algorithm]
    compiled = compile_probability(spark, model)
    assert compiled is not None
    for df in rows:
        worst, n, mllib, ours = _compare(model, compiled, df)
        assert n == df.count() and worst < TOLERANCE, (algorithm, worst)
        assert mllib.between(0, 1).all() and mllib.nunique() > 10  # a real model, not a constant
        away = (mllib - threshold).abs() > TOLERANCE
        assert ((mllib >= threshold) == (ours >= threshold))[away].all()


def test_compiled_columns_are_the_inputs_plus_the_probability(spark, rows, trained):
    model, _ = trained["gbt"]
    silver = rows[0]
    out = compile_probability(spark, model)(silver)
    assert out.columns == [*silver.columns, PROBABILITY]
    assert out.schema[PROBABILITY].dataType.simpleString() == "double"


def test_categorical_splits(spark, rows):
    """A string index assembled without scaling keeps its nominal metadata, so MLlib's trees split
    on category sets (CategoricalSplit), which the JVM ensemble evaluates by membership."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import GBTClassifier
    from pyspark.ml.feature import StringIndexer, VectorAssembler

    from ml.compiled import _flatten

    silver = rows[0].withColumn("label", F.col("machine_failure").cast("double"))
    pipeline = Pipeline(stages=[
        StringIndexer(inputCol="type", outputCol="idx", handleInvalid="keep"),
        VectorAssembler(inputCols=["idx", "torque_nm", "rotational_speed_rpm"], outputCol="f", handleInvalid="keep"),
        GBTClassifier(featuresCol="f", labelCol="label", maxIter=3, maxDepth=3, seed=3).setProbabilityCol("prob"),
    ])
    # label = the type's letter decides, so the trees must split on the category
    labelled = silver.withColumn("label", F.when(F.col("type") == "M", 1.0).otherwise(F.col("label")))
    model = pipeline.fit(labelled)
    splits = [c for t in model.stages[-1].trees for c in _flatten(t._java_obj.rootNode())["categories"] if c]
    assert splits, "no categorical split: the test does not test what it says"
    compiled = compile_probability(spark, model)
    assert compiled is not None
    for df in rows:
        worst, n, _, _ = _compare(model, compiled, df)
        assert n == df.count() and worst < TOLERANCE, worst


def test_a_stage_it_does_not_know_is_scored_by_mllib(spark, rows):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import Bucketizer, VectorAssembler

    silver = rows[0].withColumn("label", F.col("machine_failure").cast("double"))
    model = Pipeline(stages=[
        Bucketizer(inputCol="torque_nm", outputCol="b", splits=[-float("inf"), 40.0, float("inf")]),
        VectorAssembler(inputCols=["b", "rotational_speed_rpm"], outputCol="f"),
        LogisticRegression(featuresCol="f", labelCol="label", maxIter=3),
    ]).fit(silver)
    assert compile_probability(spark, model) is None


def test_a_failing_translation_is_scored_by_mllib(spark, trained, monkeypatch, caplog):
    """A defect in the translator is logged with its traceback and MLlib scores: it never stops a stream."""
    import logging

    from ml import compiled

    def broken(_spark, _model):
        raise KeyError("a parameter the translator did not expect")

    monkeypatch.setattr(compiled, "_compile", broken)
    with caplog.at_level(logging.WARNING, logger="ml.compiled"):
        assert compile_probability(spark, trained["logistic_regression"][0]) is None
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "translating the model to SQL failed" in record.getMessage() and record.exc_info[0] is KeyError


def test_scorer_uses_the_setting(spark, rows, trained, tmp_path):
    """settings.ml.scoring: compiled (default) and mllib give the same scores through the scorer."""
    from ml import PRODUCTION_ALIAS
    from ml.registry import ModelRegistry
    from ml.scoring import ProductionScorer
    from streamsight.lake import models_uri

    model, threshold = trained["logistic_regression"]  # quicker to save and load; GBT is compared above
    settings = load_settings(lake_dir=str(tmp_path / "lake"))
    contract = get_contract(settings.contracts_dir, "machine_telemetry")
    registry = ModelRegistry(spark, models_uri(settings.lake_uri))
    version = registry.register(contract.model.name, model, {"threshold": threshold, "metrics": {}})
    registry.set_alias(contract.model.name, PRODUCTION_ALIAS, version)
    batch = (rows[1].withColumn("event_hour", F.hour("event_time"))
             .withColumn("_kafka_timestamp", F.col("event_time")).withColumn("_kafka_partition", F.lit(0))
             .withColumn("_batch_id", F.lit(1).cast("bigint")))
    scores = {}
    for mode in ("compiled", "mllib"):
        scorer = ProductionScorer(spark, settings.model_copy(update={"ml": settings.ml.model_copy(update={"scoring": mode})}),
                                  contract)
        scorer.current()
        assert scorer.path == mode
        scores[mode] = scorer.score(batch).select("event_id", "probability", "prediction").toPandas().set_index("event_id").sort_index()
    assert len(scores["compiled"]) == batch.count()
    assert (scores["compiled"]["probability"] - scores["mllib"]["probability"]).abs().max() < TOLERANCE
