"""The exported pipeline scores as MLlib does: each algorithm's pipeline, as ml.train builds it, fitted
in Spark, then every row's probability from PipelineModel.transform against PortableModel's; with the
shipped contract's derived columns among the features, computed by Spark on one side and by DuckDB
(the expressions translated by sqlglot) on the other."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml import portable
from tests.conftest import ai4i_silver

pytestmark = pytest.mark.integration

NUMERIC = ["air_temperature_k", "process_temperature_k", "rotational_speed_rpm", "torque_nm", "tool_wear_min"]
CATEGORICAL = ["type"]
DERIVED = ["power_w", "strain_over_limit_nm_min", "temperature_difference_k", "power_risk", "heat_dissipation_risk"]


def _contract() -> object:
    """The shipped machine_telemetry contract, its model reading the raw readings and some derived columns."""
    from streamsight.contracts import load_contract
    from tests.integration.helpers import CONTRACTS

    contract = load_contract(CONTRACTS / "machine_telemetry.yaml")
    assert contract.model is not None
    model = contract.model.model_copy(update={"features": [*NUMERIC, *DERIVED, *CATEGORICAL],
                                              "categorical_features": CATEGORICAL})
    return contract.model_copy(update={"model": model})


def _rows_to_score() -> pd.DataFrame:
    """Held-out AI4I rows, plus rows the pipeline must repair: missing readings (imputed), an unseen
    and a missing product type (the one-hot encoder's extra slot), readings far out of range."""
    frame = ai4i_silver(4000).iloc[3000:].reset_index(drop=True)[[*NUMERIC, *CATEGORICAL]]
    frame["tool_wear_min"] = frame["tool_wear_min"].astype("float64")
    odd = frame.head(6).copy()
    odd.loc[0, "torque_nm"] = np.nan
    odd.loc[1, ["air_temperature_k", "rotational_speed_rpm"]] = np.nan
    odd.loc[2, "type"] = "X"
    odd.loc[3, "type"] = None
    odd.loc[4, ["torque_nm", "rotational_speed_rpm"]] = [500.0, 9000.0]
    odd.loc[5, "tool_wear_min"] = 0.0
    return pd.concat([frame, odd], ignore_index=True)


@pytest.mark.parametrize("algorithm", ["logistic_regression", "gbt"])  # xgboost: test_train.py
def test_portable_probabilities_equal_mllib(spark, algorithm):
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from ml.train import LABEL, PROBABILITY, WEIGHT, _pipeline
    from streamsight.lake import with_derived

    contract = _contract()
    assert portable.feature_order(contract) == ([*NUMERIC, *CATEGORICAL], CATEGORICAL)
    history = ai4i_silver(3000)
    history["tool_wear_min"] = history["tool_wear_min"].astype("float64")
    train = (with_derived(spark.createDataFrame(history[[*NUMERIC, *CATEGORICAL, "machine_failure"]]), contract)
             .withColumn(LABEL, F.col("machine_failure").cast("double")).withColumn(WEIGHT, F.lit(1.0)))
    params = {"gbt": {"maxIter": 8}, "logistic_regression": {"maxIter": 20}, "xgboost": {"n_estimators": 20}}
    model = _pipeline(algorithm, [*NUMERIC, *DERIVED], CATEGORICAL, seed=7, params=params).fit(train)

    rows = _rows_to_score()
    frame = with_derived(spark.createDataFrame(rows.astype(object).where(rows.notna(), None),
                                               schema=", ".join([f"{c} double" for c in NUMERIC] + ["type string"])),
                         contract)
    expected = [r[0] for r in model.transform(frame).select(vector_to_array(PROBABILITY)[1]).collect()]

    derived = portable.derived_for(contract)
    assert [d["name"] for d in derived] == ["temperature_difference_k", "power_w", "strain_over_limit_nm_min",
                                            "heat_dissipation_risk", "power_risk"]
    doc = portable.export(model, features=[*NUMERIC, *CATEGORICAL], categorical=CATEGORICAL,
                          input_schema=portable.input_schema(contract), derived=derived)
    scorer = portable.PortableModel(json.loads(json.dumps(doc)))  # what the registry stores
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
    got = scorer.probabilities(records)
    assert len(got) == len(expected) == len(rows)
    # XGBoost computes in float32 either way; the others in float64
    np.testing.assert_allclose(got, expected, rtol=1e-6 if algorithm == "xgboost" else 1e-9, atol=1e-12)
    assert np.ptp(got) > 0.5 and len(np.unique(got)) > 20  # scored, not a constant (trees: a value per leaf path)
    if algorithm == "gbt":
        assert len(doc["stages"][-1]["trees"]) == 8


@pytest.mark.parametrize("algorithm", ["linear_regression", "gbt"])  # xgboost: test_train.py
def test_portable_values_of_a_regression_model_equal_mllib(spark, algorithm):
    """A regression pipeline (the torque from the speed, temperatures and type): every row's value,
    including rows the pipeline must repair, as MLlib computes it."""
    from pyspark.sql import functions as F

    from ml import REGRESSION
    from ml.train import LABEL, PREDICTION, WEIGHT, _pipeline

    inputs = ["air_temperature_k", "process_temperature_k", "rotational_speed_rpm", "tool_wear_min"]
    history = ai4i_silver(3000)
    history["tool_wear_min"] = history["tool_wear_min"].astype("float64")
    train = (spark.createDataFrame(history[[*inputs, *CATEGORICAL, "torque_nm"]])
             .withColumn(LABEL, F.col("torque_nm")).withColumn(WEIGHT, F.lit(1.0)))
    params = {"gbt": {"maxIter": 8}, "xgboost": {"n_estimators": 20}}
    model = _pipeline(algorithm, inputs, CATEGORICAL, seed=7, params=params, task=REGRESSION).fit(train)

    rows = _rows_to_score()[[*inputs, *CATEGORICAL]]
    frame = spark.createDataFrame(rows.astype(object).where(rows.notna(), None),
                                  schema=", ".join([f"{c} double" for c in inputs] + ["type string"]))
    expected = [r[0] for r in model.transform(frame).select(PREDICTION).collect()]
    doc = portable.export(model, features=[*inputs, *CATEGORICAL], categorical=CATEGORICAL, input_schema={},
                          task=REGRESSION)
    scorer = portable.PortableModel(json.loads(json.dumps(doc)))
    assert scorer.task == REGRESSION
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
    got = scorer.values(records)
    np.testing.assert_allclose(got, expected, rtol=1e-6 if algorithm == "xgboost" else 1e-9)
    truth = history["torque_nm"].to_numpy()
    assert np.ptp(got) > 20 and np.std(got[: len(rows) - 6]) > 0.5 * np.std(truth)  # it read the speed
    with pytest.raises(portable.PortableError, match="values"):
        scorer.probabilities(records)


def test_stages_it_cannot_evaluate_are_refused(spark):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import SQLTransformer

    frame = spark.createDataFrame([(1.0, 2.0)], "a double, b double")
    model = Pipeline(stages=[SQLTransformer(statement="SELECT *, log(a) AS c FROM __THIS__")]).fit(frame)
    with pytest.raises(portable.PortableError, match="not supported"):
        portable.export(model, features=["a"], categorical=[], input_schema={})
    with pytest.raises(portable.PortableError, match="format"):
        portable.PortableModel({"format": "other"})


IRIS = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]


