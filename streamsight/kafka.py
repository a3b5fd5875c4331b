"""Kafka client settings for every client the project uses, derived from one :class:`KafkaSettings`.

* :func:`confluent_config`: librdkafka keys for confluent-kafka (``sasl_mechanism`` -> ``sasl.mechanism``).
* :func:`kafka_python_config`: keyword arguments for kafka-python.
* :func:`spark_options`: ``kafka.*`` options for Spark's kafka source and Streamsight's Python source.

The bootstrap servers come from ``kafka.bootstrap_servers`` or, when that is empty, from the address
file the embedded development broker writes (``streamsight broker``).
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

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


# Security settings: KafkaSettings field -> (librdkafka key, kafka-python keyword).
_SECURITY_KEYS = {
    "security_protocol": ("security.protocol", "security_protocol"),
    "sasl_mechanism": ("sasl.mechanism", "sasl_mechanism"),
    "sasl_username": ("sasl.username", "sasl_plain_username"),
    "sasl_password": ("sasl.password", "sasl_plain_password"),
    "ssl_ca_location": ("ssl.ca.location", "ssl_cafile"),
}


def _security(settings: Settings, client: int = 0) -> dict[str, str]:
    """Set security settings under librdkafka keys (client 0) or kafka-python keywords (client 1)."""
    conf = {}
    for field, names in _SECURITY_KEYS.items():
        value = getattr(settings.kafka, field)
        if value is not None:
            conf[names[client]] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return conf


def confluent_config(settings: Settings, servers: str | None = None) -> dict[str, Any]:
    """Base librdkafka configuration (no producer/consumer specifics)."""
    return {"bootstrap.servers": servers or bootstrap_servers(settings), **_security(settings)}


def kafka_python_config(settings: Settings, servers: str | None = None) -> dict[str, Any]:
    return {"bootstrap_servers": (servers or bootstrap_servers(settings)).split(","), **_security(settings, 1)}


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
