"""Train the model a contract declares, evaluate it on held-out data, register it, maybe promote it.

What :func:`train_model` does, for the contract's ``model:`` block (name, label, features,
categorical_features, positive_label):

1. Reads the silver table (or the DataFrame it is given) and drops rows whose label or event time
   is null (counted and logged). With ``model.route_by``, it keeps the rows that name this model
   (and, for the stream's fallback model, those that name none): the rows it will score.
2. Splits **by time**: rows ordered by event time, then the contract's de-duplication key (for
   ``machine_telemetry``: ``event_time, event_id``). The first ``train_fraction`` is the training
   part, the rest is held out as the test set and used only for the final evaluation. The last
   ``validation_fraction`` of the training part (again by time) is the validation slice.
3. Fits candidate pipelines on the rest of the training part -- median imputation, pairwise
   products and differences of the numeric features, StringIndexer + OneHotEncoder for categorical
   features, VectorAssembler, StandardScaler, then ``logistic_regression`` or ``gbt``
   (GBTClassifier, 20 trees of depth 5, 256 bins); both weighted by inverse class frequency -- and keeps the
   one with the best AUC-PR on the validation slice.
4. Chooses the decision threshold that maximises F1 (``threshold_metric``; any ``f<beta>``) on the
   validation slice.
5. Refits the chosen pipeline on the whole training part (``refit=True``), keeping that threshold.
6. Evaluates on the test set: AUC-PR, AUC-ROC, precision, recall, F1 and the confusion matrix at
   the threshold, next to a majority-class baseline (AUC-PR = the test positive rate, F1 = 0).
7. Registers the model as a new version (:class:`ml.registry.ModelRegistry`) and, with
   ``promote=True``, points the ``production`` alias at it if there is no production model yet or
   its test AUC-PR is at least the current production version's.

A multiclass model (``model.task: multiclass``) differs in steps 1, 3-6: the label is the index of
its value among the contract's classes (rows with another value are excluded and counted); every
class weighs the same; the candidates (multinomial logistic regression and XGBoost by default) are
ranked by macro F1; there is no threshold (the most probable class is predicted); the test figures
are accuracy, macro and weighted F1, log loss, per-class precision and recall and the confusion
matrix, next to a majority-class baseline; promotion compares macro F1.

A regression model (``model.task: regression``, a numeric label) is unweighted; its candidates
(linear regression and XGBoost by default, or GBT regression) are ranked by RMSE (lower is better);
there is no threshold; the test figures are RMSE, MAE and R², next to a baseline that predicts the
training mean; promotion compares RMSE.

Run it on a cluster with spark-submit (client mode; the driver needs this project importable; the
executors need it and the locked environment only for XGBoost and embedded text, whose stages run in
Python workers -- Ansible's jobs ship both). From the project root::

    STREAMSIGHT_PROFILE=docker spark-submit --master spark://spark-master:7077 \\
        --py-files streamsight.zip \\
        ml/train.py --model machine_failure [--train-fraction 0.8] [--no-promote]

(``ml/train.py`` puts the project root on ``sys.path`` itself when run as a script; settings come
from ``STREAMSIGHT_*`` / the profile, and ``settings.spark.conf`` -- e.g. the s3a endpoint -- is
applied to the session; ``--master`` and other spark-submit flags win.)

or, from anywhere the package is installed, ``streamsight train --model machine_failure``.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from itertools import combinations
from typing import TYPE_CHECKING, Any, Literal

if __package__ in (None, ""):  # run as a script by spark-submit: make the project importable
    from pathlib import Path as _Path

    sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))

from ml import (
    BINARY,
    LOWER_IS_BETTER,
    MULTICLASS,
    PRIMARY_METRIC,
    PRODUCTION_ALIAS,
    REGRESSION,
    at_least_as_good,
    portable,
)
from streamsight.errors import ConfigError, StreamsightError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import Pipeline
    from pyspark.sql import DataFrame, SparkSession

    from streamsight.contracts import Contract
    from streamsight.settings import Settings

log = logging.getLogger("ml.train")

ALGORITHMS = ("logistic_regression", "gbt")  # the candidates a training compares by default
MULTICLASS_ALGORITHMS = ("logistic_regression", "xgboost")  # by default, for a multiclass model
REGRESSION_ALGORITHMS = ("linear_regression", "xgboost")  # by default, for a regression model
DEFAULT_ALGORITHMS = {BINARY: ALGORITHMS, MULTICLASS: MULTICLASS_ALGORITHMS, REGRESSION: REGRESSION_ALGORITHMS}
# What each task can train (xgboost: XGBoost's own Spark estimator; Spark's GBTClassifier has two classes)
TASK_ALGORITHMS = {BINARY: ("logistic_regression", "gbt", "xgboost"),
                   MULTICLASS: ("logistic_regression", "xgboost"),
                   REGRESSION: ("linear_regression", "gbt", "xgboost")}
KNOWN_ALGORITHMS = ("logistic_regression", "linear_regression", "gbt", "xgboost")
MIN_ROWS = 100
MIN_TRAIN_ROWS = 50
MIN_SLICE_ROWS = 10
MAX_INTERACTION_FEATURES = 12
ROWS_PER_PARTITION = 100_000
# Classifier hyper-parameters, overridable per call with ``train_model(..., params={"gbt": {...}})``.
# Iterations are capped so a 10k-row training stays well under a minute on two cores: each
# iteration is at least one Spark job, and per-job overhead dominates at this size. 256 bins: a
# failure rule on a rare tail (AI4I's power and strain limits) needs split points finer than 32
# quantiles give.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"maxIter": 30, "regParam": 1e-3, "elasticNetParam": 0.0},
    "linear_regression": {"maxIter": 30, "regParam": 1e-3, "elasticNetParam": 0.0},
    "gbt": {"maxIter": 20, "maxDepth": 5, "stepSize": 0.3, "maxBins": 256},
    "xgboost": {"n_estimators": 100, "max_depth": 5, "learning_rate": 0.1},
}
# Internal column names; prefixed so they never clash with silver columns.
LABEL = "_ss_label"
WEIGHT = "_ss_weight"
FEATURES = "_ss_features"
PROBABILITY = "_ss_probability"
RAW_PREDICTION = "_ss_raw_prediction"
PREDICTION = "_ss_prediction"
SPLIT = "_ss_split"
_PROB1 = "_ss_p1"


class TrainingError(StreamsightError):
    """Training cannot proceed (no model block, too few rows, no positives, ...)."""


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------


def train_model(
    spark: SparkSession,
    settings: Settings,
    contract: Contract,
    *,
    silver: DataFrame | None = None,
    train_fraction: float = 0.8,
    threshold_metric: str = "f1",
    promote: bool = True,
    validation_fraction: float = 0.2,
    algorithms: tuple[str, ...] | None = None,
    refit: bool = True,
    seed: int = 42,
    params: dict[str, dict[str, Any]] | None = None,
    fallback_model: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate, register (and maybe promote) the contract's model; return its metadata.

    ``algorithms``: the candidates (default: the task's, :data:`DEFAULT_ALGORITHMS`).
    ``fallback_model``: with ``model.route_by``, the model that scores records naming none (the
    stream's own ``model.name``; default: this model, as when it is the contract's own)."""
    from pyspark.sql import functions as F

    from ml.registry import ModelRegistry
    from streamsight.lake import models_uri, read_table, table_uri, with_derived

    started = time.monotonic()
    spec = contract.model
    if spec is None:
        raise TrainingError(f"contract {contract.name!r} has no model: block")
    if not 0.0 < train_fraction < 1.0:
        raise TrainingError(f"train_fraction must be between 0 and 1 (exclusive), got {train_fraction}")
    if not 0.0 < validation_fraction < 1.0:
        raise TrainingError(f"validation_fraction must be between 0 and 1 (exclusive), got {validation_fraction}")
    beta = _beta(threshold_metric)
    task = spec.task
    algorithms = tuple(algorithms or DEFAULT_ALGORITHMS[task])
    unknown = [a for a in algorithms if a not in KNOWN_ALGORITHMS]
    if unknown:
        raise TrainingError(f"unknown algorithm(s) {unknown}; choose from {', '.join(KNOWN_ALGORITHMS)}")
    refused = [a for a in algorithms if a not in TASK_ALGORITHMS[task]]
    if refused:
        raise TrainingError(f"{', '.join(refused)} cannot train a {task} model; a {task} model can use "
                            f"{', '.join(TASK_ALGORITHMS[task])}")

    if silver is None:
        uri = table_uri(settings.lake_uri, contract, "silver")
        try:
            silver = read_table(spark, uri)
        except Exception as exc:
            raise TrainingError(f"cannot read the silver table of {contract.name!r} at {uri}: "
                                f"{str(exc).splitlines()[0]}") from exc

    time_col = contract.event_time.field
    order_cols = [time_col, *[c for c in contract.dedup_key if c != time_col]]
    numeric = [c for c in spec.features if c not in spec.categorical_features]
    categorical = list(spec.categorical_features)
    text = list(spec.text_features)
    routes = [spec.route_by] if spec.route_by else []
    derived = contract.model_reads(derived=True)
    if spec.label in {d.name for d in contract.derived} and spec.label not in derived:
        derived = [*derived, spec.label]  # a derived label (cloudtrail's attack_technique)
    read = [c for c in contract.model_reads() if c not in derived]
    needed = list(dict.fromkeys([*order_cols, *read, *numeric, *categorical, *text, spec.label, *routes]))
    missing = [c for c in needed if c not in silver.columns and c not in derived]
    if missing:
        raise TrainingError(f"the silver data of {contract.name!r} lacks column(s) {missing}")
    # The derived columns the model and its label need, computed now from the fields (rows written
    # before one was declared hold nulls in it, or lack it).
    silver = with_derived(silver.drop(*[d for d in derived if d in silver.columns]), contract)

    # -- label, exclusions ----------------------------------------------------------------------
    data = silver.select(*needed)
    if spec.route_by:  # the rows this model scores
        data = data.where(F.coalesce(F.col(spec.route_by), F.lit(fallback_model or spec.name)) == F.lit(spec.name))
    counts = data.agg(
        F.count(F.lit(1)).alias("total"),
        F.sum(F.col(spec.label).isNull().cast("long")).alias("null_label"),
        F.sum((F.col(spec.label).isNotNull() & F.col(time_col).isNull()).cast("long")).alias("null_time"),
    ).collect()[0]
    total, null_label, null_time = int(counts["total"]), int(counts["null_label"] or 0), int(counts["null_time"] or 0)
    if null_label:
        log.warning("excluding %d of %d rows with a null label %r", null_label, total, spec.label)
    if null_time:
        log.warning("excluding %d rows with a null event time %r", null_time, time_col)
    data = data.filter(F.col(spec.label).isNotNull() & F.col(time_col).isNotNull())
    n = total - null_label - null_time
    classes: list[str] | None = None
    other_class = 0
    if task == MULTICLASS:
        classes = contract.model_classes() or sorted(
            str(r[0]) for r in data.select(F.col(spec.label).cast("string")).distinct().collect())
        index = F.array_position(F.array(*[F.lit(c) for c in classes]), F.col(spec.label).cast("string")) - 1
        data = data.withColumn(LABEL, index.cast("double"))
        other_class = data.filter(F.col(LABEL) < 0).count()
        if other_class:
            log.warning("excluding %d rows whose %r is none of the classes %s", other_class, spec.label, classes)
            data = data.filter(F.col(LABEL) >= 0)
            n -= other_class
        if len(classes) < 2:
            raise TrainingError(f"{spec.label!r} has one class ({classes}); a multiclass model needs two or more")
    elif task == REGRESSION:
        data = data.withColumn(LABEL, F.col(spec.label).cast("double"))
    else:
        data = data.withColumn(LABEL, (F.col(spec.label) == F.lit(spec.positive_label)).cast("double"))
    if n < MIN_ROWS:
        raise TrainingError(f"too few labelled rows to train {spec.name!r}: {n} (need at least {MIN_ROWS})")

    # -- split by time --------------------------------------------------------------------------
    n_train = int(n * train_fraction)
    n_fit = int(n_train * (1.0 - validation_fraction))
    if n_fit < MIN_TRAIN_ROWS or n_train - n_fit < MIN_SLICE_ROWS or n - n_train < MIN_SLICE_ROWS:
        raise TrainingError(
            f"too few rows for a time split of {n} rows: training {n_fit}, validation {n_train - n_fit}, "
            f"test {n - n_train} (need {MIN_TRAIN_ROWS}/{MIN_SLICE_ROWS}/{MIN_SLICE_ROWS})"
        )
    # Small data: few partitions, because per-task overhead dominates the many iterative jobs.
    parts = max(1, min(int(spark.conf.get("spark.sql.shuffle.partitions", "4") or 4),
                       math.ceil(n / ROWS_PER_PARTITION)))
    indexed, ranged = _time_index(data, order_cols, "_ss_idx", parts)
    split = (indexed.withColumn(SPLIT, F.when(F.col("_ss_idx") < n_fit, "fit")
                                .when(F.col("_ss_idx") < n_train, "validation").otherwise("test"))
             .drop("_ss_idx"))
    split = split.cache()
    split.count()
    ranged.unpersist()
    try:
        return _train_on_split(
            spark, settings, contract, split, ModelRegistry(spark, models_uri(settings.lake_uri)),
            order_cols=order_cols, numeric=numeric, categorical=categorical, beta=beta,
            threshold_metric=threshold_metric, promote=promote, algorithms=algorithms, refit=refit,
            seed=seed, params=params, started=started, task=task, classes=classes,
            extra={"rows_total": total, "rows_excluded_null_label": null_label,
                   "rows_excluded_null_event_time": null_time,
                   **({"rows_excluded_other_class": other_class} if classes else {}),
                   "train_fraction": train_fraction, "validation_fraction": validation_fraction},
        )
    finally:
        split.unpersist()


