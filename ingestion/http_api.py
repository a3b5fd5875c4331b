"""Producers over HTTP: ``POST /v1/streams/{stream}/events`` publishes records to a stream's raw topic.

A request holds one JSON object or an array of them. Each record is checked by the producer's
validator (:class:`streamsight.validation.RecordValidator`); valid records are published keyed by
the contract's key, rejected ones with their reason code in the headers (as every producer sends
them: the stream moves them to the dead-letter topic and table). The answer comes once Kafka has
acknowledged (acks=all) every record of the request:

* ``202`` every record was valid: ``accepted``;
* ``400`` some were not: ``accepted`` (published, do not send them again) and, for each rejected
  record, its index, reason code and message. A body that is not JSON, or an empty array, is
  refused whole and nothing is published;
* ``404`` unknown stream; ``413`` body over ``api.max_body_bytes`` or more than ``api.max_records``
  records; ``415`` not ``application/json``;
* ``503`` with ``Retry-After`` when Kafka did not acknowledge within ``api.publish_timeout_s``.
  Records of that request may have been stored: sending them again is safe, the stream keeps one
  per de-duplication key.

The router takes its state from ``request.app.state.events`` (an :class:`EventIngest` the app's
lifespan opens), never from module globals.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, Field

from ingestion.producer import (
    ACCESS_ERRORS,
    Headers,
    check_payload,
    produce_batch_once,
    record_key,
    rejected_message,
)
from streamsight.contracts import Contract
from streamsight.kafka import confluent_config
from streamsight.settings import ApiSettings, Settings
from streamsight.validation import RecordValidator
from streamsight.web import ErrorBody, json_body

log = logging.getLogger("ingestion.http_api")

class PublishError(Exception):
    """Kafka did not acknowledge every record."""

    def __init__(self, message: str, *, unavailable: bool) -> None:
        super().__init__(message)
        self.unavailable = unavailable  # the broker's absence or slowness (503), not a refusal


class _Deliveries:
    """The delivery reports of one request's messages; resolves ``done`` on the event loop once
    every message has its report (reports arrive on the producer's poll thread, and on the event
    loop's for a message that was not even queued)."""

    __slots__ = ("done", "errors", "lock", "loop", "remaining")

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        self.remaining = count
        self.errors: list[Any] = []
        self.loop = loop
        self.lock = threading.Lock()
        self.done: asyncio.Future[None] = loop.create_future()

    def report(self, err: Any, _msg: Any) -> None:
        with self.lock:
            if err is not None:
                self.errors.append(err)
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class AsyncPublisher:
    """A confluent-kafka producer (idempotent, acks=all) for an asyncio server: a thread serves its
    delivery reports, and :meth:`publish` awaits every report of a request's messages.

    ``message.timeout.ms`` is ``api.publish_timeout_s``: a message Kafka has not acknowledged by
    then fails, so a request never waits longer than that (plus queueing).
    """

    def __init__(self, settings: Settings, servers: str) -> None:
        from confluent_kafka import Producer

        api = settings.api
        self.timeout_s = api.publish_timeout_s
        self._producer = Producer({
            **confluent_config(settings, servers),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": settings.kafka.compression,
            "linger.ms": api.linger_ms,
            "message.timeout.ms": int(api.publish_timeout_s * 1000),
            "queue.buffering.max.messages": 200_000,
            "error_cb": self._on_error,
            "logger": logging.getLogger("kafka.producer"),  # librdkafka's own log lines, through logging
        })
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve_reports, name="kafka-delivery-reports", daemon=True)
        self._thread.start()

    @staticmethod
    def _on_error(err: Any) -> None:
        log.warning("kafka: %s", err)

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def publish(self, topic: str, messages: list[tuple[bytes | None, bytes, Headers | None]]) -> None:
        """Produce ``messages`` (key, value, headers) and wait until Kafka acknowledged each one;
        raises :class:`PublishError` if any failed."""
        loop = asyncio.get_running_loop()
        deliveries = _Deliveries(len(messages), loop)
        deadline = time.monotonic() + self.timeout_s

        async def wait_for_room() -> None:  # the client's queue is full: deliveries drain it
            if time.monotonic() >= deadline:
                raise PublishError("the Kafka client's queue stayed full", unavailable=True)
            await asyncio.sleep(0.005)

        # Messages without headers (valid records) in one call; produce_batch takes no headers.
        pending = [{"value": v} if k is None else {"value": v, "key": k} for k, v, h in messages if h is None]
        while pending := produce_batch_once(self._producer, topic, pending, deliveries.report):
            await wait_for_room()
        for key, value, headers in messages:
            while headers is not None:
                try:
                    self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=deliveries.report)
                    break
                except BufferError:
                    await wait_for_room()
        try:  # every message fails by message.timeout.ms at the latest; the margin covers reporting
            await asyncio.wait_for(asyncio.shield(deliveries.done), self.timeout_s + 5.0)
        except TimeoutError:
            raise PublishError("no delivery report in time", unavailable=True) from None
        if deliveries.errors:
            names = sorted({e.name() for e in deliveries.errors})
            refused = any(n in ACCESS_ERRORS or n == "MSG_SIZE_TOO_LARGE" for n in names)  # retrying cannot help
            raise PublishError(f"{len(deliveries.errors)} of {len(messages)} records not acknowledged: {', '.join(names)}",
                               unavailable=not refused)

    async def reachable(self, timeout_s: float = 2.0) -> bool:
        """Whether a broker answers a metadata request within ``timeout_s``."""
        try:
            await asyncio.to_thread(self._producer.list_topics, timeout=timeout_s)
        except Exception:
            return False
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``), then stop the report thread."""
        self._producer.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class _Stream:
    contract: Contract
    validator: RecordValidator


class EventIngest:
    """What the events route needs: the streams by name, the publisher and the limits."""

    def __init__(self, contracts: dict[str, Contract], publisher: AsyncPublisher, api: ApiSettings,
                 metrics: Any = None) -> None:
        self.streams = {name: _Stream(c, RecordValidator(c)) for name, c in contracts.items()}
        self.publisher = publisher
        self.api = api
        self.metrics = metrics  # an object with accepted(stream, n) and rejected(stream, code), or None

    def stream(self, name: str) -> _Stream:
        found = self.streams.get(name)
        if found is None:
            raise HTTPException(404, f"unknown stream {name!r}; streams: {', '.join(sorted(self.streams)) or 'none'}")
        return found


async def get_ingest(request: Request) -> EventIngest:
    events: EventIngest = request.app.state.events
    return events


class RecordError(BaseModel):
    index: int = Field(description="The record's position in the request (0 for a single object).")
    code: str = Field(description="Reason code, as in the dead-letter table (e.g. MISSING_FIELD).")
    message: str


class Accepted(BaseModel):
    stream: str
    accepted: int = Field(description="Records Kafka acknowledged.")


class Rejected(BaseModel):
    detail: str
    stream: str
    accepted: int = Field(description="Valid records of the request, published: do not send them again.")
    rejected: list[RecordError] = Field(description="Invalid records, published to be dead-lettered.")
    request_id: str | None = None


_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}, "minItems": 1}]}}}}}

router = APIRouter(tags=["events"])
EVENTS_PATH = "/v1/streams/{stream}/events"


def stream_operation(generic: dict[str, Any], contract: Contract) -> dict[str, Any]:
    """The events operation of one stream for the OpenAPI document: its contract's JSON Schema as the
    body (one record or an array of them)."""
    import copy

    record = {k: v for k, v in contract.payload_schema.items() if k != "$schema"}
    operation = copy.deepcopy(generic)
    operation["parameters"] = [p for p in operation.get("parameters", []) if p.get("name") != "stream"]
    operation["operationId"] = f"post_{contract.name}_events"
    operation["summary"] = f"Publish records to {contract.name}"
    operation["description"] = contract.description or ""
    operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
        "oneOf": [record, {"type": "array", "items": record, "minItems": 1}]}}}}
    return operation


@router.post(
    EVENTS_PATH, status_code=202, response_model=Accepted, openapi_extra=_BODY,
    summary="Publish records to a stream",
    responses={400: {"model": Rejected, "description": "Invalid records (listed) or a body that is not JSON"},
               404: {"model": ErrorBody}, 413: {"model": ErrorBody}, 415: {"model": ErrorBody},
               503: {"model": ErrorBody, "description": "Kafka did not acknowledge in time; retry after Retry-After"}},
)
async def post_events(request: Request, stream: Annotated[str, Path(max_length=128)],
                      ingest: Annotated[EventIngest, Depends(get_ingest)]) -> Any:
    from fastapi.responses import JSONResponse

    target = ingest.stream(stream)
    body = await json_body(request, ingest.api.max_body_bytes)
    records = body if isinstance(body, list) else [body]
    if not records:
        raise HTTPException(400, "the array holds no records")
    if len(records) > ingest.api.max_records:
        raise HTTPException(413, f"{len(records)} records, more than api.max_records {ingest.api.max_records}")

    contract, validator = target.contract, target.validator
    messages: list[tuple[bytes | None, bytes, Headers | None]] = []
    errors: list[RecordError] = []
    for index, record in enumerate(records):
        value, rejection = check_payload(validator, record)
        key = record_key(record, contract.key)
        if rejection is None:
            messages.append((key, value, None))
        else:
            value, headers = rejected_message(value, rejection, source="api")
            messages.append((key, value, headers))
            errors.append(RecordError(index=index, code=rejection.code, message=rejection.reason))
    accepted = len(records) - len(errors)
    try:
        await ingest.publisher.publish(contract.raw_topic, messages)
    except PublishError as exc:
        log.error("publishing %d records to %s failed: %s", len(messages), contract.raw_topic, exc)
        if not exc.unavailable:
            raise HTTPException(500, "the server cannot publish to this stream") from None
        seconds = max(1, round(ingest.api.publish_timeout_s))
        raise HTTPException(503, f"Kafka did not acknowledge the records within {ingest.api.publish_timeout_s:g} s; "
                                 f"send them again after {seconds} s", headers={"Retry-After": str(seconds)}) from None
    if ingest.metrics is not None:
        ingest.metrics.accepted(stream, accepted)
        for error in errors:
            ingest.metrics.rejected(stream, error.code)
    if errors:
        payload = Rejected(detail=f"{len(errors)} of {len(records)} records are invalid", stream=stream,
                           accepted=accepted, rejected=errors, request_id=getattr(request.state, "request_id", None))
        return JSONResponse(payload.model_dump(), status_code=400)
    return Accepted(stream=stream, accepted=accepted)
