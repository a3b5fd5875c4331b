"""``streamsight serve`` as a real process on loopback, against Apache Kafka: what each answer means
for the records in the raw topic, the refusals, the operations endpoints and a schema fuzz."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingestion import sources
from streamsight.contracts import REJECTION_HEADERS
from streamsight.validation import RecordValidator
from streamsight_cli.api import digest
from tests.conftest import AI4I_CSV
from tests.integration.api_server import KEYS, Server, start_server, stop_server
from tests.integration.helpers import cli_env, isolated_contract, read_topic

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(kafka_broker, tmp_path_factory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("api")
    contracts_dir = isolated_contract(directory, kafka_broker)
    started = start_server(directory, kafka_broker.bootstrap_servers, contracts_dir,
                           max_body_bytes="65536", max_records="200", model_refresh_s="0.3")
    try:
        yield started
    finally:
        stop_server(started)


def telemetry(first: int, count: int) -> list[dict[str, Any]]:
    return [e.payload for e in sources.ai4i_source(AI4I_CSV, skip=first, limit=count)]


def raw_messages(server: Server, after: dict[tuple[int, int], Any] | None = None) -> dict[tuple[int, int], Any]:
    """The raw topic's messages by (partition, offset); with ``after``, only those not in it."""
    found = {(m.partition(), m.offset()): m for m in read_topic(server.servers, server.contract.raw_topic)}
    return {k: m for k, m in found.items() if k not in (after or {})}


def test_valid_records_are_in_kafka_when_the_answer_is_202(server):
    records = telemetry(0, 120)
    before = raw_messages(server)
    answer = server.post(f"/v1/streams/{server.contract.name}/events", records, headers={"X-Request-ID": "batch-1"})
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"stream": server.contract.name, "accepted": 120}
    assert answer.headers["X-Request-ID"] == "batch-1"
    single = server.post(f"/v1/streams/{server.contract.name}/events", telemetry(120, 1)[0])
    assert single.status_code == 202 and single.json()["accepted"] == 1
    messages = list(raw_messages(server, before).values())
    sent = {r["event_id"]: r for r in records + telemetry(120, 1)}
    got = {json.loads(m.value())["event_id"]: m for m in messages}
    assert sorted(got) == sorted(sent) and len(messages) == len(sent)
    for event_id, message in got.items():
        assert message.key().decode() == sent[event_id]["machine_id"]
        assert json.loads(message.value()) == sent[event_id]
        assert not message.headers()


def test_invalid_records_are_listed_and_sent_to_be_dead_lettered(server):
    good, missing, wrong_type = telemetry(200, 3)
    del missing["torque_nm"]
    wrong_type["tool_wear_min"] = "a lot"
    batch = [good, missing, wrong_type, "not an object", {**good, "event_id": "x" * 65}]
    before = raw_messages(server)
    answer = server.post(f"/v1/streams/{server.contract.name}/events", batch)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    validator = RecordValidator(server.contract)
    assert body["accepted"] == 1 and body["request_id"] == answer.headers["X-Request-ID"]
    assert [(e["index"], e["code"]) for e in body["rejected"]] == [
        (1, "MISSING_FIELD"), (2, "TYPE_MISMATCH"), (3, "NOT_AN_OBJECT"), (4, "BAD_LENGTH")]
    # the producers' validator gives the same verdicts
    assert [validator.check_record(r).code for r in (missing, wrong_type, batch[4])] == ["MISSING_FIELD", "TYPE_MISMATCH",
                                                                                        "BAD_LENGTH"]
    assert "torque_nm" in body["rejected"][0]["message"]
    messages = list(raw_messages(server, before).values())
    assert len(messages) == len(batch)  # every record went to Kafka: the stream dead-letters the rejected ones
    codes = [dict(m.headers() or []).get(REJECTION_HEADERS["code"]) for m in messages]
    assert Counter(codes) == Counter([None, b"MISSING_FIELD", b"TYPE_MISMATCH", b"NOT_AN_OBJECT", b"BAD_LENGTH"])
    assert all(dict(m.headers()).get(REJECTION_HEADERS["source"]) == b"api" for m in messages if m.headers())