def main(spark: SparkSession, settings: Settings, argv: list[str] | None = None) -> dict[str, Any]:
    """spark-submit entry point: ``ml/train.py --model NAME [--train-fraction F] [--no-promote]``."""
    parser = argparse.ArgumentParser(prog="ml/train.py", description="Train and register a Streamsight model.")
    parser.add_argument("--model", required=True, help="model name (a contract's model.name)")
    parser.add_argument("--train-fraction", type=float, default=0.8)
    parser.add_argument("--threshold-metric", default="f1")
    parser.add_argument("--no-promote", action="store_true", help="register only, never move 'production'")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    contract = contract_for_model(settings, args.model)
    meta = train_model(spark, settings, contract, train_fraction=args.train_fraction,
                       threshold_metric=args.threshold_metric, promote=not args.no_promote)
    print(summary_line(meta))
    return meta


def contract_for_model(settings: Settings, model_name: str) -> Contract:
    """The contract whose ``model.name`` is ``model_name``."""
    from streamsight.contracts import load_contracts

    contracts = load_contracts(settings.contracts_dir)
    for contract in contracts.values():
        if contract.model is not None and contract.model.name == model_name:
            return contract
    known = sorted(c.model.name for c in contracts.values() if c.model is not None)
    raise ConfigError(f"no contract in {settings.contracts_dir} declares model {model_name!r} "
                      f"(known: {', '.join(known) or 'none'})")


