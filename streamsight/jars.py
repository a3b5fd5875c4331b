"""The JVM dependencies declared in ``pom.xml``, resolved by Maven into ``.jvm/<profile>/``.

Profiles: ``broker`` (Apache Kafka, for ``streamsight broker``) and ``spark`` (Spark's Kafka
connector, put on local sessions' class path). :func:`classpath` resolves a profile the first time
it is needed (``make`` does it ahead: ``python -m streamsight.jars``) and says so on stderr. Maven
keeps what it downloads in ``~/.m2``, so a profile is fetched once per machine: resolution tries
offline first, and goes online only for what the local repository lacks.
A folder is current while its stamp file holds the hash of ``pom.xml``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from streamsight.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POM = PROJECT_ROOT / "pom.xml"
PROFILES = ("broker", "spark", "s3", "hdfs", "s3proxy")
STAMP = ".resolved"
RESOLVE_TIMEOUT_S = 900


def java_executable(needed_by: str) -> str:
    """``java`` from ``$JAVA_HOME/bin``, else from ``PATH``; ConfigError naming ``needed_by`` if none."""
    home = os.environ.get("JAVA_HOME")
    java = (shutil.which("java", path=os.path.join(home, "bin")) if home else None) or shutil.which("java")
    if java is None:
        raise ConfigError(f"JAVA_HOME / PATH: no `java` found; {needed_by} needs a Java 17+ runtime "
                          "(Debian: `apt-get install openjdk-17-jre-headless`).")
    return java


def pom_property(name: str) -> str:
    """A property of ``pom.xml`` (``delta.version``, ``spark.version`` ...)."""
    import xml.etree.ElementTree as ET

    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    found = ET.parse(POM).getroot().find(f"m:properties/m:{name}", ns)
    if found is None or not (found.text or "").strip():
        raise KeyError(f"{POM} has no property {name}")
    return (found.text or "").strip()


def delta_package() -> str:
    """Maven coordinates of the Delta Lake build ``pom.xml`` pins (for ``spark-submit --packages``)."""
    return f"io.delta:delta-spark_4.2_{pom_property('scala.binary.version')}:{pom_property('delta.version')}"


def jvm_dir() -> Path:
    """Where resolved jars live: ``STREAMSIGHT_JVM_DIR`` or ``<project>/.jvm``."""
    return Path(os.environ.get("STREAMSIGHT_JVM_DIR") or PROJECT_ROOT / ".jvm")


def _pom_hash() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def is_resolved(profile: str) -> bool:
    stamp = jvm_dir() / profile / STAMP
    return stamp.exists() and stamp.read_text(encoding="utf-8").strip() == _pom_hash()


def _mvn(profile: str, target: Path, offline: bool) -> subprocess.CompletedProcess[str]:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigError("PATH: no `mvn` found; Maven 3.8+ resolves the project's JVM dependencies "
                          "(pom.xml). Debian: `apt-get install maven`.")
    cmd = [mvn, "-B", "-q", *(["-o"] if offline else []), "-f", str(POM), "-P", profile,
           "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={target}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S)


def resolve(profile: str, *, force: bool = False) -> Path:
    """Copy the runtime jars of ``profile`` into ``.jvm/<profile>`` (unless current); its path."""
    if profile not in PROFILES:
        raise ValueError(f"unknown JVM profile {profile!r} (known: {', '.join(PROFILES)})")
    final = jvm_dir() / profile
    if not force and is_resolved(profile):
        return final
    print(f"streamsight: resolving the JVM dependencies of profile '{profile}' (pom.xml) with Maven "
          f"into {final} (once; later runs reuse it)", file=sys.stderr, flush=True)
    partial = final.with_name(profile + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    done = _mvn(profile, partial, offline=True)
    if done.returncode != 0:  # something is not in ~/.m2 yet
        shutil.rmtree(partial, ignore_errors=True)
        done = _mvn(profile, partial, offline=False)
    if done.returncode != 0:
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if "ERROR" in ln][:8]
        raise ConfigError(f"Maven could not resolve profile '{profile}' of {POM}:\n" + "\n".join(lines))
    (partial / STAMP).write_text(_pom_hash() + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def classpath(profile: str) -> list[Path]:
    """The jars of ``profile``, resolved first if needed, sorted by name."""
    return sorted(resolve(profile).glob("*.jar"))


def version(profile: str, artifact: str) -> str | None:
    """The version of ``artifact`` (e.g. ``kafka-clients``) in a resolved profile, from its file name."""
    for jar in classpath(profile):
        name = jar.name[: -len(".jar")]
        if name.startswith(artifact + "-") and name[len(artifact) + 1 : len(artifact) + 2].isdigit():
            return name[len(artifact) + 1 :]
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m streamsight.jars [--force] [PROFILE ...]``: resolve profiles (default: all)."""
    args = sys.argv[1:] if argv is None else argv
    force = "--force" in args
    wanted = [a for a in args if a != "--force"] or list(PROFILES)
    try:
        for profile in wanted:
            print(resolve(profile, force=force))
    except ConfigError as exc:
        print(f"streamsight: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
