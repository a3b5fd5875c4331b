"""Kafka client settings: one KafkaSettings, mapped onto each client's names; secrets only there."""

from __future__ import annotations

from streamsight.kafka import confluent_config, kafka_python_config, spark_options
from streamsight.settings import load_settings


def _secured(monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_PROFILE", "aws")
    monkeypatch.setenv("STREAMSIGHT_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("STREAMSIGHT_KAFKA__SASL_PASSWORD", "s3cret")
    return load_settings()


def test_each_client_gets_the_same_security_under_its_own_names(monkeypatch):
    settings = _secured(monkeypatch)
    rd = confluent_config(settings)
    assert rd["security.protocol"] == "SASL_SSL" and rd["sasl.mechanism"] == "SCRAM-SHA-512"
    assert rd["sasl.username"] == "svc" and rd["sasl.password"] == "s3cret"
    assert rd["ssl.ca.location"] == "/etc/streamsight/kafka-ca.pem"
    kp = kafka_python_config(settings)
    assert kp["bootstrap_servers"] == settings.kafka.bootstrap_servers.split(",")
    assert (kp["sasl_plain_username"], kp["sasl_plain_password"], kp["ssl_cafile"]) == (
        "svc", "s3cret", "/etc/streamsight/kafka-ca.pem")
    spark = spark_options(settings)
    assert spark["kafka.security.protocol"] == "SASL_SSL" and spark["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert spark["kafka.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="svc" password="s3cret";')
    assert (spark["kafka.ssl.truststore.type"], spark["kafka.ssl.truststore.location"]) == (
        "PEM", "/etc/streamsight/kafka-ca.pem")


def test_jaas_quotes_what_a_password_may_hold(monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_PROFILE", "aws")
    monkeypatch.setenv("STREAMSIGHT_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("STREAMSIGHT_KAFKA__SASL_PASSWORD", 'a"b\\c;')
    jaas = spark_options(load_settings())["kafka.sasl.jaas.config"]
    assert jaas.endswith(' password="a\\"b\\\\c;";'), jaas


def test_plaintext_sends_no_sasl_keys(monkeypatch):
    monkeypatch.setenv("STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    conf = confluent_config(load_settings())
    assert conf == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}


def test_secrets_are_redacted_in_settings_output(monkeypatch):
    settings = _secured(monkeypatch)
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.redacted())


def test_producer_linger_is_a_setting_checked_at_start(monkeypatch):
    import pytest

    from ingestion.producer import ConfluentPublisher
    from streamsight.errors import ConfigError

    assert ConfluentPublisher.config(load_settings(), "127.0.0.1:9092")["linger.ms"] == 100  # the default
    monkeypatch.setenv("STREAMSIGHT_KAFKA__LINGER_MS", "150")
    conf = ConfluentPublisher.config(load_settings(), "127.0.0.1:9092")
    assert conf["linger.ms"] == 150 and conf["bootstrap.servers"] == "127.0.0.1:9092"
    monkeypatch.setenv("STREAMSIGHT_KAFKA__LINGER_MS", "-1")
    with pytest.raises(ConfigError, match="STREAMSIGHT_KAFKA__LINGER_MS"):
        load_settings()


def test_api_settings_are_checked_at_start(monkeypatch, tmp_path):
    import pytest

    from streamsight.errors import ConfigError

    monkeypatch.setenv("STREAMSIGHT_API__RATE_LIMIT", "fast")
    with pytest.raises(ConfigError, match=r"STREAMSIGHT_API__RATE_LIMIT \(api.rate_limit\): .*'fast' is not a rate limit"):
        load_settings()
    monkeypatch.setenv("STREAMSIGHT_API__RATE_LIMIT", "50/second")
    monkeypatch.setenv("STREAMSIGHT_RUN_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.api.rate_limit == "50/second"
    assert settings.api_keys_file == tmp_path / "api-keys.yaml"


def test_a_new_kraft_cluster_id_never_starts_with_a_dash(monkeypatch):
    """Kafka's storage tool reads an id starting with '-' as an option: such ids are drawn again."""
    import uuid

    from streamsight_cli import local_kafka

    drawn = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x10" * 16)])  # "-A...", "EB..."
    monkeypatch.setattr(local_kafka.uuid, "uuid4", lambda: next(drawn))
    assert local_kafka.new_cluster_id() == "EBAQEBAQEBAQEBAQEBAQEA"


def test_the_online_checkpoint_interval_is_checked_at_start(monkeypatch):
    import pytest

    from streamsight.errors import ConfigError

    assert load_settings().online.checkpoint_interval == "1 minute"
    monkeypatch.setenv("STREAMSIGHT_ONLINE__CHECKPOINT_INTERVAL", "30 seconds")
    assert load_settings().online.checkpoint_interval == "30 seconds"
    for bad, says in (("4 seconds", "minimum, 5 seconds"), ("soon", "not a duration"), ("1 month", "not a duration")):
        monkeypatch.setenv("STREAMSIGHT_ONLINE__CHECKPOINT_INTERVAL", bad)
        with pytest.raises(ConfigError, match=f"STREAMSIGHT_ONLINE__CHECKPOINT_INTERVAL.*{says}"):
            load_settings()


def test_the_dashboard_settings_are_checked_at_start(monkeypatch, tmp_path):
    import pytest

    from streamsight.errors import ConfigError

    monkeypatch.setenv("STREAMSIGHT_REPORTS_DIR", str(tmp_path))
    assert load_settings().dashboard_file == tmp_path / "dashboard" / "index.html"
    for name, bad, says in (("WINDOW", "lately", "not an interval"), ("REFRESH_S", "1", "greater than or equal to 5")):
        monkeypatch.setenv(f"STREAMSIGHT_DASHBOARD__{name}", bad)
        with pytest.raises(ConfigError, match=f"STREAMSIGHT_DASHBOARD__{name}.*{says}"):
            load_settings()
        monkeypatch.delenv(f"STREAMSIGHT_DASHBOARD__{name}")


def test_the_pipeline_reads_the_predictions_topic_only_of_streams_scored_online():
    from confluent_kafka.admin import AclOperation

    from streamsight.contracts import load_contract
    from streamsight.kafka import PIPELINE_PRINCIPAL, stream_acls
    from streamsight.settings import PROJECT_ROOT

    batch = load_contract(PROJECT_ROOT / "conf" / "contracts" / "machine_telemetry.yaml")
    assert batch.model is not None
    online = batch.model_copy(update={"model": batch.model.model_copy(update={"scoring": "online"})})

    def reads(contract):
        return {a.name for a in stream_acls([contract]) if a.principal == f"User:{PIPELINE_PRINCIPAL}"
                and a.operation == AclOperation.READ}

    assert batch.raw_topic in reads(batch) and batch.predictions_topic not in reads(batch)
    assert reads(online) == reads(batch) | {batch.predictions_topic}