def routed_contract(settings: Settings, stream: str, model_name: str) -> Contract:
    """Stream ``stream``'s contract with its model named ``model_name``: its own model, or another
    one its ``model.route_by`` field may name (same features and label, trained on its silver)."""
    from streamsight.contracts import get_contract, load_contracts

    contract = get_contract(settings.contracts_dir, stream)
    spec = contract.model
    if spec is None:
        raise ConfigError(f"contract {stream!r} has no model: block; nothing to train")
    if model_name == spec.name:
        return contract
    if spec.route_by is None:
        raise ConfigError(f"contract {stream!r} scores with model {spec.name!r} only: --model {model_name} needs "
                          "model.route_by (a field naming each record's model)")
    owners = [c.name for c in load_contracts(settings.contracts_dir).values() if c.model and c.model.name == model_name]
    if owners:
        raise ConfigError(f"model {model_name!r} is contract {owners[0]!r}'s own model; a model --stream {stream} "
                          "trains needs a name no contract declares")
    return contract.model_copy(update={"model": spec.model_copy(update={"name": model_name})})


def summary_line(meta: dict[str, Any]) -> str:
    m, b = meta["metrics"], meta["baseline_metrics"]
    promotion = (f"{'promoted to production' if meta['promotion']['promoted'] else 'not promoted'}"
                 f" ({meta['promotion']['reason']}); {meta['training_seconds']:.1f}s")
    if meta.get("task") == REGRESSION:
        return (f"{meta['model_name']} v{meta['version']} ({meta['algorithm']}, regression): test RMSE "
                f"{_fmt(m['rmse'])} (baseline {_fmt(b['rmse'])}), MAE {_fmt(m['mae'])} (baseline {_fmt(b['mae'])}), "
                f"R² {_fmt(m['r2'])}; {promotion}")
    if meta.get("task") == MULTICLASS:
        return (f"{meta['model_name']} v{meta['version']} ({meta['algorithm']}, {len(meta['classes'])} classes): test "
                f"macro F1 {_fmt(m['f1_macro'])} (baseline {_fmt(b['f1_macro'])}), accuracy {_fmt(m['accuracy'])} "
                f"(baseline {_fmt(b['accuracy'])}), log loss {_fmt(m['log_loss'])}; {promotion}")
    return (f"{meta['model_name']} v{meta['version']} ({meta['algorithm']}): test AUC-PR {_fmt(m['auc_pr'])} "
            f"(baseline {_fmt(b['auc_pr'])}), AUC-ROC {_fmt(m['auc_roc'])}, F1 {_fmt(m['f1'])} at threshold "
            f"{meta['threshold']:.4f}; {promotion}")


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


