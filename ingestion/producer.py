"""Publishing a source's records to a stream's raw topic, each checked against its contract.

Every record a source yields is published to the raw topic, keyed by the contract's key field:

* a valid record as it is;
* a record the producer's validator (:class:`streamsight.validation.RecordValidator`) rejects with
  its reason code and reason in the message headers (:data:`streamsight.contracts.REJECTION_HEADERS`),
  so the pipeline dead-letters it with that code. A record larger than the contract's
  ``max_record_bytes`` travels as its first :data:`OVERSIZE_KEPT_BYTES` bytes, with its size.

A producer's Kafka principal therefore needs to write raw topics only. Blank lines of a file are
counted, not sent. The summary accounts for every input: ``records`` = ``sent`` + ``invalid``,
``delivered`` / ``invalid_delivered`` what the broker acknowledged. A broker that refuses the
principal (authentication, authorization) stops the run at the first such delivery report with
:class:`~streamsight.errors.BrokerAccessError`. SIGINT/SIGTERM stop the source and flush what is
queued.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import orjson
import pyarrow as pa

from ingestion.columnar import EventBatch, json_values, key_values, plain_table, rows_as_dicts
from ingestion.sources import Event
from streamsight.contracts import REJECTION_HEADERS, Contract
from streamsight.errors import BrokerAccessError, BrokerUnavailableError
from streamsight.kafka import check_broker, confluent_config, kafka_python_config
from streamsight.settings import Settings
from streamsight.validation import RecordValidator, Rejection

log = logging.getLogger(__name__)

OVERSIZE_KEPT_BYTES = 65_536
# Delivery errors that no retry mends: the principal may not write here.
ACCESS_ERRORS = ("TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED", "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
                 "_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "TopicAuthorizationFailedError",
                 "ClusterAuthorizationFailedError", "AuthenticationFailedError")


@dataclass
class ProduceSummary:
    stream: str
    client: str
    records: int = 0        # records the source yielded (blank lines are not records)
    blank: int = 0          # blank lines skipped
    sent: int = 0           # valid records handed to the client
    delivered: int = 0      # valid records the broker acknowledged
    invalid: int = 0        # rejected records, published with their reason in the headers
    invalid_delivered: int = 0
    failed: int = 0         # deliveries that failed (either kind)
    faults: dict[str, int] = field(default_factory=dict)  # injected faults by kind (synthetic source)
    invalid_by_code: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.delivered == self.sent and self.invalid_delivered == self.invalid

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["events_per_second"] = round(self.records / self.seconds, 1) if self.seconds else 0.0
        return out


DeliveryCallback = Callable[[Any, Any], None]  # (error or None, message or None), as confluent-kafka calls it
Headers = list[tuple[str, str | bytes | None]]


class Publisher(Protocol):
    def send_batch(self, topic: str, keys: list[bytes | None], values: list[bytes], on_done: DeliveryCallback) -> None: ...
    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers, on_done: DeliveryCallback) -> None: ...
    def poll(self) -> None: ...
    def flush(self, timeout: float) -> int: ...
    reports_success: bool  # whether delivered messages get a report too (else only failed ones)


def produce_batch_once(producer: Any, topic: str, pending: list[dict[str, Any]], on_done: DeliveryCallback
                       ) -> list[dict[str, Any]]:
    """One ``produce_batch`` call of a confluent-kafka ``producer``: the messages its full queue did not
    take, to send again; a message it refused for another reason gets its failed delivery report."""
    from confluent_kafka import KafkaError

    try:
        queued = producer.produce_batch(topic, pending, on_delivery=on_done)
    except BufferError:
        return pending
    if queued == len(pending):
        return []
    retry = []
    for message in pending:
        err: Any = message.pop("_error", None)
        if err is not None and err.code() == KafkaError._QUEUE_FULL:
            retry.append(message)
        elif err is not None:
            on_done(err, None)  # not even queued: a failed delivery
    return retry


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
            "message.max.bytes": 1_048_576,
            "queue.buffering.max.messages": 500_000,
            "message.timeout.ms": int(max(30.0, settings.kafka.connect_timeout_s * 3) * 1000),
            # a report per failed message only: flush() waits for every one, so the rest were delivered
            "delivery.report.only.error": True,
        }

    def send_batch(self, topic: str, keys: list[bytes | None], values: list[bytes], on_done: DeliveryCallback) -> None:
        pending = [{"value": v} if k is None else {"value": v, "key": k} for k, v in zip(keys, values)]
        while pending := produce_batch_once(self._producer, topic, pending, on_done):
            self._producer.poll(0.05)  # local queue full: serve delivery reports, then retry

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers, on_done: DeliveryCallback) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_done)
                return
            except BufferError:
                self._producer.poll(0.05)

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float) -> int:
        return self._producer.flush(timeout)

    reports_success = False  # delivery.report.only.error


class KafkaPythonPublisher:
    """kafka-python producer (the pure-Python alternative client)."""

    def __init__(self, settings: Settings, servers: str) -> None:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            **kafka_python_config(settings, servers),
            acks="all",
            linger_ms=settings.kafka.linger_ms,
            batch_size=256 * 1024,
            max_request_size=1_048_576,
            compression_type="gzip" if settings.kafka.compression != "none" else None,
            request_timeout_ms=int(max(30.0, settings.kafka.connect_timeout_s * 3) * 1000),
        )

    def send_batch(self, topic: str, keys: list[bytes | None], values: list[bytes], on_done: DeliveryCallback) -> None:
        for key, value in zip(keys, values):
            self.send(topic, key, value, [], on_done)

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers, on_done: DeliveryCallback) -> None:
        future = self._producer.send(topic, key=key, value=value, headers=headers or None)
        future.add_callback(lambda _meta: on_done(None, None))
        future.add_errback(lambda exc: on_done(exc, None))

    def poll(self) -> None:
        pass

    def flush(self, timeout: float) -> int:
        self._producer.flush(timeout=timeout)
        return 0

    reports_success = True


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
            with contextlib.suppress(ValueError):  # not in the main thread: the caller handles stopping
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        log.warning("signal %s: stopping the source and flushing", signum)
        self.stop = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


SEND_CHUNK = 1000  # records handed to the client at once


def _error_name(err: Any) -> str:
    name = getattr(err, "name", None)
    return name() if callable(name) else type(err).__name__


class _Outbox:
    """Messages waiting to be handed to the client, and the delivery counts."""

    def __init__(self, publisher: Publisher, contract: Contract, summary: ProduceSummary) -> None:
        self.publisher = publisher
        self.topic = contract.raw_topic
        self.summary = summary
        self.keys: list[bytes | None] = []
        self.values: list[bytes] = []
        self.refused: str | None = None  # the first access error a delivery report gave
        self.failed_valid = 0
        self.failed_invalid = 0

    def _failed(self, err: Any) -> None:
        self.summary.failed += 1
        name = _error_name(err)
        if name in ACCESS_ERRORS and self.refused is None:
            self.refused = f"{name}: {err}"
        elif self.summary.failed <= 10:
            log.error("delivery to %s failed: %s", self.topic, err)

    def valid_done(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.summary.delivered += 1
        else:
            self.failed_valid += 1
            self._failed(err)

    def invalid_done(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.summary.invalid_delivered += 1
        else:
            self.failed_invalid += 1
            self._failed(err)

    def add(self, key: bytes | None, value: bytes) -> None:
        self.keys.append(key)
        self.values.append(value)

    def add_many(self, keys: list[bytes | None], values: list[bytes]) -> None:
        self.keys.extend(keys)
        self.values.extend(values)

    def add_rejected(self, key: bytes | None, value: bytes, rejection: Rejection) -> None:
        value, headers = rejected_message(value, rejection)
        self.summary.invalid += 1
        codes = self.summary.invalid_by_code
        codes[rejection.code] = codes.get(rejection.code, 0) + 1
        self.publisher.send(self.topic, key, value, headers, self.invalid_done)

    @property
    def pending(self) -> int:
        return len(self.values)

    def drain(self, limit: int | None = None) -> int:
        """Hand up to ``limit`` waiting messages (all by default) to the client; how many."""
        take = len(self.values) if limit is None else min(limit, len(self.values))
        if take:
            self.publisher.send_batch(self.topic, self.keys[:take], self.values[:take], self.valid_done)
            del self.keys[:take], self.values[:take]
            self.summary.sent += take
        self.publisher.poll()
        return take


def rejected_message(value: bytes, rejection: Rejection, source: str = "producer") -> tuple[bytes, Headers]:
    """A rejected record's message value and headers, as the stream dead-letters it with the
    rejection's code (a value over OVERSIZE_KEPT_BYTES travels cut, with its size)."""
    headers: Headers = [(REJECTION_HEADERS["code"], rejection.code.encode()),
                        (REJECTION_HEADERS["reason"], rejection.reason.encode("utf-8", "backslashreplace")[:2000]),
                        (REJECTION_HEADERS["source"], source.encode())]
    if len(value) > OVERSIZE_KEPT_BYTES and rejection.code == "RECORD_TOO_LARGE":
        headers.append((REJECTION_HEADERS["bytes"], str(len(value)).encode()))
        value = value[:OVERSIZE_KEPT_BYTES]
    return value, headers


