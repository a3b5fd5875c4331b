"""Operational metrics of the streaming jobs, one data point per micro-batch and stream.

What the CloudWatch alarms and dashboard of ``terraform/modules/monitoring`` watch (namespace
``settings.metrics.namespace``, dimensions ``Environment=settings.metrics.environment`` and
``Stream=<contract>``)::

    ConsumerLag           Count         records between the last planned offsets and the latest
                                        offsets of the topics, summed over partitions (the largest
                                        over the stream's Kafka-reading queries)
    MicroBatchDurationMs  Milliseconds  wall time of one micro-batch (``triggerExecution``)
    DeadLetterRate        Percent       100 * dead-letter records / input records of a silver batch
    LateRowsDropped       Count         rows of a micro-batch that Spark's stateful operator dropped
                                        because their event time was behind the watermark: in the
                                        silver query, events that are in bronze but not in silver;
                                        in a gold query, window rows (a silver row behind the
                                        watermark counts once per window it falls in)

The first two and the last come from each query's progress report (a :class:`ProgressListener`
registered on the session, which also logs a warning for every batch that dropped late rows, with
or without a sink); DeadLetterRate from the silver query's batch writer, which is the one that knows.

Sinks (``settings.metrics.sink``): ``none``; ``log`` (one INFO line per data point); ``cloudwatch``
(``PutMetricData`` through boto3, region and endpoint from ``settings.aws``).  Publishing never
blocks or stops a stream: data points go through a bounded queue to one background thread, calls
have short timeouts, and failures are logged as warnings (at most one a minute) with the reason.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from streamsight.settings import Settings

log = logging.getLogger(__name__)

CONSUMER_LAG = "ConsumerLag"
MICRO_BATCH_DURATION = "MicroBatchDurationMs"
DEAD_LETTER_RATE = "DeadLetterRate"
LATE_ROWS_DROPPED = "LateRowsDropped"
UNITS = {CONSUMER_LAG: "Count", MICRO_BATCH_DURATION: "Milliseconds", DEAD_LETTER_RATE: "Percent",
         LATE_ROWS_DROPPED: "Count"}


class MetricsSink(Protocol):
    def publish(self, stream: str, values: Mapping[str, float]) -> None: ...
    def close(self) -> None: ...


class NoMetrics:
    def publish(self, stream: str, values: Mapping[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class LogMetrics:
    def __init__(self, environment: str) -> None:
        self.environment = environment

    def publish(self, stream: str, values: Mapping[str, float]) -> None:
        log.info("metrics %s/%s: %s", self.environment, stream,
                 ", ".join(f"{k}={v:g}" for k, v in sorted(values.items())))

    def close(self) -> None:
        pass


class CloudWatchMetrics:
    """``PutMetricData`` from a background thread; the caller never waits for AWS."""

    QUEUE_SIZE = 1000

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.namespace = settings.metrics.namespace
        self.environment = settings.metrics.environment
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "cloudwatch", region_name=settings.aws.region, endpoint_url=settings.aws.endpoint_url,
                config=Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}),
            )
        self._client = client
        self._queue: queue.Queue[tuple[str, dict[str, float], datetime] | None] = queue.Queue(self.QUEUE_SIZE)
        self._last_warning = 0.0
        self.sent = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="streamsight-metrics", daemon=True)
        self._thread.start()

    def publish(self, stream: str, values: Mapping[str, float]) -> None:
        try:
            self._queue.put_nowait((stream, dict(values), datetime.now(UTC)))
        except queue.Full:
            self._warn("metrics queue full (CloudWatch too slow or unreachable); dropping a data point")

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (bounded by ``timeout``), then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            stream, values, at = item
            data = [{
                "MetricName": name,
                "Dimensions": [{"Name": "Environment", "Value": self.environment}, {"Name": "Stream", "Value": stream}],
                "Timestamp": at,
                "Value": float(value),
                "Unit": UNITS.get(name, "None"),
            } for name, value in values.items()]
            try:
                self._client.put_metric_data(Namespace=self.namespace, MetricData=data)
                self.sent += len(data)
            except Exception as exc:
                self.failed += len(data)
                self._warn(f"CloudWatch PutMetricData to namespace {self.namespace} failed: {exc}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning("%s (settings: metrics.sink, aws.region, aws.endpoint_url)", message)


def make_sink(settings: Settings) -> MetricsSink:
    sink = settings.metrics.sink
    if sink == "cloudwatch":
        return CloudWatchMetrics(settings)
    if sink == "log":
        return LogMetrics(settings.metrics.environment)
    return NoMetrics()


def consumer_lag(progress: Mapping[str, Any]) -> int | None:
    """Records between each Kafka source's planned end offsets and its latest offsets, summed.

    ``None`` when no source of the query reports both (e.g. a file source).
    """
    total, seen = 0, False
    for source in progress.get("sources", []):
        latest, end = _offsets(source.get("latestOffset")), _offsets(source.get("endOffset"))
        if latest is None or end is None:
            continue
        seen = True
        for topic, parts in latest.items():
            for pid, off in parts.items():
                total += max(0, int(off) - int(end.get(topic, {}).get(pid, 0)))
    return total if seen else None


def _offsets(value: Any) -> dict[str, dict[str, int]] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        return None
    return value


def _listener_base() -> type:
    from pyspark.sql.streaming import StreamingQueryListener

    return StreamingQueryListener


def late_rows(progress: Mapping[str, Any]) -> int | None:
    """Rows the query's stateful operators dropped as later than the watermark in this micro-batch
    (``numRowsDroppedByWatermark``); ``None`` for a query without one."""
    operators = progress.get("stateOperators") or []
    if not operators:
        return None
    return sum(int(op.get("numRowsDroppedByWatermark") or 0) for op in operators)


class ProgressListener(_listener_base()):  # type: ignore[misc]
    """Publishes ConsumerLag, MicroBatchDurationMs and LateRowsDropped from the progress of the
    named queries, and warns of every micro-batch that dropped late rows (``sink`` None: warns only).

    Queries are named ``<stream>.<query>`` by :class:`streaming_jobs.pipeline.StreamJob`; others
    are ignored.
    """

    def __init__(self, sink: MetricsSink | None, streams: set[str]) -> None:
        self.sink = sink
        self.streams = set(streams)
        self._lag: dict[tuple[str, str], int] = {}

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        try:
            self.handle(json.loads(event.progress.json))
        except Exception:
            log.warning("could not publish the metrics of a micro-batch", exc_info=True)

    def handle(self, progress: Mapping[str, Any]) -> None:
        name = progress.get("name") or ""
        stream, _, query = name.rpartition(".")
        if stream not in self.streams:
            return
        values: dict[str, float] = {}
        duration = (progress.get("durationMs") or {}).get("triggerExecution")
        if duration is not None:
            values[MICRO_BATCH_DURATION] = float(duration)
        lag = consumer_lag(progress)
        if lag is not None:
            self._lag[(stream, query)] = lag
            values[CONSUMER_LAG] = float(max(v for (s, _q), v in self._lag.items() if s == stream))
        late = late_rows(progress)
        if late is not None:
            values[LATE_ROWS_DROPPED] = float(late)
            if late:
                where = "they are in bronze, not in silver" if query == "silver" else "no window counted them"
                log.warning("%s: micro-batch %s dropped %d rows whose event time was behind the watermark "
                            "(%s; the contract's watermark sets how late an event may be)",
                            name, progress.get("batchId"), late, where)
        if values and self.sink is not None:
            self.sink.publish(stream, values)


def dead_letter_rate(dead: int, total: int) -> float:
    """100 * dead / total (0 for an empty batch)."""
    return 100.0 * dead / total if total else 0.0
