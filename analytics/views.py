"""Temporary SQL views over the lake, one per table of every stream contract.

:func:`register_views` creates, for every contract and every table in
:meth:`~streamsight.contracts.Contract.table_names`, a temporary view named after the table
(``machine_telemetry_silver``, ``machine_telemetry_gold_by_type_1h``, ...) over the Delta table at
``table_uri(...)`` (:func:`streamsight.lake.read_table`), so the view sees exactly the committed
files. A table that does not exist yet becomes an *empty* view with the declared schema from
:func:`streamsight.lake.table_columns`, so queries never fail on a fresh lake. Declared columns
missing from an existing table (written by an older contract version) are added as typed ``NULL``
columns. With ``since``, each table's view holds only the rows written since then
(:func:`streamsight.lake.write_time_column`): the live dashboard's window.

It also creates ``model_registry``: one row per registered model version, read from
``<lake>/_models/<model>/v<N>/metadata.json`` and ``<lake>/_models/<model>/aliases.json`` through the
Hadoop FileSystem API (so ``s3a://`` and ``hdfs://`` lakes work). Missing or unreadable files are
skipped. Columns: see :data:`REGISTRY_COLUMNS`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from streamsight.contracts import Contract
from streamsight.lake import is_table, models_uri, read_table, table_columns, table_uri, write_time_column

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from streamsight.settings import Settings

log = logging.getLogger(__name__)

EMPTY = "(empty)"
NO_ACCESS = "(no access: "  # the status of a table the user may not read: no view is made
REGISTRY_VIEW = "model_registry"

# One row per model version. Metrics are flattened; ``baseline_*`` come from
# metadata["baseline_metrics"] (ml.train's majority-class baseline on the same test rows). Binary
# models fill auc_pr ... fn; multiclass ones accuracy, f1_macro, f1_weighted and log_loss; regression
# ones rmse, mae and r2 (their baseline predicts the training mean).
REGISTRY_COLUMNS: list[tuple[str, str]] = [
    ("model_name", "string"), ("version", "int"), ("is_production", "boolean"), ("aliases", "string"),
    ("task", "string"), ("threshold", "double"), ("created_at", "string"),
    ("auc_pr", "double"), ("auc_roc", "double"), ("f1", "double"), ("precision", "double"),
    ("recall", "double"), ("tp", "bigint"), ("fp", "bigint"), ("tn", "bigint"), ("fn", "bigint"),
    ("baseline_auc_pr", "double"), ("baseline_auc_roc", "double"), ("baseline_f1", "double"),
    ("baseline_precision", "double"), ("baseline_recall", "double"),
    ("accuracy", "double"), ("f1_macro", "double"), ("f1_weighted", "double"), ("log_loss", "double"),
    ("baseline_accuracy", "double"), ("baseline_f1_macro", "double"), ("baseline_log_loss", "double"),
    ("rmse", "double"), ("mae", "double"), ("r2", "double"),
    ("baseline_rmse", "double"), ("baseline_mae", "double"), ("baseline_r2", "double"),
    ("metadata_uri", "string"),
]
_METRICS = ("auc_pr", "auc_roc", "f1", "precision", "recall", "tp", "fp", "tn", "fn",
            "accuracy", "f1_macro", "f1_weighted", "log_loss", "rmse", "mae", "r2")
_BASELINE_METRICS = ("auc_pr", "auc_roc", "f1", "precision", "recall", "accuracy", "f1_macro", "log_loss",
                     "rmse", "mae", "r2")


def ddl(columns: Iterable[tuple[str, str]]) -> str:
    """``[("a", "int")]`` -> ``"`a` int"``."""
    return ", ".join(f"`{name}` {kind}" for name, kind in columns)


def empty_frame(spark: SparkSession, columns: list[tuple[str, str]]) -> DataFrame:
    """An empty DataFrame with the given columns (possibly none)."""
    if not columns:
        from pyspark.sql.types import StructType

        return spark.createDataFrame([], StructType([]))
    return spark.createDataFrame([], ddl(columns))


def _contracts(contracts: Mapping[str, Contract] | Iterable[Contract]) -> list[Contract]:
    return list(contracts.values()) if isinstance(contracts, Mapping) else list(contracts)


def one_line(exc: BaseException) -> str:
    """The first meaningful line of an exception message (Spark messages span many lines)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


