"""HDFS as the project runs it: `streamsight hdfs`, the lake's encryption zone and its ACLs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from streamsight.lake import read_table
from tests.integration.helpers import ROOT

pytestmark = pytest.mark.integration


def _hdfs_command(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "STREAMSIGHT_DATA_DIR": str(data_dir), "STREAMSIGHT_RUN_DIR": str(data_dir / "run"),
           "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "streamsight_cli", "hdfs", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return err


def _listing(web: str, path: str) -> set[str]:
    from streamsight_cli.local_hdfs import webhdfs

    return {s["pathSuffix"] for s in webhdfs(web, "GET", path, "LISTSTATUS", user="hdfs")["FileStatuses"]["FileStatus"]}


def test_hdfs_command_prints_the_lake_keeps_data_and_stops_on_sigterm(tmp_path):
    from streamsight_cli.local_hdfs import webhdfs

    proc = _hdfs_command(tmp_path, "--port", "0")
    try:
        first = proc.stdout.readline().strip() if proc.stdout else ""
        assert first.startswith("hdfs://127.0.0.1:") and first.endswith("/lake"), proc.stderr.read() if proc.stderr else ""
        address = json.loads((tmp_path / "run" / "hdfs.json").read_text())
        assert address["lake"] == first
        assert {"silver", "predictions", "gold"} <= _listing(address["web"], "/lake")
        webhdfs(address["web"], "PUT", "/lake/bronze", "MKDIRS", user=address["pipeline_user"])
    finally:
        err = _stop(proc)
    assert proc.returncode == 0, err
    assert not (tmp_path / "run" / "hdfs.json").exists()

    again = _hdfs_command(tmp_path)  # no --port: the last start's address, the same data
    try:
        assert again.stdout is not None and again.stdout.readline().strip() == first
        address = json.loads((tmp_path / "run" / "hdfs.json").read_text())
        assert "bronze" in _listing(address["web"], "/lake")
        # Still an encryption zone: HDFS keeps a zone's trash inside the zone.
        user = address["pipeline_user"]
        trash = webhdfs(address["web"], "GET", "/lake/silver", "GETTRASHROOT", user=user)["Path"]
        assert trash == f"/lake/.Trash/{user}"
        assert webhdfs(address["web"], "GET", "/tmp", "GETTRASHROOT", user=user)["Path"] == f"/user/{user}/.Trash"
    finally:
        err = _stop(again)
    assert again.returncode == 0, err


def test_no_plaintext_of_a_lake_record_reaches_the_datanodes_disk(spark, hdfs):
    """A record written into the lake (the encryption zone) is nowhere on the DataNode's disk in the
    clear; a record written outside the zone is (so the search would find one)."""

    def blocks_with(needle: str) -> list[Path]:
        return [p for p in hdfs.block_dir.rglob("blk_*") if not p.name.endswith(".meta") and needle.encode() in p.read_bytes()]

    def write(uri: str, marker: str) -> None:
        spark.createDataFrame([(i, f"{marker}-{i}") for i in range(20)], "id bigint, note string") \
            .write.format("delta").save(uri)
        assert read_table(spark, uri).where(f"note = '{marker}-7'").count() == 1

    secret = f"CANARY-{uuid.uuid4().hex}"
    write(f"{hdfs.lake_uri}/silver/canary_{uuid.uuid4().hex[:6]}", secret)
    assert blocks_with(secret) == []
    control = f"CANARY-{uuid.uuid4().hex}"
    write(f"{hdfs.uri}{hdfs.plain_dir(f'/plain-{uuid.uuid4().hex[:8]}')}/canary", control)
    assert blocks_with(control), "the record written outside the encryption zone should be on disk in the clear"
