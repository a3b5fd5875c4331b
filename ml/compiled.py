"""An MLlib pipeline model of Streamsight's shape, turned into Spark SQL expressions.

The streaming scorer's MLlib path (``PipelineModel.transform``) assembles a vector per row, scales
it and walks the trees through JVM objects: about 9 µs per record on this project's machine, one
of the largest costs of a silver micro-batch. :func:`compile_probability` reads the fitted stages
(imputer surrogates, string-index labels, one-hot sizes, scaler mean and standard deviation, the
classifier's trees or coefficients) and writes the same arithmetic as SQL: one scalar expression
per vector slot, so no vector is built. A logistic regression is then one more expression. A GBT's
trees are summed by ``TreeEnsemble`` (``streaming_jobs/jvm``), a JVM function over the slots that
walks flat node arrays. The trees as nested SQL ``CASE WHEN`` s measured no faster than MLlib:
their generated code is too large for the JIT compiler.

The arithmetic is the MLlib stages' own, in their order (so a split compares the same double that
MLlib compares):

* ``Imputer``: its own column expressions (``transform`` is plain SQL);
* ``SQLTransformer``: its statement, applied as is;
* ``StringIndexer`` (``handleInvalid=keep``): the label's index; an unseen or null label gets
  ``numLabels``;
* ``OneHotEncoder``: slot ``i`` is 1.0 when the index is ``i``, for the configured vector size
  (``dropLast``, ``handleInvalid=keep``);
* ``VectorAssembler`` (``handleInvalid=keep``): the slots in order, a null number as NaN;
* ``StandardScaler``: ``(x - mean) * (1 / std)`` (0 where ``std`` is 0), as MLlib computes it;
* ``GBTClassifier``: ``1 / (1 + exp(-2 * margin))`` with ``margin`` the weighted sum of the trees
  (a split sends ``x <= threshold`` left, and NaN right, as MLlib does);
* ``LogisticRegression`` (binary): ``1 / (1 + exp(-(w . x + b)))``.

MLlib sums the trees (and the dot product) with its BLAS, which may add in another order or with
fused multiply-adds (vector instructions), and takes ``exp`` from ``java.lang.Math`` where Spark
SQL uses ``StrictMath``: a probability can differ from MLlib's in its last bits (measured: at most
9e-16 on a margin, 5e-16 on a probability). ``tests/ml/test_compiled.py`` requires agreement within
1e-12, on the AI4I rows and on rows with nulls and unseen categories, and the same predicted label
away from the threshold.
A model with any other stage or parameter, or a GBT without the jar, is not compiled
(:func:`compile_probability` returns ``None`` and says why in the log), and the scorer uses
``PipelineModel.transform``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame

log = logging.getLogger("ml.compiled")

PROBABILITY = "_ss_compiled_probability"  # the column compile_probability's function adds


class NotCompilable(ValueError):
    """A stage or parameter this compiler does not translate."""


def _num(value: float) -> str:
    """A double literal that reads back as exactly ``value``."""
    if math.isnan(value):
        return "CAST('NaN' AS DOUBLE)"
    if math.isinf(value):
        return f"CAST('{'Infinity' if value > 0 else '-Infinity'}' AS DOUBLE)"
    return f"CAST({value!r} AS DOUBLE)" if "e" in repr(value) else f"{value!r}D"


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _text(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Compiler:
    """Walks the stages, keeping for each vector column the SQL of its slots."""

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self.vectors: dict[str, list[str]] = {}
        self.steps: list[Callable[[DataFrame], DataFrame]] = []  # DataFrame stages applied as they are
        self.columns: dict[str, str] = {}  # scalar columns of translated stages: name -> SQL (inlined where used)
        self.features: list[tuple[str, str]] = []  # the classifier's input slots, as columns: name -> SQL

    def _scalar(self, name: str) -> str:
        return self.columns.get(name, _quote(name))

    def _param(self, stage: Any, name: str) -> Any:
        return stage.getOrDefault(stage.getParam(name))

    # -- stages ------------------------------------------------------------------------------
    def imputer(self, stage: Any) -> None:
        # ImputerModel.transform is plain column expressions over its surrogates
        self.steps.append(stage.transform)

    def sql_transformer(self, stage: Any) -> None:
        if self.columns:
            raise NotCompilable("SQLTransformer after a compiled stage")
        self.steps.append(stage.transform)

    def string_indexer(self, stage: Any) -> None:
        if self._param(stage, "handleInvalid") != "keep":
            raise NotCompilable(f"StringIndexer handleInvalid={self._param(stage, 'handleInvalid')}")
        inputs = stage.getInputCols() if stage.isSet("inputCols") else [stage.getInputCol()]
        outputs = stage.getOutputCols() if stage.isSet("outputCols") else [stage.getOutputCol()]
        for inp, out, labels in zip(inputs, outputs, stage.labelsArray, strict=True):
            value = f"CAST({self._scalar(inp)} AS STRING)"
            cases = " ".join(f"WHEN {_text(label)} THEN {float(i)!r}D" for i, label in enumerate(labels))
            self.columns[out] = f"(CASE {value} {cases} ELSE {float(len(labels))!r}D END)"

    def one_hot(self, stage: Any) -> None:
        keep = self._param(stage, "handleInvalid") == "keep"
        if not keep:
            raise NotCompilable(f"OneHotEncoder handleInvalid={self._param(stage, 'handleInvalid')}")
        drop_last = bool(self._param(stage, "dropLast"))
        inputs = stage.getInputCols() if stage.isSet("inputCols") else [stage.getInputCol()]
        outputs = stage.getOutputCols() if stage.isSet("outputCols") else [stage.getOutputCol()]
        for inp, out, size in zip(inputs, outputs, stage.categorySizes, strict=True):
            index = self._scalar(inp)
            slots = size + (1 if keep else 0) - (1 if drop_last else 0)
            # an index outside [0, size) is invalid: kept as category `size` (dropped if it is the last)
            valid = f"({index} >= 0D AND {index} < {float(size)!r}D)"
            hot = f"(CASE WHEN {valid} THEN {index} ELSE {float(size)!r}D END)"
            self.vectors[out] = [f"(CASE WHEN {hot} = {float(i)!r}D THEN 1.0D ELSE 0.0D END)" for i in range(slots)]

    def assembler(self, stage: Any) -> None:
        if self._param(stage, "handleInvalid") != "keep":
            raise NotCompilable(f"VectorAssembler handleInvalid={self._param(stage, 'handleInvalid')}")
        slots: list[str] = []
        for name in stage.getInputCols():
            if name in self.vectors:
                slots += self.vectors[name]
            else:
                slots.append(f"COALESCE(CAST({self._scalar(name)} AS DOUBLE), CAST('NaN' AS DOUBLE))")
        self.vectors[stage.getOutputCol()] = slots

    def scaler(self, stage: Any) -> None:
        slots = self._vector(stage.getInputCol())
        mean = stage.mean.toArray() if stage.getWithMean() else None
        std = stage.std.toArray() if stage.getWithStd() else None
        out = []
        for i, slot in enumerate(slots):
            expr = slot
            if mean is not None:
                expr = f"({expr} - {_num(float(mean[i]))})"
            if std is not None:
                scale = 0.0 if float(std[i]) == 0.0 else 1.0 / float(std[i])
                expr = f"({expr} * {_num(scale)})"
            out.append(expr)
        self.vectors[stage.getOutputCol()] = out

    def _vector(self, name: str) -> list[str]:
        if name not in self.vectors:
            raise NotCompilable(f"vector column {name!r} does not come from a compiled stage")
        return self.vectors[name]

    def gbt(self, stage: Any) -> str:
        if self._param(stage, "lossType") != "logistic":
            raise NotCompilable(f"GBTClassifier lossType={self._param(stage, 'lossType')}")
        function = tree_function(self.spark, stage)
        features = self._feature_columns(stage)
        margin = f"{function}(array({', '.join(features)}))"
        return f"(1.0D / (1.0D + EXP(-2.0D * {margin})))"

    def logistic(self, stage: Any) -> str:
        if stage.numClasses != 2:
            raise NotCompilable(f"LogisticRegression with {stage.numClasses} classes")
        features = self._feature_columns(stage)
        terms = [f"({features[i]} * {_num(float(w))})" for i, w in enumerate(stage.coefficients.toArray())]
        margin = f"({_sum(terms)} + {_num(float(stage.intercept))})"
        return f"(1.0D / (1.0D + EXP(-({margin}))))"

    def _feature_columns(self, stage: Any) -> list[str]:
        """The classifier's feature slots as columns: each computed once per row, not per use."""
        slots = self._vector(stage.getFeaturesCol())
        self.features = [(f"_ss_c{i}", slot) for i, slot in enumerate(slots)]
        return [_quote(name) for name, _ in self.features]


