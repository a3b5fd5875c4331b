"""The lake's layout rules that need no Spark: where its file system answers, its HDFS ACLs, retention."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from streamsight.contracts import load_contract
from streamsight.errors import ConfigError, LakeUnavailableError
from streamsight.lake import ANALYST_AREAS, ANALYSTS_GROUP, check_lake, hdfs_acls, lake_endpoint, table_properties
from streamsight.settings import PROJECT_ROOT, load_settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("lake, conf, expected", [
    ("/tmp/lake", {}, None),
    ("hdfs://nn.internal:9000/lake", {}, ("nn.internal", 9000)),
    ("hdfs://nameservice1/lake", {}, None),  # an HA nameservice: Hadoop resolves it
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


def test_maintenance_refuses_before_doing_anything():
    from streaming_jobs.maintenance import check

    contract = load_contract(PROJECT_ROOT / "conf" / "contracts" / "machine_telemetry.yaml")
    settings = load_settings(lake_dir="/tmp/lake")
    check(settings, [contract], ["silver", "gold_by_type_1h"], streams_stopped=False)
    with pytest.raises(ConfigError, match="--table: no table silverr"):
        check(settings, [contract], ["silverr"], streams_stopped=False)
    with pytest.raises(ConfigError, match="STREAMSIGHT_RETENTION__FILES"):
        check(load_settings(lake_dir="/tmp/lake", retention={"files": "10 minutes"}), [contract], None, streams_stopped=False)
    s3 = load_settings(lake_dir="s3a://bucket/lake")
    with pytest.raises(ConfigError, match="--streams-stopped"):
        check(s3, [contract], None, streams_stopped=False)
    check(s3, [contract], None, streams_stopped=True)


@pytest.mark.parametrize("text, expected", [
    ("org.apache.hadoop.security.AccessControlException: Permission denied: user=bob, access=READ, inode=\"/x\":a:b:drwx\n\tat x",
     'Permission denied: user=bob, access=READ, inode="/x":a:b:drwx'),
    ("java.nio.file.AccessDeniedException: s3a://b/k: getFileStatus on s3a://b/k: 403 Forbidden",
     "s3a://b/k: getFileStatus on s3a://b/k: 403 Forbidden"),
    ("java.io.FileNotFoundException: File does not exist: /x", None),
])
def test_a_refusal_is_found_in_an_error_and_said_in_one_line(text, expected):
    from streamsight.hadoop import access_denied

    assert access_denied(RuntimeError(text)) == expected


def test_the_ddl_declares_delta_tables_at_their_locations():
    from streamsight.lake import table_uri

    contract = load_contract(PROJECT_ROOT / "conf" / "contracts" / "machine_telemetry.yaml")
    for table, statement in contract.ddl("s3a://bucket/lake").items():
        assert "USING delta" in statement and statement.endswith(f"LOCATION '{table_uri('s3a://bucket/lake', contract, table)}'")


def test_predictions_keep_the_scored_records_columns_and_scoring_is_batch_or_online(tmp_path):
    import yaml

    from streamsight.lake import prediction_columns, scored_record_columns

    path = PROJECT_ROOT / "conf" / "contracts" / "machine_telemetry.yaml"
    contract = load_contract(path)
    assert contract.model is not None and contract.model.scoring == "batch"
    record = scored_record_columns(contract)
    # the fields the model reads (in the schema's order), then its features (derived columns), the label
    assert [c for c, _ in record] == ["machine_id", "event_id", "event_time", "type", "air_temperature_k",
                                      "process_temperature_k", "rotational_speed_rpm", "torque_nm", "tool_wear_min",
                                      "heat_dissipation_risk", "power_risk", "overstrain_risk", "tool_wear_risk",
                                      "machine_failure"]
    assert dict(record)["power_risk"] == "int"
    columns = prediction_columns(contract)
    assert columns[:4] == [*record[:3], ("event_date", "date")] and columns[4:15] == record[3:]
    assert [c for c, _ in columns[15:]] == ["probability", "prediction", "model_name", "model_version", "scored_at",
                                           "scored_by", "predicted_class", "predicted_value", "_kafka_timestamp",
                                           "_batch_id"]
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["model"]["scoring"] = "sometimes"
    bad = tmp_path / "machine_telemetry.yaml"
    bad.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"model\.scoring") as raised:
        load_contract(bad)
    assert "'batch' or 'online'" in str(raised.value) and str(bad) in str(raised.value)


def test_a_session_maps_the_class_archive_when_there_is_one(tmp_path, monkeypatch):
    from streamsight.spark import class_archive, driver_java_options

    monkeypatch.setenv("STREAMSIGHT_JVM_DIR", str(tmp_path))
    archive = class_archive()
    assert archive.parent == tmp_path / "cds" and archive.suffix == ".jsa"
    settings = load_settings()
    assert driver_java_options(settings, "-Da=1") == "-Da=1"  # none written yet
    archive.parent.mkdir()
    archive.write_bytes(b"")
    assert driver_java_options(settings, "-Da=1") == (f"-Da=1 -XX:SharedArchiveFile={archive} "
                                                      "-Xlog:cds*=off -Xlog:cds+dynamic=off")
    assert driver_java_options(load_settings(spark={"class_data_sharing": False}), "") == ""


@pytest.mark.parametrize("model, schema_extra, message", [
    ({"route_by": "model_nam"}, {}, r"model\.route_by: 'model_nam' is not a field"),
    ({"route_by": "tool_wear_min"}, {}, r"model\.route_by: 'tool_wear_min' must be a string field"),
    ({"route_by": "model_name", "scoring": "online"}, {"model_name": {"type": "string"}},
     r"model\.route_by: the hot path \(model\.scoring: online\) scores with one model"),
])
def test_a_contract_routing_by_field_is_checked_at_load(tmp_path, model, schema_extra, message):
    import yaml

    path = PROJECT_ROOT / "conf" / "contracts" / "machine_telemetry.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["model"].update(model)
    doc["schema"]["properties"].update(schema_extra)
    bad = tmp_path / "machine_telemetry.yaml"
    bad.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_contract(bad)