def _train_on_split(
    spark: SparkSession, settings: Settings, contract: Contract, split: DataFrame, registry: Any, *,
    order_cols: list[str], numeric: list[str], categorical: list[str], beta: float,
    threshold_metric: str, promote: bool, algorithms: tuple[str, ...], refit: bool, seed: int,
    params: dict[str, dict[str, Any]] | None, started: float, extra: dict[str, Any], task: str,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    spec = contract.model
    assert spec is not None
    metric = PRIMARY_METRIC[task]
    time_col = order_cols[0]
    stats = {
        r[SPLIT]: r.asDict()
        for r in split.groupBy(SPLIT).agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(F.when(F.col(LABEL) == 1.0, 1).otherwise(0)).cast("long").alias("positives"),
            F.expr(f"min(unix_micros(`{time_col}`))").alias("min_us"),
            F.expr(f"max(unix_micros(`{time_col}`))").alias("max_us"),
            F.avg(LABEL).alias("label_mean"),
        ).collect()
    }
    fit_stats, val_stats, test_stats = (stats.get(s, {"rows": 0, "positives": 0}) for s in ("fit", "validation", "test"))
    fit_pos, fit_rows = int(fit_stats["positives"] or 0), int(fit_stats["rows"])
    val_pos, val_rows = int(val_stats["positives"] or 0), int(val_stats["rows"])
    counts: dict[str, list[int]] = {}
    if classes is not None:  # rows per class and slice
        counts = {s: [0] * len(classes) for s in ("fit", "validation", "test")}
        for r in split.groupBy(SPLIT, LABEL).count().collect():
            counts[r[SPLIT]][int(r[LABEL])] = int(r["count"])
        absent = [c for c, k in zip(classes, counts["fit"], strict=True) if k == 0]
        if absent:
            raise TrainingError(f"class(es) {absent} of {spec.label!r} have no rows in the training slice ({fit_rows} "
                                f"rows up to {_iso(fit_stats.get('max_us'))}); cannot train {spec.name!r}")
        log.info("time split: fit %s, validation %s, test %s (rows per class %s)",
                 counts["fit"], counts["validation"], counts["test"], classes)
    elif task == REGRESSION:
        log.info("time split: fit %d rows, validation %d, test %d", fit_rows, val_rows, test_stats["rows"])
    else:
        if fit_pos == 0:
            raise TrainingError(
                f"no positive {spec.label!r} rows in the training slice ({fit_rows} rows up to "
                f"{_iso(fit_stats.get('max_us'))}); cannot train {spec.name!r}")
        if fit_pos == fit_rows:
            raise TrainingError(f"every row of the training slice is positive ({fit_rows}); cannot train {spec.name!r}")
        log.info("time split: fit %d rows (%d positive), validation %d (%d), test %d (%d)",
                 fit_rows, fit_pos, val_rows, val_pos, test_stats["rows"], test_stats["positives"] or 0)

    def weighted(df: DataFrame, slices: tuple[str, ...]) -> DataFrame:
        if task == REGRESSION:
            return df.withColumn(WEIGHT, F.lit(1.0))
        if classes is None:
            return _weighted(df, sum(int(stats.get(s, {}).get("rows") or 0) for s in slices),
                             sum(int(stats.get(s, {}).get("positives") or 0) for s in slices))
        return _class_weighted(df, [sum(counts[s][i] for s in slices) for i in range(len(classes))])

    # -- candidates on the fit slice, selection and threshold on the validation slice ------------
    fit_df = weighted(split.filter(F.col(SPLIT) == "fit"), ("fit",))
    val_df = split.filter(F.col(SPLIT) == "validation")
    test_df = split.filter(F.col(SPLIT) == "test")
    # a binary validation slice needs both classes for AUC-PR; the others, rows
    can_validate = (0 < val_pos < val_rows) if task == BINARY else val_rows > 0

    text = _text_setup(settings, spec)
    candidates: dict[str, dict[str, Any]] = {}
    for algorithm in algorithms:
        t0 = time.monotonic()
        model = _pipeline(algorithm, numeric, categorical, seed, params, task=task, **text).fit(fit_df)
        if task == BINARY:
            scored = _with_p1(model.transform(val_df)).select(LABEL, _PROB1).cache()
            value = _auc(scored, "areaUnderPR") if can_validate else None
        elif task == REGRESSION:
            scored = None
            value = _regression_metrics(model.transform(val_df))[metric] if can_validate else None
        else:
            assert classes is not None
            scored = None
            value = _multiclass_metrics(model.transform(val_df), classes)[metric] if can_validate else None
        candidates[algorithm] = {"model": model, "scored": scored, f"validation_{metric}": value,
                                 "fit_seconds": round(time.monotonic() - t0, 2)}
        log.info("candidate %s: validation %s %s (%.1fs)", algorithm, metric, _fmt(value), time.monotonic() - t0)

    if not can_validate:
        algorithm = algorithms[0]
        selection = f"validation slice cannot rank candidates: defaulted to {algorithm}"
        log.warning(selection)
    else:
        def rank(a: str) -> float:  # higher is better
            value = candidates[a][f"validation_{metric}"]
            if value is None or math.isnan(value):
                return -math.inf
            return -value if metric in LOWER_IS_BETTER else value

        algorithm = max(algorithms, key=rank)
        selection = f"best validation {metric}"
    chosen = candidates[algorithm]
    threshold: float | None = None
    val_point = None
    if task == BINARY:
        if can_validate:
            threshold, val_point = _best_threshold(chosen["scored"], beta)
        else:
            threshold = 0.5
            log.warning("the validation slice lacks one class: using threshold 0.5")
        for cand in candidates.values():
            cand["scored"].unpersist()

    model = chosen["model"]
    if refit:
        model = _pipeline(algorithm, numeric, categorical, seed, params, task=task, **text).fit(
            weighted(split.filter(F.col(SPLIT).isin("fit", "validation")), ("fit", "validation")))

    # -- held-out evaluation --------------------------------------------------------------------
    if task == BINARY:
        assert threshold is not None
        test_scored = _with_p1(model.transform(test_df)).select(LABEL, _PROB1).cache()
        try:
            metrics = _evaluate(test_scored, threshold, beta)
        finally:
            test_scored.unpersist()
        baseline = _baseline(metrics)
    elif task == REGRESSION:
        metrics = _regression_metrics(model.transform(test_df))
        fitted = [s for s in ((fit_stats,) + ((val_stats,) if refit else ())) if s.get("rows")]
        mean = sum(float(s["label_mean"]) * int(s["rows"]) for s in fitted) / sum(int(s["rows"]) for s in fitted)
        baseline = {"name": "training_mean", "value": mean,
                    **_regression_metrics(test_df.withColumn(PREDICTION, F.lit(mean)))}
    else:
        assert classes is not None
        metrics = _multiclass_metrics(model.transform(test_df), classes)
        trained = [counts["fit"][i] + (counts["validation"][i] if refit else 0) for i in range(len(classes))]
        baseline = _multiclass_baseline(counts["test"], trained, classes)

    # -- metadata, registration, promotion ------------------------------------------------------
    model_rows = fit_rows + (val_rows if refit else 0)
    model_pos = fit_pos + (val_pos if refit else 0)
    current = registry.get_alias(spec.name, PRODUCTION_ALIAS)
    current_value = None
    if current is not None:
        try:
            current_meta = registry.metadata(spec.name, current)
            if (current_meta.get("task") or BINARY) == task:
                current_value = (current_meta.get("metrics") or {}).get(metric)
        except Exception as exc:  # unreadable production metadata: do not block a new model
            log.warning("cannot read metadata of production v%s: %s", current, exc)
    value = metrics.get(metric)
    if not promote:
        do_promote, reason = False, "promotion not requested"
    elif current is None:
        do_promote, reason = True, "no production model yet"
    elif value is None:
        do_promote, reason = False, (f"test {metric} undefined (the test set lacks a class)" if task != REGRESSION
                                     else f"test {metric} undefined (the test set has no rows)")
    elif current_value is None or at_least_as_good(metric, value, current_value):
        as_good = "<=" if metric in LOWER_IS_BETTER else ">="
        do_promote, reason = True, f"test {metric} {value:.4f} {as_good} production v{current}'s {_fmt(current_value)}"
    else:
        worse = ">" if metric in LOWER_IS_BETTER else "<"
        do_promote, reason = False, f"test {metric} {value:.4f} {worse} production v{current}'s {current_value:.4f}"

    slices = {"train": fit_stats, "validation": val_stats, "test": test_stats}
    per_class: dict[str, Any]
    if task == REGRESSION:
        per_class = {f"label_mean_{k}": s.get("label_mean") for k, s in slices.items()}
    elif classes is None:
        per_class = {**{f"positives_{k}": int(s["positives"] or 0) for k, s in slices.items()},
                     "positives_model_fit": model_pos}
    else:
        per_class = {f"class_rows_{k}": dict(zip(classes, counts[s], strict=True))
                     for k, s in (("train", "fit"), ("validation", "validation"), ("test", "test"))}
    training_data = {
        "split": "time",
        "order_by": order_cols,
        **extra,
        "min_event_time": _iso(min((int(s["min_us"]) for s in slices.values() if s.get("min_us") is not None), default=None)),
        "max_event_time": _iso(max((int(s["max_us"]) for s in slices.values() if s.get("max_us") is not None), default=None)),
        **{f"rows_{k}": int(s["rows"]) for k, s in slices.items()},
        **{f"{k}_min_event_time": _iso(s.get("min_us")) for k, s in slices.items()},
        **{f"{k}_max_event_time": _iso(s.get("max_us")) for k, s in slices.items()},
        "refit_on_train_and_validation": refit,
        "rows_model_fit": model_rows,
        **per_class,
    }
    meta: dict[str, Any] = {
        "model_name": spec.name,
        "version": None,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "contract": contract.name,
        "contract_version": contract.version,
        "task": task,
        "algorithm": algorithm,
        "algorithm_params": _params(model),
        "selection": selection,
        "primary_metric": metric,
        "candidates": {a: {f"validation_{metric}": c[f"validation_{metric}"], "fit_seconds": c["fit_seconds"]}
                       for a, c in candidates.items()},
        "features": list(spec.features),
        "numeric_features": numeric,
        "categorical_features": categorical,
        **(_text_metadata(text) if spec.text_features else {}),
        "derived_features": ("pairwise products and differences of the numeric features"
                             if 1 < len(numeric) <= MAX_INTERACTION_FEATURES else "none"),
        "label": spec.label,
        **({"positive_label": spec.positive_label, "threshold": threshold, "threshold_metric": threshold_metric,
            "validation_metrics_at_threshold": val_point} if task == BINARY else
           {"classes": classes, "threshold": None} if task == MULTICLASS else {"threshold": None}),
        "metrics": metrics,
        "baseline_metrics": baseline,
        "training_data": training_data,
        "code_version": code_version(),
        "spark_version": spark.version,
        "promotion": {"requested": promote, "promoted": do_promote, "reason": reason,
                      "previous_production": current},
    }
    meta["training_seconds"] = round(time.monotonic() - started, 2)
    inputs, string_inputs = portable.feature_order(contract)
    scorer = portable.export(model, features=inputs, categorical=string_inputs, classes=classes, task=task,
                             input_schema=portable.input_schema(contract), derived=portable.derived_for(contract),
                             event_time=portable.event_time_for(contract))
    files = {}
    if algorithm == "xgboost":
        files[XGBOOST_ARCHIVE], meta["sagemaker_builtin_xgboost"] = xgboost_archive(model)
    version = registry.register(spec.name, model, meta, scorer=scorer, files=files)
    if do_promote:
        registry.set_alias(spec.name, PRODUCTION_ALIAS, version)
    meta["aliases"] = sorted(a for a, v in registry.aliases(spec.name).items() if v == version)
    log.info(summary_line(meta))
    return meta


