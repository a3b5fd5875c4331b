"""Score a trained pipeline without Spark: its fitted parameters as JSON, evaluated with NumPy
(DuckDB computes the contract's derived columns; XGBoost evaluates its boosters).

:func:`export` reads a fitted :class:`~pyspark.ml.PipelineModel` as :mod:`ml.train` builds it
(Imputer, the SQLTransformer of pairwise products and differences, StringIndexer, OneHotEncoder,
the text stages -- RegexTokenizer and HashingTF, or :class:`ml.spark_text.TextEmbedder` --
VectorAssembler, StandardScaler, then LogisticRegression (binomial or multinomial), GBTClassifier
or XGBoost's SparkXGBClassifier -- or, for a regression model, LinearRegression, GBTRegressor or
SparkXGBRegressor -- whose booster is kept in XGBoost's own JSON) into a JSON document;
any other stage, or a statement other than those products and differences, is refused. The
registry stores the document as ``scorer.json`` beside the MLlib model, and :class:`PortableModel`
evaluates it on plain records in microseconds, for the HTTP API. Its probabilities are the
pipeline's own, and so are a regression model's values (the agreement tests compare them with
``PipelineModel.transform`` on every row).

The document also carries the model's inputs (the record fields it reads) with their JSON Schema,
and the contract's derived columns its features need, as Spark SQL and translated for DuckDB.
"""

from __future__ import annotations

import json
import math
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.text import ENDPOINT_ENCODER

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel

    from streamsight.contracts import Contract

FORMAT = "streamsight.portable/1"
_PAIR = re.compile(r"^`([^`]+)` ([*-]) `([^`]+)` AS `([^`]+)`$")
_TEXT_FILL = re.compile(r"^coalesce\(`([^`]+)`, ''\) AS `([^`]+)`$")
HASH_SEED = 42  # Spark's HashingTF: MurmurHash3 (x86, 32 bits) of the term's UTF-8 bytes, this seed


class PortableError(Exception):
    """A pipeline that cannot be exported, or a document that cannot be evaluated."""


def feature_order(contract: Contract) -> tuple[list[str], list[str]]:
    """``(inputs, categorical)`` of the contract's model: the record fields it reads -- its features
    that are fields, in order, then the fields its derived features read, in the schema's order --
    numeric ones first, then the others (``categorical``: strings, booleans, objects and arrays, kept
    as they are). The order of the API's ``{"data": [...]}`` form and of the serving CSV."""
    spec = contract.model
    if spec is None:
        raise PortableError(f"contract {contract.name!r} has no model: block")
    fields = {f.name: f for f in contract.fields}
    used = [f for f in contract.model_reads() if f in fields]  # a reference column cannot be an input
    categorical = [f for f in used if f in spec.categorical_features or fields[f].json_type not in ("number", "integer")]
    return [*[f for f in used if f not in categorical], *categorical], categorical


def derived_for(contract: Contract) -> list[dict[str, str]]:
    """The contract's derived columns the model's features need, in order: name, Spark type, the
    Spark SQL expression and its DuckDB translation (what :class:`PortableModel` evaluates)."""
    import sqlglot

    spec = contract.model
    if spec is None:
        raise PortableError(f"contract {contract.name!r} has no model: block")
    needed = set(contract.model_reads(derived=True))
    return [{"name": d.name, "type": d.type, "expr": d.expr,
             "duckdb": sqlglot.transpile(d.expr, read="spark", write="duckdb", identify=True)[0]}
            for d in contract.derived if d.name in needed]


def event_time_for(contract: Contract) -> dict[str, str] | None:
    """``{"field", "format"}`` of the contract's event time when the model reads it: the stream's
    derived columns see it as a timestamp (UTC), so :class:`PortableModel` converts it too."""
    field = contract.event_time.field
    return {"field": field, "format": contract.event_time.format} if field in feature_order(contract)[0] else None


