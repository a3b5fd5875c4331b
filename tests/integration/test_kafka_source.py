"""Streamsight's Python Kafka source (``streamsight_kafka``) against the embedded broker and local Spark.

Real Kafka protocol over TCP (librdkafka's mock cluster via :class:`ingestion.embedded_broker.EmbeddedBroker`),
real Structured Streaming queries with checkpoints in ``tmp_path``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

pyspark = pytest.importorskip("pyspark")
confluent_kafka = pytest.importorskip("confluent_kafka")

from pyspark.errors import StreamingQueryException  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql.types import (  # noqa: E402
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from ingestion.embedded_broker import EmbeddedBroker  # noqa: E402
from streaming_jobs.kafka_source import (  # noqa: E402
    FORMAT,
    KafkaInputGroup,
    KafkaInputPartition,
    KafkaSourceConfig,
    _group_partitions,
    _plan_partitions,
    _rate_limit,
    kafka_stream,
    native_kafka_available,
    register,
)

# The schema of Spark's own Kafka source (KafkaRecordToRowConverter.kafkaSchema, without headers).
SPARK_KAFKA_SCHEMA = StructType(
    [
        StructField("key", BinaryType(), True),
        StructField("value", BinaryType(), True),
        StructField("topic", StringType(), True),
        StructField("partition", IntegerType(), True),
        StructField("offset", LongType(), True),
        StructField("timestamp", TimestampType(), True),
        StructField("timestampType", IntegerType(), True),
    ]
)
BASE_TS_MS = 1_700_000_000_000
QUERY_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def spark(spark: SparkSession) -> SparkSession:
    """The suite's session (tests/conftest.py) with the Python Kafka source registered."""
    register(spark)
    return spark


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


def new_topic(broker: EmbeddedBroker, partitions: int) -> str:
    name = f"ks-{uuid.uuid4().hex[:10]}"
    broker.create_topic(name, partitions)
    return name


def produce(broker: EmbeddedBroker, topic: str, n: int, *, partitions: int, first: int = 0,
            value_size: int | None = None) -> None:
    """Message i: key ``k<i>`` (null for every 1000th), value ``v<i>`` (or ``value_size`` bytes),
    partition ``i % partitions``, CreateTime ``BASE_TS_MS + i``."""
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 10,
                                         "message.max.bytes": 2_000_000})
    for i in range(first, first + n):
        value = (b"%08d" % i).ljust(value_size, b".") if value_size else b"v%d" % i
        producer.produce(topic, key=None if i % 1000 == 999 else b"k%d" % i, value=value,
                         partition=i % partitions, timestamp=BASE_TS_MS + i)
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0, "messages not delivered"


def watermarks(broker: EmbeddedBroker, topic: str, partition: int = 0) -> tuple[int, int]:
    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "t"})
    try:
        return consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, partition), timeout=10)
    finally:
        consumer.close()


def source(spark: SparkSession, servers: str, topic: str, **options: str):
    reader = (spark.readStream.format(FORMAT).option("kafka.bootstrap.servers", servers)
              .option("subscribe", topic))
    for key, value in options.items():
        reader = reader.option(key, value)
    return reader.load()


def run_available_now(df, out: Path, checkpoint: Path):
    """Run to completion with trigger(availableNow=True) into a parquet sink; return the query."""
    query = (df.writeStream.format("parquet").option("path", str(out))
             .option("checkpointLocation", str(checkpoint)).trigger(availableNow=True).start())
    finished = query.awaitTermination(QUERY_TIMEOUT_S)
    assert finished, f"query did not finish within {QUERY_TIMEOUT_S}s"
    assert query.exception() is None
    return query


def input_rows(query) -> list[int]:
    return [int(p["numInputRows"]) for p in query.recentProgress if int(p["numInputRows"]) > 0]


def expected_key(i: int) -> bytes | None:
    return None if i % 1000 == 999 else b"k%d" % i