def check_payload(validator: RecordValidator, payload: Any) -> tuple[bytes, Rejection | None]:
    """A parsed record's message value and the verdict on it: JSON it can be written as, within the
    contract's ``max_record_bytes``, an object, valid against the contract."""
    value, rejection = serialise_record(payload)
    if rejection is None:
        if len(value) > validator.max_bytes:
            rejection = Rejection("RECORD_TOO_LARGE", f"{len(value)} bytes, more than the contract's "
                                                      f"max_record_bytes {validator.max_bytes}")
        elif not isinstance(payload, dict):
            rejection = Rejection("NOT_AN_OBJECT", "the record is not an object")
        else:
            rejection = validator.check_record(payload)
    return value, rejection


def record_key(record: Any, key_field: str) -> bytes | None:
    """The Kafka message key of a parsed record: its contract key field, as UTF-8 text."""
    key = record.get(key_field) if isinstance(record, dict) else None
    return None if key is None else str(key).encode("utf-8", "backslashreplace")


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


def _like_orjson(value: Any) -> Any:
    """What orjson writes for the objects it writes and the standard library's encoder does not."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_like_orjson).encode
# orjson writes the JSON value _dumps writes, faster (a number may be spelled otherwise: 1e-7 for
# 1e-07), except NaN, which it writes as null (output holding null takes _dumps's path, which
# refuses NaN); subclasses of str, int, float, dict and list, datetimes and dataclasses are passed
# through to its default, which refuses them so that _dumps decides.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def serialise_record(payload: Any) -> tuple[bytes, Rejection | None]:
    """A record object as JSON bytes; a rejection if it cannot be (a NaN, a lone surrogate, a set, a
    datetime). A UUID is written as its text and an enum member as its value."""
    try:
        value = orjson.dumps(payload, option=_ORJSON_OPTIONS)
        if b"null" not in value:
            return value, None
    except TypeError:  # orjson.JSONEncodeError included
        pass
    try:
        return _dumps(payload).encode("utf-8"), None
    except UnicodeEncodeError:
        text = json.dumps(payload, default=repr, allow_nan=True)
        return text.encode(), Rejection("NOT_UTF8", "a string is not Unicode text (it holds a lone surrogate or "
                                                    "bytes a file did not decode as UTF-8)")
    except (TypeError, ValueError) as exc:
        return repr(payload).encode("utf-8", "backslashreplace"), Rejection("MALFORMED_RECORD", f"not JSON: {exc}")


def produce(settings: Settings, contract: Contract, events: Iterable[Event | EventBatch], *,
            rate: float | None = None, count: int | None = None, duration: float | None = None,
            client: str | None = None, validate: bool = True, progress: bool | None = None,
            servers: str | None = None) -> ProduceSummary:
    """Send ``events`` to the contract's raw topic; returns the summary (see :class:`ProduceSummary`).

    ``events`` yields :class:`~ingestion.sources.Event` objects (a record, as bytes or as an
    object) or :class:`~ingestion.columnar.EventBatch` objects (many records as an Arrow table);
    both are handed to the client about a thousand at a time. ``rate`` caps records per second;
    ``count``/``duration`` bound the run. ``validate=False`` sends every record unchecked and
    unflagged (for testing the stream's own validation). Raises
    :class:`~streamsight.errors.BrokerUnavailableError` quickly if the broker does not answer and
    :class:`~streamsight.errors.BrokerAccessError` if it refuses the records.
    """
    client = client or settings.kafka.client
    servers = check_broker(settings, servers)
    publisher = make_publisher(settings, servers, client)
    summary = ProduceSummary(stream=contract.name, client=client)
    outbox = _Outbox(publisher, contract, summary)
    validator = RecordValidator(contract)
    key_field = contract.key

    def key_of(record: Any) -> bytes | None:
        return record_key(record, key_field)

    def send_bytes(raw: bytes) -> None:
        if not validate:
            outbox.add(None, raw)
            return
        record, rejection = validator.check_bytes(raw)
        if rejection is None:
            outbox.add(key_of(record), raw)
        else:
            outbox.add_rejected(key_of(record), raw, rejection)

    def send_record(payload: Any) -> None:
        value, rejection = check_payload(validator, payload) if validate else serialise_record(payload)
        if rejection is None or not validate:
            outbox.add(key_of(payload), value)
        else:
            outbox.add_rejected(key_of(payload), value, rejection)

    def send_event(event: Event, counted: bool = False) -> None:
        if event.fault and not counted:
            summary.faults[event.fault] = summary.faults.get(event.fault, 0) + 1
        if event.raw is not None and event.payload is None and not event.raw.strip(b" \t\r\n"):
            summary.blank += 1
            return
        summary.records += 1
        if event.rejection is not None:
            outbox.add_rejected(None, event.raw or b"", event.rejection)
        elif event.payload is not None:
            send_record(event.payload)
        else:
            send_bytes(event.raw or b"")

    def send_batch(batch: EventBatch) -> None:
        for fault, n in batch.fault_counts().items():  # of its rows and of its extra events
            summary.faults[fault] = summary.faults.get(fault, 0) + n
        table, rest = batch.table, None
        if not plain_table(table):
            rest, table = table, table.slice(0, 0)
        elif validate:
            ok = validator.accepted_rows(table)
            if not ok.all():  # the rejected rows one by one, for their reason codes
                rest, table = table.filter(pa.array(~ok)), table.filter(pa.array(ok))
        summary.records += table.num_rows  # valid and plainly written: one Arrow join
        outbox.add_many(key_values(table, key_field), json_values(table))
        for record in rows_as_dicts(rest) if rest is not None else ():
            send_event(Event(payload=record))
        for event in batch.extra:
            send_event(event, counted=True)

    bar = None
    if progress is None:
        progress = sys.stderr.isatty()
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count, unit="ev", desc=f"produce {contract.name}", file=sys.stderr)

    started = time.monotonic()
    handed = 0  # records handed to the client
    # With a rate, batches are taken a quarter of a second's worth at a time (so --duration and
    # signals are honoured that often) and messages go out in pieces of 50 ms' worth.
    piece = max(1, int(rate / 20)) if rate else None
    with _StopFlag() as stop:
        for item in _bounded(events, count, duration, stop, max(1, int(rate / 4)) if rate else None):
            if isinstance(item, EventBatch):
                send_batch(item)
            else:
                send_event(item)
            while outbox.pending >= SEND_CHUNK or (rate and outbox.pending):
                n = outbox.drain(piece)
                handed += n
                if bar is not None:
                    bar.update(n)
                if rate:
                    ahead = handed / rate - (time.monotonic() - started)
                    if ahead > 0.005:
                        time.sleep(ahead)  # rate limiting, not synchronisation
            if outbox.refused:
                break
        summary.interrupted = stop.stop
    n = outbox.drain()
    remaining = publisher.flush(max(30.0, settings.kafka.connect_timeout_s * 3))
    if bar is not None:
        bar.update(n)
        bar.close()
    summary.seconds = round(time.monotonic() - started, 3)
    if outbox.refused:
        who = settings.kafka.sasl_username or "the anonymous principal"
        raise BrokerAccessError(f"Kafka refused records for topic {contract.raw_topic} from {who}: {outbox.refused}. "
                                f"The principal needs WRITE on the topic (streamsight topics creates the ACLs); "
                                f"summary: {json.dumps(summary.as_dict())}")
    if remaining:
        summary.failed += remaining
        log.error("%d messages were still undelivered after flushing", remaining)
    if not publisher.reports_success:  # every message without a failure report was delivered
        summary.delivered = max(0, summary.sent - outbox.failed_valid - remaining)
        summary.invalid_delivered = summary.invalid - outbox.failed_invalid
    return summary


__all__ = ["BrokerUnavailableError", "ProduceSummary", "produce"]