def event_time_value(value: Any, fmt: str) -> datetime | None:
    """An event-time value as the stream reads it: a naive UTC datetime (None if it is not one)."""
    try:
        if isinstance(value, datetime):
            moment = value
        elif fmt == "iso8601":
            moment = datetime.fromisoformat(str(value))
            if moment.tzinfo is None:
                return None  # the contract's date-time format requires an offset
        else:
            seconds = float(value) / (1000.0 if fmt == "epoch_millis" else 1.0)
            return datetime(1970, 1, 1) + timedelta(microseconds=round(seconds * 1e6))
    except (TypeError, ValueError, OverflowError):
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def event_time_wire(value: Any, fmt: str) -> Any:
    """A stream's event-time value (a datetime) as a record carries it in the contract's format."""
    if not isinstance(value, datetime):
        return value
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if fmt == "epoch_millis":
        return round(moment.timestamp() * 1000)
    if fmt == "epoch_seconds":
        return moment.timestamp()
    return moment.isoformat().replace("+00:00", "Z")


def input_schema(contract: Contract) -> dict[str, Any]:
    """The JSON Schema of one input record of the contract's model: each input field as the contract
    declares it, required where the contract requires it."""
    features, _ = feature_order(contract)
    properties = contract.payload_schema.get("properties", {})
    required = set(contract.payload_schema.get("required", []))
    return {"type": "object", "required": [f for f in features if f in required],
            "properties": {f: properties.get(f, {}) for f in features}}


# -- export (needs the fitted model, hence Spark) ---------------------------------------------------

def export(model: PipelineModel, *, features: list[str], categorical: list[str],
           input_schema: dict[str, Any], derived: list[dict[str, str]] | None = None,
           classes: list[str] | None = None, event_time: dict[str, str] | None = None,
           task: str | None = None) -> dict[str, Any]:
    """The JSON document of a fitted pipeline: its inputs, the derived columns computed from them
    (:func:`derived_for`), its stages' parameters, in order; ``classes``: a multiclass model's, in
    the order of its probability vector; ``event_time``: :func:`event_time_for`; ``task``: binary
    (the default), multiclass (implied by ``classes``) or regression."""
    stages = [_stage(stage) for stage in model.stages]
    doc: dict[str, Any] = {"format": FORMAT, "features": list(features), "categorical": list(categorical),
                           "input_schema": input_schema, "derived": list(derived or []), "stages": stages}
    if event_time is not None:
        doc["event_time"] = dict(event_time)
    if classes is not None:
        doc.update(task="multiclass", classes=list(classes))
    elif task == "regression":
        doc["task"] = "regression"
    return doc


