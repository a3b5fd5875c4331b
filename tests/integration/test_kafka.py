"""Apache Kafka as the project runs it: `streamsight broker`, the Admin API calls, SASL_SSL and ACLs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamsight.contracts import load_contracts
from streamsight.errors import BrokerUnavailableError, ConfigError
from streamsight.kafka import PIPELINE_PRINCIPAL, PRODUCER_PRINCIPAL, check_broker, ensure_topics, grant_stream_acls
from streamsight.lake import read_table
from streamsight.settings import load_settings
from tests.integration.helpers import ROOT, isolated_contract, read_topic, wait_for

pytestmark = pytest.mark.integration


def _high_watermarks(servers: str, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"hw-{uuid.uuid4().hex[:6]}"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in sorted(parts)]
    finally:
        consumer.close()


def test_create_topics_and_high_watermark_after_batched_produce(kafka_broker):
    """Conformance: CreateTopics makes the partitions asked for; after batched, compressed,
    idempotent produce the high watermarks add up to what was produced, and every record reads back."""
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    topic = f"conformance-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 3
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 50, "compression.type": "lz4"})
    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(5000)}
    items = list(sent.items())
    for start in range(0, len(items), 1000):
        producer.produce_batch(topic, [{"key": k, "value": v} for k, v in items[start:start + 1000]])
        producer.poll(0)
    assert producer.flush(30) == 0
    assert sum(_high_watermarks(kafka_broker.bootstrap_servers, topic)) == len(sent)
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": f"c-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: dict[bytes, bytes] = {}
    try:
        wait_for(lambda: got.update({m.key(): m.value() for m in consumer.consume(1000, timeout=1) if not m.error()})
                 or len(got) >= len(sent), timeout=60, what="every record to read back")
    finally:
        consumer.close()
    assert got == sent


def _broker_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "streamsight_cli", "broker", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_broker_command_topics_restart_and_reset(tmp_path, kafka_broker):
    contracts_dir = isolated_contract(tmp_path, kafka_broker)
    contract = load_contracts(contracts_dir)["machine_telemetry"]
    env = {**os.environ, "STREAMSIGHT_CONTRACTS_DIR": str(contracts_dir),
           "STREAMSIGHT_DATA_DIR": str(tmp_path / "data"), "STREAMSIGHT_RUN_DIR": str(tmp_path / "run"),
           "PYTHONPATH": str(ROOT)}
    address_file = tmp_path / "run" / "broker.json"

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        proc = _broker_process(env, *args)
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()  # the bootstrap address comes first
        assert first.startswith("127.0.0.1:"), (first, proc.stderr.read() if proc.poll() is not None else "")
        wait_for(address_file.exists, timeout=30, what="the address file")
        return proc, first

    def stop(proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
        assert not address_file.exists()

    proc, servers = start("--port", "0")
    try:
        info = json.loads(address_file.read_text())
        assert info["bootstrap_servers"] == servers and info["broker"].startswith("Apache Kafka 4.")
        assert Path(info["ssl_ca_location"]).is_file()
        topics = AdminClient({"bootstrap.servers": servers}).list_topics(timeout=10).topics
        assert len(topics[contract.raw_topic].partitions) == contract.topics.partitions
        assert len(topics[contract.dead_letter_topic].partitions) == 1
        assert len(topics[contract.predictions_topic].partitions) == contract.topics.partitions
        producer = Producer({"bootstrap.servers": servers, "acks": "all"})
        for i in range(10):
            producer.produce(contract.raw_topic, key=b"m", value=f"{i}".encode())
        assert producer.flush(30) == 0
    finally:
        stop(proc)

    proc, again = start()  # no --port: the ports of the last start, and the data is still there
    try:
        assert again == servers
        assert sum(_high_watermarks(servers, contract.raw_topic)) == 10
    finally:
        stop(proc)

    proc, servers = start("--reset", "--port", "0")  # the ports went with the data
    try:
        assert sum(_high_watermarks(servers, contract.raw_topic)) == 0
    finally:
        stop(proc)


# -- SASL_SSL and ACLs ---------------------------------------------------------------------------

@pytest.fixture
def secured(tmp_path, kafka_broker, monkeypatch):
    """A stream's topics and ACLs on the session's Kafka, and settings for a principal on its
    SASL_SSL listener: ``as_principal(name, password=...)``."""
    if kafka_broker.local is None:
        pytest.skip("needs the session's local Kafka (its SASL_SSL listener): KAFKA_BOOTSTRAP_SERVERS is set")
    kafka = kafka_broker.local
    contracts_dir = isolated_contract(tmp_path, kafka_broker)
    contract = load_contracts(contracts_dir)["machine_telemetry"]
    admin = load_settings(kafka={"bootstrap_servers": kafka.bootstrap_servers})
    ensure_topics(admin, {contract.predictions_topic: 1})
    grant_stream_acls(admin, [contract])
    creds = kafka.credentials()

    def as_principal(name: str | None, password: str | None = None):
        kafka_settings = {"bootstrap_servers": kafka.sasl_ssl_bootstrap_servers, "security_protocol": "SASL_SSL",
                          "sasl_mechanism": "SCRAM-SHA-512", "ssl_ca_location": str(kafka.ca_file),
                          "connect_timeout_s": 5}
        if name is not None:
            kafka_settings.update(sasl_username=name, sasl_password=password or creds[name])
        return load_settings(kafka=kafka_settings, contracts_dir=str(contracts_dir))

    return contract, as_principal, kafka


def _produce_as(settings, topic: str, n: int) -> list[str]:
    """Produce ``n`` records; the errors of their delivery reports."""
    from streamsight.kafka import confluent_config

    errors: list[str] = []
    producer = Producer({**confluent_config(settings), "acks": "all", "message.timeout.ms": 10_000})
    for i in range(n):
        producer.produce(topic, value=f"{i}".encode(), on_delivery=lambda err, _m: errors.append(err.name()) if err else None)
    producer.flush(20)
    return errors


def test_sasl_ssl_principals_get_only_what_their_acls_allow(secured, kafka_broker):
    contract, as_principal, kafka = secured
    producer = as_principal(PRODUCER_PRINCIPAL)
    assert check_broker(producer) == kafka.sasl_ssl_bootstrap_servers  # TLS with the generated CA, SCRAM login
    assert _produce_as(producer, contract.raw_topic, 5) == []
    # a producer may write raw topics only
    assert set(_produce_as(producer, contract.dead_letter_topic, 2)) == {"TOPIC_AUTHORIZATION_FAILED"}
    # the pipeline writes dead letters, and may not write raw topics
    pipeline = as_principal(PIPELINE_PRINCIPAL)
    assert _produce_as(pipeline, contract.dead_letter_topic, 3) == []
    assert set(_produce_as(pipeline, contract.raw_topic, 2)) == {"TOPIC_AUTHORIZATION_FAILED"}
    assert sum(_high_watermarks(kafka.bootstrap_servers, contract.raw_topic)) == 5
    assert sum(_high_watermarks(kafka.bootstrap_servers, contract.dead_letter_topic)) == 3


def test_wrong_or_missing_credentials_are_refused_at_once(secured):
    _, as_principal, _ = secured
    with pytest.raises(BrokerUnavailableError, match="refused the login of streamsight-producer"):
        check_broker(as_principal(PRODUCER_PRINCIPAL, password="not-the-password"))
    with pytest.raises(ConfigError, match="STREAMSIGHT_KAFKA__SASL_USERNAME"):
        check_broker(as_principal(None))


def test_a_refused_producer_stops_with_a_clear_error_and_writes_nothing(secured, tmp_path, kafka_broker):
    """`streamsight produce` as a principal without WRITE on the raw topic, and without credentials."""
    contract, as_principal, kafka = secured
    creds = kafka.credentials()
    contracts_dir = as_principal(PRODUCER_PRINCIPAL).contracts_dir
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STREAMSIGHT_CONTRACTS_DIR": str(contracts_dir),
           "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS": kafka.sasl_ssl_bootstrap_servers,
           "STREAMSIGHT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "STREAMSIGHT_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
           "STREAMSIGHT_KAFKA__SSL_CA_LOCATION": str(kafka.ca_file), "STREAMSIGHT_KAFKA__CONNECT_TIMEOUT_S": "5"}
    args = [sys.executable, "-m", "streamsight_cli", "produce", "--stream", "machine_telemetry", "--source", "ai4i",
            "--count", "200", "--no-progress"]
    as_pipeline = {**env, "STREAMSIGHT_KAFKA__SASL_USERNAME": PIPELINE_PRINCIPAL,
                   "STREAMSIGHT_KAFKA__SASL_PASSWORD": creds[PIPELINE_PRINCIPAL]}
    refused = subprocess.run(args, env=as_pipeline, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert "TOPIC_AUTHORIZATION_FAILED" in refused.stderr and PIPELINE_PRINCIPAL in refused.stderr
    anonymous = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert anonymous.returncode == 2 and "STREAMSIGHT_KAFKA__SASL_USERNAME" in anonymous.stderr, anonymous.stderr
    assert sum(_high_watermarks(kafka.bootstrap_servers, contract.raw_topic)) == 0


def test_end_to_end_over_sasl_ssl_into_the_encrypted_lake_on_hdfs(secured, spark, hdfs, tmp_path):
    """producer -> Kafka (SASL_SSL: SCRAM, TLS) -> Spark -> the lake on HDFS (encryption zone, ACLs),
    each principal with only its own ACLs, as the commands run: the counts reconcile; an analyst
    reads silver but not bronze; another user reads and writes nothing, told so in one line; no
    password appears in any command's output."""
    contract, as_principal, kafka = secured
    creds = kafka.credentials()
    contracts_dir = as_principal(PRODUCER_PRINCIPAL).contracts_dir
    base = {**os.environ, "PYTHONPATH": str(ROOT), "STREAMSIGHT_CONTRACTS_DIR": str(contracts_dir),
            "STREAMSIGHT_LAKE_DIR": hdfs.lake_uri, "STREAMSIGHT_REPORTS_DIR": str(tmp_path / "reports"),
            "STREAMSIGHT_RUN_DIR": str(tmp_path / "run"), "STREAMSIGHT_LOG_LEVEL": "DEBUG",
            "STREAMSIGHT_CATALOG__METASTORE_DIR": str(tmp_path / "metastore"),
            "STREAMSIGHT_SPARK__MASTER": "local[2]", "STREAMSIGHT_SPARK__SHUFFLE_PARTITIONS": "2",
            "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS": kafka.sasl_ssl_bootstrap_servers,
            "STREAMSIGHT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "STREAMSIGHT_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMSIGHT_KAFKA__SSL_CA_LOCATION": str(kafka.ca_file)}

    def run(principal: str, *args: str, user: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**base, "STREAMSIGHT_KAFKA__SASL_USERNAME": principal, "STREAMSIGHT_KAFKA__SASL_PASSWORD": creds[principal]}
        if user is not None:
            env["HADOOP_USER_NAME"] = user
        done = subprocess.run([sys.executable, "-m", "streamsight_cli", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        outputs.append(done.stdout + done.stderr)
        assert not check or done.returncode == 0, done.stderr[-3000:]
        return done

    outputs: list[str] = []
    good = json.loads(run(PRODUCER_PRINCIPAL, "produce", "--stream", "machine_telemetry", "--source", "ai4i",
                          "--count", "300", "--no-progress").stdout)["produce"]
    poison = json.loads(run(PRODUCER_PRINCIPAL, "produce", "--stream", "machine_telemetry", "--source", "synthetic",
                            "--count", "20", "--faults", "malformed=0.5", "--machines", "5", "--seed", "3",
                            "--skip-validation", "--no-progress").stdout)["produce"]
    assert good["delivered"] == 300 and poison["delivered"] == 20
    streamed = json.loads(run(PIPELINE_PRINCIPAL, "stream", "--stream", "machine_telemetry", "--until-idle").stdout)
    assert streamed["input_rows"]["silver"] == 320
    malformed = poison["faults"]["malformed"]
    job_settings = load_settings(lake_dir=hdfs.lake_uri, contracts_dir=str(contracts_dir))
    from streaming_jobs.pipeline import StreamJob

    job = StreamJob(spark, job_settings, contract)
    silver, dead = read_table(spark, job.uri("silver")).count(), read_table(spark, job.uri("dead_letter")).count()
    assert silver == 320 - malformed and dead == malformed > 0
    assert len(read_topic(kafka.bootstrap_servers, contract.dead_letter_topic)) == dead

    # The analysts' group reads silver, predictions and gold only.
    readable = ("SELECT (SELECT count(*) FROM machine_telemetry_silver) AS silver, "
                "(SELECT count(*) FROM machine_telemetry_predictions) AS predictions, "
                "(SELECT count(*) FROM machine_telemetry_gold_by_type_1h) AS gold")
    analyst = run(PIPELINE_PRINCIPAL, "sql", "--json", readable, user="analyst")
    gold = read_table(spark, job.uri("gold_by_type_1h")).count()
    assert json.loads(analyst.stdout) == {"silver": silver, "predictions": read_table(spark, job.uri("predictions")).count(),
                                          "gold": gold}
    refused = run(PIPELINE_PRINCIPAL, "sql", "SELECT count(*) FROM machine_telemetry_bronze", user="analyst", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert 'machine_telemetry_bronze: access denied: Permission denied: user=analyst' in refused.stderr
    # Anyone else reads nothing (the NameNode refuses the lake's folders) and writes nothing, told in one line.
    from streamsight_cli.local_hdfs import LAKE_PATH, HdfsError

    with pytest.raises(HdfsError, match=r"403 .*Permission denied: user=mallory"):
        hdfs.webhdfs("GET", f"{LAKE_PATH}/silver", "LISTSTATUS", user="mallory")
    run(PRODUCER_PRINCIPAL, "produce", "--stream", "machine_telemetry", "--source", "ai4i", "--skip", "300",
        "--count", "50", "--no-progress")  # new events mallory's job would write
    writer = run(PIPELINE_PRINCIPAL, "stream", "--stream", "machine_telemetry", "--until-idle", user="mallory", check=False)
    assert writer.returncode == 3, writer.stderr[-3000:]
    assert "the lake refused access: Permission denied: user=mallory" in writer.stderr
    assert "Traceback" not in writer.stderr
    assert read_table(spark, job.uri("silver")).count() == silver  # and it wrote nothing

    secrets = [creds[PRODUCER_PRINCIPAL], creds[PIPELINE_PRINCIPAL]]
    leaked = [i for i, text in enumerate(outputs) if any(secret in text for secret in secrets)]
    assert not leaked, f"a password in the output of command #{leaked[0]}"
