"""End to end on a real Kafka-protocol broker and local Spark: produce -> lake -> model -> predictions.

Reconciliation is against what the producers report and what the generator injected, never against
hard-coded numbers.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from ingestion import sources
from ingestion.producer import produce
from streaming_jobs import transforms as T
from streaming_jobs.lake_writer import BatchRecordLog
from streaming_jobs.pipeline import StreamJob, batch_stats, ops_uri
from streamsight.contracts import REJECTION_HEADERS, load_contracts
from streamsight.lake import read_table
from streamsight.settings import load_settings
from streamsight_cli.demo import reconcile
from tests.conftest import AI4I_CSV
from tests.integration.helpers import (
    ROOT,
    assert_same_rows_outside_spark,
    cli_env,
    isolated_contract,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def telemetry(tmp_path, kafka_broker, monkeypatch):
    contracts_dir = isolated_contract(tmp_path, kafka_broker)
    env = cli_env(tmp_path, kafka_broker, contracts_dir)
    for key in ("STREAMSIGHT_LAKE_DIR", "STREAMSIGHT_RUN_DIR", "STREAMSIGHT_REPORTS_DIR",
                "STREAMSIGHT_CONTRACTS_DIR", "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS"):
        monkeypatch.setenv(key, env[key])
    settings = load_settings()
    contract = load_contracts(contracts_dir)["machine_telemetry"]
    return settings, contract, env


def test_end_to_end_reconciles(spark, kafka_broker, telemetry):
    from ml.train import train_model

    settings, contract, _ = telemetry
    job = StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers)
    runs = [produce(settings, contract, sources.ai4i_source(AI4I_CSV, limit=2500), progress=False)]
    job.run_until_idle()
    meta = train_model(spark, settings, contract, promote=True, refit=False)  # both candidates; no refit
    assert meta["version"] == 1

    start = sources.AI4I_START + timedelta(minutes=10_000)
    faults = sources.FaultSpec(malformed=0.02, schema=0.03, duplicates=0.05, late=0.03)
    runs.append(produce(settings, contract, sources.synthetic_source(
        contract, machines=50, faults=faults, start=start, interval_ms=60_000), count=1500, progress=False))
    runs.append(produce(settings, contract, sources.synthetic_source(
        contract, machines=5, seed=3, faults=sources.FaultSpec(malformed=0.5, schema=0.5), start=start),
        count=60, validate=False, progress=False))
    totals = job.run_until_idle()
    assert totals["bronze"] > 0

    summary = reconcile(spark, job, runs)
    failed = {k: v for k, v in summary["checks"].items() if not v["ok"]}
    assert not failed, failed
    assert summary["duplicates_dropped"] > 0 and summary["invalid"] > 0
    # Predictions exist for exactly the rows that arrived after the model was promoted.
    preds = read_table(spark, job.uri("predictions"))
    assert preds.where("model_version = 1").count() == summary["predictions"] > 0
    assert preds.agg(F.min("probability"), F.max("probability")).first()[0] >= 0.0
    # Gold: every silver row whose window has closed is counted exactly once per window it falls in.
    gold = read_table(spark, job.uri("gold_by_type_1h"))
    assert gold.count() > 0
    silver = read_table(spark, job.uri("silver"))
    closed = gold.agg(F.max("window_end")).first()[0]
    expected = silver.where(F.col("event_time") < closed).count()
    assert gold.agg(F.sum("readings")).first()[0] == expected
    # Reference join enriched every row.
    assert silver.where("quality IS NULL").count() == 0


def test_poison_messages_go_to_dead_letter_and_stream_continues(spark, kafka_broker, telemetry):
    from confluent_kafka import Producer

    settings, contract, _ = telemetry
    good = next(sources.ai4i_source(AI4I_CSV, limit=1)).payload
    poison = {
        b"\x00\xff\xfe not json": "NOT_UTF8",
        b"{} trailing": "MALFORMED_JSON",
        b"": "MALFORMED_JSON",
        b'"just a string"': "NOT_AN_OBJECT",
        json.dumps({**good, "event_id": "p1", "torque_nm": "lots"}).encode(): "TYPE_MISMATCH",
        json.dumps({**good, "event_id": "p2", "type": "Z"}).encode(): "NOT_IN_ENUM",
        json.dumps({**good, "event_id": "p3", "event_time": "31/12/2020"}).encode(): "BAD_FORMAT",
        json.dumps({**good, "event_id": "p5", "event_time": "2020-02-30T00:00:00Z"}).encode(): "BAD_EVENT_TIME",
        json.dumps({k: v for k, v in good.items() if k != "machine_id"} | {"event_id": "p4"}).encode(): "MISSING_FIELD",
    }
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    for value in poison:
        p.produce(contract.raw_topic, value=value)
    p.produce(contract.raw_topic, value=json.dumps(good).encode(), key=b"k")
    assert p.flush(30) == 0
    job = StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers)
    job.run_until_idle()
    dead = {bytes(r["raw_value"] or b""): (r["error_code"], r["reason"])
            for r in read_table(spark, job.uri("dead_letter")).collect()}
    assert {k: v[0] for k, v in dead.items()} == poison
    assert all(reason for _, reason in dead.values())
    # The same dead letters on the dead-letter topic, the verdict in their headers.
    published = {m.value() or b"": dict(m.headers())[REJECTION_HEADERS["code"]].decode()
                 for m in read_topic(kafka_broker.bootstrap_servers, contract.dead_letter_topic)}
    assert published == poison
    assert [r["event_id"] for r in read_table(spark, job.uri("silver")).collect()] == [good["event_id"]]


def _stream_process(env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen[str]:
    """`streamsight stream` in its own process, its output in ``log`` (a pipe nobody reads would
    block the job once full)."""
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-m", "streamsight_cli", "stream", "--stream", "machine_telemetry", *extra],
                                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)


def test_replayed_batch_every_table_has_commits_its_state_and_adds_nothing(spark, kafka_broker, telemetry,
                                                                          trained_model):
    """The driver dies after the batch writer recorded a batch but before Spark recorded it: the
    restarted query replays the batch, which adds no row anywhere and commits its de-duplication
    state (Spark fails a batch whose plan did not run with STATE_STORE_COMMIT_VALIDATION_FAILED).
    Then the driver dies after the tables' commits but before the batch's record: the replay
    skips every table Delta says holds the batch, and publishes no dead letter twice."""
    settings, contract, _ = telemetry
    job = StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers)
    trained_model.install(spark, settings.lake_uri)
    produce(settings, contract, sources.ai4i_source(AI4I_CSV, limit=1500), progress=False)
    poison = produce(settings, contract, sources.synthetic_source(
        contract, machines=5, seed=3, faults=sources.FaultSpec(malformed=1.0)), count=10, validate=False, progress=False)
    job.run_until_idle()

    def counts() -> tuple[int, ...]:
        return (*(read_table(spark, job.uri(t)).count() for t in ("silver", "predictions", "dead_letter")),
                len(read_topic(kafka_broker.bootstrap_servers, contract.dead_letter_topic)))

    before = counts()
    assert before == (1500, 1500, poison.faults["malformed"], poison.faults["malformed"])
    commits = Path(job.checkpoint("silver").removeprefix("file:")) / "commits"

    def forget_last_commit() -> Path:
        last = max((p for p in commits.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        last.unlink()
        (commits / f".{last.name}.crc").unlink(missing_ok=True)
        return last

    last = forget_last_commit()  # as if the driver had died before Spark's commit of its last batch
    job.run_until_idle()
    assert counts() == before and last.exists()  # the replayed batch is committed now
    records = Path(ops_uri(settings, contract, "silver_batches").removeprefix("file:"))
    record = max(records.rglob("batch-*.json"))
    last = forget_last_commit()
    record.unlink()  # ... and before the batch's record: the tables have it, the record does not
    job.run_until_idle()
    assert counts() == before and last.exists() and record.exists()
    produce(settings, contract, sources.ai4i_source(AI4I_CSV, skip=1000, limit=1000), progress=False)
    job.run_until_idle()  # 500 re-sent events (duplicates: the state survived) and 500 new ones
    assert read_table(spark, job.uri("silver")).count() == 2000


def _failure(stderr: str) -> str:
    """What a failed job process said: its error lines (a query's exception is followed by its long
    plan, so the tail alone does not say what failed) and the end of its output."""
    errors = [line for line in stderr.splitlines() if "Error" in line or "Exception" in line or "Caused by" in line]
    return "\n".join(errors[:20]) + "\n...\n" + stderr[-1500:]


def test_events_behind_the_watermark_are_counted_and_stay_in_bronze(spark, kafka_broker, telemetry, caplog):
    """Spark's de-duplication drops an event whose time is behind the watermark (the newest event
    time of the earlier micro-batches of the run, less the contract's watermark): the run reports
    it per query and warns, and the event is still in bronze."""
    from streaming_jobs.pipeline import run

    settings, contract, _ = telemetry
    # Several micro-batches in one run: the watermark moves between them (a restarted query starts
    # from the watermark of its last batch, so a single batch would never drop anything). Bronze,
    # the raw archive, has its own bound and takes all 151 records in one micro-batch.
    settings = settings.model_copy(update={"spark": settings.spark.model_copy(update={
        "max_offsets_per_trigger": 60, "bronze_max_offsets_per_trigger": 1000})})
    produce(settings, contract, sources.ai4i_source(AI4I_CSV, limit=150), progress=False)  # one a minute
    # Then a new event (UDI 401) timed 200 minutes before the first one, hours behind the newest.
    late_start = sources.AI4I_START - timedelta(minutes=600)
    produce(settings, contract, sources.ai4i_source(AI4I_CSV, start=late_start, skip=400, limit=1), progress=False)
    with caplog.at_level(logging.WARNING, logger="streaming_jobs.pipeline"):
        summary = run(spark, settings, "machine_telemetry", until_idle=True)
    assert summary["input_rows"]["silver"] == 151 and summary["late_rows_dropped"]["silver"] == 1
    assert any("later than the watermark" in r.getMessage() for r in caplog.records)
    job = StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers)
    silver_ids = {r[0] for r in read_table(spark, job.uri("silver")).select("event_id").collect()}
    assert len(silver_ids) == 150 and "ai4i-401" not in silver_ids
    bronze = T.validated(read_table(spark, job.uri("bronze")), contract)
    assert bronze.count() == 151 and bronze.where("p__event_id = 'ai4i-401'").count() == 1
    commits = {q: sum(f.name.isdigit() for f in (Path(job.checkpoint(q).removeprefix("file:")) / "commits").iterdir())
               for q in ("bronze", "silver")}  # micro-batches committed (not the .crc files beside them)
    assert commits["bronze"] == 1 and commits["silver"] >= 3, commits  # 60 records at most per silver batch


def test_local_reference_data_travels_with_the_plan(spark, kafka_broker, telemetry):
    """Executors on other hosts have no copy of the contracts directory: a local reference file is
    read on the driver, so the join's plan holds its rows and reads no file."""
    settings, contract, _ = telemetry
    ref = StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers).reference()
    assert ref.inputFiles() == []
    expected = spark.read.csv(str(contract.reference_path), header=True, inferSchema=True)
    assert sorted(map(tuple, ref.collect())) == sorted(map(tuple, expected.collect()))
    # What the stream joins: one row per key, held in the plan (no job, no file per micro-batch).
    table = StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers).reference_table()
    assert table.inputFiles() == [] and "LocalTableScan" in table._jdf.queryExecution().executedPlan().toString()
    assert table.count() == table.select("__ref_key").distinct().count() == expected.select("type").distinct().count()


