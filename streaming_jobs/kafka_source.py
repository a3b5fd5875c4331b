"""Kafka source for Spark Structured Streaming, written with Spark's Python Data Source API.

Spark's own ``kafka`` source lives in the JVM connector ``spark-sql-kafka-0-10``, which is not
always installable (no Maven Central here).  :class:`KafkaDataSource` (format name
``"streamsight_kafka"``) is a drop-in replacement built on confluent-kafka (librdkafka): it has
**the same schema and the same option names** as Spark's source, and its offsets are JSON objects in
the same form Spark's source writes, so Spark keeps them in the query's checkpoint offset log and a
restarted query resumes where it stopped.  :func:`kafka_stream` picks Spark's source when its
connector is on the classpath and this one otherwise, with the same options.

Schema
------
Exactly Spark's Kafka source schema (without ``headers``)::

    key binary, value binary, topic string, partition int, offset long,
    timestamp timestamp, timestampType int

``timestampType`` uses Kafka's Java ids like Spark does: ``0`` CreateTime, ``1`` LogAppendTime,
``-1`` no timestamp.

Options
-------
Same names and meaning as Spark's Kafka source (names are case-insensitive).

kafka.bootstrap.servers : str, required
    Comma-separated ``host:port`` list.
subscribe / subscribePattern / assign : str, exactly one required
    Comma-separated topics; a regular expression that must match whole topic names (Python ``re``,
    like Java's ``matches()``; topics appearing later are picked up); or JSON ``{"topicA":[0,1]}``
    naming fixed topic-partitions.
startingOffsets : str, default ``"latest"`` (streaming) / ``"earliest"`` (batch)
    ``"earliest"``, ``"latest"`` or JSON ``{"topic":{"0":23,"1":-2}}`` (``-2`` earliest, ``-1``
    latest); the JSON must name every partition, as Spark requires.  Only used when a query starts
    without a checkpoint.
startingTimestamp / startingOffsetsByTimestamp : str, optional
    Epoch milliseconds for all partitions, or JSON ``{"topic":{"0":1700000000000}}``; take precedence
    over ``startingOffsets`` (as in Spark).  ``startingOffsetsByTimestampStrategy`` is ``"error"``
    (default: fail when no offset matches) or ``"latest"``.
endingOffsets : str, default ``"latest"`` (batch reads only; rejected by streaming queries)
    ``"latest"`` or JSON like ``startingOffsets`` (``-1`` latest).
maxOffsetsPerTrigger : int, optional
    Upper bound on the records of one micro-batch, split over topic-partitions proportionally to
    their backlog (as Spark does; here the total never exceeds the bound).  Honoured with
    ``trigger(availableNow=True)`` too (the source implements ``SupportsTriggerAvailableNow``).
minPartitions / maxRecordsPerPartition : int, optional
    Split large offset ranges so a micro-batch has at least ``minPartitions`` Spark partitions and
    none holds more than ``maxRecordsPerPartition`` records.
maxPartitions : int, optional (this source only; Spark's own source ignores it)
    Pack the micro-batch's offset ranges into at most this many Spark partitions (balanced by record
    count), each read by one task with one consumer fetching all its ranges concurrently.  A topic with many partitions then costs
    a few tasks per micro-batch instead of one task per topic-partition: on a small machine the fixed
    cost of a task, not reading, dominates small micro-batches.  Applied after the splitting above.
failOnDataLoss : bool, default ``true``
    When records that should be read are gone (retention, eviction, topic deleted, offsets going
    backwards): ``true`` fails the query with an error naming the topic-partition and offsets;
    ``false`` logs a warning and continues from the earliest offset still available.
kafkaConsumer.pollTimeoutMs : int, default = the API timeout below
    How long an executor waits without any progress before failing the task.
groupIdPrefix : str, default ``"streamsight-kafka-source"``
    Prefix of the throw-away consumer group id (``kafka.group.id`` overrides; nothing is ever
    committed to Kafka).
kafka.default.api.timeout.ms : int, default ``30000``
    Bound on every blocking metadata/offset request (driver and executors) -- an unreachable broker
    fails the query after this long, with a message naming the bootstrap servers.  Same option name
    as the Java client's (whose default is 60000); not passed to librdkafka.
kafka.<librdkafka property> : str
    Passed to the librdkafka consumer unchanged, e.g. ``kafka.security.protocol``,
    ``kafka.sasl.mechanism``, ``kafka.sasl.username``, ``kafka.sasl.password``,
    ``kafka.ssl.ca.location``, ``kafka.isolation.level`` (default ``read_uncommitted`` as in Java).
    Java-style credentials are translated: ``kafka.sasl.jaas.config`` (PLAIN/SCRAM login module)
    becomes ``sasl.username``/``sasl.password`` and a PEM ``kafka.ssl.truststore.location`` becomes
    ``ssl.ca.location``.  As in Spark, ``kafka.auto.offset.reset``, ``kafka.enable.auto.commit``,
    ``kafka.key.deserializer``, ``kafka.value.deserializer`` and ``kafka.interceptor.classes`` are
    rejected.  Other options (Spark's ``includeHeaders``, ``fetchOffset.*`` ...) are ignored except
    ``includeHeaders=true``, which is rejected.

Offsets
-------
``{"topic": {"0": 123, "1": 456}}``: for each topic-partition the next offset to read (partition
ids are strings, keys sorted), the format of Spark's ``KafkaSourceOffset``.  Partitions that appear
after the query started are read from offset 0 (their earliest).

Picklability
------------
Spark pickles the :class:`KafkaDataSource` (its ``options``), the stream/batch reader and every
:class:`KafkaInputPartition` and ships them to Python workers; they hold only plain data
(:class:`KafkaSourceConfig`, strings, ints).  confluent-kafka clients are never stored on them for
shipping: the driver-side client is created lazily in the long-lived planner worker (dropped when
pickled, closed by ``stop()``) and every ``read()`` builds its own consumer (``assign()`` at the start
offset, ``enable.auto.commit=false``, throw-away ``group.id``) and closes it when the range is read.
``read()`` yields ``pyarrow.RecordBatch`` chunks (about 20,000 rows), not rows.

Examples
--------
::

    from streaming_jobs.kafka_source import kafka_stream
    df = kafka_stream(spark, bootstrap_servers="localhost:9092", topics=["events"],
                      options={"startingOffsets": "earliest", "maxOffsetsPerTrigger": "100000"})

or directly::

    register(spark)
    df = (spark.readStream.format("streamsight_kafka")
          .option("kafka.bootstrap.servers", "localhost:9092")
          .option("subscribe", "events").load())

Functions
---------
register(spark)
    ``spark.dataSource.register(KafkaDataSource)``.
kafka_stream(spark, *, bootstrap_servers, topics, options=None, prefer_native=None)
    A streaming DataFrame over ``topics``: Spark's ``kafka`` format when
    ``org.apache.spark.sql.kafka010.KafkaSourceProvider`` is on the classpath (detected once per
    application) or ``prefer_native=True``; this module's ``streamsight_kafka`` format when it is not
    or ``prefer_native=False``.  Both get the same options; librdkafka-style credentials
    (``kafka.sasl.username``/``password``, ``kafka.ssl.ca.location``) are translated to the Java
    client's ``kafka.sasl.jaas.config`` / PEM truststore for Spark's source.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql.datasource import DataSource, DataSourceReader, DataSourceStreamReader, InputPartition
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

try:  # pyspark >= 4.2: admission control (ReadLimit) and Trigger.AvailableNow for Python sources
    from pyspark.sql.streaming.datasource import (
        ReadAllAvailable,
        ReadMaxRows,
        SupportsTriggerAvailableNow,
    )
except ImportError:  # pragma: no cover - older pyspark calls latestOffset() without arguments
    ReadAllAvailable = ReadMaxRows = None  # type: ignore[assignment,misc]

    class SupportsTriggerAvailableNow:  # type: ignore[no-redef]
        pass


__all__ = [
    "FORMAT",
    "KAFKA_SCHEMA",
    "KafkaDataSource",
    "KafkaStreamReader",
    "KafkaBatchReader",
    "KafkaInputPartition",
    "KafkaInputGroup",
    "KafkaSourceConfig",
    "KafkaSourceError",
    "KafkaDataLossError",
    "KafkaUnavailableError",
    "register",
    "kafka_stream",
    "native_kafka_available",
]

log = logging.getLogger(__name__)
# librdkafka's own log lines (connection failures are retried and repeated many times a second):
# silent unless the application configures logging; errors reach the user through error_cb instead.
_rdkafka_log = logging.getLogger(__name__ + ".librdkafka")
_rdkafka_log.addHandler(logging.NullHandler())

FORMAT = "streamsight_kafka"
NATIVE_PROVIDER = "org.apache.spark.sql.kafka010.KafkaSourceProvider"

KAFKA_SCHEMA = StructType(
    [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("timestamp", TimestampType()),
        StructField("timestampType", IntegerType()),
    ]
)
# What pyspark's worker checks returned batches against (to_arrow_schema(schema, timezone="UTC")).
_ARROW_SCHEMA = pa.schema(
    [
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("topic", pa.string()),
        pa.field("partition", pa.int32()),
        pa.field("offset", pa.int64()),
        pa.field("timestamp", pa.timestamp("us", tz="UTC")),
        pa.field("timestampType", pa.int32()),
    ]
)

ARROW_BATCH_ROWS = 20_000
_CONSUME_BATCH = 10_000
_DEFAULT_API_TIMEOUT_MS = 30_000
_EARLIEST, _LATEST = -2, -1

# Options Spark's Kafka source rejects (the source manages them itself).
_REJECTED = {
    "auto.offset.reset": "use the source option startingOffsets instead",
    "enable.auto.commit": "the source does not commit offsets to Kafka; they live in the checkpoint",
    "key.deserializer": "keys are always returned as binary; cast or parse them in the query",
    "value.deserializer": "values are always returned as binary; cast or parse them in the query",
    "interceptor.classes": "consumer interceptors are not supported",
}
# Java-client-only settings that librdkafka does not know; dropped (after translation).
_JAVA_ONLY = {
    "sasl.jaas.config",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.truststore.password",
    "ssl.keystore.type",
    "default.api.timeout.ms",
}

TopicPartitionKey = tuple[str, int]


class KafkaSourceError(RuntimeError):
    """Base class of the errors this source raises."""


class KafkaUnavailableError(KafkaSourceError):
    """The brokers did not answer within the configured timeout."""


class KafkaDataLossError(KafkaSourceError):
    """Records the query should read are no longer available (and ``failOnDataLoss=true``)."""


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------


def _parse_bool(name: str, value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise ValueError(f"option '{name}' must be true or false, got {value!r}")


def _parse_positive_int(name: str, value: Any) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ValueError(f"option '{name}' must be a positive integer, got {value!r}") from None
    if n <= 0:
        raise ValueError(f"option '{name}' must be a positive integer, got {value!r}")
    return n


def _parse_offsets_json(name: str, text: str) -> dict[TopicPartitionKey, int]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"option '{name}': invalid JSON {text!r} ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"option '{name}': expected a JSON object like {{\"topic\":{{\"0\":23}}}}, got {text!r}")
    out: dict[TopicPartitionKey, int] = {}
    for topic, parts in raw.items():
        if not isinstance(parts, dict):
            raise ValueError(f"option '{name}': topic {topic!r} must map partition ids to offsets, got {parts!r}")
        for pid, off in parts.items():
            try:
                out[(str(topic), int(pid))] = int(off)
            except (TypeError, ValueError):
                raise ValueError(
                    f"option '{name}': bad partition/offset {pid!r}: {off!r} for topic {topic!r}") from None
    return out


def _jaas_credentials(jaas: str) -> tuple[str | None, str | None]:
    def grab(key: str) -> str | None:
        m = re.search(key + r'\s*=\s*"((?:[^"\\]|\\.)*)"', jaas)
        return m.group(1).replace('\\"', '"').replace("\\\\", "\\") if m else None

    return grab("username"), grab("password")


def _librdkafka_conf(kafka_opts: Mapping[str, str]) -> dict[str, str]:
    """librdkafka properties from the ``kafka.*`` options (prefix already stripped)."""
    conf = {k: v for k, v in kafka_opts.items() if k not in _JAVA_ONLY}
    jaas = kafka_opts.get("sasl.jaas.config")
    if jaas:
        user, password = _jaas_credentials(jaas)
        if user is not None:
            conf.setdefault("sasl.username", user)
        if password is not None:
            conf.setdefault("sasl.password", password)
    trust = kafka_opts.get("ssl.truststore.location")
    if trust and kafka_opts.get("ssl.truststore.type", "").upper() == "PEM":
        conf.setdefault("ssl.ca.location", trust)
    elif trust:
        log.warning("kafka.ssl.truststore.location (%s) is a Java keystore setting librdkafka cannot use; "
                    "set kafka.ssl.ca.location to a PEM CA file instead", trust)
    return conf


@dataclass(frozen=True)
class KafkaSourceConfig:
    """Parsed, validated source options.  Plain data: pickled to Python workers with the readers."""

    bootstrap_servers: str
    client_conf: dict[str, str] = field(repr=False)  # may hold credentials
    subscribe: tuple[str, ...] = ()
    subscribe_pattern: str | None = None
    assign: tuple[TopicPartitionKey, ...] = ()
    starting: str | dict[TopicPartitionKey, int] = "latest"
    starting_by_timestamp: dict[TopicPartitionKey, int] | int | None = None
    timestamp_strategy: str = "error"
    ending: str | dict[TopicPartitionKey, int] = "latest"
    max_offsets_per_trigger: int | None = None
    min_partitions: int | None = None
    max_records_per_partition: int | None = None
    max_partitions: int | None = None
    fail_on_data_loss: bool = True
    api_timeout_ms: int = _DEFAULT_API_TIMEOUT_MS
    poll_timeout_ms: int = _DEFAULT_API_TIMEOUT_MS
    group_id: str = field(default_factory=lambda: f"streamsight-kafka-source-{uuid.uuid4().hex}")

    @classmethod
    def from_options(cls, options: Mapping[str, str], *, batch: bool = False) -> KafkaSourceConfig:
        opts = {str(k).lower(): str(v) for k, v in options.items()}
        kafka_opts = {k[len("kafka."):]: v for k, v in opts.items() if k.startswith("kafka.")}

        servers = kafka_opts.get("bootstrap.servers", "").strip()
        if not servers:
            raise ValueError(
                f"option 'kafka.bootstrap.servers' is required by the {FORMAT} source "
                "(comma-separated host:port list)"
            )
        for key, why in _REJECTED.items():
            if key in kafka_opts:
                raise ValueError(f"Kafka option 'kafka.{key}' is not supported: {why}")
        if _parse_bool("includeHeaders", opts.get("includeheaders", "false")):
            raise ValueError(f"option 'includeHeaders' is not supported by the {FORMAT} source")

        strategies = [k for k in ("subscribe", "subscribepattern", "assign") if opts.get(k, "").strip()]
        if len(strategies) != 1:
            given = ", ".join(strategies) or "none"
            raise ValueError(
                "exactly one of the options 'subscribe', 'subscribePattern' or 'assign' is required "
                f"(e.g. option 'subscribe' = comma-separated topics); given: {given}"
            )
        subscribe: tuple[str, ...] = ()
        pattern = None
        assign: tuple[TopicPartitionKey, ...] = ()
        if "subscribe" in strategies:
            subscribe = tuple(sorted({t.strip() for t in opts["subscribe"].split(",") if t.strip()}))
            if not subscribe:
                raise ValueError("option 'subscribe' names no topic")
        elif "subscribepattern" in strategies:
            pattern = opts["subscribepattern"].strip()
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"option 'subscribePattern': invalid regular expression {pattern!r}: {exc}") from None
        else:
            try:
                raw = json.loads(opts["assign"])
                assign = tuple(sorted((str(t), int(p)) for t, ps in raw.items() for p in ps))
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
                raise ValueError(
                    f"option 'assign' must be JSON like {{\"topicA\":[0,1]}}, got {opts['assign']!r}") from None
            if not assign:
                raise ValueError("option 'assign' names no topic-partition")

        def offsets_option(name: str, default: str, allowed: tuple[str, ...]) -> str | dict[TopicPartitionKey, int]:
            text = opts.get(name.lower(), default).strip()
            if text.lower() in allowed:
                return text.lower()
            if text.startswith("{"):
                return _parse_offsets_json(name, text)
            raise ValueError(f"option '{name}' must be one of {', '.join(allowed)} or a JSON object, got {text!r}")

        starting = offsets_option("startingOffsets", "earliest" if batch else "latest",
                                  ("earliest",) if batch else ("earliest", "latest"))
        ending = offsets_option("endingOffsets", "latest", ("latest",)) if batch else "latest"
        if batch and isinstance(ending, dict) and any(v == _EARLIEST for v in ending.values()):
            raise ValueError("option 'endingOffsets': -2 (earliest) is not allowed")
        if batch and isinstance(starting, dict) and any(v == _LATEST for v in starting.values()):
            raise ValueError("option 'startingOffsets': -1 (latest) is not allowed for batch queries")

        by_ts: dict[TopicPartitionKey, int] | int | None = None
        if opts.get("startingtimestamp", "").strip():
            by_ts = _parse_positive_int("startingTimestamp", opts["startingtimestamp"])
        elif opts.get("startingoffsetsbytimestamp", "").strip():
            by_ts = _parse_offsets_json("startingOffsetsByTimestamp", opts["startingoffsetsbytimestamp"])
        strategy = opts.get("startingoffsetsbytimestampstrategy", "error").strip().lower()
        if strategy not in ("error", "latest"):
            raise ValueError(
                f"option 'startingOffsetsByTimestampStrategy' must be 'error' or 'latest', got {strategy!r}")

        def opt_int(name: str) -> int | None:
            value = opts.get(name.lower(), "").strip()
            return _parse_positive_int(name, value) if value else None

        api_timeout = (_parse_positive_int("kafka.default.api.timeout.ms", kafka_opts["default.api.timeout.ms"])
                       if kafka_opts.get("default.api.timeout.ms") else _DEFAULT_API_TIMEOUT_MS)
        poll_timeout = opt_int("kafkaConsumer.pollTimeoutMs") or api_timeout

        client_conf = _librdkafka_conf(kafka_opts)
        group_id = client_conf.pop("group.id", None) or (
            f"{opts.get('groupidprefix', 'streamsight-kafka-source')}-{uuid.uuid4().hex}")

        return cls(
            bootstrap_servers=servers,
            client_conf=client_conf,
            subscribe=subscribe,
            subscribe_pattern=pattern,
            assign=assign,
            starting=starting,
            starting_by_timestamp=by_ts,
            timestamp_strategy=strategy,
            ending=ending,
            max_offsets_per_trigger=opt_int("maxOffsetsPerTrigger"),
            min_partitions=opt_int("minPartitions"),
            max_records_per_partition=opt_int("maxRecordsPerPartition"),
            max_partitions=opt_int("maxPartitions"),
            fail_on_data_loss=_parse_bool("failOnDataLoss", opts.get("failondataloss", "true")),
            api_timeout_ms=api_timeout,
            poll_timeout_ms=poll_timeout,
            group_id=group_id,
        )

    def consumer_conf(self, errors: list[Any]) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "client.id": "streamsight-kafka-source",
            "isolation.level": "read_uncommitted",  # what Spark's (Java) consumer defaults to
            "socket.connection.setup.timeout.ms": str(max(1_000, min(self.api_timeout_ms, 30_000))),
        }
        conf.update(self.client_conf)
        conf.update({
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",  # offset out of range -> error event, never a silent reset
            "enable.partition.eof": False,
            "logger": _rdkafka_log,
            "error_cb": errors.append,
        })
        return conf


# --------------------------------------------------------------------------------------------
# offsets helpers
# --------------------------------------------------------------------------------------------


def _to_json_offsets(offsets: Mapping[TopicPartitionKey, int]) -> dict[str, dict[str, int]]:
    """Canonical (sorted) JSON form: Spark compares offsets by their JSON text."""
    out: dict[str, dict[str, int]] = {}
    for topic, pid in sorted(offsets):
        out.setdefault(topic, {})[str(pid)] = int(offsets[(topic, pid)])
    return out


def _from_json_offsets(offsets: Mapping[str, Mapping[str, Any]] | None) -> dict[TopicPartitionKey, int]:
    if not offsets:
        return {}
    return {(topic, int(pid)): int(off) for topic, parts in offsets.items() for pid, off in parts.items()}


def _fmt_tp(tp: TopicPartitionKey) -> str:
    return f"{tp[0]}-{tp[1]}"


def _data_loss(cfg: KafkaSourceConfig, message: str) -> None:
    if cfg.fail_on_data_loss:
        raise KafkaDataLossError(
            f"Data loss: {message} Some data may have been lost because they are not available in Kafka "
            "any more: they were aged out / evicted by the broker, or the topic was deleted or recreated "
            "before all its data was processed. If you don't want the query to fail in such cases, set "
            "the source option failOnDataLoss=false: the unavailable records are then skipped with a warning."
        )
    log.warning("Data loss (failOnDataLoss=false, skipping): %s", message)


def _rate_limit(start: Mapping[TopicPartitionKey, int], latest: Mapping[TopicPartitionKey, int],
                max_rows: int) -> dict[TopicPartitionKey, int]:
    """Cap ``latest`` so that at most ``max_rows`` records lie between ``start`` and it, split over
    topic-partitions proportionally to their backlog (largest remainders get the spare rows)."""
    sizes = {tp: end - start.get(tp, 0) for tp, end in latest.items() if end - start.get(tp, 0) > 0}
    total = sum(sizes.values())
    if total <= max_rows:
        return dict(latest)
    alloc = {tp: max_rows * size // total for tp, size in sizes.items()}
    spare = max_rows - sum(alloc.values())
    for tp in sorted(sizes, key=lambda t: (-((max_rows * sizes[t]) % total), t))[:spare]:
        alloc[tp] += 1
    capped = dict(latest)
    for tp in sizes:
        capped[tp] = start.get(tp, 0) + alloc[tp]
    return capped


# --------------------------------------------------------------------------------------------
# driver side: metadata and offsets
# --------------------------------------------------------------------------------------------


class _OffsetFetcher:
    """Driver-side metadata/offset look-ups through one lazily created confluent-kafka Consumer."""

    def __init__(self, cfg: KafkaSourceConfig) -> None:
        self.cfg = cfg
        self._errors: list[Any] = []
        self._consumer: Any = None

    def _client(self) -> Any:
        if self._consumer is None:
            from confluent_kafka import Consumer, KafkaException

            try:
                self._consumer = Consumer(self.cfg.consumer_conf(self._errors))
            except (KafkaException, ValueError, TypeError) as exc:
                raise ValueError(f"invalid Kafka client option(s) for the {FORMAT} source: {exc}") from None
        else:
            self._consumer.poll(0)  # serve queued log/error callbacks (nothing assigned: returns no record)
            del self._errors[:-20]
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
            self._consumer = None

    def _unavailable(self, what: str, exc: BaseException) -> KafkaUnavailableError:
        return KafkaUnavailableError(_unavailable_message(self.cfg, what, exc, self._errors, self._consumer))

    def topic_partitions(self) -> list[TopicPartitionKey]:
        cfg = self.cfg
        if cfg.assign:
            return list(cfg.assign)
        from confluent_kafka import KafkaException

        consumer = self._client()
        timeout = cfg.api_timeout_ms / 1000
        found: dict[str, Any] = {}
        try:
            if cfg.subscribe:  # only the subscribed topics' metadata (consumers never auto-create topics)
                for topic in cfg.subscribe:
                    found.update(consumer.list_topics(topic=topic, timeout=timeout).topics)
            else:
                rx = re.compile(cfg.subscribe_pattern or "")
                found = {t: tmd for t, tmd in consumer.list_topics(timeout=timeout).topics.items()
                         if rx.fullmatch(t) and not t.startswith("__")}
        except KafkaException as exc:
            raise self._unavailable("list topics", exc) from None
        self._errors.clear()
        out = []
        for topic in sorted(found):
            tmd = found[topic]
            if tmd.error is not None and not tmd.partitions:  # e.g. not created yet
                continue
            out.extend((topic, pid) for pid in sorted(tmd.partitions))
        return out

    def watermarks(self, tps: list[TopicPartitionKey]) -> dict[TopicPartitionKey, tuple[int, int]]:
        from confluent_kafka import KafkaException, TopicPartition

        consumer = self._client()
        out = {}
        for topic, pid in tps:
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, pid), timeout=self.cfg.api_timeout_ms / 1000, cached=False)
            except KafkaException as exc:
                raise self._unavailable(f"fetch the offsets of {topic}-{pid}", exc) from None
            out[(topic, pid)] = (low, high)
        return out

    def offsets_for_times(self, wanted: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, int]:
        """Earliest offset whose timestamp >= the given one; -1 where there is none."""
        from confluent_kafka import KafkaException, TopicPartition

        if not wanted:
            return {}
        try:
            res = self._client().offsets_for_times(
                [TopicPartition(t, p, ts) for (t, p), ts in wanted.items()], timeout=self.cfg.api_timeout_ms / 1000)
        except KafkaException as exc:
            raise self._unavailable("look up offsets by timestamp", exc) from None
        out = {}
        for tp in res:
            if tp.error is not None:
                raise KafkaSourceError(f"offsets_for_times failed for {tp.topic}-{tp.partition}: {tp.error}")
            out[(tp.topic, tp.partition)] = tp.offset
        return out

    # -- resolved offset maps --------------------------------------------------------------
    def latest(self) -> dict[TopicPartitionKey, int]:
        tps = self.topic_partitions()
        return {tp: high for tp, (_low, high) in self.watermarks(tps).items()}

    def resolve(self, spec: str | dict[TopicPartitionKey, int], option: str) -> dict[TopicPartitionKey, int]:
        """Concrete offsets for ``earliest`` / ``latest`` / a JSON spec (-2 earliest, -1 latest)."""
        tps = self.topic_partitions()
        marks = self.watermarks(tps)
        if spec == "earliest":
            return {tp: low for tp, (low, _h) in marks.items()}
        if spec == "latest":
            return {tp: high for tp, (_l, high) in marks.items()}
        assert isinstance(spec, dict)
        if not self.cfg.assign and set(spec) != set(tps):
            raise ValueError(
                f"option '{option}' must specify every partition of the subscribed topics when it gives "
                f"specific offsets (as Spark's Kafka source requires): specified "
                f"{sorted(map(_fmt_tp, spec))}, assigned {sorted(map(_fmt_tp, tps))}"
            )
        out = {}
        for tp in tps:
            want = spec.get(tp, _LATEST)
            low, high = marks[tp]
            out[tp] = low if want == _EARLIEST else high if want == _LATEST else want
        return out

    def resolve_timestamps(self, spec: dict[TopicPartitionKey, int] | int) -> dict[TopicPartitionKey, int]:
        tps = self.topic_partitions()
        if isinstance(spec, int):
            wanted = {tp: spec for tp in tps}
        else:
            if not self.cfg.assign and set(spec) != set(tps):
                raise ValueError(
                    "option 'startingOffsetsByTimestamp' must specify every partition of the subscribed "
                    f"topics: specified {sorted(map(_fmt_tp, spec))}, assigned {sorted(map(_fmt_tp, tps))}"
                )
            wanted = dict(spec)
        found = self.offsets_for_times(wanted)
        missing = [tp for tp, off in found.items() if off < 0]
        if missing:
            if self.cfg.timestamp_strategy == "error":
                raise KafkaSourceError(
                    f"no offset matches the starting timestamp for {sorted(map(_fmt_tp, missing))} "
                    "(no record at or after it); set startingOffsetsByTimestampStrategy=latest to start "
                    "from the latest offset there instead"
                )
            marks = self.watermarks(missing)
            for tp in missing:
                found[tp] = marks[tp][1]
        return found


def _unavailable_message(cfg: KafkaSourceConfig, what: str, exc: BaseException, errors: list[Any],
                         consumer: Any = None) -> str:
    if consumer is not None:
        try:  # serves error callbacks queued during the failed call
            consumer.poll(0)
        except Exception:  # noqa: BLE001
            pass
    seen = []
    for err in errors[-20:]:
        text = err.str() if hasattr(err, "str") else str(err)
        if text not in seen:
            seen.append(text)
    detail = f"; client errors: {' | '.join(seen[-3:])}" if seen else ""
    return (
        f"Kafka brokers at {cfg.bootstrap_servers} (option kafka.bootstrap.servers) did not answer: could not "
        f"{what} within {cfg.api_timeout_ms} ms (option kafka.default.api.timeout.ms): {exc}{detail}. "
        "Check that the brokers are running and reachable from this machine, and the security options "
        "(kafka.security.protocol, kafka.sasl.*, kafka.ssl.*)."
    )


# --------------------------------------------------------------------------------------------
# partitions
# --------------------------------------------------------------------------------------------


class KafkaInputPartition(InputPartition):
    """Offsets ``[start, end)`` of one topic-partition (picklable plain data)."""

    def __init__(self, topic: str, partition: int, start: int, end: int) -> None:
        super().__init__((topic, partition, start, end))
        self.topic = topic
        self.partition = partition
        self.start = start
        self.end = end

    def __repr__(self) -> str:
        return f"KafkaInputPartition({self.topic}-{self.partition} [{self.start}, {self.end}))"


class KafkaInputGroup(InputPartition):
    """Several offset ranges read by one task through one consumer (picklable plain data)."""

    def __init__(self, parts: list[KafkaInputPartition]) -> None:
        super().__init__(tuple(p.value for p in parts))
        self.parts = parts

    @property
    def size(self) -> int:
        return sum(p.end - p.start for p in self.parts)

    def __repr__(self) -> str:
        return f"KafkaInputGroup({self.parts!r})"


def _group_partitions(parts: list[KafkaInputPartition], max_partitions: int | None) -> list[InputPartition]:
    """At most ``max_partitions`` Spark partitions: ranges packed largest first into the lightest group."""
    if not max_partitions or len(parts) <= max_partitions:
        return list(parts)
    groups: list[list[KafkaInputPartition]] = [[] for _ in range(max_partitions)]
    loads = [0] * max_partitions
    for part in sorted(parts, key=lambda p: (-(p.end - p.start), p.topic, p.partition, p.start)):
        i = loads.index(min(loads))
        groups[i].append(part)
        loads[i] += part.end - part.start
    return [KafkaInputGroup(sorted(g, key=lambda p: (p.topic, p.partition, p.start))) for g in groups if g]


def _read_partition(cfg: KafkaSourceConfig, partition: InputPartition) -> Iterator[pa.RecordBatch]:
    if isinstance(partition, KafkaInputGroup):
        yield from read_ranges(cfg, partition.parts)
    else:
        assert isinstance(partition, KafkaInputPartition)
        if partition.partition >= 0 and partition.end > partition.start:
            yield from read_offset_range(cfg, partition)


def _plan_partitions(cfg: KafkaSourceConfig, start: Mapping[TopicPartitionKey, int],
                     end: Mapping[TopicPartitionKey, int]) -> list[KafkaInputPartition]:
    """Input partitions between two offset maps (reporting vanished partitions / offsets going back)."""
    ranges: list[tuple[TopicPartitionKey, int, int]] = []
    for tp in sorted(set(start) - set(end)):
        _data_loss(cfg, f"topic-partition {_fmt_tp(tp)} is gone (topic deleted?); offsets from {start[tp]} "
                        "on were not read.")
    for tp in sorted(end):
        s, e = start.get(tp, 0), end[tp]  # partitions new since `start` are read from offset 0
        if e < s:
            _data_loss(cfg, f"topic-partition {_fmt_tp(tp)}'s offset went back from {s} to {e} (topic recreated "
                            "or truncated?).")
            continue
        if e > s:
            ranges.append((tp, s, e))
    if not ranges:
        return []
    total = sum(e - s for _tp, s, e in ranges)
    parts: list[KafkaInputPartition] = []
    for (topic, pid), s, e in ranges:
        size = e - s
        pieces = 1
        if cfg.min_partitions and len(ranges) < cfg.min_partitions:
            pieces = max(1, math.ceil(size * cfg.min_partitions / total))
        if cfg.max_records_per_partition:
            pieces = max(pieces, math.ceil(size / cfg.max_records_per_partition))
        pieces = min(pieces, size)
        for i in range(pieces):
            a, b = s + size * i // pieces, s + size * (i + 1) // pieces
            if b > a:
                parts.append(KafkaInputPartition(topic, pid, a, b))
    return parts


# --------------------------------------------------------------------------------------------
# executor side: reading one offset range
# --------------------------------------------------------------------------------------------


def _to_batch(topic: str, pid: int, msgs: list[Any]) -> pa.RecordBatch:
    n = len(msgs)
    stamps = [m.timestamp() for m in msgs]
    ts_type = pa.array([t for t, _ in stamps], pa.int32())
    ts_ms = pa.array([v for _, v in stamps], pa.int64())
    return pa.RecordBatch.from_arrays(
        [
            pa.array([m.key() for m in msgs], pa.binary()),
            pa.array([m.value() for m in msgs], pa.binary()),
            pa.repeat(pa.scalar(topic, pa.string()), n),
            pa.repeat(pa.scalar(pid, pa.int32()), n),
            pa.array([m.offset() for m in msgs], pa.int64()),
            pc.multiply(ts_ms, 1000).cast(pa.timestamp("us", tz="UTC")),
            # librdkafka: 0 not available, 1 create time, 2 log append time -> Java ids -1, 0, 1
            pc.subtract(ts_type, pa.scalar(1, pa.int32())),
        ],
        schema=_ARROW_SCHEMA,
    )


class _RangeState:
    """Progress of one planned offset range inside :func:`read_ranges`."""

    def __init__(self, part: KafkaInputPartition) -> None:
        self.part = part
        self.tp = (part.topic, part.partition)
        self.name = _fmt_tp(self.tp)
        self.next = part.start
        self.end = part.end
        self.pending: list[Any] = []

    @property
    def done(self) -> bool:
        return self.next >= self.end


def read_offset_range(cfg: KafkaSourceConfig, part: KafkaInputPartition) -> Iterator[pa.RecordBatch]:
    """Read ``[part.start, part.end)`` of one topic-partition as Arrow record batches."""
    return read_ranges(cfg, [part])


def read_ranges(cfg: KafkaSourceConfig, parts: list[KafkaInputPartition]) -> Iterator[pa.RecordBatch]:
    """Read planned offset ranges (distinct topic-partitions) through one consumer, all at once.

    librdkafka fetches every assigned partition concurrently; records are collected per range and
    yielded as Arrow record batches of one topic-partition each (about ``ARROW_BATCH_ROWS`` rows).
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    if len({(p.topic, p.partition) for p in parts}) != len(parts):  # never planned; pieces of one partition
        for part in parts:
            yield from read_ranges(cfg, [part])
        return
    errors: list[Any] = []
    consumer = Consumer(cfg.consumer_conf(errors))
    timeout_s = cfg.api_timeout_ms / 1000

    def watermarks(st: _RangeState) -> tuple[int, int]:
        try:
            return consumer.get_watermark_offsets(TopicPartition(*st.tp), timeout=timeout_s, cached=False)
        except KafkaException as exc:
            raise KafkaUnavailableError(
                _unavailable_message(cfg, f"fetch the offsets of {st.name}", exc, errors, consumer)) from None

    def lost(st: _RangeState, low: int, high: int) -> None:
        """Report offsets [st.next, low) gone and continue from ``low`` (failOnDataLoss=false)."""
        _data_loss(cfg, f"topic-partition {st.name}: offsets {st.next} to {min(low, st.end) - 1} (planned range "
                        f"[{st.part.start}, {st.end})) are no longer available; the partition's earliest "
                        f"available offset is now {low} (latest {high}).")
        st.next = low

    def flush(st: _RangeState) -> pa.RecordBatch:
        batch = _to_batch(st.tp[0], st.tp[1], st.pending)
        st.pending = []
        return batch

    states: dict[TopicPartitionKey, _RangeState] = {}
    try:
        for part in parts:
            st = _RangeState(part)
            low, high = watermarks(st)
            if st.next < low:
                lost(st, low, high)
            if high < st.end:
                _data_loss(cfg, f"topic-partition {st.name} ends at offset {high} but the batch planned to read "
                                f"up to {st.end} (topic recreated or truncated?).")
                st.end = max(high, st.next)
            if not st.done:
                states[st.tp] = st
        if not states:
            return
        consumer.incremental_assign([TopicPartition(t, p, st.next) for (t, p), st in states.items()])
        poll_timeout = cfg.poll_timeout_ms / 1000
        last_progress = time.monotonic()
        active = dict(states)
        while active:
            want = sum(st.end - st.next for st in active.values())
            msgs = consumer.consume(num_messages=min(_CONSUME_BATCH, want), timeout=min(1.0, poll_timeout))
            if not msgs:
                positions = consumer.position([TopicPartition(*tp) for tp in active])
                for tpos in positions:
                    st = active[(tpos.topic, tpos.partition)]
                    if tpos.offset >= st.end:  # only transaction markers / compacted-away offsets were left
                        st.next = st.end
                for tp in [tp for tp, st in active.items() if st.done]:
                    del active[tp]
                    consumer.incremental_unassign([TopicPartition(*tp)])
                if active and time.monotonic() - last_progress >= poll_timeout:
                    st = next(iter(active.values()))
                    low, high = watermarks(st)
                    raise KafkaSourceError(
                        f"topic-partition {st.name} did not reach offset {st.end} (read up to {st.next}; "
                        f"partition offsets now [{low}, {high})) within {cfg.poll_timeout_ms} ms without progress "
                        "(option kafkaConsumer.pollTimeoutMs)"
                        + (f"; client errors: {errors[-1].str()}" if errors else ""))
                continue
            failed: dict[TopicPartitionKey, Any] = {}
            for m in msgs:
                err = m.error()
                tp = (m.topic(), m.partition())
                st = active.get(tp)
                if st is None or tp in failed:
                    continue  # finished range (fetched beyond its end) or after an error event
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        failed[tp] = m
                    continue
                off = m.offset()
                if off < st.next or off >= st.end:  # stale (fetched before a re-assign) / beyond the end
                    if off >= st.end:
                        st.next = st.end
                    continue
                st.pending.append(m)
                st.next = off + 1
                last_progress = time.monotonic()
                if len(st.pending) >= ARROW_BATCH_ROWS:
                    yield flush(st)
            for tp, m in failed.items():
                st = active[tp]
                if st.done:
                    continue
                err = m.error()
                if err.code() not in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                    raise KafkaSourceError(f"reading {st.name} at offset {st.next} failed: {err.str()}")
                low, high = watermarks(st)
                if st.next < low:  # evicted / deleted while we were reading
                    lost(st, low, high)
                elif st.next >= high:
                    _data_loss(cfg, f"topic-partition {st.name}: offset {st.next} is beyond the partition's "
                                    f"latest offset {high} (topic recreated or truncated?); offsets {st.next} "
                                    f"to {st.end - 1} cannot be read.")
                    st.next = st.end
                else:
                    raise KafkaSourceError(f"offset {st.next} of {st.name} reported out of range although the "
                                           f"partition holds [{low}, {high}): {err.str()}")
                if not st.done:
                    consumer.incremental_unassign([TopicPartition(*tp)])
                    consumer.incremental_assign([TopicPartition(tp[0], tp[1], st.next)])
                    last_progress = time.monotonic()
            for tp in [tp for tp, st in active.items() if st.done]:
                if active[tp].pending:
                    yield flush(active[tp])
                del active[tp]
                consumer.incremental_unassign([TopicPartition(*tp)])
        for st in states.values():
            if st.pending:
                yield flush(st)
    finally:
        try:
            consumer.close()
        except Exception:  # noqa: BLE001 - closing must not mask the real error
            pass