TOKEN_PATTERN = "[^a-z0-9]+"  # text features: tokens are runs of letters and digits, lower-cased
MIN_TOKEN_LENGTH = 2


def _pipeline(algorithm: str, numeric: list[str], categorical: list[str], seed: int,
              params: dict[str, dict[str, Any]] | None = None, *, text: list[str] | tuple[str, ...] = (),
              text_buckets: int = 256, task: str = BINARY, text_encoding: str = "hashed",
              text_dimensions: int = 64, text_endpoint: str | None = None) -> Pipeline:
    """Feature preparation + one classifier (a regressor for a regression ``task``); every internal
    column is prefixed ``_ss_``.

    Numeric features are median-imputed (a null reading at scoring time must not fail a streaming
    batch); with at most :data:`MAX_INTERACTION_FEATURES` numeric features, the pairwise products and
    differences of the raw values are added (they let trees split on, e.g., torque x speed ~ power or
    a temperature difference, and let the linear model express interactions). Categorical features
    are indexed and one-hot encoded with an extra slot for unseen or null values. Text features
    (a null is empty text) are lower-cased and split into tokens (:data:`TOKEN_PATTERN`, at least
    :data:`MIN_TOKEN_LENGTH` characters), each present token setting one of ``text_buckets`` slots
    (HashingTF: MurmurHash3 of the token's UTF-8 bytes); with ``text_encoding`` embedded, each is
    its embedding (:class:`ml.spark_text.TextEmbedder`, ``text_dimensions`` numbers; by the SageMaker
    endpoint ``text_endpoint`` when given).
    """
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import GBTClassifier, LogisticRegression
    from pyspark.ml.feature import (
        HashingTF,
        Imputer,
        OneHotEncoder,
        RegexTokenizer,
        SQLTransformer,
        StandardScaler,
        StringIndexer,
        VectorAssembler,
    )
    from pyspark.ml.regression import GBTRegressor, LinearRegression

    stages: list[Any] = []
    assembled: list[str] = []
    if numeric:
        imputed = [f"_ss_imp_{c}" for c in numeric]
        stages.append(Imputer(inputCols=numeric, outputCols=imputed, strategy="median"))
        assembled += imputed
        pairs = list(combinations(imputed, 2)) if len(numeric) <= MAX_INTERACTION_FEATURES else []
        if pairs:
            exprs = []
            for i, (a, b) in enumerate(pairs):
                exprs += [f"`{a}` * `{b}` AS `_ss_mul_{i}`", f"`{a}` - `{b}` AS `_ss_sub_{i}`"]
                assembled += [f"_ss_mul_{i}", f"_ss_sub_{i}"]
            stages.append(SQLTransformer(statement=f"SELECT *, {', '.join(exprs)} FROM __THIS__"))
    if categorical:
        idx = [f"_ss_idx_{c}" for c in categorical]
        ohe = [f"_ss_ohe_{c}" for c in categorical]
        stages.append(StringIndexer(inputCols=categorical, outputCols=idx, handleInvalid="keep",
                                    stringOrderType="alphabetAsc"))
        stages.append(OneHotEncoder(inputCols=idx, outputCols=ohe, handleInvalid="keep"))
        assembled += ohe
    for i, column in enumerate(text):
        stages.append(SQLTransformer(statement=f"SELECT *, coalesce(`{column}`, '') AS `_ss_txt_{i}` FROM __THIS__"))
        if text_encoding == "embedded":
            from ml.spark_text import TextEmbedder

            stages.append(TextEmbedder(inputCol=f"_ss_txt_{i}", outputCol=f"_ss_emb_{i}", dims=text_dimensions,
                                       endpoint=text_endpoint or ""))
            assembled.append(f"_ss_emb_{i}")
            continue
        stages.append(RegexTokenizer(inputCol=f"_ss_txt_{i}", outputCol=f"_ss_tok_{i}", pattern=TOKEN_PATTERN,
                                     gaps=True, toLowercase=True, minTokenLength=MIN_TOKEN_LENGTH))
        stages.append(HashingTF(inputCol=f"_ss_tok_{i}", outputCol=f"_ss_tf_{i}", numFeatures=text_buckets,
                                binary=True))
        assembled.append(f"_ss_tf_{i}")
    hyper = {**DEFAULT_PARAMS.get(algorithm, {}), **((params or {}).get(algorithm) or {})}
    if algorithm == "xgboost":
        # Trees need no scaling: the booster reads the assembled vector itself, which is what
        # SageMaker's built-in XGBoost container is then sent (see xgboost_archive).
        from xgboost.spark import SparkXGBClassifier, SparkXGBRegressor

        stages.append(VectorAssembler(inputCols=assembled, outputCol=FEATURES, handleInvalid="keep"))
        xgb: dict[str, Any] = {"features_col": FEATURES, "label_col": LABEL, "weight_col": WEIGHT,
                               "prediction_col": PREDICTION, "random_state": seed, "num_workers": 1, **hyper}
        stages.append(SparkXGBRegressor(**xgb) if task == REGRESSION else SparkXGBClassifier(
            probability_col=PROBABILITY, raw_prediction_col=RAW_PREDICTION, **xgb))
        return Pipeline(stages=stages)
    stages.append(VectorAssembler(inputCols=assembled, outputCol="_ss_assembled", handleInvalid="keep"))
    stages.append(StandardScaler(inputCol="_ss_assembled", outputCol=FEATURES, withMean=True, withStd=True))
    common: dict[str, Any] = {"featuresCol": FEATURES, "labelCol": LABEL, "weightCol": WEIGHT, "predictionCol": PREDICTION}
    if task == REGRESSION:
        if algorithm == "linear_regression":
            stages.append(LinearRegression(**common, **hyper))
        elif algorithm == "gbt":
            stages.append(GBTRegressor(seed=seed, **common, **hyper))
        else:  # pragma: no cover - validated by the caller
            raise TrainingError(f"{algorithm!r} cannot train a regression model")
        return Pipeline(stages=stages)
    classifier: LogisticRegression | GBTClassifier
    if algorithm == "logistic_regression":
        classifier = LogisticRegression(**common, **hyper)
    elif algorithm == "gbt":
        classifier = GBTClassifier(seed=seed, **common, **hyper)
    else:  # pragma: no cover - validated by the caller
        raise TrainingError(f"unknown algorithm {algorithm!r}")
    classifier.setProbabilityCol(PROBABILITY).setRawPredictionCol(RAW_PREDICTION)
    stages.append(classifier)
    return Pipeline(stages=stages)


