"""The project's JVM code: Spark SQL functions in Java.

``TreeEnsemble`` sums a GBT model's trees for the compiled scorer (``ml/compiled.py``); ``ConstantLong``
keeps per-batch values out of generated code. ``src/io/streamsight/jvm/*.java`` is compiled against the Spark and Jackson jars that
ship inside the PySpark wheel into ``build/streamsight-jvm.jar`` (``make setup`` runs
``python -m streaming_jobs.jvm``; it needs ``javac`` from a JDK 17+). Local sessions put the jar on
the classpath (``spark.jars``); under spark-submit pass ``--jars streaming_jobs/jvm/build/streamsight-jvm.jar``.
Without the jar everything still works: a GBT model is scored by MLlib.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
JAR = HERE / "build" / "streamsight-jvm.jar"
PROBE_CLASS = "io.streamsight.jvm.ConstantLong"
# compile against only what the code imports (the wheel's jars name others in their manifests)
_CLASSPATH_JARS = ("spark-sql-api_", "scala-library-", "scala-reflect-", "jackson-core-", "jackson-databind-", "jackson-annotations-")


class JvmBuildError(RuntimeError):
    """The JVM code could not be compiled (no ``javac``, or a compiler error)."""


def _spark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent / "jars"


def _sources() -> list[Path]:
    return sorted(SOURCES.rglob("*.java"))


def java_tool(name: str) -> str | None:
    """The path of JDK tool ``name`` (``java``, ``javac``): from ``$JAVA_HOME/bin`` when it is there,
    else from ``PATH``; ``None`` if neither has it."""
    found = shutil.which(name, path=os.path.join(os.environ["JAVA_HOME"], "bin")) if os.environ.get("JAVA_HOME") else None
    return found or shutil.which(name)


def up_to_date() -> bool:
    return JAR.exists() and all(src.stat().st_mtime <= JAR.stat().st_mtime for src in _sources())


def build(force: bool = False) -> Path:
    """Compile the sources into :data:`JAR` (unless it is newer than every source); its path."""
    if not force and up_to_date():
        return JAR
    javac = java_tool("javac")
    jar_tool = shutil.which("jar", path=str(Path(javac).parent)) if javac else None
    if not javac or not jar_tool:
        raise JvmBuildError("javac/jar not found: building the JVM functions needs a JDK 17+ "
                            "(Debian: `apt-get install openjdk-17-jdk-headless`)")
    jars = [str(p) for p in sorted(_spark_jars().glob("*.jar")) if p.name.startswith(_CLASSPATH_JARS)]
    with tempfile.TemporaryDirectory(prefix="streamsight-javac-") as classes:
        cmd = [javac, "--release", "17", "-Xlint:all,-path,-serial", "-Werror", "-cp", os.pathsep.join(jars),
               "-d", classes, *map(str, _sources())]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise JvmBuildError(f"javac failed:\n{done.stdout}{done.stderr}")
        JAR.parent.mkdir(parents=True, exist_ok=True)
        partial = JAR.with_suffix(".jar.partial")
        done = subprocess.run([jar_tool, "cf", str(partial), "-C", classes, "."], capture_output=True, text=True)
        if done.returncode != 0:
            raise JvmBuildError(f"jar failed:\n{done.stdout}{done.stderr}")
        partial.replace(JAR)
    return JAR


def ensure_built() -> Path | None:
    """:data:`JAR`, built first if it is missing or older than a source; None (with a warning) if
    it cannot be built here."""
    try:
        return build()
    except JvmBuildError as exc:
        log.warning("%s; running without the JVM functions", exc)
        return None


def available(spark: Any) -> bool:
    """Whether the session's JVM can load the project's functions (the jar is on its classpath)."""
    key = "_streamsight_jvm"
    cached = getattr(spark, key, None)
    if cached is None:
        try:
            loader = spark._jvm.java.lang.Thread.currentThread().getContextClassLoader()  # type: ignore[attr-defined]
            spark._jvm.java.lang.Class.forName(PROBE_CLASS, False, loader)  # type: ignore[attr-defined]
            cached = True
        except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException; no JVM (Spark Connect)
            cached = False
            log.warning("the project's JVM functions (%s) are not on the classpath (build them with "
                        "`python -m streaming_jobs.jvm`; spark-submit --jars %s)", PROBE_CLASS, JAR)
        setattr(spark, key, cached)
    return bool(cached)


def register_once(spark: Any, name: str, arguments: Any) -> str:
    """Register the function ``name`` with the session unless this session already has it;
    ``arguments(jvm)`` gives the rest of ``UDFRegistration.register``'s arguments. Returns ``name``."""
    registered: set[str] = getattr(spark, "_streamsight_functions", set())
    if name not in registered:
        spark._jsparkSession.udf().register(name, *arguments(spark._jvm))  # type: ignore[attr-defined]
        registered.add(name)
        setattr(spark, "_streamsight_functions", registered)
    return name


def constant(spark: Any, name: str, value: int) -> Any:
    """A bigint column with ``value``, as the function ``name`` (``ConstantLong``, registered
    anew on each call) where the jar is on the classpath, else a literal. For values that change
    with every micro-batch: generated code writes a literal's value into its source, so each
    batch's plan would be compiled anew."""
    from pyspark.sql import functions as F

    if not available(spark):
        return F.lit(value).cast("bigint")
    jvm = spark._jvm  # type: ignore[attr-defined]
    spark._jsparkSession.udf().register(name, jvm.io.streamsight.jvm.ConstantLong.function(int(value)))  # type: ignore[attr-defined]
    return F.call_function(name)


def main(argv: list[str] | None = None) -> int:
    """Build the jar (``--force``: even if it is current) and print its path."""
    args = argv if argv is not None else sys.argv[1:]
    try:
        print(build(force="--force" in args))
    except JvmBuildError as exc:
        print(f"streamsight: {exc}", file=sys.stderr)
        return 1
    return 0
