"""The exported pipeline scores as MLlib does: each algorithm's pipeline, as ml.train builds it, fitted
in Spark, then every row's probability from PipelineModel.transform against PortableModel's."""

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


@pytest.mark.parametrize("algorithm", ["logistic_regression", "gbt"])
def test_portable_probabilities_equal_mllib(spark, algorithm):
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from ml.train import LABEL, PROBABILITY, WEIGHT, _pipeline

    history = ai4i_silver(3000)
    history["tool_wear_min"] = history["tool_wear_min"].astype("float64")
    train = (spark.createDataFrame(history[[*NUMERIC, *CATEGORICAL, "machine_failure"]])
             .withColumn(LABEL, F.col("machine_failure").cast("double")).withColumn(WEIGHT, F.lit(1.0)))
    params = {"gbt": {"maxIter": 8}, "logistic_regression": {"maxIter": 20}}
    model = _pipeline(algorithm, NUMERIC, CATEGORICAL, seed=7, params=params).fit(train)

    rows = _rows_to_score()
    frame = spark.createDataFrame(rows.astype(object).where(rows.notna(), None),
                                  schema=", ".join([f"{c} double" for c in NUMERIC] + ["type string"]))
    expected = [r[0] for r in model.transform(frame).select(vector_to_array(PROBABILITY)[1]).collect()]

    doc = portable.export(model, features=[*NUMERIC, *CATEGORICAL], categorical=CATEGORICAL,
                          input_schema={"type": "object"})
    scorer = portable.PortableModel(json.loads(json.dumps(doc)))  # what the registry stores
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
    got = scorer.probabilities(records)
    assert len(got) == len(expected) == len(rows)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert np.ptp(got) > 0.5 and len(np.unique(got)) > 20  # scored, not a constant (trees: a value per leaf path)
    if algorithm == "gbt":
        assert len(doc["stages"][-1]["trees"]) == 8


def test_stages_it_cannot_evaluate_are_refused(spark):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import SQLTransformer

    frame = spark.createDataFrame([(1.0, 2.0)], "a double, b double")
    model = Pipeline(stages=[SQLTransformer(statement="SELECT *, log(a) AS c FROM __THIS__")]).fit(frame)
    with pytest.raises(portable.PortableError, match="not supported"):
        portable.export(model, features=["a"], categorical=[], input_schema={})
    with pytest.raises(portable.PortableError, match="format"):
        portable.PortableModel({"format": "other"})
