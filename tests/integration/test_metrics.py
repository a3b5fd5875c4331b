"""Operational metrics: the streaming job publishes ConsumerLag, MicroBatchDurationMs,
DeadLetterRate and LateRowsDropped to CloudWatch -- here a real moto server on loopback -- with the dimensions the
terraform alarms use (Environment, Stream)."""

from __future__ import annotations

import json
import logging
import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest

from ingestion import sources
from ingestion.producer import produce
from streaming_jobs.metrics import CloudWatchMetrics, ProgressListener, consumer_lag
from streaming_jobs.pipeline import StreamJob, batch_stats
from streamsight.contracts import load_contracts
from streamsight.settings import load_settings
from tests.conftest import AI4I_CSV
from tests.integration.helpers import cli_env, isolated_contract, wait_for
from tests.moto_server import start_moto, stop, use_test_credentials

pytestmark = pytest.mark.integration


def test_consumer_lag_is_latest_minus_planned_end_over_every_partition():
    progress = {"sources": [
        {"endOffset": json.dumps({"t": {"0": 10, "1": 5}}), "latestOffset": json.dumps({"t": {"0": 25, "1": 5, "2": 7}})},
        {"endOffset": None, "latestOffset": None},  # a file source: no offsets to compare
    ]}
    assert consumer_lag(progress) == 15 + 0 + 7  # partition 2 is new: everything in it is lag
    assert consumer_lag({"sources": [{"endOffset": None, "latestOffset": None}]}) is None


class _Recorder:
    def __init__(self) -> None:
        self.points: list[tuple[str, dict[str, float]]] = []

    def publish(self, stream, values):
        self.points.append((stream, dict(values)))

    def close(self):
        pass


def test_listener_reports_the_largest_lag_of_the_streams_queries_and_ignores_others():
    sink = _Recorder()
    listener = ProgressListener(sink, {"s"})
    off = lambda n: json.dumps({"t": {"0": n}})  # noqa: E731
    listener.handle({"name": "s.bronze", "durationMs": {"triggerExecution": 120},
                     "sources": [{"endOffset": off(90), "latestOffset": off(100)}]})
    listener.handle({"name": "s.silver", "durationMs": {"triggerExecution": 300},
                     "sources": [{"endOffset": off(40), "latestOffset": off(100)}]})
    listener.handle({"name": "s.bronze", "durationMs": {"triggerExecution": 80},
                     "sources": [{"endOffset": off(100), "latestOffset": off(100)}]})
    listener.handle({"name": "other.silver", "durationMs": {"triggerExecution": 5}, "sources": []})
    assert sink.points == [
        ("s", {"MicroBatchDurationMs": 120.0, "ConsumerLag": 10.0}),
        ("s", {"MicroBatchDurationMs": 300.0, "ConsumerLag": 60.0}),
        ("s", {"MicroBatchDurationMs": 80.0, "ConsumerLag": 60.0}),  # silver is still 60 behind
    ]


def test_listener_counts_and_warns_of_rows_dropped_behind_the_watermark(caplog):
    sink = _Recorder()
    listener = ProgressListener(sink, {"s"})
    ops = lambda *dropped: [{"numRowsTotal": 9, "numRowsDroppedByWatermark": d} for d in dropped]  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="streaming_jobs.metrics"):
        listener.handle({"name": "s.silver", "batchId": 4, "sources": [], "stateOperators": ops(0)})
        listener.handle({"name": "s.silver", "batchId": 5, "sources": [], "stateOperators": ops(3)})
        listener.handle({"name": "s.gold_1h", "batchId": 2, "sources": [], "stateOperators": ops(1, 1)})
        listener.handle({"name": "s.bronze", "batchId": 7, "sources": []})  # no stateful operator
        ProgressListener(None, {"s"}).handle({"name": "s.silver", "batchId": 6, "stateOperators": ops(2)})
    assert sink.points == [("s", {"LateRowsDropped": 0.0}), ("s", {"LateRowsDropped": 3.0}),
                           ("s", {"LateRowsDropped": 2.0})]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3  # batches 5, 2 (gold) and 6 (no sink: warned all the same)
    assert "s.silver: micro-batch 5 dropped 3 rows" in warnings[0] and "in bronze, not in silver" in warnings[0]
    assert "s.gold_1h: micro-batch 2 dropped 2 rows" in warnings[1] and "no window counted them" in warnings[1]
    assert "micro-batch 6 dropped 2 rows" in warnings[2]


@pytest.fixture
def moto(tmp_path, monkeypatch):
    use_test_credentials(monkeypatch)
    proc, endpoint = start_moto(tmp_path / "moto.log")
    yield endpoint
    stop(proc)


