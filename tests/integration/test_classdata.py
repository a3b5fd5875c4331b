"""The class-data archive of local driver JVMs (streaming_jobs/jvm/classdata.py).

``make test`` builds it (``python -m streaming_jobs.jvm``) before the tests run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from streaming_jobs.jvm import classdata
from tests.integration.helpers import ROOT

pytestmark = pytest.mark.integration


def test_a_local_session_maps_the_archive(tmp_path):
    """A driver started by build_session maps the archive: with -Xshare:on (given last, so it wins
    over the session's -Xshare:auto) the JVM would refuse to start otherwise, and the class-load log
    shows Spark's classes coming from the archive, not from the jars."""
    archive = classdata.archive_path()
    assert archive is not None and archive.is_file(), (
        f"no class-data archive at {archive}: `python -m streaming_jobs.jvm` (make test) builds it")
    loads = tmp_path / "class-load.log"
    script = textwrap.dedent(f"""
        from streamsight.settings import load_settings
        from streaming_jobs.session import build_session
        settings = load_settings(lake_dir={str(tmp_path / "lake")!r}, spark={{"master": "local[1]", "conf": {{
            "spark.driver.extraJavaOptions": "-Xshare:on -Xlog:class+load=info:file={loads}"}}}})
        spark = build_session(settings, "classdata-test")
        print("rows", spark.range(5).count())
        spark.stop()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows 5" in done.stdout
    log = loads.read_text(encoding="utf-8")
    from_archive = [line for line in log.splitlines() if "source: shared objects file (top)" in line]
    assert any(" org.apache.spark.SparkContext " in line for line in from_archive), log[-2000:]
    assert len(from_archive) > 5000, len(from_archive)  # most of Spark's classes, not a handful


def test_an_archive_is_used_only_for_its_own_key(tmp_path, monkeypatch):
    monkeypatch.setattr(classdata, "BUILD_DIR", tmp_path)
    assert classdata.java_options() is None  # nothing built
    (tmp_path / f"{classdata.PREFIX}0123456789abcdef.jsa").write_bytes(b"another runtime's")
    assert classdata.java_options() is None  # another Java, other jars or another jar of ours
    ours = classdata.archive_path()
    assert ours is not None and ours.parent == tmp_path
    ours.write_bytes(b"")
    options = classdata.java_options()
    assert options is not None and f"-XX:SharedArchiveFile={ours}" in options and "-Xshare:auto" in options


def test_the_key_follows_the_project_jar(tmp_path, monkeypatch):
    from streaming_jobs import jvm

    jar = tmp_path / "streamsight-jvm.jar"
    monkeypatch.setattr(jvm, "JAR", jar)
    jar.write_bytes(b"one build")
    first = classdata.key()
    jar.write_bytes(b"another build")
    assert first is not None and classdata.key() not in (None, first)