# -- files, through the Hadoop FileSystem API (streamsight.hadoop) ----------------------------------

def _fs(spark: SparkSession, uri: str) -> Any:
    from streamsight.hadoop import HadoopFS

    return HadoopFS(spark, uri)


def path_exists(spark: SparkSession, uri: str) -> bool:
    fs = _fs(spark, uri)
    return fs.exists(fs.root)


def read_text(spark: SparkSession, uri: str) -> str | None:
    """Content of a small file (UTF-8), or None if it does not exist."""
    fs = _fs(spark, uri)
    return fs.read_text_or_none(fs.root)


def list_dirs(spark: SparkSession, uri: str) -> list[str]:
    """Names of the sub-directories of ``uri`` ([] if it does not exist)."""
    fs = _fs(spark, uri)
    return sorted(str(s.getPath().getName()) for s in fs.list_status(fs.root) if s.isDirectory())


def read_json(spark: SparkSession, uri: str) -> Any | None:
    """Parsed JSON file, or None if it is absent or not valid JSON (logged)."""
    try:
        text = read_text(spark, uri)
    except Exception as exc:
        log.warning("cannot read %s: %s", uri, one_line(exc))
        return None
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        log.warning("%s is not valid JSON: %s", uri, exc)
        return None


# -- model registry ---------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def registry_rows(spark: SparkSession, lake_uri: str, model_names: Iterable[str]) -> list[dict[str, Any]]:
    """One flattened dict per registered version of each model (columns of :data:`REGISTRY_COLUMNS`)."""
    rows: list[dict[str, Any]] = []
    root = models_uri(lake_uri)
    for model in sorted(set(model_names)):
        aliases_doc = read_json(spark, f"{root}/{model}/aliases.json")
        aliases = aliases_doc if isinstance(aliases_doc, dict) else {}
        for name in list_dirs(spark, f"{root}/{model}"):
            if not (name.startswith("v") and name[1:].isdigit()):
                continue
            uri = f"{root}/{model}/{name}/metadata.json"
            meta = read_json(spark, uri)
            if not isinstance(meta, dict):
                continue
            version = _int(meta.get("version"))
            version = int(name[1:]) if version is None else version
            metrics: dict[str, Any] = meta["metrics"] if isinstance(meta.get("metrics"), dict) else {}
            baseline = meta.get("baseline_metrics")
            baseline = baseline if isinstance(baseline, dict) else {}
            my_aliases = sorted(a for a, v in aliases.items() if _int(v) == version)
            row: dict[str, Any] = {
                "model_name": model,
                "version": version,
                "is_production": "production" in my_aliases,
                "aliases": ",".join(my_aliases) or None,
                "task": str(meta.get("task") or "binary"),
                "threshold": _number(meta.get("threshold")),
                "created_at": None if meta.get("created_at") is None else str(meta["created_at"]),
                "metadata_uri": uri,
            }
            for key in _METRICS:
                row[key] = _int(metrics.get(key)) if key in ("tp", "fp", "tn", "fn") else _number(metrics.get(key))
            for key in _BASELINE_METRICS:
                row[f"baseline_{key}"] = _number(baseline.get(key))
            rows.append(row)
    rows.sort(key=lambda r: (r["model_name"], r["version"]))
    return rows