def _text_setup(settings: Settings, spec: Any) -> dict[str, Any]:
    """The text arguments of :func:`_pipeline` for ``spec``: embedded text goes to
    ``sagemaker.text_endpoint`` when that is set, as wide as the endpoint's answers."""
    text: dict[str, Any] = {"text": list(spec.text_features), "text_buckets": spec.text_buckets,
                            "text_encoding": spec.text_encoding, "text_dimensions": spec.text_dimensions}
    endpoint = settings.sagemaker.text_endpoint
    if spec.text_features and spec.text_encoding == "embedded" and endpoint:
        from ml.endpoint import EndpointClient, EndpointFailure
        from ml.text import embed_remote

        try:  # one text tells the width
            width = embed_remote(EndpointClient.from_settings(settings, endpoint), ["width"], None).shape[1]
        except EndpointFailure as exc:
            raise TrainingError(f"sagemaker.text_endpoint {endpoint}: {exc}") from None
        text.update(text_dimensions=width, text_endpoint=endpoint)
    return text


def _text_metadata(text: dict[str, Any]) -> dict[str, Any]:
    if text["text_encoding"] == "embedded":
        from ml import text as encoders

        endpoint = text.get("text_endpoint")
        return {"text_features": text["text"], "text_encoding": "embedded",
                "text_embedding": encoders.describe_endpoint(endpoint, text["text_dimensions"]) if endpoint
                else encoders.describe(text["text_dimensions"])}
    return {"text_features": text["text"], "text_encoding": "hashed", "text_buckets": text["text_buckets"]}


XGBOOST_ARCHIVE = "sagemaker-xgboost.tar.gz"


def xgboost_archive(model: Any) -> tuple[bytes, dict[str, Any]]:
    """An XGBoost pipeline's booster as SageMaker's built-in XGBoost container loads it
    (``model.tar.gz`` holding ``xgboost-model``, XGBoost's JSON), and what that container must be
    sent: CSV rows of the assembled vector, whose columns are listed (imputed values, products and
    differences, one-hot slots)."""
    import xgboost

    from ml.sagemaker import model_archive

    assembler, booster = model.stages[-2], model.stages[-1].get_booster()
    archive = model_archive({"xgboost-model": bytes(booster.save_raw("json"))})
    return archive, {"archive": XGBOOST_ARCHIVE, "content_type": "text/csv",
                     "vector": list(assembler.getInputCols()), "xgboost_version": str(xgboost.__version__)}


