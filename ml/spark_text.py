"""The pipeline stage that embeds a text column (:func:`ml.text.embed`, or a text endpoint:
:func:`ml.text.embed_remote`), saved and loaded with the model like MLlib's own stages (the
executors import this module and ``wordllama``)."""

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

    dims: Param[int] = Param(Params._dummy(), "dims", "numbers of each embedding (the local model: 64, 128 "
                             "or 256; an endpoint: its width)", typeConverter=TypeConverters.toInt)
    endpoint: Param[str] = Param(Params._dummy(), "endpoint", "the SageMaker endpoint that embeds the texts "
                                 "(empty: the local model)", typeConverter=TypeConverters.toString)

    @keyword_only
    def __init__(self, *, inputCol: str | None = None, outputCol: str | None = None, dims: int = 64,
                 endpoint: str = "") -> None:
        super().__init__()
        self._setDefault(dims=64, endpoint="")
        self._set(**self._input_kwargs)  # type: ignore[attr-defined]  # set by keyword_only

    def getDims(self) -> int:
        return int(self.getOrDefault(self.dims))

    def getEndpoint(self) -> str:
        return str(self.getOrDefault(self.endpoint))

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import functions as F

        from ml.text import endpoint_client

        dims = self.getDims()
        # the endpoint's client is made here, by the driver's settings, and travels with the function
        client = endpoint_client(self.getEndpoint()) if self.getEndpoint() else None

        @F.pandas_udf("array<float>")  # type: ignore[call-overload]
        def embedded(texts: pd.Series) -> pd.Series:
            from ml.text import embed, embed_remote

            values = [None if t is None else str(t) for t in texts]
            return pd.Series(list(embed(values, dims) if client is None else embed_remote(client, values, dims)))

        out = self.getOutputCol()
        # the vector's size as MLlib's attribute metadata: VectorAssembler needs it to keep invalid rows
        return (dataset.withColumn(out, array_to_vector(embedded(F.col(f"`{self.getInputCol()}`"))))
                .withMetadata(out, {"ml_attr": {"num_attrs": dims}}))