def _stage(stage: Any) -> dict[str, Any]:
    kind = type(stage).__name__
    if kind == "ImputerModel":
        row = stage.surrogateDF.collect()[0].asDict()
        inputs = stage.getInputCols()
        return {"kind": "impute", "inputs": inputs, "outputs": stage.getOutputCols(),
                "values": [float(row[c]) for c in inputs]}
    if kind == "SQLTransformer":
        statement = stage.getStatement()
        body = statement.removeprefix("SELECT *, ").removesuffix(" FROM __THIS__")
        if body == statement:
            raise PortableError(f"SQLTransformer statement not supported: {statement!r}")
        fill = _TEXT_FILL.match(body)
        if fill is not None:  # a text feature, null as empty text
            return {"kind": "text_fill", "input": fill.group(1), "output": fill.group(2)}
        pairs = []
        for expr in body.split(", "):
            m = _PAIR.match(expr)
            if m is None:
                raise PortableError(f"SQLTransformer expression not supported: {expr!r}")
            pairs.append({"left": m.group(1), "op": m.group(2), "right": m.group(3), "output": m.group(4)})
        return {"kind": "pairs", "pairs": pairs}
    if kind == "StringIndexerModel":
        return {"kind": "index", "inputs": stage.getInputCols(), "outputs": stage.getOutputCols(),
                "labels": [list(labels) for labels in stage.labelsArray],
                "handle_invalid": stage.getHandleInvalid()}
    if kind == "OneHotEncoderModel":
        keep, drop_last = stage.getHandleInvalid() == "keep", stage.getDropLast()
        sizes = [int(n) + (1 if keep and not drop_last else -1 if drop_last and not keep else 0)
                 for n in stage.categorySizes]
        return {"kind": "one_hot", "inputs": stage.getInputCols(), "outputs": stage.getOutputCols(),
                "category_sizes": [int(n) for n in stage.categorySizes], "sizes": sizes, "keep_invalid": keep}
    if kind == "RegexTokenizer":
        from ml.train import TOKEN_PATTERN

        if not stage.getGaps() or stage.getPattern() != TOKEN_PATTERN:
            raise PortableError(f"RegexTokenizer other than ml.train's (gaps, pattern {TOKEN_PATTERN!r}) is not supported")
        return {"kind": "tokens", "input": stage.getInputCol(), "output": stage.getOutputCol(),
                "pattern": stage.getPattern(), "lowercase": stage.getToLowercase(),
                "min_length": stage.getMinTokenLength()}
    if kind == "TextEmbedder":
        from ml import text

        endpoint = stage.getEndpoint()
        return {"kind": "embed", "input": stage.getInputCol(), "output": stage.getOutputCol(),
                **(text.describe_endpoint(endpoint, stage.getDims()) if endpoint else text.describe(stage.getDims()))}
    if kind == "HashingTF":
        return {"kind": "hash", "input": stage.getInputCol(), "output": stage.getOutputCol(),
                "buckets": stage.getNumFeatures(), "binary": stage.getBinary()}
    if kind == "VectorAssembler":
        return {"kind": "assemble", "inputs": stage.getInputCols(), "output": stage.getOutputCol()}
    if kind == "StandardScalerModel":
        return {"kind": "scale", "mean": stage.mean.toArray().tolist(), "std": stage.std.toArray().tolist(),
                "with_mean": stage.getWithMean(), "with_std": stage.getWithStd()}
    if kind == "LogisticRegressionModel":
        if stage.numClasses > 2:  # multinomial: one row of coefficients per class
            return {"kind": "softmax", "coefficients": stage.coefficientMatrix.toArray().tolist(),
                    "intercepts": stage.interceptVector.toArray().tolist()}
        return {"kind": "logistic", "coefficients": stage.coefficients.toArray().tolist(),
                "intercept": float(stage.intercept)}
    if kind == "LinearRegressionModel":
        return {"kind": "linear", "coefficients": stage.coefficients.toArray().tolist(),
                "intercept": float(stage.intercept)}
    if kind == "GBTRegressionModel":
        return {"kind": "gbt_regression", "weights": [float(w) for w in stage.treeWeights],
                "trees": [_tree(tree._java_obj.rootNode()) for tree in stage.trees]}
    if kind in ("SparkXGBClassifierModel", "SparkXGBRegressorModel"):  # its booster, as XGBoost's JSON
        return {"kind": "xgboost", "booster": bytes(stage.get_booster().save_raw("json")).decode("utf-8")}
    if kind == "GBTClassificationModel":
        return {"kind": "gbt", "weights": [float(w) for w in stage.treeWeights],
                "trees": [_tree(tree._java_obj.rootNode()) for tree in stage.trees]}
    raise PortableError(f"pipeline stage {kind} is not supported")


def _tree(root: Any) -> dict[str, list[Any]]:
    """A decision tree as flat arrays (node i: feature, threshold or left categories, children;
    a leaf has feature -1 and its value)."""
    feature: list[int] = []
    threshold: list[float] = []
    categories: list[list[float] | None] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []

    def add(node: Any) -> int:
        i = len(feature)
        feature.append(-1)
        threshold.append(0.0)
        categories.append(None)
        left.append(-1)
        right.append(-1)
        value.append(float(node.prediction()))
        if node.getClass().getSimpleName() == "InternalNode":
            split = node.split()
            feature[i] = int(split.featureIndex())
            if split.getClass().getSimpleName() == "CategoricalSplit":
                categories[i] = [float(c) for c in split.leftCategories()]
            else:
                threshold[i] = float(split.threshold())
            left[i] = add(node.leftChild())
            right[i] = add(node.rightChild())
        return i

    add(root)
    return {"feature": feature, "threshold": threshold, "categories": categories, "left": left,
            "right": right, "value": value}


# -- evaluation (NumPy only) -------------------------------------------------------------------------