def test_broker_and_driver_sigkill_mid_stream_lose_and_duplicate_nothing(spark, telemetry, tmp_path, hdfs,
                                                                         trained_model):
    """One stream, two crashes. Apache Kafka is killed with SIGKILL and restarted on the same ports
    and data: the job (`streamsight stream`, its own process) rides it out. Then the driver is
    killed with SIGKILL, with the lake on HDFS: the restart replays the batch in flight, and Spark
    and delta-rs (no JVM) read every event once from silver and predictions. (The lake is outside
    the encryption zone: delta-rs's HDFS client cannot decrypt.)"""
    from streamsight.kafka import ensure_topics, stream_topics
    from streamsight_cli.local_kafka import LocalKafka

    first, events = 1500, 2000
    settings, contract, env = telemetry
    lake = f"{hdfs.uri}{hdfs.plain_dir(f'/plain-{uuid.uuid4().hex[:8]}')}"
    log = tmp_path / "stream.log"
    kafka = LocalKafka(tmp_path / "own-kafka", port=0).start()
    try:
        settings = settings.with_kafka(bootstrap_servers=kafka.bootstrap_servers).model_copy(update={"lake_dir": lake})
        env = {**env, "STREAMSIGHT_LAKE_DIR": lake, "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
        ensure_topics(settings, stream_topics(contract))
        # A model in production before the stream starts, so every prediction is part of what must
        # survive both crashes.
        trained_model.install(spark, settings.lake_uri)
        assert produce(settings, contract, sources.ai4i_source(AI4I_CSV, limit=first), progress=False).ok
        batches = BatchRecordLog(ops_uri(settings, contract, "silver_batches"))

        def committed() -> int:  # silver rows the running job has committed (its batch records, no Spark job)
            return sum(r["silver"] for r in batches.records(spark))

        # Small micro-batches, so each crash finds some but not all of them committed.
        proc = _stream_process({**env, "STREAMSIGHT_SPARK__MAX_OFFSETS_PER_TRIGGER": "300",
                                "STREAMSIGHT_SPARK__TRIGGER_INTERVAL": "0 seconds"}, log)
        try:
            wait_for(lambda: committed() >= 300 or proc.poll() is not None, timeout=240,
                     what="the job to commit micro-batches")
            assert proc.poll() is None, _failure(log.read_text())
            kafka.kill()
            at_broker_kill = committed()
            kafka.start()  # same ports, same data
            assert produce(settings, contract, sources.ai4i_source(AI4I_CSV, skip=first, limit=events - first),
                           progress=False).ok
            # Two more batches: at least one read from the restarted broker.
            wait_for(lambda: committed() >= at_broker_kill + 600 or proc.poll() is not None, timeout=300,
                     what="the job to stream again after the broker's restart")
            assert proc.poll() is None, _failure(log.read_text())
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        at_driver_kill = committed()
        assert at_broker_kill < first and at_driver_kill < events, (at_broker_kill, at_driver_kill)

        # The restart (in this process: the same job on the same checkpoints) replays the batch in
        # flight with its logged offsets, then reads the rest at once.
        job = StreamJob(spark, settings, contract)
        job.run_until_idle()
    finally:
        kafka.stop()

    silver = read_table(spark, job.uri("silver"))
    preds = read_table(spark, job.uri("predictions"))
    ids = sorted(f"ai4i-{i}" for i in range(1, events + 1))
    assert silver.count() == events and sorted(r[0] for r in silver.select("event_id").collect()) == ids
    # Every row: scored exactly once, by the model that was in production.
    assert preds.count() == events and sorted(r[0] for r in preds.select("event_id").collect()) == ids
    # A reader that is not Spark sees exactly what Spark sees.
    for table, frame in (("silver", silver), ("predictions", preds)):
        assert_same_rows_outside_spark(job.uri(table), frame, key="event_id")
    stats = batch_stats(spark, settings, contract)
    assert stats.agg(F.sum("predictions")).first()[0] == events
    assert stats.where("model_version IS NULL").count() == 0
    bronze = read_table(spark, job.uri("bronze"))
    assert bronze.count() == bronze.select("partition", "offset").distinct().count() == events