def test_streaming_job_publishes_the_alarmed_metrics_to_cloudwatch(spark, kafka_broker, tmp_path, monkeypatch, moto):
    import boto3

    contracts_dir = isolated_contract(tmp_path, kafka_broker)
    env = cli_env(tmp_path, kafka_broker, contracts_dir)
    for key in ("STREAMSIGHT_LAKE_DIR", "STREAMSIGHT_RUN_DIR", "STREAMSIGHT_CONTRACTS_DIR",
                "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("STREAMSIGHT_METRICS__SINK", "cloudwatch")
    monkeypatch.setenv("STREAMSIGHT_METRICS__ENVIRONMENT", "ci")
    monkeypatch.setenv("STREAMSIGHT_AWS__ENDPOINT_URL", moto)
    settings = load_settings()
    contract = load_contracts(contracts_dir)["machine_telemetry"]
    started = datetime.now(UTC) - timedelta(minutes=1)

    produce(settings, contract, sources.ai4i_source(AI4I_CSV, limit=300), progress=False)
    produce(settings, contract, sources.synthetic_source(
        contract, machines=3, seed=5, faults=sources.FaultSpec(malformed=0.5, schema=0.5)),
        count=20, validate=False, progress=False)
    StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers).run_until_idle()  # closes the sink

    stats = batch_stats(spark, settings, contract).where("rows_in + dead_letter > 0").collect()
    assert sum(r["dead_letter"] for r in stats) == 20 and sum(r["rows_in"] for r in stats) == 300

    cw = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=moto)
    dims = [{"Name": "Environment", "Value": "ci"}, {"Name": "Stream", "Value": "machine_telemetry"}]
    listed = {m["MetricName"] for m in cw.list_metrics(Namespace="Streamsight")["Metrics"]
              if sorted(m["Dimensions"], key=lambda d: d["Name"]) == dims}
    assert listed == {"ConsumerLag", "MicroBatchDurationMs", "DeadLetterRate", "LateRowsDropped"}

    def stat(name: str, statistic: str) -> list[float]:
        points = cw.get_metric_statistics(Namespace="Streamsight", MetricName=name, Dimensions=dims,
                                          StartTime=started, EndTime=datetime.now(UTC) + timedelta(minutes=1),
                                          Period=3600, Statistics=[statistic])["Datapoints"]
        return [p[statistic] for p in points]

    expected_rates = [100.0 * r["dead_letter"] / (r["rows_in"] + r["dead_letter"]) for r in stats]
    assert stat("DeadLetterRate", "Maximum") == [pytest.approx(max(expected_rates))]
    assert stat("ConsumerLag", "Minimum") == [0.0]  # caught up when the last batch was planned
    assert stat("LateRowsDropped", "Maximum") == [0.0]  # AI4I replayed in order: nothing late
    assert stat("MicroBatchDurationMs", "Minimum")[0] > 0


def _sink_at(endpoint: str) -> CloudWatchMetrics:
    settings = load_settings()
    return CloudWatchMetrics(settings.model_copy(update={
        "aws": settings.aws.model_copy(update={"endpoint_url": endpoint})}))


def test_an_unreachable_cloudwatch_is_reported_and_counted(caplog, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    sink = _sink_at("http://127.0.0.1:1")  # nothing listens on port 1
    with caplog.at_level(logging.WARNING, logger="streaming_jobs.metrics"):
        for _ in range(3):
            sink.publish("s", {"ConsumerLag": 1.0})
        sink.close(timeout=60)
    assert sink.failed == 3 and sink.sent == 0
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # rate-limited, not one per data point
    assert "PutMetricData" in warnings[0] and "127.0.0.1:1" in warnings[0] and "aws.endpoint_url" in warnings[0]


def test_a_cloudwatch_that_never_answers_does_not_hold_up_the_stream(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    held: list[socket.socket] = []
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def accept_and_hold() -> None:  # a real TCP peer that reads nothing and never replies
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept_and_hold, daemon=True).start()
    sink = _sink_at(f"http://127.0.0.1:{port}")
    try:
        sink.publish("s", {"ConsumerLag": 1.0})  # returns at once ...
        wait_for(lambda: held, timeout=30, what="the metrics thread to connect")
        assert sink.sent == 0 and sink.failed == 0  # ... while the request is still in flight
        sink.publish("s", {"ConsumerLag": 2.0})  # and so does the next one
    finally:
        server.close()
        for conn in held:
            conn.close()
    sink.close(timeout=60)  # the peer is gone now: both data points fail, nothing waits forever
    assert sink.failed == 2 and sink.sent == 0