@pytest.mark.parametrize(("case", "status", "detail"), [
    ("unknown stream", 404, "unknown stream 'nope'"),
    ("text body", 415, "send application/json"),
    ("not JSON", 400, "not valid JSON"),
    ("not UTF-8", 400, "not UTF-8"),
    ("empty array", 400, "no records"),
    ("body too large", 413, "api.max_body_bytes 65536"),
    ("too many records", 413, "201 records, more than api.max_records 200"),
    ("no key", 401, "an API key is required"),
    ("unknown key", 401, "the API key is not valid"),
    ("key without the scope", 403, "does not have the scope 'events:write'"),
    ("key for another stream", 403, "may not use stream"),
])
def test_refusals_say_what_is_wrong_and_publish_nothing(server, case, status, detail):
    path = f"/v1/streams/{server.contract.name}/events"
    record = telemetry(300, 1)[0]
    before = raw_messages(server)
    answer = {
        "unknown stream": lambda: server.post("/v1/streams/nope/events", record, key="admin"),
        "text body": lambda: server.post(path, content=b"{}", headers={"Content-Type": "text/plain"}),
        "not JSON": lambda: server.post(path, content=b'[{"a": 1},', headers={"Content-Type": "application/json"}),
        "not UTF-8": lambda: server.post(path, content=b'{"a": "\xff"}', headers={"Content-Type": "application/json"}),
        "empty array": lambda: server.post(path, []),
        "body too large": lambda: server.post(path, [record] * 300),
        "too many records": lambda: server.post(path, [{}] * 201),
        "no key": lambda: server.post(path, record, key=None),
        "unknown key": lambda: server.post(path, record, headers={"Authorization": "Bearer ss_nobody"}),
        "key without the scope": lambda: server.post(path, record, key="reader"),
        "key for another stream": lambda: server.post(path, record, key="other"),
    }[case]()
    assert answer.status_code == status, answer.text
    assert detail in answer.json()["detail"]
    assert answer.json()["request_id"] == answer.headers["X-Request-ID"]
    if status == 401:
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert raw_messages(server, before) == {}


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(server):
    path = f"/v1/streams/{server.contract.name}/events"
    answers = [server.post(path, telemetry(400 + i, 1)[0], key="slow") for i in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert "rate limit of 2 per 1 minute" in answers[2].json()["detail"]
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60


def test_operations_endpoints_logs_and_openapi(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz")
    assert ready.status_code == 200 and ready.json()["broker"] is True
    doc = server.get("/openapi.json").json()
    post = doc["paths"]["/v1/streams/{stream}/events"]["post"]
    assert {"202", "400", "401", "403", "404", "413", "415", "429", "503"} <= set(post["responses"])
    assert "422" not in post["responses"]
    server.post(f"/v1/streams/{server.contract.name}/events", telemetry(500, 2), headers={"X-Request-ID": "metrics-check"})
    bad_id = server.post("/v1/streams/nope/events", {}, headers={"X-Request-ID": "no spaces allowed"})
    assert bad_id.headers["X-Request-ID"] != "no spaces allowed" and len(bad_id.headers["X-Request-ID"]) == 32
    metrics = server.get("/metrics").text
    assert 'streamsight_api_requests_total{method="POST",route="/v1/streams/{stream}/events",status="202"}' in metrics
    accepted = [line for line in metrics.splitlines()
                if line.startswith(f'streamsight_api_events_total{{outcome="accepted",stream="{server.contract.name}"}}')]
    assert accepted and float(accepted[0].split()[-1]) >= 2
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    logged = [line for line in lines if line.get("request_id") == "metrics-check"]
    assert logged and logged[0]["status"] == 202 and logged[0]["key"] == "writer" and logged[0]["route"]
    text = server.log.read_text()
    assert not any(key in text for key in KEYS.values())


def test_schema_fuzz_finds_no_server_error(server, trained, tmp_path):
    """schemathesis generates requests from the OpenAPI document (valid and invalid): none gets a 5xx,
    with a model in production to score what it sends."""
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", f"{server.url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "40", "--seed", "7", "--request-timeout", "20",
         "-H", f"Authorization: Bearer {KEYS['admin']}", "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    report = next(tmp_path.glob("*.xml")).read_text()
    assert f"/v1/streams/{server.contract.name}/events" in report  # the stream's own schema was fuzzed too
    assert "/v1/models/machine_failure/predict" in report  # and the model's input schema


def test_a_stopped_broker_gives_503_and_loses_nothing_acknowledged(kafka_broker, tmp_path):
    from streamsight_cli.local_kafka import LocalKafka
    from tests.conftest import TestBroker

    kafka = LocalKafka(tmp_path / "own-kafka", port=0).start()
    server = None
    try:
        contracts_dir = isolated_contract(tmp_path, TestBroker("local", kafka.bootstrap_servers, kafka))
        server = start_server(tmp_path, kafka.bootstrap_servers, contracts_dir, publish_timeout_s="3")
        path = f"/v1/streams/{server.contract.name}/events"
        first, second = telemetry(1000, 50), telemetry(1050, 50)
        assert server.post(path, first).status_code == 202
        kafka.kill()
        refused = server.post(path, second)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) >= 1 and "send them again" in refused.json()["detail"]
        assert set(refused.json()) == {"detail", "request_id"}
        assert server.get("/readyz").status_code == 503
        kafka.start()  # same ports and data
        again = server.post(path, second)
        assert again.status_code == 202, again.text
        ids = Counter(json.loads(m.value())["event_id"] for m in read_topic(kafka.bootstrap_servers, server.contract.raw_topic))
        assert all(ids[r["event_id"]] == 1 for r in first)  # acknowledged before the stop: kept, once
        assert all(ids[r["event_id"]] >= 1 for r in second)  # sent again: kept (the stream de-duplicates)
        assert set(ids) == {r["event_id"] for r in first + second}
    finally:
        if server is not None:
            stop_server(server)
        kafka.stop()


def test_serve_refuses_to_start_without_keys_or_broker(kafka_broker, tmp_path):
    from tests.integration.helpers import cli

    contracts_dir = isolated_contract(tmp_path, kafka_broker)
    env = {**cli_env(tmp_path, kafka_broker, contracts_dir), "STREAMSIGHT_API__KEYS_FILE": str(tmp_path / "none.yaml")}
    no_keys = cli(env, "serve", "--port", "0", check=False, timeout=60)
    assert no_keys.returncode == 2 and "STREAMSIGHT_API__KEYS (api.keys): no API keys" in no_keys.stderr
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump([{"name": "x", "sha256": "not-a-digest"}]))
    bad = cli({**env, "STREAMSIGHT_API__KEYS_FILE": str(tmp_path / "bad.yaml")}, "serve", check=False, timeout=60)
    assert bad.returncode == 2 and "bad.yaml, entry 0.sha256" in bad.stderr
    created = cli(env, "api-key", "create", "gateway", "--scope", "events:write", "--stream", "machine_telemetry")
    key = created.stdout.strip()
    assert key.startswith("ss_") and key not in (tmp_path / "none.yaml").read_text()
    assert digest(key) in (tmp_path / "none.yaml").read_text()
    no_broker = cli({**env, "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", "STREAMSIGHT_KAFKA__CONNECT_TIMEOUT_S": "2"},
                    "serve", "--port", "0", check=False, timeout=60)
    assert no_broker.returncode == 2 and "127.0.0.1:1" in no_broker.stderr


# -- online scoring ------------------------------------------------------------------------------

FEATURES = ["air_temperature_k", "process_temperature_k", "rotational_speed_rpm", "torque_nm", "tool_wear_min", "type"]


@pytest.fixture(scope="module")
def trained(spark, server, trained_model):
    """machine_failure v1 (logistic regression) in production in the server's lake, as `streamsight
    train` leaves it; the server has not read the registry before."""
    from streamsight.settings import load_settings

    settings = load_settings(lake_dir=str(server.lake))
    trained_model.install(spark, settings.lake_uri)
    return settings, trained_model.metadata


def _mllib_probabilities(spark, settings, version: int, records: list[dict[str, Any]]) -> list[float]:
    """What the streaming job's MLlib pipeline gives these records."""
    from pyspark.ml.functions import vector_to_array

    from ml.registry import ModelRegistry
    from streamsight.contracts import load_contract
    from streamsight.lake import models_uri, with_derived
    from tests.integration.helpers import CONTRACTS

    model = ModelRegistry(spark, models_uri(settings.lake_uri)).load("machine_failure", version)
    frame = spark.createDataFrame([{f: (float(r[f]) if f != "type" else r[f]) for f in FEATURES} for r in records],
                                  ", ".join(f"{f} double" if f != "type" else "type string" for f in FEATURES))
    frame = with_derived(frame, load_contract(CONTRACTS / "machine_telemetry.yaml"))  # as the stream computes them
    return [r[0] for r in model.transform(frame).select(vector_to_array("_ss_probability")[1]).collect()]


def test_predict_answers_as_the_mllib_model_in_every_form(spark, server, trained):
    settings, meta = trained
    records = telemetry(3000, 40)
    expected = _mllib_probabilities(spark, settings, 1, records)
    path = "/v1/models/machine_failure/predict"

    one = server.post(path, records[0], key="scorer", headers={"X-Request-ID": "predict-1"})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"] == "machine_failure" and body["version"] == 1 and body["threshold"] == meta["threshold"]
    assert body["probability"] == pytest.approx(expected[0], rel=1e-9, abs=1e-12)
    assert body["label"] == int(body["probability"] >= meta["threshold"])
    assert one.headers["X-Request-ID"] == "predict-1"

    many = server.post(path, records, key="scorer").json()
    assert [p["probability"] for p in many["predictions"]] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert [p["label"] for p in many["predictions"]] == [int(p >= meta["threshold"]) for p in expected]
    assert {p["label"] for p in many["predictions"]} == {0, 1}  # these rows hold failures, and the model sees some

    vector = server.post(path, {"data": [records[0][f] for f in FEATURES]}, key="scorer").json()
    assert vector["probability"] == body["probability"]
    vectors = server.post(path, {"data": [[r[f] for f in FEATURES] for r in records[:3]]}, key="scorer").json()
    # the same rows in a batch of another size: numpy may sum in another order (last-bit differences)
    assert [p["probability"] for p in vectors["predictions"]] == pytest.approx(
        [p["probability"] for p in many["predictions"][:3]], rel=1e-12, abs=1e-15)

    info = server.get("/v1/models/machine_failure", key="scorer").json()
    assert info["features"] == FEATURES and info["version"] == 1
    assert info["input_schema"]["properties"]["torque_nm"] == {"type": "number", "minimum": 0, "maximum": 200}
    metrics = server.get("/metrics").text
    assert 'streamsight_api_predictions_total{model="machine_failure",version="1"}' in metrics
    ready = server.get("/readyz").json()
    assert ready["models"] == {"machine_failure": 1}


@pytest.mark.parametrize(("case", "status", "detail"), [
    ("missing", 400, "torque_nm is missing"),
    ("wrong_type", 400, "tool_wear_min must be integer"),
    ("out_of_range", 400, "air_temperature_k must be smaller than or equal to 350"),
    ("unknown_type", 400, "type must be one of"),
    ("short_vector", 400, "5 values; the model takes 6"),
    ("not_json", 400, "not valid JSON"),
    ("not_objects", 400, "a record must be a JSON object"),
    ("unknown_model", 404, "no model 'nope' in production"),
    ("no_key", 401, "an API key is required"),
    ("no_scope", 403, "does not have the scope 'predict'"),
    ("text", 415, "send application/json"),
])
def test_predict_refusals_name_what_is_wrong(server, trained, case, status, detail):
    record = telemetry(3100, 1)[0]
    path, key, body, content, headers = "/v1/models/machine_failure/predict", "scorer", record, None, None
    if case == "missing":
        body = {k: v for k, v in record.items() if k != "torque_nm"}
    elif case == "wrong_type":
        body = [record, {**record, "tool_wear_min": "a lot"}]
    elif case == "out_of_range":
        body = {**record, "air_temperature_k": 1000}
    elif case == "unknown_type":
        body = {**record, "type": "Z"}
    elif case == "short_vector":
        body = {"data": [record[f] for f in FEATURES[:5]]}
    elif case == "not_json":
        content, headers = b"{not json", {"Content-Type": "application/json"}
    elif case == "not_objects":
        body = [record, 42]
    elif case == "unknown_model":
        path = "/v1/models/nope/predict"
    elif case == "no_key":
        key = None
    elif case == "no_scope":
        key = "writer"
    elif case == "text":
        content, headers = b"x", {"Content-Type": "text/plain"}
    answer = server.post(path, body, key=key, content=content, headers=headers)
    assert answer.status_code == status, answer.text
    assert detail in answer.text and "request_id" in answer.json()
    if case == "wrong_type":
        assert answer.json()["errors"] == [{"index": 1, "field": "tool_wear_min", "message": "tool_wear_min must be integer"}]


def test_a_promoted_version_is_served_and_one_without_a_scorer_is_503(spark, server, trained):
    """Promotion moves the answers to the new version with no restart; a version the registry holds
    without scorer.json (trained before online scoring) is refused with 503, not scored wrongly."""
    from ml.registry import ModelRegistry
    from streamsight.lake import models_uri
    from tests.integration.helpers import register_small_gbt, wait_for

    settings, _ = trained
    record = telemetry(3200, 1)[0]
    path = "/v1/models/machine_failure/predict"
    assert server.post(path, record, key="scorer").json()["version"] == 1
    # v2: a small GBT on other rows, registered as training registers (MLlib model and scorer.json).
    version = register_small_gbt(spark, settings.lake_uri, server.contract)
    registry = ModelRegistry(spark, models_uri(settings.lake_uri))
    registry.set_alias("machine_failure", "production", version)
    answer = wait_for(lambda: (a := server.post(path, record, key="scorer").json())["version"] == version and a,
                      timeout=30, what="the promoted version to be served")
    assert answer["threshold"] == 0.5
    assert answer["probability"] == pytest.approx(_mllib_probabilities(spark, settings, version, [record])[0],
                                                  rel=1e-9, abs=1e-12)

    legacy = registry.load("machine_failure", 1)
    registry.register("legacy_model", legacy, {"threshold": 0.5})  # no scorer
    registry.set_alias("legacy_model", "production", 1)
    refused = server.post("/v1/models/legacy_model/predict", record, key="scorer")
    assert refused.status_code == 503 and "scorer.json" in refused.json()["detail"]

    # A scorer that fails while scoring: 500 with the request id and nothing else; the log has the rest.
    broken = json.loads((server.lake / "_models" / "machine_failure" / "v1" / "scorer.json").read_text())
    broken["stages"][-2]["mean"] = broken["stages"][-2]["mean"][:-1]  # one value short: shapes disagree
    registry.register("broken_model", legacy, {"threshold": 0.5}, scorer=broken)
    registry.set_alias("broken_model", "production", 1)
    failed = server.post("/v1/models/broken_model/predict", record, key="scorer", headers={"X-Request-ID": "boom-1"})
    assert failed.status_code == 500
    assert failed.json() == {"detail": "internal error", "request_id": "boom-1"}
    assert failed.headers["X-Request-ID"] == "boom-1"
    logged = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("message") == "request boom-1 failed" and "Traceback" in line.get("exc_info", "")
               for line in logged)
    assert any(line.get("request_id") == "boom-1" and line["status"] == 500 for line in logged)