@pytest.mark.parametrize("algorithm", ["logistic_regression", "xgboost"])
def test_portable_class_probabilities_equal_mllib(spark, algorithm):
    """A multiclass pipeline (the shipped iris contract's): every class's probability of every row,
    including rows with missing measurements, as MLlib computes it."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from ingestion.sources import iris_source
    from ml.train import LABEL, PROBABILITY, WEIGHT, _pipeline
    from streamsight.contracts import load_contract
    from tests.conftest import DATA_DIR
    from tests.integration.helpers import CONTRACTS

    contract = load_contract(CONTRACTS / "iris.yaml")
    classes = contract.model_classes()
    assert classes == ["setosa", "versicolor", "virginica"]
    records = [e.payload for e in iris_source(DATA_DIR / "iris" / "iris.csv")]
    frame = pd.DataFrame(records)[[*IRIS, "species"]]
    train = (spark.createDataFrame(frame)
             .withColumn(LABEL, (F.array_position(F.array(*map(F.lit, classes)), F.col("species")) - 1).cast("double"))
             .withColumn(WEIGHT, F.lit(1.0)))
    params = {"logistic_regression": {"maxIter": 50}, "xgboost": {"n_estimators": 20}}
    model = _pipeline(algorithm, IRIS, [], seed=7, params=params).fit(train)

    odd = [{**records[0], "petal_length_cm": None}, {**records[1], "sepal_width_cm": None, "petal_width_cm": None}]
    rows = [{c: r.get(c) for c in IRIS} for r in [*records, *odd]]
    scored = model.transform(spark.createDataFrame(rows, schema=", ".join(f"{c} double" for c in IRIS)))
    expected = np.array([r[0] for r in scored.select(vector_to_array(PROBABILITY)).collect()])

    doc = portable.export(model, features=IRIS, categorical=[], input_schema=portable.input_schema(contract),
                          classes=classes)
    scorer = portable.PortableModel(json.loads(json.dumps(doc)))
    assert scorer.task == "multiclass" and scorer.classes == classes
    got = scorer.class_probabilities(rows)
    assert got.shape == expected.shape == (len(rows), 3)
    np.testing.assert_allclose(got, expected, rtol=1e-6 if algorithm == "xgboost" else 1e-9, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    assert (got[:150].argmax(axis=1) == [classes.index(r["species"]) for r in records]).mean() > 0.9  # it learned
    with pytest.raises(portable.PortableError, match="class_probabilities"):
        scorer.probabilities(rows)


@pytest.mark.parametrize("encoding", ["hashed", "embedded", "endpoint"])
def test_portable_text_features_equal_mllib(spark, encoding, tmp_path, monkeypatch, request):
    """The shipped app_logs contract with its message as a text feature -- tokens hashed into slots
    (Spark's RegexTokenizer and HashingTF; MurmurHash3 in ml.portable), embedded by the small text
    model of ml.text (in Spark: a pipeline stage that is saved and loaded with the model), or
    embedded by a text endpoint (the stand-in for the Hugging Face Embedding Container, a real
    process, called through boto3's sagemaker-runtime client by Spark's workers and by the portable
    copy) -- beside its derived columns read from the event time, on synthetic log events and odd
    ones (no message, only punctuation, accents, a token that is a number)."""
    import contextlib
    import os
    from datetime import UTC, datetime

    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from ingestion.sources import synthetic_source
    from ml.train import LABEL, PROBABILITY, WEIGHT, _pipeline
    from streamsight.contracts import load_contract
    from streamsight.lake import with_derived
    from tests.integration.helpers import CONTRACTS

    base = load_contract(CONTRACTS / "app_logs.yaml")
    assert base.model is not None
    text = {"text_buckets": 64} if encoding == "hashed" else {"text_encoding": "embedded", "text_dimensions": 64}
    contract = base.model_copy(update={"model": base.model.model_copy(update={"text_features": ["@message"], **text})})
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    if encoding == "endpoint":
        from tests.integration.helpers import model_endpoint

        url = stack.enter_context(model_endpoint(dict(os.environ), "--endpoint", "log-text", command="deploy-text"))
        monkeypatch.setenv("STREAMSIGHT_SAGEMAKER__RUNTIME_URL", url)
    batch = next(synthetic_source(contract, machines=12, seed=5, start=datetime(2024, 5, 1, tzinfo=UTC),
                                  interval_ms=600_000))
    records = batch.table.slice(0, 3000).to_pylist()
    odd = [{**records[0], "@message": None}, {**records[1], "@message": "--- ... !!!"},
           {**records[2], "@message": "ÉTAT inattendu: Straße 42 İstanbul x"}]
    rows = [*records, *odd]

    def frame(recs: list[dict]) -> object:
        df = spark.createDataFrame([{**r, "@timestamp": datetime.fromtimestamp(r["@timestamp"] / 1000, UTC)}
                                    for r in recs],
                                   schema="`@ptr` string, `@timestamp` timestamp, `@message` string, "
                                          "`@logStream` string, `@log` string, anomaly bigint")
        return with_derived(df, contract)

    train = frame(records).withColumn(LABEL, F.col("anomaly").cast("double")).withColumn(WEIGHT, F.lit(1.0))
    params = {"logistic_regression": {"maxIter": 20}}
    endpoint = {"text_encoding": "embedded", "text_dimensions": 256, "text_endpoint": "log-text"}
    model = _pipeline("logistic_regression", ["hour_of_day", "message_length", "log_length"], ["@logStream"], seed=7,
                      params=params, text=["@message"], text_buckets=64,
                      **(endpoint if encoding == "endpoint" else {"text_encoding": encoding, "text_dimensions": 64})
                      ).fit(train)
    expected = [r[0] for r in model.transform(frame(rows)).select(vector_to_array(PROBABILITY)[1]).collect()]
    if encoding == "endpoint":  # the endpoint serves the local model: the same numbers
        from ml.text import embed

        texts = [r["@message"] for r in rows]
        embedded = np.array([r[0] for r in model.transform(frame(rows)).select(vector_to_array("_ss_emb_0")).collect()])
        np.testing.assert_array_equal(embedded, embed([t or "" for t in texts], 256).astype(np.float64))
    if encoding != "hashed":  # the registry saves and loads the Python stage with the MLlib ones
        from pyspark.ml import PipelineModel

        model.write().save(str(tmp_path / "model"))
        model = PipelineModel.load(str(tmp_path / "model"))
        again = [r[0] for r in model.transform(frame(rows)).select(vector_to_array(PROBABILITY)[1]).collect()]
        assert again == expected

    features, categorical = portable.feature_order(contract)
    doc = portable.export(model, features=features, categorical=categorical,
                          input_schema=portable.input_schema(contract), derived=portable.derived_for(contract),
                          event_time=portable.event_time_for(contract))
    assert [s["kind"] for s in doc["stages"]][:4] == ["impute", "pairs", "index", "one_hot"]
    assert ({"text_fill", "tokens", "hash"} if encoding == "hashed" else {"text_fill", "embed"}) <= {
        s["kind"] for s in doc["stages"]}
    if encoding == "endpoint":
        embed_stage = next(s for s in doc["stages"] if s["kind"] == "embed")
        assert embed_stage == {"kind": "embed", "input": "_ss_txt_0", "output": "_ss_emb_0",
                               "encoder": "sagemaker-endpoint", "endpoint": "log-text", "dims": 256}
    scorer = portable.PortableModel(json.loads(json.dumps(doc)))
    got = scorer.probabilities(rows)  # the records as sent: @timestamp in epoch milliseconds
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert len(np.unique(np.round(got, 9))) > 20
    stack.close()
    if encoding == "endpoint":  # the endpoint gone: scoring fails, naming it, within its retries
        from ml.endpoint import EndpointFailure

        with pytest.raises(EndpointFailure, match=r"text endpoint log-text: .*Could not connect"):
            portable.PortableModel(json.loads(json.dumps(doc))).probabilities(rows[:5])