def _sum(terms: list[str]) -> str:
    return "(" + " + ".join(terms) + ")" if terms else "0.0D"


def _flatten(root: Any) -> dict[str, list[Any]]:
    """A fitted decision tree (JVM ``Node`` objects) as the flat arrays of ``TreeEnsemble.java``."""
    tree: dict[str, list[Any]] = {k: [] for k in ("feature", "threshold", "left", "right", "value", "categories")}
    pending = [root]
    while pending:  # ids in visiting order; children are appended after their parent
        node = pending.pop(0)
        kind = node.getClass().getSimpleName()
        if kind == "LeafNode":
            entry = {"feature": -1, "threshold": 0.0, "left": -1, "right": -1,
                     "value": float(node.prediction()), "categories": None}
        elif kind == "InternalNode":
            split = node.split()
            split_kind = split.getClass().getSimpleName()
            if split_kind not in ("ContinuousSplit", "CategoricalSplit"):
                raise NotCompilable(f"split {split_kind}")
            continuous = split_kind == "ContinuousSplit"
            first = len(tree["feature"]) + len(pending) + 1
            entry = {"feature": int(split.featureIndex()), "threshold": float(split.threshold()) if continuous else 0.0,
                     "left": first, "right": first + 1, "value": 0.0,
                     "categories": None if continuous else [float(v) for v in split.leftCategories()]}
            pending += [node.leftChild(), node.rightChild()]
        else:
            raise NotCompilable(f"tree node {kind}")
        for key, value in entry.items():
            tree[key].append(value)
    return tree


