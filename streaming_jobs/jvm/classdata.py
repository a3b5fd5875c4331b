"""A class-data archive for local Spark driver JVMs: the same work, half the start-up.

A local Spark session spends most of its first seconds loading and verifying some ten thousand
classes from the PySpark wheel's jars. The JVM can keep those classes, already parsed, in a
*class-data sharing* (CDS) archive and map it at start-up instead: JDK 17's dynamic archive
(``-XX:ArchiveClassesAtExit``), written when a JVM that ran typical work exits.

``python -m streaming_jobs.jvm`` (``make test``, ``make bench``; not the demo) builds the archive once:
a throw-away JVM runs a small version of what the project does (the in-memory development broker, a
stream through every table, a model fit and save, a query) and writes the archive on exit.
:func:`streaming_jobs.session.build_session` then passes ``-XX:SharedArchiveFile`` to local
drivers (setting ``spark.class_data_sharing``; on by default). Measured here, a session's
``getOrCreate`` and first job took 6 s and 4 s with it against 11 s and 9 s without
(``docs/benchmarks.md``).

The archive is only valid for the JVM and the class path it was made with, so its file name carries
a key of the Java runtime, the PySpark jars and the project's jar; a session uses an archive only
when the key matches (a mismatch would only make the JVM ignore it, with a warning this silences).
Clusters are untouched: under spark-submit the driver's options are the cluster's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUILD_DIR = Path(__file__).resolve().parent / "build"
PREFIX = "spark-classes-"
# Quiet: a JVM that cannot map the archive says so on stdout, where `streamsight sql --json` prints.
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"
BUILD_TIMEOUT_S = 600


def key() -> str | None:
    """What the archive depends on, hashed: the Java runtime (its ``release`` file and ``lib/modules``
    size) and the name and size of every jar on the driver's class path. ``None`` without Java."""
    from streaming_jobs import jvm

    java = jvm.java_tool("java")
    if java is None:
        return None
    home = Path(java).resolve().parent.parent
    h = hashlib.sha256()
    release = home / "release"
    h.update(release.read_bytes() if release.exists() else str(home).encode())
    modules = home / "lib" / "modules"
    h.update(str(modules.stat().st_size if modules.exists() else 0).encode())
    for jar in sorted(jvm._spark_jars().glob("*.jar")):
        h.update(f"{jar.name}:{jar.stat().st_size};".encode())
    if jvm.JAR.exists():
        h.update(hashlib.sha256(jvm.JAR.read_bytes()).digest())
    return h.hexdigest()[:16]


def archive_path() -> Path | None:
    k = key()
    return BUILD_DIR / f"{PREFIX}{k}.jsa" if k else None


def java_options() -> str | None:
    """Driver JVM options that map the archive, or ``None`` when there is no matching archive."""
    path = archive_path()
    if path is None or not path.is_file():
        return None
    return f"-XX:SharedArchiveFile={path} -Xshare:auto {QUIET}"