# ----------------------------------------------------------------------------------------------
# streaming reads
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grouping", [{}, {"maxPartitions": "1"}], ids=["task-per-partition", "one-task"])
def test_reads_exactly_what_was_produced(spark, broker, tmp_path, grouping):
    topic = new_topic(broker, 3)
    produce(broker, topic, 20_000, partitions=3)

    df = source(spark, broker.bootstrap_servers, topic, startingOffsets="earliest", **grouping)
    assert df.isStreaming
    assert df.schema == SPARK_KAFKA_SCHEMA
    query = run_available_now(df, tmp_path / "out", tmp_path / "ck")
    assert sum(input_rows(query)) == 20_000

    out = spark.read.parquet(str(tmp_path / "out"))
    assert out.schema == SPARK_KAFKA_SCHEMA
    rows = out.selectExpr("*", "unix_millis(timestamp) AS ts_ms").collect()
    assert len(rows) == 20_000
    assert len({(r.partition, r.offset) for r in rows}) == 20_000
    by_value = {r.value: r for r in rows}
    assert len(by_value) == 20_000
    for i in range(20_000):
        r = by_value[b"v%d" % i]
        assert r.key == expected_key(i)
        assert (r.topic, r.partition, r.offset) == (topic, i % 3, i // 3)
        assert r.ts_ms == BASE_TS_MS + i
        assert r.timestampType == 0  # CreateTime, Kafka's Java id as in Spark's source

    # Offsets in the checkpoint's offset log are Spark-Kafka-style JSON with the end offsets.
    offset_files = sorted((p for p in (tmp_path / "ck" / "offsets").iterdir() if p.name.isdigit()),
                          key=lambda p: int(p.name))
    last = offset_files[-1].read_text().strip().splitlines()[-1]
    assert json.loads(last) == {topic: {"0": 6667, "1": 6667, "2": 6666}}


def test_max_offsets_per_trigger_caps_every_micro_batch(spark, broker, tmp_path):
    topic = new_topic(broker, 3)
    produce(broker, topic, 20_000, partitions=3)

    df = source(spark, broker.bootstrap_servers, topic, startingOffsets="earliest", maxOffsetsPerTrigger="5000")
    query = run_available_now(df, tmp_path / "out", tmp_path / "ck")
    batches = input_rows(query)
    assert len(batches) >= 4, batches
    assert max(batches) <= 5000, batches
    assert sum(batches) == 20_000
    rows = spark.read.parquet(str(tmp_path / "out")).select("partition", "offset").collect()
    assert len(rows) == 20_000
    assert len(set(rows)) == 20_000


def test_restart_from_checkpoint_reads_only_new_records(spark, broker, tmp_path):
    topic = new_topic(broker, 3)
    produce(broker, topic, 2_000, partitions=3)
    assert native_kafka_available(spark) is False  # no spark-sql-kafka jar here -> the Python source

    def df():
        return kafka_stream(spark, bootstrap_servers=broker.bootstrap_servers, topics=[topic],
                            options={"startingOffsets": "earliest", "failOnDataLoss": "true"})

    first = run_available_now(df(), tmp_path / "out", tmp_path / "ck")
    assert sum(input_rows(first)) == 2_000

    produce(broker, topic, 1_000, partitions=3, first=2_000)
    second = run_available_now(df(), tmp_path / "out", tmp_path / "ck")
    assert sum(input_rows(second)) == 1_000

    rows = spark.read.parquet(str(tmp_path / "out")).select("partition", "offset", "value").collect()
    assert len(rows) == 3_000
    assert len({(r.partition, r.offset) for r in rows}) == 3_000
    assert {r.value for r in rows} == {b"v%d" % i for i in range(3_000)}


def test_latest_skips_existing_records_and_new_topics_start_from_earliest(spark, broker, tmp_path):
    prefix = f"ksp-{uuid.uuid4().hex[:8]}"
    old = f"{prefix}-old"
    broker.create_topic(old, 2)
    produce(broker, old, 100, partitions=2)
    df = (spark.readStream.format(FORMAT).option("kafka.bootstrap.servers", broker.bootstrap_servers)
          .option("subscribePattern", f"{prefix}-.*").option("startingOffsets", "latest").load())
    assert sum(input_rows(run_available_now(df, tmp_path / "out", tmp_path / "ck"))) == 0

    produce(broker, old, 10, partitions=2, first=100)
    new = f"{prefix}-new"  # appears after the query started: read from its earliest offset
    broker.create_topic(new, 1)
    produce(broker, new, 5, partitions=1, first=500)
    query = run_available_now(df, tmp_path / "out", tmp_path / "ck")
    assert sum(input_rows(query)) == 15
    got = {(r.topic, r.value) for r in spark.read.parquet(str(tmp_path / "out")).select("topic", "value").collect()}
    assert got == {(old, b"v%d" % i) for i in range(100, 110)} | {(new, b"v%d" % i) for i in range(500, 505)}


def test_batch_read_between_starting_and_ending_offsets(spark, broker):
    topic = new_topic(broker, 2)
    produce(broker, topic, 100, partitions=2)
    df = (spark.read.format(FORMAT).option("kafka.bootstrap.servers", broker.bootstrap_servers)
          .option("subscribe", topic)
          .option("startingOffsets", json.dumps({topic: {"0": 10, "1": -2}}))
          .option("endingOffsets", json.dumps({topic: {"0": 20, "1": -1}})).load())
    assert df.schema == SPARK_KAFKA_SCHEMA
    got = sorted((r.partition, r.offset) for r in df.select("partition", "offset").collect())
    assert got == [(0, o) for o in range(10, 20)] + [(1, o) for o in range(50)]


# ----------------------------------------------------------------------------------------------
# failures
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evicted_topic(broker) -> tuple[str, int, int]:
    """A 1-partition topic whose head the mock broker has evicted (it keeps about 5 MB a partition)."""
    topic = new_topic(broker, 1)
    produce(broker, topic, 160, partitions=1, value_size=64 * 1024)  # ~10 MB
    low, high = watermarks(broker, topic)
    assert high == 160
    assert low > 0, "the broker did not evict anything; the data-loss tests need a low watermark > 0"
    return topic, low, high


def test_data_loss_fails_the_query_by_default(spark, broker, tmp_path, evicted_topic):
    topic, low, _high = evicted_topic
    df = source(spark, broker.bootstrap_servers, topic, startingOffsets=json.dumps({topic: {"0": 0}}))
    query = (df.writeStream.format("parquet").option("path", str(tmp_path / "out"))
             .option("checkpointLocation", str(tmp_path / "ck")).trigger(availableNow=True).start())
    with pytest.raises(StreamingQueryException) as info:
        query.awaitTermination(QUERY_TIMEOUT_S)
    message = str(info.value)
    assert "Data loss" in message
    assert f"{topic}-0" in message
    assert f"offsets 0 to {low - 1}" in message
    assert "failOnDataLoss=false" in message


def test_data_loss_is_skipped_with_fail_on_data_loss_false(spark, broker, tmp_path, evicted_topic):
    topic, low, high = evicted_topic
    df = source(spark, broker.bootstrap_servers, topic, startingOffsets=json.dumps({topic: {"0": 0}}),
                failOnDataLoss="false")
    query = run_available_now(df, tmp_path / "out", tmp_path / "ck")
    assert sum(input_rows(query)) == high - low
    out = spark.read.parquet(str(tmp_path / "out"))
    offsets = sorted(r.offset for r in out.select("offset").collect())
    assert offsets == list(range(low, high))


def test_data_loss_in_a_grouped_task_skips_only_the_lost_offsets(spark, broker, tmp_path, evicted_topic):
    topic, low, high = evicted_topic
    other = new_topic(broker, 2)
    produce(broker, other, 500, partitions=2)
    df = (spark.readStream.format(FORMAT).option("kafka.bootstrap.servers", broker.bootstrap_servers)
          .option("subscribe", f"{topic},{other}").option("maxPartitions", "1").option("failOnDataLoss", "false")
          .option("startingOffsets", json.dumps({topic: {"0": 0}, other: {"0": 0, "1": 0}})).load())
    query = run_available_now(df, tmp_path / "out", tmp_path / "ck")
    assert sum(input_rows(query)) == (high - low) + 500
    out = spark.read.parquet(str(tmp_path / "out"))
    got = sorted((r.topic, r.partition, r.offset) for r in out.select("topic", "partition", "offset").collect())
    assert got == sorted([(topic, 0, o) for o in range(low, high)]
                         + [(other, p, o) for p in (0, 1) for o in range(250)])


def test_unreachable_broker_fails_fast(spark, tmp_path):
    servers = "127.0.0.1:1"
    df = source(spark, servers, "anything", startingOffsets="earliest", **{"kafka.default.api.timeout.ms": "3000"})
    query = (df.writeStream.format("noop").option("checkpointLocation", str(tmp_path / "ck"))
             .trigger(availableNow=True).start())
    started = time.monotonic()
    error: Exception | None = None
    try:
        finished = query.awaitTermination(60)
    except StreamingQueryException as exc:
        error, finished = exc, True
    elapsed = time.monotonic() - started
    if not finished:
        query.stop()
    assert finished, "the query against an unreachable broker did not terminate within 60 s"
    assert error is not None
    assert servers in str(error)
    assert "kafka.bootstrap.servers" in str(error)
    assert elapsed < 45


@pytest.mark.parametrize(
    ("options", "named"),
    [({"subscribe": "t"}, "kafka.bootstrap.servers"), ({"kafka.bootstrap.servers": "127.0.0.1:9092"}, "subscribe")],
)
def test_missing_required_option_is_named(spark, options, named):
    with pytest.raises(Exception, match=named.replace(".", r"\.")):
        spark.readStream.format(FORMAT).options(**options).load()
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        KafkaSourceConfig.from_options(options)


# ----------------------------------------------------------------------------------------------
# planning (no broker)
# ----------------------------------------------------------------------------------------------


def test_rate_limit_is_proportional_and_never_above_the_cap():
    start = {("a", 0): 0, ("a", 1): 100, ("b", 0): 0}
    latest = {("a", 0): 9000, ("a", 1): 1100, ("b", 0): 3, ("c", 0): 7}  # c-0 is new (starts at 0)
    capped = _rate_limit(start, latest, 1000)
    taken = {tp: capped[tp] - start.get(tp, 0) for tp in capped}
    assert sum(taken.values()) == 1000
    assert taken[("a", 0)] > taken[("a", 1)] > taken[("b", 0)]
    assert all(0 <= taken[tp] <= latest[tp] - start.get(tp, 0) for tp in latest)
    assert _rate_limit(start, latest, 100_000) == latest


def test_grouping_packs_ranges_into_at_most_n_balanced_tasks():
    sizes = [900, 100, 500, 450, 50, 700, 300]
    parts = [KafkaInputPartition("a", i, 1000, 1000 + n) for i, n in enumerate(sizes)]
    groups = _group_partitions(parts, 3)
    assert len(groups) == 3 and all(isinstance(g, KafkaInputGroup) for g in groups)
    members = sorted(p.partition for g in groups for p in g.parts)
    assert members == list(range(len(sizes)))  # every range exactly once
    loads = sorted(g.size for g in groups)
    assert sum(loads) == sum(sizes)
    assert loads[-1] - loads[0] <= max(sizes) // 2, loads  # balanced, not packed in order
    assert _group_partitions(parts, 10) == parts  # already few enough: one task per range
    assert _group_partitions(parts, None) == parts


def test_partition_planning_and_data_loss_reporting():
    cfg = KafkaSourceConfig.from_options({"kafka.bootstrap.servers": "x:1", "subscribe": "a",
                                          "maxRecordsPerPartition": "400"})
    parts = _plan_partitions(cfg, {("a", 0): 0, ("a", 1): 5}, {("a", 0): 1000, ("a", 1): 5, ("a", 2): 3})
    assert [(p.partition, p.start, p.end) for p in parts] == [
        (0, 0, 333), (0, 333, 666), (0, 666, 1000), (2, 0, 3)]
    with pytest.raises(RuntimeError, match="went back"):
        _plan_partitions(cfg, {("a", 0): 10}, {("a", 0): 5})
    lenient = KafkaSourceConfig.from_options({"kafka.bootstrap.servers": "x:1", "subscribe": "a",
                                              "failOnDataLoss": "false"})
    assert _plan_partitions(lenient, {("a", 0): 10, ("a", 1): 0}, {("a", 0): 5}) == []
