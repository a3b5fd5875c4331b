"""Kafka for every client the project uses, derived from one :class:`KafkaSettings`.

* :func:`confluent_config`: librdkafka keys for confluent-kafka (producers, admin).
* :func:`kafka_python_config`: keyword arguments for kafka-python.
* :func:`spark_options`: ``kafka.*`` options for Spark's ``kafka`` source and sink.
* :func:`check_broker`: fail fast, with a message, when the brokers do not answer or refuse the login.
* :func:`ensure_topics` and :func:`grant_stream_acls`: a stream's topics and ACLs, through the
  Admin API of any Kafka (``streamsight topics``, ``streamsight broker``).

Bootstrap servers come from ``kafka.bootstrap_servers`` or, when that is empty, from the address
file ``streamsight broker`` writes (``<run_dir>/broker.json``): its plaintext listener, or its
SASL_SSL listener (and CA) when ``kafka.security_protocol`` is ``SASL_SSL``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from streamsight.contracts import Contract
from streamsight.errors import BrokerUnavailableError, ConfigError
from streamsight.settings import Settings

log = logging.getLogger(__name__)

PIPELINE_PRINCIPAL = "streamsight-pipeline"
PRODUCER_PRINCIPAL = "streamsight-producer"
# Spark's Kafka source names its consumer groups with this prefix.
SPARK_GROUP_PREFIX = "spark-kafka-source-"


def local_broker(settings: Settings) -> dict[str, Any] | None:
    """What ``streamsight broker`` wrote about the broker it runs, or None."""
    path = settings.broker_address_file
    if not path.exists():
        return None
    try:
        info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info


def bootstrap_servers(settings: Settings) -> str:
    """The configured bootstrap servers, or those of the running ``streamsight broker``."""
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers
    info = local_broker(settings)
    if info:
        key = "sasl_ssl_bootstrap_servers" if settings.kafka.security_protocol == "SASL_SSL" else "bootstrap_servers"
        if info.get(key):
            return str(info[key])
    raise ConfigError(
        "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS (kafka.bootstrap_servers) is empty and no `streamsight broker` "
        f"is running (no {settings.broker_address_file}). Start one with `streamsight broker` or set the variable."
    )


def _ca(settings: Settings) -> str | None:
    if settings.kafka.ssl_ca_location:
        return settings.kafka.ssl_ca_location
    info = local_broker(settings) if not settings.kafka.bootstrap_servers else None
    return str(info["ssl_ca_location"]) if info and info.get("ssl_ca_location") else None


def _secured(settings: Settings) -> tuple[str, str | None, str | None, str | None, str | None]:
    k = settings.kafka
    password = k.sasl_password.get_secret_value() if k.sasl_password is not None else None
    if k.security_protocol.startswith("SASL") and (not k.sasl_username or password is None):
        raise ConfigError(f"STREAMSIGHT_KAFKA__SECURITY_PROTOCOL (kafka.security_protocol) is {k.security_protocol}: "
                          "it needs STREAMSIGHT_KAFKA__SASL_USERNAME and STREAMSIGHT_KAFKA__SASL_PASSWORD")
    uses_tls = k.security_protocol in ("SSL", "SASL_SSL")
    return k.security_protocol, k.sasl_mechanism, k.sasl_username, password, _ca(settings) if uses_tls else None


def confluent_config(settings: Settings, servers: str | None = None) -> dict[str, Any]:
    """Base librdkafka configuration (no producer/consumer specifics)."""
    protocol, mechanism, user, password, ca = _secured(settings)
    conf: dict[str, Any] = {"bootstrap.servers": servers or bootstrap_servers(settings), "security.protocol": protocol}
    if protocol.startswith("SASL"):
        conf["sasl.mechanism"] = mechanism or "SCRAM-SHA-512"
        if user is not None:
            conf["sasl.username"] = user
        if password is not None:
            conf["sasl.password"] = password
    if ca:
        conf["ssl.ca.location"] = ca
    return conf


def kafka_python_config(settings: Settings, servers: str | None = None) -> dict[str, Any]:
    protocol, mechanism, user, password, ca = _secured(settings)
    conf: dict[str, Any] = {"bootstrap_servers": (servers or bootstrap_servers(settings)).split(","),
                            "security_protocol": protocol}
    if protocol.startswith("SASL"):
        conf.update(sasl_mechanism=mechanism or "SCRAM-SHA-512", sasl_plain_username=user,
                    sasl_plain_password=password)
    if ca:
        conf["ssl_cafile"] = ca
    return conf


def _jaas_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def spark_options(settings: Settings, servers: str | None = None) -> dict[str, str]:
    """``kafka.*`` options for Spark's Kafka source and sink (the Java client's settings)."""
    protocol, mechanism, user, password, ca = _secured(settings)
    opts = {"kafka.bootstrap.servers": servers or bootstrap_servers(settings), "kafka.security.protocol": protocol}
    if protocol.startswith("SASL"):
        mechanism = mechanism or "SCRAM-SHA-512"
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if mechanism == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")
        opts["kafka.sasl.mechanism"] = mechanism
        opts["kafka.sasl.jaas.config"] = (f"{module} required username={_jaas_quote(user or '')} "
                                          f"password={_jaas_quote(password or '')};")
    if ca:
        opts["kafka.ssl.truststore.type"] = "PEM"
        opts["kafka.ssl.truststore.location"] = ca
    return opts


def check_broker(settings: Settings, servers: str | None = None) -> str:
    """Fail fast (``kafka.connect_timeout_s``) with a clear message if the brokers do not answer or
    refuse the login. Returns the bootstrap servers that answered."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    servers = servers or bootstrap_servers(settings)
    timeout = settings.kafka.connect_timeout_s
    errors: list[str] = []

    def on_error(err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:
            errors.append(err.str())

    conf: dict[str, Any] = {**confluent_config(settings, servers), "socket.connection.setup.timeout.ms": int(timeout * 1000),
                            "error_cb": on_error, "log_level": 2}
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout
    while True:  # short metadata requests, so a refused login is reported as soon as it happens
        try:
            admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            break
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb
            if errors:
                raise BrokerUnavailableError(
                    f"Kafka at {servers} refused the login of {settings.kafka.sasl_username or 'no user'} "
                    f"({settings.kafka.security_protocol}; STREAMSIGHT_KAFKA__SASL_USERNAME / "
                    f"STREAMSIGHT_KAFKA__SASL_PASSWORD): {errors[0]}") from None
            if time.monotonic() >= deadline:
                raise BrokerUnavailableError(
                    f"Kafka bootstrap servers {servers} did not answer within {timeout:g}s "
                    f"(STREAMSIGHT_KAFKA__CONNECT_TIMEOUT_S): {exc}") from None
    return servers


# -- topics and ACLs ------------------------------------------------------------------------------

def stream_topics(contract: Contract) -> dict[str, int]:
    """A stream's topics and their partition counts: raw and predictions as the contract says,
    dead letter one partition (its order is of no use, and it is small)."""
    return {contract.raw_topic: contract.topics.partitions, contract.dead_letter_topic: 1,
            contract.predictions_topic: contract.topics.partitions}


def _admin(settings: Settings, servers: str | None) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(confluent_config(settings, servers))


def ensure_topics(settings: Settings, topics: dict[str, int], servers: str | None = None,
                  replication_factor: int = -1) -> list[str]:
    """Create the topics that do not exist yet (``-1``: the broker's default replication); the
    names created. A topic that exists with other partitions is left as it is, with a warning."""
    from confluent_kafka.admin import NewTopic

    admin = _admin(settings, servers)
    timeout = settings.kafka.connect_timeout_s
    existing = admin.list_topics(timeout=timeout).topics
    for name, parts in topics.items():
        if name in existing and len(existing[name].partitions) != parts:
            log.warning("topic %s has %d partitions, its contract says %d: left as it is", name,
                        len(existing[name].partitions), parts)
    wanted = [NewTopic(n, num_partitions=p, replication_factor=replication_factor)
              for n, p in topics.items() if n not in existing]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout * 3)
            created.append(name)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerUnavailableError(f"cannot create topic {name}: {exc}") from None
    return created