class PortableModel:
    """Evaluates an exported pipeline on records (dicts holding the features)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        if doc.get("format") != FORMAT:
            raise PortableError(f"not a {FORMAT} document (format {doc.get('format')!r})")
        self.features: list[str] = list(doc["features"])
        self.categorical: set[str] = set(doc["categorical"])
        self.input_schema: dict[str, Any] = doc["input_schema"]
        self.derived: list[dict[str, str]] = list(doc.get("derived") or [])
        self.event_time: dict[str, str] | None = doc.get("event_time")
        self._query = _derived_query(self.derived) if self.derived else None
        self._local = threading.local()  # a DuckDB connection per thread
        self.task: str = doc.get("task") or "binary"
        self.classes: list[str] | None = doc.get("classes")
        self._stages = [_prepare(s) for s in doc["stages"]]
        # whether scoring calls a text endpoint (network calls: not on an event loop's thread)
        self.calls_endpoint = any(s.get("client") is not None for s in self._stages)
        last = self._stages[-1]["kind"] if self._stages else None
        ends = {"binary": ("logistic", "gbt", "xgboost"), "multiclass": ("softmax", "xgboost"),
                "regression": ("linear", "gbt_regression", "xgboost")}
        if self.task not in ends:
            raise PortableError(f"unknown task {self.task!r}")
        if last not in ends[self.task] or (last == "xgboost" and (self.task == "multiclass") != bool(self.classes)):
            raise PortableError(f"a {self.task} model cannot end with a {last} stage")

    def probabilities(self, records: list[dict[str, Any]]) -> np.ndarray:
        """P(positive) of each record (a binary model), as the MLlib pipeline computes it."""
        if self.task != "binary":
            raise PortableError(f"a {self.task} model has no probability of a positive label: use "
                                f"{'class_probabilities' if self.task == 'multiclass' else 'values'}")
        return self._evaluate(records)

    def values(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Each record's predicted value (a regression model), as the MLlib pipeline computes it."""
        if self.task != "regression":
            raise PortableError(f"a {self.task} model predicts probabilities, not values")
        return self._evaluate(records)

    def class_probabilities(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Each record's probability of each class (a multiclass model; rows, classes in order)."""
        if self.task != "multiclass":
            raise PortableError(f"a {self.task} model has no class probabilities: use "
                                f"{'values' if self.task == 'regression' else 'probabilities'}")
        out = self._evaluate(records)
        return out.reshape(len(records), len(self.classes or ()))

    def vectors(self, records: list[dict[str, Any]]) -> np.ndarray:
        """The feature vector the pipeline's model reads for each record (rows; the assembled and, if
        the pipeline scales, scaled columns): what SageMaker's built-in XGBoost container is sent."""
        return self._evaluate(records, vectors=True)

    def _evaluate(self, records: list[dict[str, Any]], vectors: bool = False) -> np.ndarray:
        n = len(records)
        cols: dict[str, Any] = {}
        event_time = self.event_time or {}
        for name in self.features:
            values = [r.get(name) for r in records]
            if name == event_time.get("field"):  # the stream's rows hold a timestamp: the contract's format
                values = [event_time_wire(v, event_time["format"]) for v in values]
            if name in self.categorical:
                cols[name] = values
            else:
                cols[name] = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
        if self._query is not None:
            self._add_derived(records, cols)
        vector = np.zeros((n, 0))
        for stage in self._stages:
            kind = stage["kind"]
            if vectors and kind in _MODEL_KINDS:
                return vector
            if kind == "impute":
                for src, dst, fill in zip(stage["inputs"], stage["outputs"], stage["values"], strict=True):
                    col = cols[src]
                    cols[dst] = np.where(np.isnan(col), fill, col)
            elif kind == "pairs":
                for p in stage["pairs"]:
                    a, b = cols[p["left"]], cols[p["right"]]
                    cols[p["output"]] = a * b if p["op"] == "*" else a - b
            elif kind == "index":
                for src, dst, lookup, unseen in zip(stage["inputs"], stage["outputs"], stage["lookup"],
                                                    stage["unseen"], strict=True):
                    cols[dst] = np.array([lookup.get(v, unseen) if v is not None else unseen for v in cols[src]],
                                         dtype=np.float64)
            elif kind == "one_hot":
                for src, dst, size, origin in zip(stage["inputs"], stage["outputs"], stage["sizes"],
                                                  stage["category_sizes"], strict=True):
                    index = cols[src].astype(np.int64)
                    index = np.where((index >= 0) & (index < origin), index, origin)  # invalid: the extra slot
                    out = np.zeros((n, size))
                    hit = index < size
                    out[np.nonzero(hit)[0], index[hit]] = 1.0
                    cols[dst] = out
            elif kind == "text_fill":
                cols[stage["output"]] = ["" if v is None else str(v) for v in cols[stage["input"]]]
            elif kind == "tokens":
                split, low, least = stage["regex"].split, stage["lowercase"], stage["min_length"]
                cols[stage["output"]] = [[t for t in split(s.lower() if low else s) if len(t) >= least]
                                         for s in cols[stage["input"]]]
            elif kind == "hash":
                import mmh3

                buckets = stage["buckets"]
                out = np.zeros((n, buckets))
                for r, tokens in enumerate(cols[stage["input"]]):
                    for token in tokens:
                        out[r, mmh3.hash(token.encode("utf-8"), HASH_SEED) % buckets] += 1.0
                cols[stage["output"]] = np.minimum(out, 1.0) if stage["binary"] else out
            elif kind == "embed":
                from ml.text import embed, embed_remote

                texts = list(cols[stage["input"]])
                client = stage.get("client")
                embedded = embed(texts, stage["dims"]) if client is None else embed_remote(client, texts, stage["dims"])
                cols[stage["output"]] = embedded.astype(np.float64)
            elif kind == "assemble":
                vector = np.column_stack([c if c.ndim == 2 else c[:, None] for c in (cols[i] for i in stage["inputs"])])
            elif kind == "scale":
                if stage["with_mean"]:
                    vector = vector - stage["mean"]
                if stage["with_std"]:
                    vector = vector * stage["inv_std"]
            elif kind == "logistic":
                margin = vector @ stage["coefficients"] + stage["intercept"]
                return 1.0 / (1.0 + np.exp(-margin))
            elif kind == "softmax":
                margin = vector @ stage["coefficients"].T + stage["intercepts"]
                margin -= margin.max(axis=1, keepdims=True)
                exp = np.exp(margin)
                return exp / exp.sum(axis=1, keepdims=True)
            elif kind == "xgboost":
                return np.asarray(stage["booster"].inplace_predict(vector), dtype=np.float64)
            elif kind == "linear":
                return vector @ stage["coefficients"] + stage["intercept"]
            elif kind in ("gbt", "gbt_regression"):
                margin = np.zeros(n)
                for weight, tree in zip(stage["weights"], stage["trees"], strict=True):
                    margin += weight * _predict_tree(tree, vector)
                return margin if kind == "gbt_regression" else 1.0 / (1.0 + np.exp(-2.0 * margin))  # logistic loss
        raise PortableError("the pipeline does not end with a model")  # pragma: no cover


    def _add_derived(self, records: list[dict[str, Any]], cols: dict[str, Any]) -> None:
        """The derived columns of ``records`` (DuckDB, on the inputs as the contract types them)."""
        import pyarrow as pa

        properties = self.input_schema.get("properties", {})
        arrays = {}
        event_time = self.event_time or {}
        for name in self.features:
            kind = properties.get(name, {}).get("type")
            values = [r.get(name) for r in records]
            if name == event_time.get("field"):  # a timestamp (UTC), as the stream's derived columns see it
                arrays[name] = pa.array([None if v is None else event_time_value(v, event_time["format"])
                                         for v in values], pa.timestamp("us"))
            elif kind == "integer":
                arrays[name] = pa.array([None if v is None else int(v) for v in values], pa.int64())
            elif kind == "number":
                arrays[name] = pa.array([None if v is None else float(v) for v in values], pa.float64())
            elif kind in ("object", "array"):  # as Spark keeps them: their JSON text
                arrays[name] = pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values],
                                        pa.string())
            else:
                arrays[name] = pa.array(values, pa.bool_() if kind == "boolean" else pa.string())
        connection = getattr(self._local, "duckdb", None)
        if connection is None:
            import duckdb

            connection = self._local.duckdb = duckdb.connect()
        assert self._query is not None
        connection.register("inputs", pa.table(arrays))
        try:
            out = connection.sql(self._query).to_arrow_table()
        finally:
            connection.unregister("inputs")
        for d in self.derived:
            values = out.column(d["name"]).to_pylist()
            cols[d["name"]] = values if d["type"] == "string" else np.array(
                [math.nan if v is None else float(v) for v in values], dtype=np.float64)