def _weighted(df: DataFrame, rows: int, positives: int) -> DataFrame:
    """Add inverse-class-frequency weights: each class carries half of the total weight."""
    from pyspark.sql import functions as F

    w_pos = rows / (2.0 * positives)
    w_neg = rows / (2.0 * (rows - positives))
    return df.withColumn(WEIGHT, F.when(F.col(LABEL) == 1.0, F.lit(w_pos)).otherwise(F.lit(w_neg)))


def _class_weighted(df: DataFrame, rows_per_class: list[int]) -> DataFrame:
    """Add inverse-class-frequency weights: each class carries an equal share of the total weight."""
    from pyspark.sql import functions as F

    rows, k = sum(rows_per_class), len(rows_per_class)
    weights = F.create_map(*[v for i, n in enumerate(rows_per_class) if n
                             for v in (F.lit(float(i)), F.lit(rows / (k * n)))])
    return df.withColumn(WEIGHT, F.coalesce(weights[F.col(LABEL)], F.lit(1.0)))


def _multiclass_metrics(scored: DataFrame, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro and weighted F1, macro precision and recall, log loss, per-class figures and
    the confusion matrix of a multiclass model's scored rows (the predicted class is the most probable
    one). Spark counts (true class, predicted class) pairs; scikit-learn computes the figures from them."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    probs = vector_to_array(F.col(PROBABILITY))
    predicted = F.array_position(probs, F.array_max(probs)) - 1
    p_true = F.element_at(probs, F.col(LABEL).cast("int") + 1)
    pairs = (scored.select(F.col(LABEL).cast("int").alias("y"), predicted.cast("int").alias("p"), p_true.alias("pt"))
             .groupBy("y", "p").agg(F.count(F.lit(1)).alias("n"),
                                    F.sum(-F.log(F.greatest(F.col("pt"), F.lit(1e-15)))).alias("nll"))
             .collect())
    return _class_report([r["y"] for r in pairs], [r["p"] for r in pairs], [int(r["n"]) for r in pairs],
                         sum(float(r["nll"]) for r in pairs), classes)


def _class_report(y: list[int], p: list[int], n: list[int], nll: float | None,
                  classes: list[str]) -> dict[str, Any]:
    """The figures of :func:`_multiclass_metrics` from (true, predicted, rows) triples and the summed
    negative log-likelihood of the true classes."""
    from sklearn import metrics as skm

    rows = sum(n)
    labels = list(range(len(classes)))
    if not rows:
        return {"rows": 0, "accuracy": None, "f1_macro": None, "f1_weighted": None, "precision_macro": None,
                "recall_macro": None, "log_loss": None, "per_class": {}, "confusion_matrix": []}
    prec, rec, f1, support = skm.precision_recall_fscore_support(y, p, labels=labels, sample_weight=n,
                                                                 zero_division=0)
    return {
        "rows": rows,
        "accuracy": float(skm.accuracy_score(y, p, sample_weight=n)),
        # macro: over the classes present in the rows or the predictions (scikit-learn's default)
        "f1_macro": float(skm.f1_score(y, p, average="macro", sample_weight=n, zero_division=0)),
        "f1_weighted": float(skm.f1_score(y, p, average="weighted", sample_weight=n, zero_division=0)),
        "precision_macro": float(skm.precision_score(y, p, average="macro", sample_weight=n, zero_division=0)),
        "recall_macro": float(skm.recall_score(y, p, average="macro", sample_weight=n, zero_division=0)),
        "log_loss": None if nll is None else nll / rows,
        "per_class": {c: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                          "rows": int(support[i])} for i, c in enumerate(classes)},
        "confusion_matrix": skm.confusion_matrix(y, p, labels=labels, sample_weight=n).astype(int).tolist(),
    }


def _multiclass_baseline(test_rows: list[int], trained_rows: list[int], classes: list[str]) -> dict[str, Any]:
    """A majority-class predictor on the same test rows: always the class most frequent in training,
    with the training class shares as its probabilities (for the log loss)."""
    majority = max(range(len(classes)), key=lambda i: trained_rows[i])
    total = sum(trained_rows)
    nll = sum(k * -math.log(max(trained_rows[i] / total, 1e-15)) for i, k in enumerate(test_rows))
    y = [i for i, k in enumerate(test_rows) if k]
    report = _class_report(y, [majority] * len(y), [test_rows[i] for i in y], nll, classes)
    return {"name": "majority_class", "class": classes[majority], **report}


def _regression_metrics(scored: DataFrame) -> dict[str, Any]:
    """RMSE, MAE and R² (against the rows' own mean) of a regression model's scored rows, with the
    rows' mean label and mean prediction."""
    from pyspark.sql import functions as F

    error = F.col(PREDICTION) - F.col(LABEL)
    r = scored.agg(F.count(F.lit(1)).alias("rows"), F.avg(error * error).alias("mse"), F.avg(F.abs(error)).alias("mae"),
                   F.var_pop(LABEL).alias("var"), F.avg(LABEL).alias("mean_label"),
                   F.avg(PREDICTION).alias("mean_prediction")).collect()[0]
    rows = int(r["rows"])
    if not rows:
        return {"rows": 0, "rmse": None, "mae": None, "r2": None, "mean_label": None, "mean_prediction": None}
    mse, var = float(r["mse"]), float(r["var"])
    return {"rows": rows, "rmse": math.sqrt(mse), "mae": float(r["mae"]), "r2": 1.0 - mse / var if var > 0 else None,
            "mean_label": float(r["mean_label"]), "mean_prediction": float(r["mean_prediction"])}


def _with_p1(df: DataFrame) -> DataFrame:
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    return df.withColumn(_PROB1, vector_to_array(F.col(PROBABILITY)).getItem(1))


def _auc(scored: DataFrame, metric: Literal["areaUnderROC", "areaUnderPR"]) -> float | None:
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    value = BinaryClassificationEvaluator(rawPredictionCol=_PROB1, labelCol=LABEL, metricName=metric,
                                          numBins=0).evaluate(scored)
    return None if value is None or math.isnan(value) else float(value)