# --------------------------------------------------------------------------------------------
# readers and data source
# --------------------------------------------------------------------------------------------


class _FetcherHolder:
    """Mixin: a lazily created driver-side client that is never pickled."""

    _cfg: KafkaSourceConfig
    _fetcher_obj: _OffsetFetcher | None = None

    @property
    def _fetcher(self) -> _OffsetFetcher:
        if self._fetcher_obj is None:
            self._fetcher_obj = _OffsetFetcher(self._cfg)
        return self._fetcher_obj

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fetcher_obj"] = None
        return state

    def _close_fetcher(self) -> None:
        if self._fetcher_obj is not None:
            self._fetcher_obj.close()
            self._fetcher_obj = None


class KafkaStreamReader(_FetcherHolder, DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Micro-batch reader: offsets from Kafka on the driver, record batches on the executors."""

    def __init__(self, cfg: KafkaSourceConfig) -> None:
        self._cfg = cfg
        self._fetcher_obj = None
        self._available_now_target: dict[TopicPartitionKey, int] | None = None
        self._initial: dict | None = None
        self._last_latest: dict[TopicPartitionKey, int] | None = None

    def initialOffset(self) -> dict:
        # Spark calls this twice for the first micro-batch (for latestOffset's start and again when
        # planning it); both must agree, or records between the two look-ups would be skipped.
        if self._initial is None:
            cfg = self._cfg
            if cfg.starting_by_timestamp is not None:
                offsets = self._fetcher.resolve_timestamps(cfg.starting_by_timestamp)
            else:
                offsets = self._fetcher.resolve(cfg.starting, "startingOffsets")
            log.info("%s initial offsets: %s", FORMAT, offsets)
            self._initial = _to_json_offsets(offsets)
        return self._initial

    def getDefaultReadLimit(self) -> Any:
        if self._cfg.max_offsets_per_trigger and ReadMaxRows is not None:
            return ReadMaxRows(self._cfg.max_offsets_per_trigger)
        return ReadAllAvailable() if ReadAllAvailable is not None else None

    def prepareForTriggerAvailableNow(self) -> None:
        self._available_now_target = self._fetcher.latest()

    def latestOffset(self, start: dict | None = None, limit: Any = None) -> dict:
        begin = _from_json_offsets(start)
        latest = self._fetcher.latest()
        self._last_latest = latest
        target = dict(latest)
        if self._available_now_target is not None:  # never beyond what existed when the query started
            target = {tp: min(off, self._available_now_target[tp])
                      for tp, off in latest.items() if tp in self._available_now_target}
            for tp, off in begin.items():
                target.setdefault(tp, off)
        if limit is None and start is None:  # pyspark < 4.2: latestOffset() without arguments
            return _to_json_offsets(target)
        max_rows = None
        if ReadMaxRows is not None and isinstance(limit, ReadMaxRows):
            max_rows = limit.max_rows
        elif limit is None and self._cfg.max_offsets_per_trigger:
            max_rows = self._cfg.max_offsets_per_trigger
        if max_rows is not None:
            target = _rate_limit(begin, target, max_rows)
        return _to_json_offsets(target)

    def reportLatestOffset(self) -> dict | None:
        return None if self._last_latest is None else _to_json_offsets(self._last_latest)

    def partitions(self, start: dict, end: dict) -> list[InputPartition]:
        parts = _plan_partitions(self._cfg, _from_json_offsets(start), _from_json_offsets(end))
        return _group_partitions(parts, self._cfg.max_partitions)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:  # type: ignore[override]
        return _read_partition(self._cfg, partition)

    def commit(self, end: dict) -> None:
        """Nothing to do: offsets live in Spark's checkpoint, nothing is committed to Kafka."""

    def stop(self) -> None:
        self._close_fetcher()


class KafkaBatchReader(_FetcherHolder, DataSourceReader):
    """Batch reader (``spark.read.format("streamsight_kafka")``): startingOffsets to endingOffsets."""

    def __init__(self, cfg: KafkaSourceConfig) -> None:
        self._cfg = cfg
        self._fetcher_obj = None

    def partitions(self) -> list[KafkaInputPartition]:  # type: ignore[override]
        cfg = self._cfg
        try:
            if cfg.starting_by_timestamp is not None:
                start = self._fetcher.resolve_timestamps(cfg.starting_by_timestamp)
            else:
                start = self._fetcher.resolve(cfg.starting, "startingOffsets")
            end = self._fetcher.resolve(cfg.ending, "endingOffsets")
        finally:
            self._close_fetcher()
        parts = _plan_partitions(cfg, start, {tp: off for tp, off in end.items()})
        return _group_partitions(parts, cfg.max_partitions) or [KafkaInputPartition("", -1, 0, 0)]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:  # type: ignore[override]
        return _read_partition(self._cfg, partition)


def _check_schema(schema: StructType | None) -> None:
    if schema is not None and schema != KAFKA_SCHEMA:
        raise ValueError(
            f"the {FORMAT} source has a fixed schema ({KAFKA_SCHEMA.simpleString()}) and cannot be given "
            f"another one ({schema.simpleString()})"
        )


class KafkaDataSource(DataSource):
    """Spark Python data source ``streamsight_kafka``: Spark's Kafka source schema and options."""

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> StructType:
        KafkaSourceConfig.from_options(self.options)  # fail at load() on bad options
        return KAFKA_SCHEMA

    def streamReader(self, schema: StructType) -> KafkaStreamReader:
        _check_schema(schema)
        if "endingOffsets" in self.options or "endingoffsets" in self.options:
            raise ValueError("option 'endingOffsets' is not valid in streaming queries (batch reads only)")
        return KafkaStreamReader(KafkaSourceConfig.from_options(self.options))

    def reader(self, schema: StructType) -> KafkaBatchReader:
        _check_schema(schema)
        return KafkaBatchReader(KafkaSourceConfig.from_options(self.options, batch=True))


# --------------------------------------------------------------------------------------------
# session helpers
# --------------------------------------------------------------------------------------------


def register(spark: Any) -> None:
    """Register :class:`KafkaDataSource` (format ``"streamsight_kafka"``) with ``spark``."""
    spark.dataSource.register(KafkaDataSource)


_native_cache: dict[str, bool] = {}


def _app_key(spark: Any) -> str | None:
    try:
        return str(spark.sparkContext.applicationId)
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        return None


def native_kafka_available(spark: Any) -> bool | None:
    """Whether Spark's JVM Kafka source is on the classpath (cached per application).

    ``None`` when it cannot be told (no JVM gateway, e.g. Spark Connect).
    """
    key = _app_key(spark)
    if key is not None and key in _native_cache:
        return _native_cache[key]
    try:
        jvm = spark._jvm if getattr(spark, "_jvm", None) is not None else spark.sparkContext._jvm
    except Exception:  # noqa: BLE001
        return None
    if jvm is None:
        return None
    found = False
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        loader.loadClass(NATIVE_PROVIDER)
        found = True
    except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        try:
            jvm.java.lang.Class.forName(NATIVE_PROVIDER)
            found = True
        except Exception:  # noqa: BLE001
            found = False
    if key is not None:
        _native_cache[key] = found
    return found


def _native_options(options: Mapping[str, str]) -> dict[str, str]:
    """librdkafka-style credentials -> the Java client's equivalents, for Spark's own source."""
    out = dict(options)
    lower = {k.lower(): k for k in out}
    user_key, pass_key = lower.get("kafka.sasl.username"), lower.get("kafka.sasl.password")
    if user_key and pass_key and "kafka.sasl.jaas.config" not in lower:
        mech = out.get(lower.get("kafka.sasl.mechanism", ""), "PLAIN").upper()
        module = ("org.apache.kafka.common.security.scram.ScramLoginModule" if mech.startswith("SCRAM")
                  else "org.apache.kafka.common.security.plain.PlainLoginModule")

        def quote(s: str) -> str:
            return s.replace("\\", "\\\\").replace('"', '\\"')

        out["kafka.sasl.jaas.config"] = (
            f'{module} required username="{quote(out[user_key])}" password="{quote(out[pass_key])}";')
    if user_key and pass_key:
        out.pop(user_key)
        out.pop(pass_key)
    ca_key = lower.get("kafka.ssl.ca.location")
    if ca_key and "kafka.ssl.truststore.location" not in lower:
        out["kafka.ssl.truststore.type"] = "PEM"
        out["kafka.ssl.truststore.location"] = out.pop(ca_key)
    return out


def kafka_stream(
    spark: Any,
    *,
    bootstrap_servers: str,
    topics: list[str],
    options: dict[str, str] | None = None,
    prefer_native: bool | None = None,
) -> Any:
    """A streaming DataFrame over ``topics`` with Spark's Kafka source schema.

    Parameters
    ----------
    spark : SparkSession
    bootstrap_servers : str
        ``kafka.bootstrap.servers``.
    topics : list of str
        Subscribed topics (``subscribe``).
    options : dict, optional
        More source options, by Spark's Kafka source names (``startingOffsets``,
        ``maxOffsetsPerTrigger``, ``failOnDataLoss``, ``kafka.*`` ...).
    prefer_native : bool, optional
        ``None``: Spark's ``kafka`` source if its connector is on the classpath, else
        ``streamsight_kafka``.  ``True``: Spark's (error if it is known to be missing).
        ``False``: always ``streamsight_kafka``.

    Returns
    -------
    DataFrame
        The result of ``spark.readStream.format(...).options(...).load()``.
    """
    if not topics:
        raise ValueError("kafka_stream needs at least one topic")
    opts: dict[str, str] = {str(k): str(v) for k, v in (options or {}).items()}
    opts["kafka.bootstrap.servers"] = bootstrap_servers
    opts["subscribe"] = ",".join(topics)
    use_native = prefer_native
    if use_native is None:
        use_native = bool(native_kafka_available(spark))
    elif use_native and native_kafka_available(spark) is False:
        raise RuntimeError(
            f"Spark's Kafka source ({NATIVE_PROVIDER}) is not on the classpath; add it with "
            "`spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:<spark version>` or use "
            f"prefer_native=None/False for the Python source '{FORMAT}'"
        )
    if use_native:
        return spark.readStream.format("kafka").options(**_native_options(opts)).load()
    register(spark)
    return spark.readStream.format(FORMAT).options(**opts).load()