_MODEL_KINDS = ("logistic", "softmax", "xgboost", "gbt", "linear", "gbt_regression")  # a pipeline's last stage
_DUCKDB_TYPES = {"double": "DOUBLE", "int": "INTEGER", "bigint": "BIGINT", "boolean": "BOOLEAN", "string": "VARCHAR"}


def _derived_query(derived: list[dict[str, str]]) -> str:
    """One DuckDB query adding each derived column to the table ``inputs`` (each may use the ones before)."""
    query = "SELECT * FROM inputs"
    for d in derived:
        name = d["name"].replace('"', '""')
        query = f'SELECT *, TRY_CAST(({d["duckdb"]}) AS {_DUCKDB_TYPES[d["type"]]}) AS "{name}" FROM ({query})'
    return query


def _prepare(stage: dict[str, Any]) -> dict[str, Any]:
    """A stage with its lookups built once."""
    kind = stage.get("kind")
    if kind == "index":
        if stage["handle_invalid"] != "keep":
            raise PortableError(f"StringIndexer handleInvalid={stage['handle_invalid']!r} is not supported")
        return {**stage, "lookup": [{label: float(i) for i, label in enumerate(labels)} for labels in stage["labels"]],
                "unseen": [float(len(labels)) for labels in stage["labels"]]}
    if kind == "scale":
        std = np.asarray(stage["std"], dtype=np.float64)
        return {**stage, "mean": np.asarray(stage["mean"], dtype=np.float64),
                "inv_std": np.divide(1.0, std, out=np.zeros_like(std), where=std != 0.0)}
    if kind in ("logistic", "linear"):
        return {**stage, "coefficients": np.asarray(stage["coefficients"], dtype=np.float64)}
    if kind == "softmax":
        return {**stage, "coefficients": np.asarray(stage["coefficients"], dtype=np.float64),
                "intercepts": np.asarray(stage["intercepts"], dtype=np.float64)}
    if kind in ("gbt", "gbt_regression"):
        return stage
    if kind == "xgboost":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(bytearray(stage["booster"].encode("utf-8")))
        return {**stage, "booster": booster}
    if kind == "tokens":
        return {**stage, "regex": re.compile(stage["pattern"])}
    if kind == "embed" and stage["encoder"] == ENDPOINT_ENCODER:
        from ml.text import endpoint_client

        return {**stage, "client": endpoint_client(stage["endpoint"])}  # by this process's settings
    if kind == "embed":
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version(stage["encoder"])
        except PackageNotFoundError:
            raise PortableError(f"the model embeds text with {stage['encoder']} {stage['version']}, which is not "
                                "installed") from None
        if installed != stage["version"]:  # another release may embed differently
            raise PortableError(f"the model embeds text with {stage['encoder']} {stage['version']}; "
                                f"{installed} is installed")
        return stage
    if kind in ("impute", "pairs", "one_hot", "assemble", "text_fill", "hash"):
        return stage
    raise PortableError(f"unknown stage kind {kind!r}")


def _predict_tree(tree: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Each row's leaf value: continuous splits go left when ``x <= threshold``, categorical ones when
    the value is one of the left categories."""
    feature, threshold, left, right, value = (tree[k] for k in ("feature", "threshold", "left", "right", "value"))
    categories = tree["categories"]
    out = np.empty(len(x))
    for r, row in enumerate(x.tolist()):  # plain lists: scalar lookups in NumPy are slower
        i = 0
        while feature[i] >= 0:
            v = row[feature[i]]
            goes_left = v in categories[i] if categories[i] is not None else v <= threshold[i]
            i = left[i] if goes_left else right[i]
        out[r] = value[i]
    return out
