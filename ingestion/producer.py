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
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

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


class Publisher(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes, on_done: Any) -> None: ...
    def poll(self) -> None: ...
    def flush(self, timeout: float) -> int: ...


class ConfluentPublisher:
    """confluent-kafka producer: idempotent, acks=all, compressed, batched."""

    def __init__(self, settings: Settings, servers: str) -> None:
        from confluent_kafka import Producer

        self._producer = Producer({
            **confluent_config(settings, servers),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": settings.kafka.compression,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "message.timeout.ms": int(max(30.0, settings.kafka.connect_timeout_s * 3) * 1000),
        })

    def send(self, topic: str, key: bytes | None, value: bytes, on_done: Any) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key,
                                       on_delivery=lambda err, _msg: on_done(err is None, err))
                return
            except BufferError:  # local queue full: serve delivery reports, then retry
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
            "linger_ms": 20,
            "batch_size": 256 * 1024,
            "compression_type": "gzip" if settings.kafka.compression != "none" else None,
            "request_timeout_ms": int(max(30.0, settings.kafka.connect_timeout_s * 3) * 1000),
        }
        if settings.kafka.kafka_python_api_version:
            kwargs["api_version"] = tuple(int(p) for p in settings.kafka.kafka_python_api_version.split("."))
        self._producer = KafkaProducer(**kwargs)

    def send(self, topic: str, key: bytes | None, value: bytes, on_done: Any) -> None:
        future = self._producer.send(topic, key=key, value=value)
        future.add_callback(lambda _meta: on_done(True, None))
        future.add_errback(lambda exc: on_done(False, exc))

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


def _bounded(events: Iterable[Event], count: int | None, duration: float | None, stop: _StopFlag) -> Iterator[Event]:
    deadline = time.monotonic() + duration if duration else None
    for n, event in enumerate(events):
        if stop.stop or (count is not None and n >= count) or (deadline and time.monotonic() >= deadline):
            return
        yield event


def produce(settings: Settings, contract: Contract, events: Iterable[Event], *,
            rate: float | None = None, count: int | None = None, duration: float | None = None,
            client: str | None = None, validate: bool = True, progress: bool | None = None,
            servers: str | None = None) -> ProduceSummary:
    """Send ``events`` to the contract's topics; returns the summary (see :class:`ProduceSummary`).

    ``rate`` caps events per second; ``count``/``duration`` bound the run. ``validate=False`` sends
    records to the raw topic unchecked — only for testing the stream-side dead-letter path.
    Raises :class:`BrokerUnavailableError` quickly if the broker does not answer.
    """
    client = client or settings.kafka.client
    servers = check_broker(settings, servers)
    publisher = make_publisher(settings, servers, client)
    summary = ProduceSummary(stream=contract.name, client=client)
    validator = contract.validator() if validate else None
    key_field = contract.key
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def raw_done(ok: bool, err: Any) -> None:
        if ok:
            summary.delivered += 1
        else:
            summary.failed += 1
            log.error("delivery to %s failed: %s", contract.raw_topic, err)

    def dlq_done(ok: bool, err: Any) -> None:
        if ok:
            summary.invalid_delivered += 1
        else:
            summary.failed += 1
            log.error("delivery to %s failed: %s", contract.dead_letter_topic, err)

    def dead_letter(code: str, reason: str, raw: str) -> None:
        summary.invalid += 1
        summary.invalid_by_code[code] = summary.invalid_by_code.get(code, 0) + 1
        envelope = {"error_code": code, "reason": reason, "raw": raw, "source": "producer",
                    "stream": contract.name}
        publisher.send(contract.dead_letter_topic, None, dumps(envelope).encode(), dlq_done)

    bar = None
    if progress is None:
        progress = sys.stderr.isatty()
    if progress and count is not None:
        from tqdm import tqdm

        bar = tqdm(total=count, unit="ev", desc=f"produce {contract.name}", file=sys.stderr)

    started = time.monotonic()
    sent_total = 0
    with _StopFlag() as stop:
        for event in _bounded(events, count, duration, stop):
            if event.fault:
                summary.faults[event.fault] = summary.faults.get(event.fault, 0) + 1
            if event.payload is None:
                raw = (event.raw or b"").decode("utf-8", errors="replace")
                if validate:
                    dead_letter("MALFORMED_JSON", "not valid JSON", raw)
                else:
                    publisher.send(contract.raw_topic, None, event.raw or b"", raw_done)
                    summary.sent += 1
            else:
                payload = event.payload
                if validator is not None:
                    try:
                        validator(payload)
                    except RecordInvalid as exc:
                        dead_letter(exc.code, exc.reason, dumps(payload))
                        payload = None
                if payload is not None:
                    key = payload.get(key_field)
                    publisher.send(contract.raw_topic, None if key is None else str(key).encode(),
                                   dumps(payload).encode(), raw_done)
                    summary.sent += 1
            sent_total += 1
            if sent_total % 1000 == 0:
                publisher.poll()
                if bar is not None:
                    bar.update(1000)
            if rate:
                ahead = sent_total / rate - (time.monotonic() - started)
                if ahead > 0.005:
                    time.sleep(ahead)  # rate limiting, not synchronisation
        summary.interrupted = stop.stop
    remaining = publisher.flush(max(30.0, settings.kafka.connect_timeout_s * 3))
    if bar is not None:
        bar.update(sent_total % 1000)
        bar.close()
    if remaining:
        summary.failed += remaining
        log.error("%d messages were still undelivered after flushing", remaining)
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


__all__ = ["BrokerUnavailableError", "ProduceSummary", "produce"]
