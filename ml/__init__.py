"""Streamsight machine learning: model registry, training and streaming scoring (Spark MLlib).

* :mod:`ml.registry` -- versioned models and aliases in the lake (``_models/<model>/``).
* :mod:`ml.train` -- time-split training, threshold choice, evaluation against a baseline, promotion.
* :mod:`ml.scoring` -- :class:`~ml.scoring.ProductionScorer`, which follows the ``production`` alias.
* :mod:`ml.cli` -- the ``train``, ``models`` and ``promote`` commands.

Importing this package does not import pyspark.
"""

from __future__ import annotations

PRODUCTION_ALIAS = "production"
BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"
# The test metric that ranks candidates and decides promotion, per task (metadata["metrics"]).
PRIMARY_METRIC = {BINARY: "auc_pr", MULTICLASS: "f1_macro", REGRESSION: "rmse"}
LOWER_IS_BETTER = frozenset({"rmse"})


def at_least_as_good(metric: str, value: float, other: float) -> bool:
    """Whether ``value`` of ``metric`` is as good as ``other`` or better."""
    return value <= other if metric in LOWER_IS_BETTER else value >= other


def task_of(metadata: dict) -> str:
    """A model version's task (versions trained before multiclass models existed are binary)."""
    return str(metadata.get("task") or BINARY)