def registry_frame(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    """DataFrame of :func:`registry_rows` output, typed per :data:`REGISTRY_COLUMNS`."""
    if not rows:
        return empty_frame(spark, REGISTRY_COLUMNS)
    names = [c for c, _ in REGISTRY_COLUMNS]
    return spark.createDataFrame([tuple(r[c] for c in names) for r in rows], ddl(REGISTRY_COLUMNS))


# -- lake tables ------------------------------------------------------------------------------------

def _read_table(spark: SparkSession, uri: str, columns: list[tuple[str, str]]) -> tuple[DataFrame | None, str]:
    """(frame, status): status is the uri, ``(empty)``, ``(no access: ...)`` or ``(unreadable: ...)``."""
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    from streamsight.hadoop import access_denied

    try:
        if not path_exists(spark, uri) or not is_table(spark, uri):
            return None, EMPTY
        frame = read_table(spark, uri)
    except Exception as exc:
        if (denied := access_denied(exc)) is not None:
            return None, f"{NO_ACCESS}{denied})"
        condition = exc.getCondition() if isinstance(exc, PySparkException) else None
        if condition in ("PATH_NOT_FOUND", "UNABLE_TO_INFER_SCHEMA"):
            return None, EMPTY
        log.warning("cannot read lake table %s: %s", uri, one_line(exc))
        return None, f"(unreadable: {one_line(exc)})"
    present = {c.lower() for c in frame.columns}
    missing = [(c, t) for c, t in columns if c.lower() not in present]
    if missing:
        frame = frame.select("*", *[F.lit(None).cast(t).alias(c) for c, t in missing])
    return frame, uri


def register_views(
    spark: SparkSession,
    settings: Settings,
    contracts: Mapping[str, Contract] | Iterable[Contract],
    *,
    since: dt.datetime | None = None,
) -> dict[str, str]:
    """Create a temp view per lake table of every contract, plus ``model_registry``; with ``since``
    (timezone-aware), a table's view has only the rows written at or after it.

    Returns view name -> table URI, or ``"(empty)"`` for a table that does not exist yet (an empty
    view with the declared schema), or ``"(unreadable: <error>)"`` when the table exists but cannot
    be read (also an empty view; the error is logged). ``model_registry`` maps to the registry URI, or
    ``"(empty)"`` when no model version is registered. A table (or the registry) the file system
    refuses to this user gets no view and the status ``"(no access: <the refusal>)"``: a query that
    uses it fails saying so (:func:`analytics.sql.execute`).
    """
    from streamsight.hadoop import access_denied

    views: dict[str, str] = {}
    selected = _contracts(contracts)
    for contract in selected:
        for table, view in contract.table_names().items():
            columns, _partitions = table_columns(contract, table)
            frame, status = _read_table(spark, table_uri(settings.lake_uri, contract, table), columns)
            views[view] = status
            if status.startswith(NO_ACCESS):
                spark.catalog.dropTempView(view)
                continue
            if frame is None:
                frame = empty_frame(spark, columns)
            elif since is not None:
                frame = _written_since(frame, table, since)
            frame.createOrReplaceTempView(view)
    models = [c.model.name for c in selected if c.model is not None]
    try:
        rows = registry_rows(spark, settings.lake_uri, models)
    except Exception as exc:
        if (denied := access_denied(exc)) is None:
            raise
        spark.catalog.dropTempView(REGISTRY_VIEW)
        views[REGISTRY_VIEW] = f"{NO_ACCESS}{denied})"
        return views
    registry_frame(spark, rows).createOrReplaceTempView(REGISTRY_VIEW)
    views[REGISTRY_VIEW] = models_uri(settings.lake_uri) if rows else EMPTY
    return views


def _written_since(frame: DataFrame, table: str, since: dt.datetime) -> DataFrame:
    from pyspark.sql import functions as F

    if since.tzinfo is None:
        raise ValueError("since must be timezone-aware")
    kept = frame.where(F.col(write_time_column(table)) >= F.lit(since))
    if "ingest_date" in frame.columns:  # the partition column: whole days before the window are pruned
        kept = kept.where(F.col("ingest_date") >= F.lit(since.date() - dt.timedelta(days=1)))
    return kept


def refused(views: dict[str, str]) -> dict[str, str]:
    """The views :func:`register_views` did not make because access was refused: view -> refusal."""
    return {v: s[len(NO_ACCESS):-1] for v, s in views.items() if s.startswith(NO_ACCESS)}
