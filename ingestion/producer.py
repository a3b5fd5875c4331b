"""Publishing events to a stream's Kafka topics, validated against its contract.

Valid records go to the contract's raw topic, keyed by the contract's key field. Records that break
the contract never reach the raw topic: they go to the dead-letter topic as a JSON envelope
``{"error_code", "reason", "raw", "source": "producer", "stream"}``, and are counted as invalid.
Delivery reports are counted; the summary says how many were sent, delivered, failed and invalid.
SIGINT/SIGTERM stop the source and flush what is queued.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from ingestion.columnar import BatchValidator, EventBatch, json_values, key_values, rows_as_dicts
from ingestion.sources import Event
from streamsight.contracts import Contract, RecordInvalid
from streamsight.errors import BrokerUnavailableError
from streamsight.kafka import check_broker, confluent_config, kafka_python_config
from streamsight.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ProduceSummary:
    stream: str
    client: str
    sent: int = 0           # accepted by the client for the raw topic
    delivered: int = 0      # acknowledged by the broker (raw topic)
    failed: int = 0         # delivery failed (raw or dead-letter topic)
    invalid: int = 0        # rejected by the contract, sent to the dead-letter topic
    invalid_delivered: int = 0
    faults: dict[str, int] = field(default_factory=dict)  # injected faults by kind (synthetic source)
    invalid_by_code: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.delivered == self.sent and self.invalid_delivered == self.invalid

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["events_per_second"] = round((self.sent + self.invalid) / self.seconds, 1) if self.seconds else 0.0
        return out


DeliveryCallback = Callable[[Any, Any], None]  # (error or None, message or None), as confluent-kafka calls it


class Publisher(Protocol):
    def send_batch(self, topic: str, keys: list[bytes | None], values: list[bytes], on_done: DeliveryCallback) -> None: ...
    def poll(self) -> None: ...
    def flush(self, timeout: float) -> int: ...


class ConfluentPublisher:
    """confluent-kafka producer: idempotent, acks=all, compressed, batched; messages are handed over
    a batch at a time (``produce_batch``), partitioned by key as ``produce`` would."""

    def __init__(self, settings: Settings, servers: str) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(self.config(settings, servers))

    @staticmethod
    def config(settings: Settings, servers: str) -> dict[str, Any]:
        """The librdkafka configuration of the producer."""
        return {
            **confluent_config(settings, servers),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": settings.kafka.compression,
            "linger.ms": settings.kafka.linger_ms,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "message.timeout.ms": int(max(30.0, settings.kafka.connect_timeout_s * 3) * 1000),
        }

    def send_batch(self, topic: str, keys: list[bytes | None], values: list[bytes], on_done: DeliveryCallback) -> None:
        from confluent_kafka import KafkaError

        pending = [{"value": v} if k is None else {"value": v, "key": k} for k, v in zip(keys, values)]
        while pending:
            try:
                queued = self._producer.produce_batch(topic, pending, on_delivery=on_done)
            except BufferError:  # local queue full: serve delivery reports, then retry
                self._producer.poll(0.05)
                continue
            if queued == len(pending):
                return
            retry = []
            for m in pending:
                err = m.get("_error")
                if err is None:
                    continue
                if err.code() == KafkaError._QUEUE_FULL:
                    del m["_error"]
                    retry.append(m)
                else:
                    on_done(err, None)  # not even queued: a failed delivery
            pending = retry
            if pending:
                self._producer.poll(0.05)

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float) -> int:
        return self._producer.flush(timeout)


class KafkaPythonPublisher:
    """kafka-python producer (the pure-Python alternative client)."""

    def __init__(self, settings: Settings, servers: str) -> None:
        from kafka import KafkaProducer

        kwargs: dict[str, Any] = {
            **kafka_python_config(settings, servers),
            "acks": "all",
            "linger_ms": settings.kafka.linger_ms,
            "batch_size": 256 * 1024,
            "compression_type": "gzip" if settings.kafka.compression != "none" else None,
            "request_timeout_ms": int(max(30.0, settings.kafka.connect_timeout_s * 3) * 1000),
        }
        self._producer = KafkaProducer(**kwargs)

    def send_batch(self, topic: str, keys: list[bytes | None], values: list[bytes], on_done: DeliveryCallback) -> None:
        ok = lambda _meta: on_done(None, None)  # noqa: E731
        failed = lambda exc: on_done(exc, None)  # noqa: E731
        for key, value in zip(keys, values):
            future = self._producer.send(topic, key=key, value=value)
            future.add_callback(ok)
            future.add_errback(failed)

    def poll(self) -> None:
        pass

    def flush(self, timeout: float) -> int:
        self._producer.flush(timeout=timeout)
        return 0


def make_publisher(settings: Settings, servers: str, client: str) -> Publisher:
    if client == "confluent":
        return ConfluentPublisher(settings, servers)
    if client == "kafka-python":
        return KafkaPythonPublisher(settings, servers)
    raise ValueError(f"--client: unknown client {client!r} (confluent, kafka-python)")


class _StopFlag:
    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread: the caller handles stopping
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        log.warning("signal %s: stopping the source and flushing", signum)
        self.stop = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


SEND_CHUNK = 1000  # records handed to the client at once on the row path


class _Outbox:
    """Messages waiting to be handed to the client, per topic, and the delivery counts."""

    def __init__(self, publisher: Publisher, contract: Contract, summary: ProduceSummary) -> None:
        self.publisher = publisher
        self.contract = contract
        self.summary = summary
        self.raw: tuple[list[bytes | None], list[bytes]] = ([], [])
        self.dead: list[bytes] = []

    def raw_done(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.summary.delivered += 1
        else:
            self.summary.failed += 1
            log.error("delivery to %s failed: %s", self.contract.raw_topic, err)

    def dead_done(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.summary.invalid_delivered += 1
        else:
            self.summary.failed += 1
            log.error("delivery to %s failed: %s", self.contract.dead_letter_topic, err)

    def add_raw(self, key: bytes | None, value: bytes) -> None:
        self.raw[0].append(key)
        self.raw[1].append(value)

    def add_raw_many(self, keys: list[bytes | None], values: list[bytes]) -> None:
        self.raw[0].extend(keys)
        self.raw[1].extend(values)

    def add_dead(self, value: bytes) -> None:
        self.dead.append(value)

    @property
    def pending(self) -> int:
        return len(self.raw[1]) + len(self.dead)

    def drain(self, limit: int | None = None) -> int:
        """Hand up to ``limit`` waiting messages (all by default) to the client; how many."""
        handed = 0
        keys, values = self.raw
        if values:
            take = len(values) if limit is None else min(limit, len(values))
            self.publisher.send_batch(self.contract.raw_topic, keys[:take], values[:take], self.raw_done)
            self.raw = (keys[take:], values[take:])
            self.summary.sent += take
            handed += take
        if self.dead and (limit is None or handed < limit):
            take = len(self.dead) if limit is None else min(limit - handed, len(self.dead))
            self.publisher.send_batch(self.contract.dead_letter_topic, [None] * take, self.dead[:take], self.dead_done)
            self.dead = self.dead[take:]
            handed += take
        self.publisher.poll()
        return handed


def _bounded(events: Iterable[Event | EventBatch], count: int | None, duration: float | None,
             stop: _StopFlag, piece: int | None = None) -> Iterator[Event | EventBatch]:
    """The events up to ``count`` / ``duration`` / a stop signal (a batch is cut to fit ``count``,
    and into pieces of about ``piece`` events, so that the bounds are checked that often)."""
    deadline = time.monotonic() + duration if duration else None
    n = 0
    for whole in events:
        for item in whole.split(piece) if piece and isinstance(whole, EventBatch) else (whole,):
            if stop.stop or (count is not None and n >= count) or (deadline and time.monotonic() >= deadline):
                return
            if isinstance(item, EventBatch) and count is not None and n + len(item) > count:
                item = item.head(count - n)
            n += len(item) if isinstance(item, EventBatch) else 1
            yield item


def produce(settings: Settings, contract: Contract, events: Iterable[Event | EventBatch], *,
            rate: float | None = None, count: int | None = None, duration: float | None = None,
            client: str | None = None, validate: bool = True, progress: bool | None = None,
            servers: str | None = None) -> ProduceSummary:
    """Send ``events`` to the contract's topics; returns the summary (see :class:`ProduceSummary`).

    ``events`` yields :class:`~ingestion.sources.Event` objects (the row path: each record checked
    by the exact validator and serialised with ``json``) or :class:`~ingestion.columnar.EventBatch`
    objects (the columnar path, see :mod:`ingestion.columnar`); both hand messages to the client
    about a thousand at a time.  ``rate`` caps events per second; ``count``/``duration`` bound the
    run.  ``validate=False`` sends records to the raw topic unchecked — only for testing the
    stream-side dead-letter path.  Raises :class:`BrokerUnavailableError` quickly if the broker
    does not answer.
    """
    client = client or settings.kafka.client
    servers = check_broker(settings, servers)
    publisher = make_publisher(settings, servers, client)
    summary = ProduceSummary(stream=contract.name, client=client)
    outbox = _Outbox(publisher, contract, summary)
    validator = contract.validator() if validate else None
    batch_validator = BatchValidator(contract) if validate else None
    key_field = contract.key
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def dead_letter(code: str, reason: str, raw: str) -> None:
        summary.invalid += 1
        summary.invalid_by_code[code] = summary.invalid_by_code.get(code, 0) + 1
        outbox.add_dead(dumps({"error_code": code, "reason": reason, "raw": raw, "source": "producer",
                               "stream": contract.name}).encode())

    def send_record(payload: dict[str, Any]) -> None:
        """One record on the row path: checked by the exact validator, then queued."""
        if validator is not None:
            try:
                validator(payload)
            except RecordInvalid as exc:
                dead_letter(exc.code, exc.reason, dumps(payload))
                return
        key = payload.get(key_field)
        outbox.add_raw(None if key is None else str(key).encode(), dumps(payload).encode())

    def send_unit(event: Event) -> None:
        if event.payload is not None:
            send_record(event.payload)
        elif validate:
            dead_letter("MALFORMED_JSON", "not valid JSON", (event.raw or b"").decode("utf-8", errors="replace"))
        else:
            outbox.add_raw(None, event.raw or b"")

    def send_batch(batch: EventBatch) -> None:
        for fault, n in batch.fault_counts().items():
            summary.faults[fault] = summary.faults.get(fault, 0) + n
        table, rest = batch.table, None
        if batch_validator is None:  # unchecked (validate=False): rows may hold anything, row path
            rest, table = table, table.slice(0, 0)
        elif table.num_rows:
            ok = batch_validator.accepted(table)
            if not ok.all():  # the exact validator decides these, and gives the reason
                rest, table = table.filter(pa.array(~ok)), table.filter(pa.array(ok))
        outbox.add_raw_many(key_values(table, key_field), json_values(table))
        for record in rows_as_dicts(rest) if rest is not None else ():
            send_record(record)
        for event in batch.extra:
            send_unit(event)

    bar = None
    if progress is None:
        progress = sys.stderr.isatty()
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count, unit="ev", desc=f"produce {contract.name}", file=sys.stderr)

    started = time.monotonic()
    handed = 0  # messages handed to the client (raw and dead-letter topics)
    # With a rate, batches are taken a quarter of a second's worth at a time (so --duration and
    # signals are honoured that often) and messages go out in pieces of 50 ms' worth.
    piece = max(1, int(rate / 20)) if rate else None
    with _StopFlag() as stop:
        for item in _bounded(events, count, duration, stop, max(1, int(rate / 4)) if rate else None):
            if isinstance(item, EventBatch):
                send_batch(item)
            else:
                if item.fault:
                    summary.faults[item.fault] = summary.faults.get(item.fault, 0) + 1
                send_unit(item)
            while outbox.pending >= SEND_CHUNK or (rate and outbox.pending):
                n = outbox.drain(piece)
                handed += n
                if bar is not None:
                    bar.update(n)
                if rate:
                    ahead = handed / rate - (time.monotonic() - started)
                    if ahead > 0.005:
                        time.sleep(ahead)  # rate limiting, not synchronisation
        summary.interrupted = stop.stop
    n = outbox.drain()
    remaining = publisher.flush(max(30.0, settings.kafka.connect_timeout_s * 3))
    if bar is not None:
        bar.update(n)
        bar.close()
    if remaining:
        summary.failed += remaining
        log.error("%d messages were still undelivered after flushing", remaining)
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


__all__ = ["BrokerUnavailableError", "ProduceSummary", "produce"]