def tree_function(spark: Any, stage: Any) -> str:
    """Register the ensemble's margin as a JVM function (``streaming_jobs/jvm``'s
    ``TreeEnsemble``); its SQL name. Without the jar the model is not compiled: trees as nested SQL
    ``CASE WHEN`` s measured no faster than MLlib (generated methods too large for the JIT)."""
    import hashlib
    import json

    from streaming_jobs import jvm

    if not jvm.available(spark):
        raise NotCompilable("the JVM jar (streaming_jobs/jvm) is not on the classpath")
    spec = json.dumps({"trees": [_flatten(t._java_obj.rootNode()) for t in stage.trees],
                       "weights": [float(w) for w in stage.treeWeights]}, sort_keys=True)
    name = "streamsight_trees_" + hashlib.sha1(spec.encode()).hexdigest()[:16]
    return jvm.register_once(spark, name, lambda j: (j.io.streamsight.jvm.TreeEnsemble(spec),
                                                     j.org.apache.spark.sql.types.DataTypes.DoubleType))


_STAGES = {
    "ImputerModel": _Compiler.imputer,
    "SQLTransformer": _Compiler.sql_transformer,
    "StringIndexerModel": _Compiler.string_indexer,
    "OneHotEncoderModel": _Compiler.one_hot,
    "VectorAssembler": _Compiler.assembler,
    "StandardScalerModel": _Compiler.scaler,
}
_CLASSIFIERS = {"GBTClassificationModel": _Compiler.gbt, "LogisticRegressionModel": _Compiler.logistic}


def compile_probability(spark: Any, model: PipelineModel) -> Callable[[DataFrame], DataFrame] | None:
    """A function that adds :data:`PROBABILITY` (P(positive class), a double) to a DataFrame the
    way ``model.transform`` computes it; ``None`` (logged) for a model it cannot translate."""
    try:
        return _compile(spark, model)
    except NotCompilable as exc:
        log.info("scoring with PipelineModel.transform: the model is not compilable to SQL (%s)", exc)
        return None
    except Exception:  # noqa: BLE001 - a defect here must not stop scoring: MLlib scores instead
        log.warning("scoring with PipelineModel.transform: translating the model to SQL failed", exc_info=True)
        return None


def _compile(spark: Any, model: PipelineModel) -> Callable[[DataFrame], DataFrame]:
    from pyspark.sql import functions as F

    compiler = _Compiler(spark)
    stages = list(model.stages)
    if not stages or type(stages[-1]).__name__ not in _CLASSIFIERS:
        raise NotCompilable("the last stage is not a GBT or logistic-regression classifier")
    for stage in stages[:-1]:
        translate = _STAGES.get(type(stage).__name__)
        if translate is None:
            raise NotCompilable(f"stage {type(stage).__name__}")
        translate(compiler, stage)
    probability = _CLASSIFIERS[type(stages[-1]).__name__](compiler, stages[-1])
    steps, layers = list(compiler.steps), [list(compiler.features)]

    def apply(df: DataFrame) -> DataFrame:
        original = [F.col(_quote(name)) for name in df.columns]
        for step in steps:
            df = step(df)
        # Each layer keeps only the input's columns and its own: whole-stage code generation is
        # off for a plan node with more than spark.sql.codegen.maxFields (100) columns.
        for layer in layers:
            if layer:
                df = df.select(*original, *(F.expr(sql).alias(name) for name, sql in layer))
        return df.select(*original, F.expr(probability).alias(PROBABILITY))

    return apply
