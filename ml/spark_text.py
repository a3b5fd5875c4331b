"""The pipeline stage that embeds a text column (:func:`ml.text.embed`), saved and loaded with the
model like MLlib's own stages (the executors import this module and ``wordllama``)."""

from __future__ import annotations

import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame


class TextEmbedder(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """``outputCol``: the embedding of the text in ``inputCol`` (a vector of ``dims`` numbers)."""

    dims: Param[int] = Param(Params._dummy(), "dims", "numbers kept of each embedding (64, 128 or 256)",
                             typeConverter=TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, inputCol: str | None = None, outputCol: str | None = None, dims: int = 64) -> None:
        super().__init__()
        self._setDefault(dims=64)
        self._set(**self._input_kwargs)  # type: ignore[attr-defined]  # set by keyword_only

    def getDims(self) -> int:
        return int(self.getOrDefault(self.dims))

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import functions as F

        dims = self.getDims()

        @F.pandas_udf("array<float>")  # type: ignore[call-overload]
        def embedded(texts: pd.Series) -> pd.Series:
            from ml.text import embed

            return pd.Series(list(embed([None if t is None else str(t) for t in texts], dims)))

        out = self.getOutputCol()
        # the vector's size as MLlib's attribute metadata: VectorAssembler needs it to keep invalid rows
        return (dataset.withColumn(out, array_to_vector(embedded(F.col(f"`{self.getInputCol()}`"))))
                .withMetadata(out, {"ml_attr": {"num_attrs": dims}}))