def build(force: bool = False) -> Path:
    """Write the archive (unless one for this key exists) by running :func:`_workload` in a new
    Python process whose driver JVM dumps its classes at exit; the archive's path."""
    path = archive_path()
    if path is None:
        raise RuntimeError("no Java runtime found (JAVA_HOME or java on PATH)")
    if path.is_file() and not force:
        return path
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".jsa.partial")
    partial.unlink(missing_ok=True)
    env = {**os.environ, "STREAMSIGHT_CLASSDATA_DUMP": str(partial)}
    done = subprocess.run([sys.executable, "-m", "streaming_jobs.jvm.classdata", "--workload"], env=env,
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise RuntimeError(f"the class-data workload failed (exit {done.returncode}):\n{tail}")
    partial.replace(path)
    for old in BUILD_DIR.glob(f"{PREFIX}*.jsa"):
        if old != path:
            old.unlink()
    return path


def _workload() -> None:
    """Typical work in one local session, so its driver's classes are the ones the archive holds."""
    from datetime import timedelta

    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler

    from analytics.sql import run_sql
    from ingestion import sources
    from streamsight_cli.local_kafka import running_kafka
    from ingestion.producer import produce
    from ml.registry import ModelRegistry
    from streaming_jobs.pipeline import StreamJob
    from streaming_jobs.session import build_session
    from streamsight.contracts import get_contract
    from streamsight.lake import models_uri
    from streamsight.settings import load_settings

    dump = os.environ["STREAMSIGHT_CLASSDATA_DUMP"]
    with tempfile.TemporaryDirectory(prefix="streamsight-classdata-") as tmp:
        base = load_settings()
        settings = load_settings(
            lake_dir=str(Path(tmp) / "lake"), run_dir=str(Path(tmp) / "run"), reports_dir=str(Path(tmp) / "reports"),
            spark={**base.spark.model_dump(), "master": "local[2]", "class_data_sharing": False,
                   "conf": {**base.spark.conf, "spark.driver.extraJavaOptions": f"-XX:ArchiveClassesAtExit={dump} {QUIET}"}},
            metrics={**base.metrics.model_dump(), "sink": "none"},
        )
        contract = get_contract(settings.contracts_dir, "machine_telemetry")
        with running_kafka(settings, [contract], Path(tmp) / "kafka") as (broker, settings):
            faults = sources.FaultSpec(malformed=0.05, schema=0.05, duplicates=0.05)
            produce(settings, contract, sources.synthetic_source(contract, machines=20, faults=faults,
                                                                 start=sources.AI4I_START), count=500, progress=False)
            spark = build_session(settings, "streamsight-classdata")
            try:
                job = StreamJob(spark, settings, contract, broker.bootstrap_servers)
                job.run_until_idle()
                silver = spark.read.parquet(job.uri("silver"))
                stages = [StringIndexer(inputCol="type", outputCol="type_index", handleInvalid="keep"),
                          VectorAssembler(inputCols=["type_index", "torque_nm", "tool_wear_min"], outputCol="raw",
                                          handleInvalid="keep"),
                          StandardScaler(inputCol="raw", outputCol="features"),
                          LogisticRegression(featuresCol="features", labelCol="machine_failure", maxIter=5)]
                labelled = silver.where("machine_failure IS NOT NULL")
                model = Pipeline(stages=stages).fit(labelled)
                registry = ModelRegistry(spark, models_uri(settings.lake_uri))
                registry.register("classdata", model, {"purpose": "class-data workload"})
                registry.load("classdata", 1).transform(labelled).count()
                produce(settings, contract, sources.synthetic_source(
                    contract, machines=20, seed=3, start=sources.AI4I_START + timedelta(hours=1)), count=200,
                    progress=False)
                job.run_until_idle()
                run_sql(spark, settings, f"SELECT count(*) AS n FROM {contract.name}_silver", as_json=True)
            finally:
                spark.stop()


def bench(settings: Any, *, runs: int = 5, output: Path | None = None) -> dict[str, Any]:
    """``streamsight bench-startup``: the wall time of a real CLI command (``streamsight sql --json
    "SELECT 1"``, a new process and Spark driver each time) with and without the archive,
    alternating; medians, their ratio, and every run. Written to ``output`` as JSON."""
    import json
    import platform
    import statistics
    import time

    archive = archive_path()
    if archive is None or not archive.is_file():
        raise RuntimeError("no class-data archive to compare with: build it with `python -m streaming_jobs.jvm`")
    times: dict[str, list[float]] = {"with_archive": [], "without_archive": []}
    with tempfile.TemporaryDirectory(prefix="streamsight-bench-startup-") as tmp:
        for _ in range(runs):
            for variant, sharing in (("with_archive", "true"), ("without_archive", "false")):
                env = {**os.environ, "STREAMSIGHT_LAKE_DIR": str(Path(tmp) / "lake"),
                       "STREAMSIGHT_SPARK__CLASS_DATA_SHARING": sharing, "STREAMSIGHT_LOG_LEVEL": "WARNING"}
                began = time.monotonic()
                done = subprocess.run([sys.executable, "-m", "streamsight_cli", "sql", "--json", "SELECT 1 AS one"],
                                      env=env, capture_output=True, text=True, timeout=300)
                elapsed = time.monotonic() - began
                if done.returncode != 0 or json.loads(done.stdout.splitlines()[-1]) != {"one": 1}:
                    raise RuntimeError(f"streamsight sql failed ({variant}):\n{done.stderr[-2000:]}")
                times[variant].append(round(elapsed, 2))
    medians = {k: round(statistics.median(v), 2) for k, v in times.items()}
    result = {
        "bench": "startup", "command": 'streamsight sql --json "SELECT 1 AS one"', "runs": runs,
        "median_seconds": medians, "without_over_with": round(medians["without_archive"] / medians["with_archive"], 2),
        "seconds": times, "archive": str(archive), "archive_bytes": archive.stat().st_size,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    path = output or Path(settings.reports_dir) / "bench-startup.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    result["output"] = str(path)
    return result


if __name__ == "__main__":  # `build` runs this module with --workload; `python -m streaming_jobs.jvm` builds
    if sys.argv[1:] != ["--workload"]:
        sys.exit("usage: python -m streaming_jobs.jvm (builds the jar and this archive)")
    logging.basicConfig(level=logging.WARNING)
    _workload()
