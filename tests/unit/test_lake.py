"""The lake's layout rules that need no Spark: where its file system answers, its HDFS ACLs, retention."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from streamsight.contracts import load_contract
from streamsight.errors import LakeUnavailableError
from streamsight.lake import ANALYST_AREAS, ANALYSTS_GROUP, check_lake, hdfs_acls, lake_endpoint, table_properties
from streamsight.settings import PROJECT_ROOT, load_settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("lake, conf, expected", [
    ("/tmp/lake", {}, None),
    ("hdfs://nn.internal:9000/lake", {}, ("nn.internal", 9000)),
    ("hdfs://nn.internal/lake", {}, ("nn.internal", 8020)),
    ("s3a://bucket/lake", {}, None),  # AWS's own endpoints
    ("s3a://bucket/lake", {"spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000"}, ("127.0.0.1", 9000)),
    ("s3a://bucket/lake", {"spark.hadoop.fs.s3a.endpoint": "minio.local"}, ("minio.local", 443)),
])
def test_the_lake_answers_where_its_uri_and_settings_say(lake, conf, expected):
    assert lake_endpoint(load_settings(lake_dir=lake, spark={"conf": conf})) == expected


def test_an_unreachable_lake_fails_at_once_naming_the_setting():
    port = _closed_port()
    with pytest.raises(LakeUnavailableError, match=rf"STREAMSIGHT_LAKE_DIR: .*NameNode at 127.0.0.1:{port} cannot be reached"):
        check_lake(load_settings(lake_dir=f"hdfs://127.0.0.1:{port}/lake"))
    with pytest.raises(LakeUnavailableError, match=r"S3 endpoint \(spark.hadoop.fs.s3a.endpoint\)"):
        check_lake(load_settings(lake_dir="s3a://b/lake", spark={"conf": {"spark.hadoop.fs.s3a.endpoint": f"http://127.0.0.1:{port}"}}))
    check_lake(load_settings(lake_dir="/tmp/anywhere"))  # a local lake: nothing to reach


def test_a_command_on_an_unreachable_lake_exits_with_one_line():
    env = {**os.environ, "STREAMSIGHT_LAKE_DIR": f"hdfs://127.0.0.1:{_closed_port()}/lake", "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-m", "streamsight_cli", "sql", "SELECT 1"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "cannot be reached" in done.stderr


def test_hdfs_acls_open_only_the_analysts_areas():
    acls = {path: (perm, entries) for path, perm, entries in hdfs_acls("/lake/")}
    assert list(acls) == ["/lake", *[f"/lake/{a}" for a in ANALYST_AREAS]]
    for path, (perm, entries) in acls.items():
        assert perm == "750" and "default:other::---" in entries  # others: nothing, now and for new files
        analysts = [e for e in entries if f":{ANALYSTS_GROUP}:" in e]
        if path == "/lake":  # traverse only: bronze, dead letter, checkpoints, models stay closed
            assert analysts == [f"group:{ANALYSTS_GROUP}:--x"]
        else:
            assert analysts == [f"group:{ANALYSTS_GROUP}:r-x", f"default:group:{ANALYSTS_GROUP}:r-x"]


def test_retention_is_the_contracts_else_the_settings():
    contract = load_contract(PROJECT_ROOT / "conf" / "contracts" / "machine_telemetry.yaml")
    settings = load_settings(retention={"files": "2 days", "log": "10 days"})
    assert table_properties(contract, settings) == {"delta.deletedFileRetentionDuration": "interval 2 days",
                                                    "delta.logRetentionDuration": "interval 10 days"}
    own = contract.model_copy(update={"retention": contract.retention.model_copy(update={"files": "1 hour"})})
    assert table_properties(own, settings)["delta.deletedFileRetentionDuration"] == "interval 1 hour"
    with pytest.raises(Exception, match="STREAMSIGHT_RETENTION__FILES"):
        load_settings(retention={"files": "a while"})