# -- the predictions store -----------------------------------------------------------------------

def test_the_stream_puts_each_prediction_once_in_dynamodb_and_get_reads_them(spark, kafka_broker, trained_model,
                                                                           tmp_path, monkeypatch):
    """DynamoDB here is moto's server (a stand-in). The stream puts one item per scored event, equal to
    the lake's predictions row; the same events put again (a replayed batch) change nothing;
    GET /v1/predictions reads them newest first, by key or across the stream."""
    import boto3

    from ingestion.producer import produce
    from streaming_jobs.pipeline import run
    from streamsight.lake import read_table, table_uri
    from streamsight.settings import load_settings
    from streamsight.store import put_partition
    from tests.integration.helpers import cli
    from tests.moto_server import start_moto, stop, use_test_credentials

    use_test_credentials(monkeypatch)
    moto, endpoint = start_moto(tmp_path / "moto.log")
    server = None
    try:
        contracts_dir = isolated_contract(tmp_path, kafka_broker)
        store_env = {"STREAMSIGHT_PREDICTIONS_STORE__KIND": "dynamodb", "STREAMSIGHT_PREDICTIONS_STORE__TABLE": "preds",
                     "STREAMSIGHT_AWS__ENDPOINT_URL": endpoint}
        env = {**cli_env(tmp_path, kafka_broker, contracts_dir), **store_env}
        for name in ("STREAMSIGHT_LAKE_DIR", "STREAMSIGHT_RUN_DIR", "STREAMSIGHT_CONTRACTS_DIR",
                     "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS", *store_env):
            monkeypatch.setenv(name, env[name])
        assert json.loads(cli(env, "predictions-store").stdout)["table"] == "preds"
        settings = load_settings()
        from streamsight.contracts import load_contracts

        contract = load_contracts(contracts_dir)["machine_telemetry"]
        trained_model.install(spark, settings.lake_uri)
        produce(settings, contract, sources.synthetic_source(contract, machines=6, seed=3), count=300, progress=False)
        run(spark, settings, contract.name, until_idle=True)

        dynamo = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)

        def items() -> dict[str, dict[str, Any]]:
            pages = dynamo.get_paginator("scan").paginate(TableName="preds")
            return {i["event_id"]["S"]: i for page in pages for i in page["Items"]}

        stored = items()
        lake = {r["event_id"]: r for r in read_table(spark, table_uri(settings.lake_uri, contract, "predictions")).collect()}
        assert len(stored) == len(lake) == 300
        for event_id, row in lake.items():
            item = stored[event_id]
            assert item["pk"]["S"] == f"{contract.name}#{row['machine_id']}"
            assert float(item["probability"]["N"]) == row["probability"]
            assert int(item["prediction"]["N"]) == row["prediction"] and int(item["model_version"]["N"]) == 1

        # A replayed batch puts the same events again: still one item each, unchanged.
        predictions = read_table(spark, table_uri(settings.lake_uri, contract, "predictions"))
        predictions.foreachPartition(put_partition(
            {"table": "preds", "region": "us-east-1", "endpoint_url": endpoint, "timeout_s": 5.0},
            contract.name, contract.key, list(contract.dedup_key), contract.event_time.field))
        assert items() == stored

        server = start_server(tmp_path, kafka_broker.bootstrap_servers, contracts_dir, extra_env=store_env)
        machine = Counter(r["machine_id"] for r in lake.values()).most_common(1)[0][0]
        mine = sorted((r for r in lake.values() if r["machine_id"] == machine), key=lambda r: r["event_time"], reverse=True)
        path = f"/v1/predictions?stream={contract.name}&key={machine}"
        answer = server.get(path, key="reader")
        assert answer.status_code == 200, answer.text
        got = answer.json()["predictions"]
        assert [p["event_id"] for p in got] == [r["event_id"] for r in mine]
        assert got[0]["probability"] == mine[0]["probability"] and got[0]["model_version"] == 1
        since = mine[1]["event_time"].isoformat()
        assert [p["event_id"] for p in server.get(f"{path}&since={since}", key="reader").json()["predictions"]] == \
            [r["event_id"] for r in mine[:2]]
        newest = sorted(lake.values(), key=lambda r: (r["event_time"], r["event_id"]), reverse=True)[:5]
        across = server.get(f"/v1/predictions?stream={contract.name}&limit=5", key="reader").json()["predictions"]
        assert [p["event_id"] for p in across] == [r["event_id"] for r in newest]

        assert server.get(f"/v1/predictions?stream={contract.name}", key="writer").status_code == 403
        assert server.get(f"/v1/predictions?stream={contract.name}&since=yesterday", key="reader").status_code == 400
        assert server.get(f"/v1/predictions?stream={contract.name}&limit=5000", key="reader").status_code == 400
        assert server.get("/v1/predictions?stream=another_stream", key="admin").status_code == 403  # admin: no scope

        # An unreachable store fails `serve` at start, naming the setting.
        refused = cli({**env, "STREAMSIGHT_AWS__ENDPOINT_URL": "http://127.0.0.1:1"}, "serve", "--port", "0",
                      check=False, timeout=60)
        assert refused.returncode == 2 and "STREAMSIGHT_AWS__ENDPOINT_URL" in refused.stderr
    finally:
        if server is not None:
            stop_server(server)
        stop(moto)
