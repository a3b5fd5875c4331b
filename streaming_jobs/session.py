"""Building the SparkSession every Streamsight job, report and training run uses."""

from __future__ import annotations

import logging
import os
import shutil
import sys

from pyspark.sql import SparkSession

from streamsight import jars
from streamsight.errors import ConfigError
from streamsight.settings import Settings

log = logging.getLogger(__name__)

# SQL settings the jobs depend on, applied to every session (including an active one under
# spark-submit):
# * duplicate keys in a JSON object: the last one wins, as in the producer's Python ``json`` and in
#   Spark's ``from_json``; otherwise ``parse_json`` rejects the record and the two validation paths
#   of ``streaming_jobs.transforms.parse`` would disagree;
# * no constraint propagation: over the ~100 aliased expressions of validation it grows without
#   bound when a filter and a join follow (the driver ran out of heap in the unit tests);
SESSION_SQL_CONF = {
    "spark.sql.variant.allowDuplicateKeys": "true",
    "spark.sql.constraintPropagation.enabled": "false",
    # A stage whose generated method is beyond what the JIT compiles (8,000 bytes of bytecode) runs
    # without whole-stage code generation: validation's rules made such a method, interpreted at
    # about half the speed (docs/benchmarks.md).
    "spark.sql.codegen.hugeMethodLimit": "8000",
}


def add_jars(conf: dict[str, str], paths: list[str]) -> None:
    """Append ``paths`` to ``spark.jars`` in ``conf``."""
    conf["spark.jars"] = ",".join(p for p in (conf.get("spark.jars", ""), *paths) if p)


def check_java() -> None:
    """Fail with a clear message when no Java 17+ runtime is available (local mode needs one)."""
    java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin")) if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not java:
        raise ConfigError("JAVA_HOME / PATH: no `java` found. Spark needs a Java 17+ runtime "
                          "(Debian: `apt-get install openjdk-17-jre-headless`).")


def build_session(settings: Settings, app_name: str) -> SparkSession:
    """A SparkSession configured from settings (reuses the active one, e.g. under spark-submit)."""
    active = SparkSession.getActiveSession()
    if active is not None:
        for key, value in SESSION_SQL_CONF.items():
            active.conf.set(key, value)
        return active
    if settings.spark.master.startswith("local"):
        check_java()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(settings.spark.master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
        .config("spark.driver.memory", settings.spark.driver_memory)
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.streaming.stateStore.providerClass",
                "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider")
        # Commit state as a changelog of the micro-batch, not a RocksDB snapshot each time.
        .config("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    for key, value in SESSION_SQL_CONF.items():
        builder = builder.config(key, value)
    if settings.spark.master.startswith("local"):
        builder = builder.config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
    conf = dict(settings.spark.conf)
    # Spark's Kafka connector (pom.xml, profile spark): shipped to executors from the driver. Under
    # spark-submit the cluster's --packages / --jars provide it instead (the active session above).
    add_jars(conf, [str(p) for p in jars.classpath("spark")])
    if settings.spark.master.startswith("local"):
        # the JVM screen (streaming_jobs/jvm); on a cluster spark-submit --jars ships it
        from streaming_jobs import jvm

        jar = jvm.ensure_built()
        if jar is not None:
            add_jars(conf, [str(jar)])
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
