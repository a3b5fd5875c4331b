"""Kafka client settings for every client the project uses, derived from one :class:`KafkaSettings`.

* :func:`confluent_config`: librdkafka keys for confluent-kafka (``sasl_mechanism`` -> ``sasl.mechanism``).
* :func:`kafka_python_config`: keyword arguments for kafka-python.
* :func:`spark_options`: ``kafka.*`` options for Spark's kafka source and Streamsight's Python source.

The bootstrap servers come from ``kafka.bootstrap_servers`` or, when that is empty, from the address
file the embedded development broker writes (``streamsight broker``).
"""

from __future__ import annotations

from typing import Any

from streamsight.errors import BrokerUnavailableError, ConfigError
from streamsight.settings import Settings


def bootstrap_servers(settings: Settings) -> str:
    """The configured bootstrap servers, or the running embedded broker's address."""
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers
    path = settings.broker_address_file
    if path.exists():
        address = path.read_text(encoding="utf-8").strip()
        if address:
            return address
    raise ConfigError(
        "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS (kafka.bootstrap_servers) is empty and no embedded broker "
        f"is running (no address in {path}). Start one with `streamsight broker` or set the variable."
    )


def _security(settings: Settings) -> dict[str, str]:
    k = settings.kafka
    conf = {"security.protocol": k.security_protocol}
    if k.sasl_mechanism:
        conf["sasl.mechanism"] = k.sasl_mechanism
    if k.sasl_username:
        conf["sasl.username"] = k.sasl_username
    if k.sasl_password is not None:
        conf["sasl.password"] = k.sasl_password.get_secret_value()
    if k.ssl_ca_location:
        conf["ssl.ca.location"] = k.ssl_ca_location
    return conf


def confluent_config(settings: Settings, servers: str | None = None) -> dict[str, Any]:
    """Base librdkafka configuration (no producer/consumer specifics)."""
    return {"bootstrap.servers": servers or bootstrap_servers(settings), **_security(settings)}


def kafka_python_config(settings: Settings, servers: str | None = None) -> dict[str, Any]:
    k = settings.kafka
    conf: dict[str, Any] = {
        "bootstrap_servers": (servers or bootstrap_servers(settings)).split(","),
        "security_protocol": k.security_protocol,
    }
    if k.sasl_mechanism:
        conf["sasl_mechanism"] = k.sasl_mechanism
    if k.sasl_username:
        conf["sasl_plain_username"] = k.sasl_username
    if k.sasl_password is not None:
        conf["sasl_plain_password"] = k.sasl_password.get_secret_value()
    if k.ssl_ca_location:
        conf["ssl_cafile"] = k.ssl_ca_location
    return conf


def spark_options(settings: Settings, servers: str | None = None) -> dict[str, str]:
    """``kafka.*`` options for a Spark Kafka source (Spark's own or Streamsight's Python one)."""
    opts = {"kafka.bootstrap.servers": servers or bootstrap_servers(settings)}
    for key, value in _security(settings).items():
        opts[f"kafka.{key}"] = value
    return opts


def check_broker(settings: Settings, servers: str | None = None) -> str:
    """Fail fast (``kafka.connect_timeout_s``) with a clear message if the broker does not answer.

    Returns the bootstrap servers that answered.
    """
    from confluent_kafka.admin import AdminClient

    servers = servers or bootstrap_servers(settings)
    timeout = settings.kafka.connect_timeout_s
    admin = AdminClient({**confluent_config(settings, servers), "socket.connection.setup.timeout.ms": int(timeout * 1000)})
    try:
        admin.list_topics(timeout=timeout)
    except Exception as exc:  # KafkaException: transport failure, timeout
        raise BrokerUnavailableError(
            f"Kafka bootstrap servers {servers} did not answer within {timeout:g}s "
            f"(STREAMSIGHT_KAFKA__CONNECT_TIMEOUT_S): {exc}"
        ) from None
    return servers
