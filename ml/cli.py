"""The ``train``, ``models`` and ``promote`` commands; the root CLI wires them as Typer commands.

Each function takes the settings object the root CLI built (profile, flags, environment) and
starts its own Spark session with ``streamsight.spark.build_session`` -- even ``models``,
because the registry lives in the lake (possibly ``s3a://``) and is read through Spark's Hadoop
filesystem.

* ``train_command(settings, model)`` -- train, evaluate, register; promote if at least as good.
* ``models_command(settings, model=None, as_json=False)`` -- versions with key metrics and aliases.
* ``promote_command(settings, model, version)`` -- point ``production`` at a version (manual
  override: no metric check).

Errors the user can fix raise :class:`streamsight.errors.StreamsightError` subclasses (a clear
message, no traceback needed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from ml import PRODUCTION_ALIAS
from streamsight.errors import ConfigError, StreamsightError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from streamsight.settings import Settings

SessionFactory = Callable[["Settings", str], "SparkSession"]


class ModelNotFoundError(StreamsightError):
    """The model name or version is unknown."""


def _session(settings: Settings, app_name: str, session_factory: SessionFactory | None) -> SparkSession:
    if session_factory is not None:
        return session_factory(settings, app_name)
    from streamsight.spark import build_session

    return build_session(settings, app_name)


def train_command(
    settings: Settings,
    model: str,
    *,
    stream: str | None = None,
    train_fraction: float = 0.8,
    promote: bool = True,
    algorithms: tuple[str, ...] | None = None,
    session_factory: SessionFactory | None = None,
) -> dict[str, Any]:
    """Train ``model`` on its stream's silver table (``stream``'s, for a model named by a contract's
    ``model.route_by`` field) with each of ``algorithms`` (default: the task's,
    :data:`ml.train.DEFAULT_ALGORITHMS`), keeping the best; print a summary; return the metadata."""
    from ml.train import contract_for_model, routed_contract, summary_line, train_model
    from streamsight.contracts import get_contract

    contract = routed_contract(settings, stream, model) if stream else contract_for_model(settings, model)
    spark = _session(settings, f"streamsight-train-{model}", session_factory)
    fallback = get_contract(settings.contracts_dir, contract.name).model
    meta = train_model(spark, settings, contract, train_fraction=train_fraction, promote=promote,
                       algorithms=algorithms or None,
                       fallback_model=fallback.name if fallback is not None else None)
    typer.echo(summary_line(meta))
    return meta


def models_command(
    settings: Settings,
    model: str | None = None,
    as_json: bool = False,
    *,
    session_factory: SessionFactory | None = None,
) -> list[dict[str, Any]]:
    """Print every version of ``model`` (or of every model) with key metrics and aliases."""
    from ml.registry import ModelRegistry
    from streamsight.contracts import load_contracts
    from streamsight.lake import models_uri

    declared = {c.model.name for c in load_contracts(settings.contracts_dir).values() if c.model}
    spark = _session(settings, "streamsight-models", session_factory)
    registry = ModelRegistry(spark, models_uri(settings.lake_uri))
    names = [model] if model is not None else sorted(declared | set(registry.models()))
    rows = [_row(name, meta) for name in names for meta in registry.versions(name)]
    if model is not None and not rows and model not in declared:
        raise ConfigError(f"unknown model {model!r}: no contract declares it and the registry has no "
                          f"versions of it (declared: {', '.join(sorted(declared)) or 'none'})")
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    elif not rows:
        typer.echo(f"no registered versions of {model!r}" if model else "no models registered yet")
    else:
        typer.echo(_table(rows))
    return rows


def promote_command(
    settings: Settings,
    model: str,
    version: int,
    *,
    session_factory: SessionFactory | None = None,
) -> None:
    """Point ``production`` of ``model`` at ``version`` (scorers pick it up at their next batch)."""
    from ml.registry import ModelRegistry, RegistryError
    from streamsight.contracts import load_contracts
    from streamsight.lake import models_uri

    declared = {c.model.name for c in load_contracts(settings.contracts_dir).values() if c.model}
    spark = _session(settings, "streamsight-promote", session_factory)
    registry = ModelRegistry(spark, models_uri(settings.lake_uri))
    if model not in declared and not registry.versions(model):  # a model a model.route_by field may name
        raise ConfigError(f"unknown model {model!r}: no contract declares it and the registry has no versions of it "
                          f"(declared: {', '.join(sorted(declared)) or 'none'})")
    previous = registry.get_alias(model, PRODUCTION_ALIAS)
    try:
        registry.set_alias(model, PRODUCTION_ALIAS, version)
    except RegistryError as exc:
        raise ModelNotFoundError(str(exc)) from None
    was = f"v{previous}" if previous is not None else "none"
    typer.echo(f"{model}: {PRODUCTION_ALIAS} -> v{version} (was {was})")


# -- formatting ----------------------------------------------------------------------------------


def _row(name: str, meta: dict[str, Any]) -> dict[str, Any]:
    metrics = meta.get("metrics") or {}
    baseline = meta.get("baseline_metrics") or {}
    data = meta.get("training_data") or {}
    return {
        "model": name,
        "version": meta.get("version"),
        "aliases": meta.get("aliases", []),
        "created_at": meta.get("created_at"),
        "algorithm": meta.get("algorithm"),
        "task": meta.get("task") or "binary",
        "auc_pr": metrics.get("auc_pr"),
        "auc_roc": metrics.get("auc_roc"),
        "f1": metrics.get("f1"),
        "precision": metrics.get("precision"),
        "recall": metrics.get("recall"),
        "threshold": meta.get("threshold"),
        "baseline_auc_pr": baseline.get("auc_pr"),
        "accuracy": metrics.get("accuracy"),
        "f1_macro": metrics.get("f1_macro"),
        "baseline_f1_macro": baseline.get("f1_macro"),
        "rmse": metrics.get("rmse"),
        "r2": metrics.get("r2"),
        "baseline_rmse": baseline.get("rmse"),
        "rows_train": data.get("rows_train"),
        "rows_test": data.get("rows_test"),
        "data_until": data.get("max_event_time"),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    multiclass = any(r.get("task") == "multiclass" for r in rows)
    regression = any(r.get("task") == "regression" for r in rows)
    headers = ["model", "version", "aliases", "created_at", "algorithm", "task", "auc_pr", "auc_roc", "f1",
               "precision", "recall", "threshold", "baseline_auc_pr",
               *(["accuracy", "f1_macro", "baseline_f1_macro"] if multiclass else []),
               *(["rmse", "r2", "baseline_rmse"] if regression else []),
               "rows_train", "rows_test", "data_until"]

    def cell(value: Any, key: str) -> str:
        if value is None:
            return "-"
        if key == "aliases":
            return ",".join(value) or "-"
        if key == "version":
            return f"v{value}"
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    cells = [[cell(r.get(h), h) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)