def _best_threshold(scored: DataFrame, beta: float) -> tuple[float, dict[str, Any]]:
    """The threshold maximising F-beta on ``scored`` (label, probability).

    Probabilities are grouped into buckets of width 1e-5 (bounded work on large slices); a
    candidate threshold is a bucket's smallest probability, so "p >= threshold" selects exactly
    that bucket and every higher one. The returned threshold is the midpoint between the best
    bucket's smallest probability and the next lower bucket's largest, which classifies the
    validation slice identically but leaves a margin on both sides.
    """
    from pyspark.sql import functions as F

    buckets = (scored.groupBy(F.floor(F.col(_PROB1) * 1e5).alias("b"))
               .agg(F.min(_PROB1).alias("lo"), F.max(_PROB1).alias("hi"),
                    F.sum(LABEL).alias("pos"), F.count(F.lit(1)).alias("n"))
               .orderBy(F.col("b").desc()).collect())
    total_pos = sum(r["pos"] for r in buckets)
    b2 = beta * beta
    best = None
    tp = fp = 0.0
    for i, r in enumerate(buckets):
        tp += r["pos"]
        fp += r["n"] - r["pos"]
        fn = total_pos - tp
        denom = (1 + b2) * tp + b2 * fn + fp
        score = (1 + b2) * tp / denom if denom else 0.0
        if best is None or score > best[0]:
            best = (score, i, tp, fp, fn)
    assert best is not None
    score, i, tp, fp, fn = best
    lo = buckets[i]["lo"]
    threshold = (lo + buckets[i + 1]["hi"]) / 2.0 if i + 1 < len(buckets) else lo
    point = {"f_score": score, "precision": tp / (tp + fp) if tp + fp else 0.0,
             "recall": tp / total_pos if total_pos else 0.0, "tp": int(tp), "fp": int(fp), "fn": int(fn)}
    return float(threshold), point


def _evaluate(scored: DataFrame, threshold: float, beta: float) -> dict[str, Any]:
    from pyspark.sql import functions as F

    pred = F.col(_PROB1) >= F.lit(threshold)
    pos = F.col(LABEL) == 1.0
    c = scored.agg(
        F.sum((pred & pos).cast("long")).alias("tp"), F.sum((pred & ~pos).cast("long")).alias("fp"),
        F.sum((~pred & ~pos).cast("long")).alias("tn"), F.sum((~pred & pos).cast("long")).alias("fn"),
    ).collect()[0]
    tp, fp, tn, fn = (int(c[k] or 0) for k in ("tp", "fp", "tn", "fn"))
    rows, positives = tp + fp + tn + fn, tp + fn
    has_both = 0 < positives < rows
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out = {
        "auc_pr": _auc(scored, "areaUnderPR") if has_both else None,
        "auc_roc": _auc(scored, "areaUnderROC") if has_both else None,
        "precision": precision, "recall": recall, "f1": f1,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "rows": rows, "positives": positives, "positive_rate": positives / rows if rows else None,
        "threshold": threshold,
    }
    if beta != 1.0:
        b2 = beta * beta
        out[f"f{beta:g}"] = (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall else 0.0
    return out


def _baseline(metrics: dict[str, Any]) -> dict[str, Any]:
    """A majority-class (always "no") predictor on the same test rows."""
    rows, positives = metrics["rows"], metrics["positives"]
    return {
        "name": "majority_class",
        "auc_pr": positives / rows if rows else None,  # a constant score: precision = positive rate
        "auc_roc": 0.5,
        "precision": 0.0, "recall": 0.0, "f1": 0.0,
        "tp": 0, "fp": 0, "tn": rows - positives, "fn": positives,
        "rows": rows, "positives": positives,
    }


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _time_index(df: DataFrame, order_cols: list[str], name: str, parts: int) -> tuple[DataFrame, DataFrame]:
    """Add ``name``: the 0-based position of each row in ``order_cols`` order.

    Computed without moving all rows into one partition: range-partition, sort within partitions,
    then offset each row's position in its partition by the sizes of the preceding partitions.
    Returns the indexed DataFrame and the cached intermediate (unpersist it once the result is
    materialised).
    """
    from pyspark.sql import functions as F

    ranged = (df.repartitionByRange(parts, *order_cols).sortWithinPartitions(*order_cols)
              .withColumn("_ss_mono", F.monotonically_increasing_id())
              .withColumn("_ss_pid", F.shiftright(F.col("_ss_mono"), 33))
              .withColumn("_ss_pos", F.col("_ss_mono").bitwiseAND(F.lit((1 << 33) - 1)))
              .cache())
    sizes = sorted((int(r["_ss_pid"]), int(r["count"])) for r in ranged.groupBy("_ss_pid").count().collect())
    offsets: list[Any] = []
    running = 0
    for pid, size in sizes:
        offsets += [F.lit(pid), F.lit(running)]
        running += size
    offset = F.create_map(*offsets)[F.col("_ss_pid")] if offsets else F.lit(0)
    indexed = ranged.withColumn(name, offset + F.col("_ss_pos")).drop("_ss_mono", "_ss_pid", "_ss_pos")
    return indexed, ranged


def _beta(metric: str) -> float:
    m = re.fullmatch(r"f(\d+(?:\.\d+)?)", metric.strip().lower())
    if not m or float(m.group(1)) <= 0:
        raise TrainingError(f"threshold_metric must be 'f1' or another F-beta like 'f2', 'f0.5'; got {metric!r}")
    return float(m.group(1))


def _params(model: Any) -> dict[str, Any]:
    last = model.stages[-1]
    if type(last).__name__ in ("SparkXGBClassifierModel", "SparkXGBRegressorModel"):
        return {k: last.getOrDefault(k) for k in (*DEFAULT_PARAMS["xgboost"], "random_state") if last.hasParam(k)}
    names = ("maxIter", "maxDepth", "stepSize", "maxBins", "subsamplingRate", "regParam",
             "elasticNetParam", "tol", "seed")
    out = {}
    for p in names:
        if last.hasParam(p):
            out[p] = last.getOrDefault(p)
    return out


def _iso(micros: int | None) -> str | None:
    if micros is None:
        return None
    return datetime.fromtimestamp(micros / 1e6, tz=UTC).isoformat().replace("+00:00", "Z")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def code_version() -> dict[str, str]:
    """``{"package": streamsight.__version__, "git_commit": <HEAD> or "unknown"}``."""
    import streamsight
    from streamsight.settings import PROJECT_ROOT

    commit = "unknown"
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5, check=False)
        if out.returncode == 0 and out.stdout.strip():
            commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": streamsight.__version__, "git_commit": commit}


if __name__ == "__main__":  # pragma: no cover - spark-submit ml/train.py --model NAME
    from pyspark.sql import SparkSession as _SparkSession

    from streamsight.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _settings = load_settings()
    _builder = _SparkSession.builder.appName("streamsight-train")
    for _k, _v in _settings.spark.conf.items():
        _builder = _builder.config(_k, _v)
    _spark = _builder.getOrCreate()
    _spark.sparkContext.setLogLevel("WARN")
    try:
        main(_spark, _settings)
    finally:
        _spark.stop()
