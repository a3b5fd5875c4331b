"""The SparkSession every Streamsight job, report and training run uses.

* Under ``spark-submit`` (the JVM gateway exists before Python starts) the session is the one the
  submission configured: its master, jars and packages are left alone; the SQL settings the jobs
  depend on (:data:`SESSION_SQL_CONF`) are applied, and a submission without Delta Lake's session
  settings (:data:`DELTA_CONF`, which only the submission can set) fails naming them.
* Otherwise a session is built from settings: ``spark.master``, shuffle partitions, RocksDB state,
  Spark's Kafka connector and Delta Lake from ``.jvm/spark`` (:mod:`streamsight.jars`), hadoop-aws
  from ``.jvm/s3`` when the lake is on S3, plus ``extra_jars``, and ``spark.conf``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from streamsight import jars
from streamsight.errors import ConfigError
from streamsight.lake import check_lake
from streamsight.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

# SQL settings the jobs depend on, applied to every session (including one under spark-submit):
# * duplicate keys in a JSON object: the last one wins, as in the producer's Python ``json``;
# * no constraint propagation: over the ~100 aliased expressions of validation it grows without
#   bound when a filter and a join follow (the driver ran out of heap in the unit tests);
# * a stage whose generated method is beyond what the JIT compiles (8,000 bytes of bytecode) runs
#   without whole-stage code generation: validation's rules made such a method, interpreted at
#   about half the speed (docs/benchmarks.md).
SESSION_SQL_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.variant.allowDuplicateKeys": "true",
    "spark.sql.constraintPropagation.enabled": "false",
    "spark.sql.codegen.hugeMethodLimit": "8000",
}


# Delta Lake's SQL extension and catalog: static settings, fixed when the session starts.
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
S3_SCHEMES = ("s3a://", "s3://")


def hive_conf(settings: Settings) -> dict[str, str]:
    """Spark settings of a session whose catalog is the embedded metastore (Derby) of ``settings``."""
    root = settings.catalog.metastore_dir.resolve()
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": (root / "warehouse").as_uri(),
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true",
        "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
        "spark.hadoop.hive.metastore.schema.verification": "false",
        "spark.driver.extraJavaOptions": f"-Dderby.stream.error.file={root / 'derby.log'}",
    }


def under_spark_submit() -> bool:
    """Whether this Python process was started by ``spark-submit`` (PySpark connects to its gateway)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_session(settings: Settings, app_name: str, extra_jars: Iterable[Path | str] = (), *,
                  catalog: bool = False) -> SparkSession:
    """A SparkSession configured from settings (the active or submitted one, if there is one).

    ``catalog``: with ``catalog.kind=hive``, a session whose catalog is the embedded metastore
    (:func:`hive_conf`); the streaming jobs run without one, so that the
    metastore, which admits one process, stays free for ``streamsight sql`` and ``spark-sql``.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None and under_spark_submit():
        active = SparkSession.builder.appName(app_name).getOrCreate()
    if active is not None:
        _check_delta(active)
        check_lake(settings)
        for key, value in SESSION_SQL_CONF.items():
            active.conf.set(key, value)
        return active
    check_lake(settings)
    local = settings.spark.master.startswith("local")
    if local:
        jars.java_executable("Spark")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    conf = {
        "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        "spark.driver.memory": settings.spark.driver_memory,
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.streaming.stateStore.providerClass":
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        # commit state as a changelog of the micro-batch, not a RocksDB snapshot each time
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Delta rebuilds a table's state (its files, its writers' batch ids) in this many tasks:
        # the default, 50, costs seconds per micro-batch on a small machine
        "spark.databricks.delta.snapshotPartitions": str(settings.spark.shuffle_partitions),
        # and lists a table's folders (VACUUM) in this many: the default, 10,000, takes minutes
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(settings.spark.shuffle_partitions),
        **DELTA_CONF,
        **SESSION_SQL_CONF,
    }
    if local:
        conf.update({"spark.ui.enabled": "false", "spark.driver.host": "127.0.0.1"})
    if catalog and settings.catalog.kind == "hive":
        conf.update(hive_conf(settings))
        settings.catalog.metastore_dir.mkdir(parents=True, exist_ok=True)
    extensions = settings.spark.conf.get("spark.sql.extensions")
    conf.update(settings.spark.conf)
    if extensions and DELTA_CONF["spark.sql.extensions"] not in extensions.split(","):
        conf["spark.sql.extensions"] = f"{DELTA_CONF['spark.sql.extensions']},{extensions}"
    # Spark's Kafka connector and Delta Lake (pom.xml, profile spark), the s3a:// file system for a
    # lake on S3 (profile s3) and the caller's jars, shipped to executors by the driver
    # (spark.jars), before any the settings name.
    profiles = ["spark", *(["s3"] if settings.lake_uri.startswith(S3_SCHEMES) else [])]
    paths = [*(str(p) for profile in profiles for p in jars.classpath(profile)), *map(str, extra_jars)]
    conf["spark.jars"] = ",".join(p for p in (*paths, conf.get("spark.jars", "")) if p)
    builder = SparkSession.builder.master(settings.spark.master).appName(app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    _check_delta(spark)
    return spark


def _check_delta(spark: SparkSession) -> None:
    """ConfigError naming each Delta Lake session setting the session lacks (a submission's, or
    one ``spark.conf`` in the settings replaced)."""
    conf = spark.sparkContext.getConf()
    missing = [f"--conf {k}={v}" for k, v in DELTA_CONF.items() if v not in (conf.get(k) or "")]
    if missing:
        raise ConfigError(f"the lake's tables are Delta Lake tables; submit with --packages {jars.delta_package()} "
                          "and " + " ".join(missing))


@contextmanager
def session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """A SQL setting of ``spark`` for the block, the previous value (or none) restored after it."""
    previous = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