def set_up_streams(settings: Settings, contracts: Iterable[Contract], *, acls: bool = True,
                   servers: str | None = None) -> dict[str, Any]:
    """Every contract's topics (:func:`stream_topics`) and, with ``acls``, the principals' ACLs:
    ``{"topics": [...], "created": [...], "acl_bindings": n}``."""
    contracts = list(contracts)
    topics: dict[str, int] = {}
    for c in contracts:
        topics.update(stream_topics(c))
    created = ensure_topics(settings, topics, servers)
    granted = grant_stream_acls(settings, contracts, servers) if acls else 0
    return {"topics": sorted(topics), "created": sorted(created), "acl_bindings": granted}


def stream_acls(contracts: Iterable[Contract], pipeline: str = PIPELINE_PRINCIPAL,
                producer: str = PRODUCER_PRINCIPAL) -> list[Any]:
    """The ACLs of the streams' principals (literal topic names; Spark's consumer groups by prefix):

    * ``producer``: write (and describe) each raw topic; nothing else;
    * ``pipeline``: read (and describe) each raw topic, write (and describe) each dead-letter and
      predictions topic, read its consumer groups.
    """
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    def allow(principal: str, kind: Any, name: str, op: Any, pattern: Any = ResourcePatternType.LITERAL) -> Any:
        return AclBinding(kind, name, pattern, f"User:{principal}", "*", op, AclPermissionType.ALLOW)

    T, G = ResourceType.TOPIC, ResourceType.GROUP
    acls = [allow(pipeline, G, SPARK_GROUP_PREFIX, AclOperation.READ, ResourcePatternType.PREFIXED)]
    for c in contracts:
        for op in (AclOperation.WRITE, AclOperation.DESCRIBE):
            acls.append(allow(producer, T, c.raw_topic, op))
        for op in (AclOperation.READ, AclOperation.DESCRIBE):
            acls.append(allow(pipeline, T, c.raw_topic, op))
        for topic in (c.dead_letter_topic, c.predictions_topic):
            for op in (AclOperation.WRITE, AclOperation.DESCRIBE):
                acls.append(allow(pipeline, T, topic, op))
        if c.model is not None and c.model.scoring == "online":  # the stream job fills the lake from it
            acls.append(allow(pipeline, T, c.predictions_topic, AclOperation.READ))
    return acls


def grant_stream_acls(settings: Settings, contracts: Iterable[Contract], servers: str | None = None, **principals: str) -> int:
    """Create :func:`stream_acls` (creating one that exists is a no-op); how many bindings."""
    acls = stream_acls(contracts, **principals)
    if not acls:
        return 0
    timeout = settings.kafka.connect_timeout_s
    admin = _admin(settings, servers)  # kept until every future has its answer
    for binding, future in admin.create_acls(acls, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout * 3)
        except Exception as exc:
            raise BrokerUnavailableError(f"cannot create ACL {binding}: {exc} (is an authorizer configured, "
                                         "and are these credentials a super user's?)") from None
    return len(acls)
