"""The project's JVM code: Spark SQL functions in Java.

``ContractScreen`` screens message values against a contract; ``TreeEnsemble`` sums a GBT model's
trees for the compiled scorer (``ml/compiled.py``); ``NowMicros`` and ``ConstantLong`` keep per-batch
values out of generated code. ``src/io/streamsight/jvm/*.java`` is compiled against the Spark and Jackson jars that
ship inside the PySpark wheel into ``build/streamsight-jvm.jar`` (``make setup`` runs
``python -m streaming_jobs.jvm``; it needs ``javac`` from a JDK 17+). Local sessions put the jar on
the classpath (``spark.jars``); under spark-submit pass ``--jars streaming_jobs/jvm/build/streamsight-jvm.jar``.
Without the jar everything still works: :func:`streaming_jobs.transforms.screen` then uses its SQL
fast path, which costs several times as much JVM time per record (``docs/benchmarks.md``), and a
GBT model is scored by MLlib.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from streamsight.contracts import Contract, value_of_json_type

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
JAR = HERE / "build" / "streamsight-jvm.jar"
SCREEN_CLASS = "io.streamsight.jvm.ContractScreen"
_SCREEN_TYPES = {"string": "string", "integer": "bigint", "number": "double", "boolean": "boolean"}
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
        raise JvmBuildError("javac/jar not found: building the JVM screen needs a JDK 17+ "
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
        log.warning("%s; screening records with the SQL fast path alone", exc)
        return None


def available(spark: Any) -> bool:
    """Whether the session's JVM can load the screen class (the jar is on its classpath)."""
    key = "_streamsight_jvm_screen"
    cached = getattr(spark, key, None)
    if cached is None:
        try:
            loader = spark._jvm.java.lang.Thread.currentThread().getContextClassLoader()  # type: ignore[attr-defined]
            spark._jvm.java.lang.Class.forName(SCREEN_CLASS, False, loader)  # type: ignore[attr-defined]
            cached = True
        except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException; no JVM (Spark Connect)
            cached = False
            log.warning("the JVM screen (%s) is not on the classpath: screening records with the SQL fast path "
                        "alone, which is slower (build it with `python -m streaming_jobs.jvm`; spark-submit "
                        "--jars %s)", SCREEN_CLASS, JAR)
        setattr(spark, key, cached)
    return bool(cached)


NOW_FUNCTION = "streamsight_now_micros"


def register_once(spark: Any, name: str, arguments: Any) -> str:
    """Register the function ``name`` with the session unless this session already has it;
    ``arguments(jvm)`` gives the rest of ``UDFRegistration.register``'s arguments. Returns ``name``."""
    registered: set[str] = getattr(spark, "_streamsight_functions", set())
    if name not in registered:
        spark._jsparkSession.udf().register(name, *arguments(spark._jvm))  # type: ignore[attr-defined]
        registered.add(name)
        setattr(spark, "_streamsight_functions", registered)
    return name


def now_function(spark: Any) -> str | None:
    """Register :data:`NOW_FUNCTION` (``NowMicros``: the time, read per row, as epoch microseconds;
    nondeterministic) with the session; its SQL name, or None without the jar."""
    if not available(spark):
        return None
    return register_once(spark, NOW_FUNCTION, lambda jvm: (jvm.io.streamsight.jvm.NowMicros.function(),))


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


def screen_spec(contract: Contract) -> dict[str, Any] | None:
    """What :class:`ContractScreen` checks, from the contract; None if it cannot screen it (a field
    of another JSON type, or an enum value not of its field's type)."""
    fields = []
    for f in contract.fields:
        if f.json_type not in _SCREEN_TYPES:
            return None
        if f.enum is not None and not all(value_of_json_type(f.json_type, v) for v in f.enum):
            return None
        fields.append({
            "name": f.name, "type": f.json_type, "required": f.required, "enum": list(f.enum) if f.enum else None,
            # bounds as the SQL paths write them (Python repr), so both compare with the same decimal
            "minimum": _literal(f.minimum), "maximum": _literal(f.maximum),
            "exclusiveMinimum": _literal(f.exclusive_minimum), "exclusiveMaximum": _literal(f.exclusive_maximum),
            "minLength": f.min_length, "maxLength": f.max_length,
            "pattern": f.pattern,
        })
    return {"fields": fields}


def _literal(bound: float | None) -> str | None:
    return None if bound is None else repr(bound)


def screen_function(spark: Any, contract: Contract) -> str | None:
    """Register the contract's screen UDF with the session; its SQL name (None without the jar, or
    for a contract it cannot screen). Its result: ``struct<_ok boolean, <field> <type>, ...>``."""
    spec = screen_spec(contract)
    if spec is None or not available(spark):
        return None
    text = json.dumps(spec, sort_keys=True)
    name = "streamsight_screen_" + re.sub(r"\W", "_", contract.name) + "_" + hashlib.sha1(text.encode()).hexdigest()[:12]
    from pyspark.sql.types import BooleanType, StructField, StructType, _parse_datatype_string

    fields = [StructField("_ok", BooleanType(), False)] + [
        StructField(f.name, _parse_datatype_string(_SCREEN_TYPES[f.json_type]), True) for f in contract.fields]
    return register_once(spark, name, lambda jvm: (jvm.io.streamsight.jvm.ContractScreen(text),
                                                   jvm.org.apache.spark.sql.types.DataType.fromJson(StructType(fields).json())))


def main(argv: list[str] | None = None) -> int:
    """Build the jar, then the class-data archive of local driver JVMs (:mod:`.classdata`); print
    their paths. Without the archive everything works, only start-up is slower: its failure is a
    warning, not an error."""
    args = argv if argv is not None else sys.argv[1:]
    force = "--force" in args
    try:
        print(build(force=force))
    except JvmBuildError as exc:
        print(f"streamsight: {exc}", file=sys.stderr)
        return 1
    if "--no-classdata" not in args:
        from streaming_jobs.jvm import classdata

        try:
            print(classdata.build(force=force))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            print(f"streamsight: no class-data archive (Spark starts without it, only slower): {exc}",
                  file=sys.stderr)
    return 0
