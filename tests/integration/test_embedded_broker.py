"""Integration tests for the in-memory development broker (librdkafka mock cluster).

These run real Kafka clients (confluent-kafka and kafka-python) against real
loopback TCP listeners; no Apache Kafka is needed.  Nothing here sleeps to make
timing work: every wait is a poll loop bounded by a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from ingestion.embedded_broker import EmbeddedBroker

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_PYTHON_API = (2, 1, 0)  # kafka-python only talks to the mock cluster with this pinned


# ---------------------------------------------------------------------------
# helpers / fixtures
# ---------------------------------------------------------------------------


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        if step is not None:
            step()
        else:
            time.sleep(0.02)  # polling interval only; correctness never depends on it


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(num_brokers=1) as b:
        yield b


def _producer(bootstrap: str, **extra: object) -> Producer:
    conf: dict[str, object] = {"bootstrap.servers": bootstrap, "log_level": 3}
    conf.update(extra)
    return Producer(conf)


def _consumer(bootstrap: str, group: str, **extra: object) -> Consumer:
    conf: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "log_level": 3,
    }
    conf.update(extra)
    return Consumer(conf)


def _produce_all(producer: Producer, topic: str, records: list[tuple[bytes, bytes]], **kw: object) -> list:
    """Produce ``records`` and flush; return the delivered messages (asserting no errors)."""
    delivered: list = []
    errors: list = []

    def on_delivery(err, msg) -> None:
        (errors if err is not None else delivered).append(err if err is not None else msg)

    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery, **kw)
                break
            except BufferError:
                producer.poll(0.05)
    remaining = producer.flush(20)
    assert remaining == 0, f"{remaining} messages still in flight after flush"
    assert not errors, f"delivery errors: {errors[:5]}"
    return delivered


def _consume_n(consumer: Consumer, n: int, timeout: float = 15.0) -> list:
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"consumed only {len(out)}/{n} records within {timeout}s"
        for msg in consumer.consume(num_messages=1000, timeout=0.5):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error: {msg.error()}")
            out.append(msg)
    return out


# ---------------------------------------------------------------------------
# 0. lifecycle
# ---------------------------------------------------------------------------


def test_lifecycle_is_idempotent() -> None:
    b = EmbeddedBroker(num_brokers=3, topics={"pre": 2})
    with pytest.raises(RuntimeError):
        _ = b.bootstrap_servers
    addr = b.start()
    assert b.start() == addr == b.bootstrap_servers
    hosts = addr.split(",")
    assert len(hosts) == 3 and all(h.startswith("127.0.0.1:") for h in hosts)
    b.create_topic("pre", 2)  # existing topic: no error
    b.create_topic("extra", 5)
    md = AdminClient({"bootstrap.servers": addr, "log_level": 3}).list_topics(timeout=10)
    assert len(md.brokers) == 3
    assert len(md.topics["pre"].partitions) == 2
    assert len(md.topics["extra"].partitions) == 5
    b.stop()
    b.stop()
    with pytest.raises(RuntimeError):
        b.create_topic("late")
    with pytest.raises(ValueError):
        EmbeddedBroker(num_brokers=0)


# ---------------------------------------------------------------------------
# 1. round trip with an idempotent, compressed, batched producer
# ---------------------------------------------------------------------------


def test_round_trip_idempotent_lz4(broker: EmbeddedBroker) -> None:
    topic = _unique("roundtrip")
    broker.create_topic(topic, 3)
    n = 5000
    records = [(f"key-{i}".encode(), json.dumps({"seq": i, "pad": "x" * 50}).encode()) for i in range(n)]

    producer = _producer(
        broker.bootstrap_servers,
        **{"enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.type": "lz4"},
    )
    delivered = _produce_all(producer, topic, records)
    assert len(delivered) == n

    consumer = _consumer(broker.bootstrap_servers, _unique("g-roundtrip"))
    try:
        consumer.subscribe([topic])
        got = _consume_n(consumer, n)
        # Nothing beyond the n records shows up.
        extra = [m for m in consumer.consume(num_messages=100, timeout=0.5) if not m.error()]
    finally:
        consumer.close()

    assert not extra
    assert len(got) == n
    assert {(m.key(), m.value()) for m in got} == set(records)

    offsets: dict[int, list[int]] = defaultdict(list)
    for m in got:
        offsets[m.partition()].append(m.offset())
    assert set(offsets) <= {0, 1, 2} and len(offsets) == 3, "keys should spread over all 3 partitions"
    for partition, offs in offsets.items():
        assert sorted(offs) == list(range(len(offs))), f"partition {partition} offsets not contiguous from 0"
    # Same per-partition layout as the producer's delivery reports.
    assert {p: len(o) for p, o in offsets.items()} == {
        p: sum(1 for d in delivered if d.partition() == p) for p in offsets
    }


# ---------------------------------------------------------------------------
# 2. high watermark / ListOffsets after a batched produce (Tansu regression)
# ---------------------------------------------------------------------------


BATCH_N = 1000


def _batched_produce(broker: EmbeddedBroker, topic: str) -> list[tuple[bytes, bytes]]:
    """Produce BATCH_N records into one partition such that many share a record batch."""
    broker.create_topic(topic, 1)
    records = [(f"k{i}".encode(), f"value-{i}".encode()) for i in range(BATCH_N)]
    batch_sizes: list[int] = []

    def on_stats(raw: str) -> None:
        stats = json.loads(raw)
        for t in stats.get("topics", {}).values():
            batch_sizes.append(int(t.get("batchcnt", {}).get("max", 0)))

    producer = _producer(
        broker.bootstrap_servers,
        **{
            "linger.ms": 200,  # everything is queued long before the linger expires
            "batch.num.messages": 10000,
            "acks": "all",
            "statistics.interval.ms": 50,
            "stats_cb": on_stats,
        },
    )
    delivered = _produce_all(producer, topic, records, partition=0)
    assert [m.offset() for m in delivered] == list(range(BATCH_N))
    # Prove the premise: records really were batched (stats cover the produce window).
    _wait_for(lambda: any(s > 1 for s in batch_sizes), 5.0, "producer statistics", step=lambda: producer.poll(0.05))
    assert max(batch_sizes) >= 100, f"expected large batches, saw max {max(batch_sizes)} records/batch"
    return records


def test_high_watermark_after_batched_produce_confluent(broker: EmbeddedBroker) -> None:
    topic = _unique("hwm-ck")
    records = _batched_produce(broker, topic)
    tp = TopicPartition(topic, 0)

    consumer = _consumer(broker.bootstrap_servers, _unique("g-hwm"))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers, "log_level": 3})
    try:
        low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        assert (low, high) == (0, BATCH_N)

        futures = admin.list_offsets({tp: OffsetSpec.latest()}, request_timeout=10)
        assert futures[tp].result().offset == BATCH_N
        earliest = admin.list_offsets({tp: OffsetSpec.earliest()}, request_timeout=10)
        assert earliest[tp].result().offset == 0

        # A bounded reader: read [0, high) and stop.  It must see the last record.
        consumer.assign([TopicPartition(topic, 0, 0)])
        seen: list = []
        deadline = time.monotonic() + 15
        while not seen or seen[-1].offset() < high - 1:
            assert time.monotonic() < deadline, f"bounded reader stalled at {len(seen)}/{high}"
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            seen.append(msg)
    finally:
        consumer.close()

    assert [m.offset() for m in seen] == list(range(high))
    assert (seen[-1].key(), seen[-1].value()) == records[-1]


def test_high_watermark_after_batched_produce_kafka_python(broker: EmbeddedBroker) -> None:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTopicPartition

    topic = _unique("hwm-kp")
    records = _batched_produce(broker, topic)
    tp = KTopicPartition(topic, 0)

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers.split(","),
        api_version=KAFKA_PYTHON_API,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=10000,
        consumer_timeout_ms=500,
    )
    try:
        end = consumer.end_offsets([tp])  # ListOffsets(latest)
        assert end == {tp: BATCH_N}
        assert consumer.beginning_offsets([tp]) == {tp: 0}

        consumer.assign([tp])
        consumer.seek(tp, 0)
        seen: list = []
        deadline = time.monotonic() + 15
        while not seen or seen[-1].offset < end[tp] - 1:
            assert time.monotonic() < deadline, f"bounded reader stalled at {len(seen)}/{end[tp]}"
            for batch in consumer.poll(timeout_ms=500).values():
                seen.extend(batch)
        # The fetch response's high watermark agrees with ListOffsets.
        assert consumer.highwater(tp) == BATCH_N
    finally:
        consumer.close()

    assert [r.offset for r in seen] == list(range(BATCH_N))
    assert (seen[-1].key, seen[-1].value) == records[-1]


# ---------------------------------------------------------------------------
# 3. consumer group commit / resume
# ---------------------------------------------------------------------------


# Mock-cluster quirk (classic protocol): when the last member leaves a group, the group
# sits in "Joining" for (session.timeout.ms - 1 s) of the departed member before the next
# member is assigned anything -- 44 s with the 45 s default.  A short session timeout keeps
# the classic case fast; the KIP-848 "consumer" protocol has no such wait.
GROUP_PROTOCOLS = {
    "classic": {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500},
    "consumer": {"group.protocol": "consumer"},
}


@pytest.mark.parametrize("protocol", sorted(GROUP_PROTOCOLS))
def test_consumer_group_resumes_from_committed_offset(broker: EmbeddedBroker, protocol: str) -> None:
    group_conf = GROUP_PROTOCOLS[protocol]
    topic = _unique("commit")
    broker.create_topic(topic, 1)
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(100)]
    _produce_all(_producer(broker.bootstrap_servers), topic, records)
    group = _unique("g-commit")

    first = _consumer(broker.bootstrap_servers, group, **group_conf)
    try:
        first.subscribe([topic])
        got = _consume_n(first, 40)
        fortieth = next(m for m in got if m.offset() == 39)
        first.commit(message=fortieth, asynchronous=False)  # commits offset 40
        committed = first.committed([TopicPartition(topic, 0)], timeout=10)
        assert committed[0].offset == 40
    finally:
        first.close()

    second = _consumer(broker.bootstrap_servers, group, **group_conf)
    try:
        second.subscribe([topic])
        rest = _consume_n(second, 60)
    finally:
        second.close()
    assert rest[0].offset() == 40
    assert [m.offset() for m in rest] == list(range(40, 100))
    assert [(m.key(), m.value()) for m in rest] == records[40:]


# ---------------------------------------------------------------------------
# 4. serve() as a real process
# ---------------------------------------------------------------------------


def test_serve_subprocess(tmp_path: Path) -> None:
    address_file = tmp_path / "run" / "broker.addr"  # parent does not exist yet
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingestion.embedded_broker", "--topic", "t:2", "--address-file", str(address_file)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"broker exited early ({proc.returncode}): {proc.stderr.read()}")
            return address_file.exists()

        _wait_for(ready, 15.0, "the address file")
        addr = address_file.read_text().strip()
        assert addr.startswith("127.0.0.1:")
        assert proc.stdout.readline().strip() == f"bootstrap.servers={addr}"
        assert not list(address_file.parent.glob("*.tmp")), "temporary file left behind"

        md = AdminClient({"bootstrap.servers": addr, "log_level": 3}).list_topics(timeout=10)
        assert len(md.topics["t"].partitions) == 2

        records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(200)]
        _produce_all(_producer(addr, **{"acks": "all"}), "t", records)
        consumer = _consumer(addr, _unique("g-serve"))
        try:
            consumer.subscribe(["t"])
            got = _consume_n(consumer, len(records))
        finally:
            consumer.close()
        assert {(m.key(), m.value()) for m in got} == set(records)

        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=5)
        stderr = proc.stderr.read()
        assert rc == 0, f"exit code {rc}; stderr: {stderr}"
        assert not address_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        proc.stdout.close()
        proc.stderr.close()


def test_serve_in_thread_with_stop_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    from ingestion.embedded_broker import serve

    address_file = tmp_path / "nested" / "addr"
    stop = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve(topics={"x": 3}, address_file=address_file, ready=seen.append, stop_event=stop)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: bool(seen) or bool(errors), 10.0, "serve() to become ready")
        assert not errors, errors
        assert address_file.read_text().strip() == seen[0]
        md = AdminClient({"bootstrap.servers": seen[0], "log_level": 3}).list_topics(timeout=10)
        assert len(md.topics["x"].partitions) == 3
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert not errors, errors
    assert not address_file.exists()
    assert f"bootstrap.servers={seen[0]}" in capsys.readouterr().out

    with pytest.raises(RuntimeError, match="stop_event"):
        # Off the main thread without a stop_event there is no way to stop it.
        outcome: list[BaseException] = []
        t = threading.Thread(target=lambda: _capture(outcome, serve, topics={}, address_file=None))
        t.start()
        t.join(timeout=5)
        raise outcome[0]


def _capture(outcome: list[BaseException], fn: Callable[..., object], **kwargs: object) -> None:
    try:
        fn(**kwargs)
    except BaseException as exc:
        outcome.append(exc)


# ---------------------------------------------------------------------------
# 5. fault injection
# ---------------------------------------------------------------------------


def test_broker_down_fails_delivery_and_broker_up_restores(broker: EmbeddedBroker) -> None:
    topic = _unique("faults")
    broker.create_topic(topic, 1)
    results: list = []

    producer = _producer(
        broker.bootstrap_servers,
        **{
            "message.timeout.ms": 1000,
            "linger.ms": 0,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 100,
            "retry.backoff.max.ms": 200,
            "log_level": 0,  # connection-refused noise is expected here
        },
    )

    def send(value: bytes) -> None:
        producer.produce(topic, value=value, on_delivery=lambda err, msg: results.append((err, msg)))

    send(b"before")
    assert producer.flush(10) == 0
    assert results.pop()[0] is None

    broker.broker_down(1)
    send(b"during")
    assert producer.flush(10) == 0  # the timeout makes the delivery report arrive
    err, _ = results.pop()
    assert err is not None and err.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT)

    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers, "log_level": 0})
    started = time.monotonic()
    with pytest.raises(KafkaException):
        admin.list_topics(topic=topic, timeout=0.5)
    assert time.monotonic() - started < 3

    broker.broker_up(1)
    # The broker accepts connections again at once, but the client re-bootstraps and
    # backs off its metadata refresh (up to retry.backoff.max.ms), so the first message
    # after the outage may still time out: retry under a deadline until one gets through.
    delivered = None
    deadline = time.monotonic() + 10
    while delivered is None:
        assert time.monotonic() < deadline, "producer did not recover after broker_up"
        send(b"after")
        assert producer.flush(10) == 0
        err, msg = results.pop()
        if err is None:
            delivered = msg
    assert delivered.offset() >= 1
    assert admin.list_topics(timeout=10).topics[topic].error is None


def test_set_rtt_delays_responses(broker: EmbeddedBroker) -> None:
    topic = _unique("rtt")
    broker.create_topic(topic, 1)
    producer = _producer(broker.bootstrap_servers, **{"linger.ms": 0})
    _produce_all(producer, topic, [(b"k", b"warm-up")])  # connection + metadata established

    broker.set_rtt(1, 300)
    started = time.monotonic()
    _produce_all(producer, topic, [(b"k", b"slow")])
    assert time.monotonic() - started >= 0.3

    broker.set_rtt(1, 0)
    with pytest.raises(ValueError):
        broker.set_rtt(7, 10)  # no such broker
