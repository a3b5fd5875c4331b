"""``streamsight bench-scoring``: what scoring costs per record, MLlib against the compiled scorer.

Fits the contract model's pipelines (:func:`ml.train._pipeline`: GBT and logistic regression) on
the AI4I rows, caches ``--rows`` silver-shaped rows (the AI4I rows repeated), and times
``ProductionScorer.score`` with ``ml.scoring = mllib`` and ``= compiled``, alternating, each
written to Spark's ``noop`` sink ``--repeats`` times. Reading the cached rows alone is measured the
same way and reported as ``baseline``: the scoring cost is the difference.

Figures (one JSON object, printed and written to ``--output``), per algorithm and mode: median wall
seconds and median JVM CPU (driver process, all threads) in µs per record, and the ratio
MLlib / compiled of the per-record cost above the baseline.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from streamsight.contracts import get_contract
from streamsight.settings import Settings


def _jvm_cpu_s(spark: Any) -> float:
    """CPU seconds (user + system) of the local Spark JVM so far, from ``/proc`` (Linux)."""
    pid = spark._jvm.java.lang.ProcessHandle.current().pid()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _silver(spark: Any, contract: Any, rows: int) -> Any:
    """``rows`` silver-shaped rows of the AI4I readings (repeated), cached; with lineage columns."""
    import pandas as pd
    from pyspark.sql import functions as F

    from ingestion import sources
    from streaming_jobs.demo import AI4I_CSV

    frame = pd.DataFrame([r.payload for r in sources.ai4i_source(AI4I_CSV)])
    base = spark.createDataFrame(frame).withColumn(contract.event_time.field,
                                                   F.to_timestamp(contract.event_time.field))
    copies = -(-rows // len(frame))
    df = (base.crossJoin(spark.range(copies).withColumnRenamed("id", "_copy")).limit(rows)
          .withColumn(contract.dedup_key[0], F.concat_ws("-", contract.dedup_key[0], "_copy"))
          .withColumn("event_date", F.to_date(contract.event_time.field))
          .withColumn("event_hour", F.hour(contract.event_time.field))
          .withColumn("_kafka_timestamp", F.col(contract.event_time.field))
          .withColumn("_kafka_partition", F.lit(0)).withColumn("_batch_id", F.lit(1).cast("bigint"))
          .drop("_copy").cache())
    df.count()
    return df, base


def run_scoring_bench(settings: Settings, *, rows: int = 200_000, repeats: int = 5,
                      output: Path | None = None) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from ml import PRODUCTION_ALIAS
    from ml.registry import ModelRegistry
    from ml.scoring import ProductionScorer
    from ml.train import LABEL, WEIGHT, _pipeline
    from streaming_jobs.session import build_session
    from streamsight.lake import models_uri

    work = Path(tempfile.mkdtemp(prefix="streamsight-bench-scoring-"))
    settings = settings.model_copy(update={"lake_dir": str(work / "lake")})
    contract = get_contract(settings.contracts_dir, "machine_telemetry")
    spark = build_session(settings, "streamsight-bench-scoring")
    result: dict[str, Any] = {"rows": rows, "repeats": repeats}
    try:
        silver, ai4i = _silver(spark, contract, rows)
        labelled = (ai4i.withColumn(LABEL, F.col(contract.model.label).cast("double"))
                    .withColumn(WEIGHT, F.when(F.col(LABEL) == 1.0, 30.0).otherwise(1.0)))
        registry = ModelRegistry(spark, models_uri(settings.lake_uri))

        def timed(df: Any) -> tuple[float, float]:
            cpu, began = _jvm_cpu_s(spark), time.monotonic()
            df.write.format("noop").mode("overwrite").save()
            return time.monotonic() - began, (_jvm_cpu_s(spark) - cpu) / rows * 1e6

        for algorithm in ("gbt", "logistic_regression"):
            model = _pipeline(algorithm, list(contract.model.features), list(contract.model.categorical_features),
                              42, None).fit(labelled)
            version = registry.register(contract.model.name, model, {"threshold": 0.5, "metrics": {}})
            registry.set_alias(contract.model.name, PRODUCTION_ALIAS, version)
            scorers = {}
            for mode in ("mllib", "compiled"):
                ml = settings.ml.model_copy(update={"scoring": mode})
                scorers[mode] = ProductionScorer(spark, settings.model_copy(update={"ml": ml}), contract)
                scorers[mode].current()
            plans = {"baseline": silver, **{m: s.score(silver) for m, s in scorers.items()}}
            for df in plans.values():  # warm-up: code generation, JIT
                timed(df)
            samples: dict[str, list[tuple[float, float]]] = {k: [] for k in plans}
            for _ in range(repeats):
                for name, df in plans.items():
                    samples[name].append(timed(df))
            figures = {name: {"wall_s": round(median(s[0] for s in runs), 3),
                              "jvm_us_per_record": round(median(s[1] for s in runs), 2)}
                       for name, runs in samples.items()}
            base = figures["baseline"]["jvm_us_per_record"]
            cost = {m: figures[m]["jvm_us_per_record"] - base for m in ("mllib", "compiled")}
            figures["scoring_us_per_record"] = {m: round(v, 2) for m, v in cost.items()}
            figures["mllib_over_compiled"] = round(cost["mllib"] / cost["compiled"], 2) if cost["compiled"] > 0 else None
            figures["compiled"]["used"] = scorers["compiled"].path == "compiled"
            result[algorithm] = figures
        result["machine"] = (f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
                             f"Spark {spark.version}")
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    path = output or Path(settings.reports_dir) / "bench-scoring.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    result["output"] = str(path)
    return result
