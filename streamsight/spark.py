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
    options = driver_java_options(settings, conf.get("spark.driver.extraJavaOptions", ""))
    if options:
        conf["spark.driver.extraJavaOptions"] = options
    builder = SparkSession.builder.master(settings.spark.master).appName(app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    _check_delta(spark)
    return spark


def driver_java_options(settings: Settings, options: str) -> str:
    """``options`` and, with ``spark.class_data_sharing`` and an archive for this Java and PySpark,
    the flags that map it (silent if the JVM cannot use it: it then loads its classes as usual)."""
    if not settings.spark.class_data_sharing:
        return options
    archive = class_archive()
    if not archive.is_file():
        return options
    return f"{options} -XX:SharedArchiveFile={archive} -Xlog:cds*=off -Xlog:cds+dynamic=off".strip()


def class_archive() -> Path:
    """The driver JVM's class-data-sharing archive for this process's Java and PySpark (a dynamic
    CDS archive: Spark's classes as a JVM that ran :func:`_archive_workload` left them, mapped rather
    than loaded and verified at each start)."""
    import hashlib

    import pyspark

    java = os.path.realpath(jars.java_executable("Spark"))
    spark_jars = Path(pyspark.__file__).parent / "jars"  # the JVM refuses an archive if they changed
    installed = spark_jars.stat().st_mtime_ns if spark_jars.is_dir() else 0
    key = hashlib.sha256(f"{java}|{pyspark.__version__}|{spark_jars}|{installed}".encode()).hexdigest()[:16]
    return jars.jvm_dir() / "cds" / f"spark-driver-{key}.jsa"


def write_class_archive(timeout_s: float = 300) -> Path:
    """Write :func:`class_archive` unless it exists: a session in a child process runs
    :func:`_archive_workload` with ``-XX:ArchiveClassesAtExit``; the archive is complete once that
    JVM has exited."""
    import subprocess
    import tempfile
    import time

    archive = class_archive()
    if archive.is_file():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(f".{os.getpid()}.partial")
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run([sys.executable, "-m", "streamsight.spark", "--workload", str(partial), scratch],
                              capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"the class-data-sharing workload failed:\n{done.stderr[-3000:]}")
        pid = int(Path(scratch, "jvm.pid").read_text())  # the JVM dumps the archive as it exits, after Python
        deadline = time.monotonic() + timeout_s
        while _alive(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the JVM {pid} writing {partial} did not exit within {timeout_s:g}s")
            time.sleep(0.2)
    if not partial.is_file():
        raise RuntimeError(f"the JVM wrote no archive at {partial}")
    partial.replace(archive)
    return archive


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _archive_workload(partial: str, scratch: str) -> None:
    """What most commands do first: a session with the jars, Delta writes and reads, SQL, a
    streaming query. Writes the JVM's pid to ``<scratch>/jvm.pid``."""
    from streamsight.settings import load_settings

    settings = load_settings(lake_dir=scratch, spark={"master": "local[2]", "class_data_sharing": False,
                                                      "conf": {"spark.driver.extraJavaOptions":
                                                               f"-XX:ArchiveClassesAtExit={partial}"}})
    spark = build_session(settings, "streamsight-class-archive")
    table, copy = f"{scratch}/table", f"{scratch}/copy"
    spark.range(1000).selectExpr("id", "id % 7 AS k", "current_timestamp() AS t").write.format("delta").save(table)
    spark.read.format("delta").load(table).groupBy("k").count().collect()
    query = (spark.readStream.format("delta").load(table).writeStream.format("delta")
             .option("checkpointLocation", f"{scratch}/_checkpoint").trigger(availableNow=True).start(copy))
    query.awaitTermination()
    spark.sql(f"SELECT k, count(*) FROM delta.`{copy}` GROUP BY k").collect()
    pid = int(spark.sparkContext._jvm.ProcessHandle.current().pid())  # type: ignore[union-attr]
    Path(scratch, "jvm.pid").write_text(str(pid))
    spark.stop()


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


if __name__ == "__main__":
    if sys.argv[1:2] == ["--workload"]:
        _archive_workload(sys.argv[2], sys.argv[3])
    else:
        print(write_class_archive())
