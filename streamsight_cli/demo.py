"""``streamsight demo``: the whole product on this machine, then a reconciliation of every count.

1. start Apache Kafka (``streamsight_cli.local_kafka``: a fresh one on free ports, stopped at the end);
2. replay the 10,000 AI4I rows; stream until caught up; train model v1 on the first 70 % of them by
   event time, test it on the last 30 % (the SUMMARY's ``model.auc_pr``), and promote it;
3. send a synthetic stream with injected faults (malformed JSON, schema violations, duplicates, late
   events) validated by the producer, and a few poison messages sent unvalidated (a misbehaving
   producer) that only the stream-side validation can catch;
4. stream until caught up (scoring with v1), write the report;
5. reconcile: bronze = every record published to the raw topic (valid or flagged by its
   producer); dead-letter = producer rejects + stream rejects; every valid event id is in silver
   or was an injected duplicate; silver has no duplicate ids; predictions = silver rows written
   while a model was in production.

The last line printed is ``SUMMARY {json}``. The demo owns its lake (a directory, or an ``hdfs://`` or
``s3a://`` URI): it empties it at start only if an earlier demo created it (marker file), so it is
safe to run twice and never deletes a lake it did not make.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from typing import Any

from ingestion import sources
from ingestion.producer import ProduceSummary, produce
from streamsight.contracts import get_contract
from streamsight.errors import StreamsightError
from streamsight.settings import Settings
from streamsight_cli import AI4I_CSV
from streamsight_cli.local_kafka import running_kafka

STREAM = "machine_telemetry"
MARKER = ".streamsight-demo"


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _prepare_lake(spark: Any, settings: Settings) -> None:
    """Empty the lake if an earlier demo made it (its marker file); refuse a lake with any other file
    in it. Its root and the analysts' areas stay (emptied): on HDFS they carry the lake's encryption
    zone and ACLs."""
    from streamsight.hadoop import HadoopFS
    from streamsight.lake import ANALYST_AREAS

    fs = HadoopFS(spark, settings.lake_uri)
    marker = fs.child(fs.root, MARKER)
    if not fs.exists(marker) and next(fs.list_files(fs.root), None) is not None:
        raise StreamsightError(f"STREAMSIGHT_LAKE_DIR: {settings.lake_uri} holds files the demo did not make; "
                               "point the demo at an empty or earlier demo lake")
    for child in fs.list_status(fs.root):
        if child.isDirectory() and str(child.getPath().getName()) in ANALYST_AREAS:
            for grandchild in fs.list_status(child.getPath()):
                fs.delete(grandchild.getPath(), True)
        else:
            fs.delete(child.getPath(), True)
    fs.mkdirs(fs.root)
    fs.write_bytes(marker, b"created by `streamsight demo`; the next demo run empties this lake\n", overwrite=True)


def run_demo(settings: Settings) -> dict[str, Any]:
    started = time.monotonic()
    contract = get_contract(settings.contracts_dir, STREAM)
    with running_kafka(settings, [contract], settings.data_dir / "demo-kafka") as (kafka, settings):
        _say(f"Apache Kafka {kafka.version} at {kafka.bootstrap_servers} (data in {kafka.data_dir})")
        summary = _run(settings, contract, f"Apache Kafka {kafka.version}")
    summary["seconds"] = round(time.monotonic() - started, 1)
    for name, check in summary["checks"].items():
        _say(f"{'ok  ' if check['ok'] else 'FAIL'} {name}: {check['detail']}")
    _say("counts reconcile" if summary["reconciled"] else "counts DO NOT reconcile")
    print("SUMMARY " + json.dumps(summary), flush=True)
    return summary


def _run(settings: Settings, contract: Any, broker: str) -> dict[str, Any]:
    servers = settings.kafka.bootstrap_servers
    spark = None
    try:
        from ml.train import train_model
        from streaming_jobs.pipeline import StreamJob
        from streamsight.spark import build_session

        spark = build_session(settings, "streamsight-demo")
        _prepare_lake(spark, settings)
        _say(f"lake {settings.lake_uri}")
        runs: list[ProduceSummary] = []
        runs.append(produce(settings, contract, sources.ai4i_source(AI4I_CSV), progress=False))
        _say("replayed the 10,000 AI4I readings")
        job = StreamJob(spark, settings, contract, servers)
        job.run_until_idle()
        _say("streamed them; training model v1 on the first 70 % by event time, testing it on the last 30 %")
        meta = train_model(spark, settings, contract, promote=True, train_fraction=0.7)
        _say(f"model {meta['model_name']} v{meta['version']}: test AUC-PR {meta['metrics']['auc_pr']:.3f} "
             f"(baseline {meta['baseline_metrics']['auc_pr']:.3f})")

        synthetic_start = sources.AI4I_START + timedelta(minutes=10_000)
        faults = sources.FaultSpec(malformed=0.01, schema=0.02, duplicates=0.03, late=0.02, late_by="5 minutes")
        runs.append(produce(settings, contract, sources.synthetic_source(
            contract, machines=100, faults=faults, start=synthetic_start, interval_ms=60_000), count=6000, progress=False))
        poison = sources.FaultSpec(malformed=0.5, schema=0.5)
        runs.append(produce(settings, contract, sources.synthetic_source(
            contract, machines=10, seed=99, faults=poison, start=synthetic_start), count=200,
            validate=False, progress=False))
        _say("sent 6,000 synthetic events with faults and 200 unvalidated poison messages")
        job.run_until_idle()
        _say("streamed everything; writing the report")
        from analytics.report import build_report
        from streamsight.contracts import load_contracts

        report = build_report(spark, settings, load_contracts(settings.contracts_dir), stream=STREAM)
        summary = {"broker": broker, **reconcile(spark, job, runs)}
        summary["report"] = str(report)
        summary["model"] = {"version": meta["version"], "auc_pr": round(meta["metrics"]["auc_pr"], 4),
                            "baseline_auc_pr": round(meta["baseline_metrics"]["auc_pr"], 4)}
    finally:
        if spark is not None:
            spark.stop()
    return summary


def reconcile(spark: Any, job: Any, runs: list[ProduceSummary]) -> dict[str, Any]:
    """Compare lake counts with what the producers sent; every check says what it compared."""
    from pyspark.sql import functions as F

    from streaming_jobs import transforms as T
    from streaming_jobs.pipeline import batch_stats
    from streamsight.lake import read_table

    contract = job.contract
    read = lambda t: read_table(spark, job.uri(t))  # noqa: E731
    bronze = read("bronze")
    silver = read("silver")
    dead = read("dead_letter")
    predictions = read("predictions")
    stats = batch_stats(spark, job.settings, contract)

    published = sum(r.sent + r.invalid for r in runs)  # every record reaches the raw topic
    producer_invalid = sum(r.invalid for r in runs)
    injected_dups = sum(r.faults.get("duplicate", 0) for r in runs)
    poison = sum(r.faults.get("malformed", 0) + r.faults.get("schema", 0) for r in runs if r.invalid == 0 and r.faults)
    n_bronze, n_silver, n_pred = bronze.count(), silver.count(), predictions.count()
    by_source = {r["source"]: r["count"] for r in dead.groupBy("source").count().collect()}
    n_dead = sum(by_source.values())
    valid = T.valid_rows(T.validated(bronze, contract), contract)
    n_valid = valid.count()
    filtered = stats.agg(F.sum("filtered")).collect()[0][0] or 0
    valid_ids = T.apply_filter(valid, contract).select(*contract.dedup_key).distinct()
    silver_ids = silver.select(*contract.dedup_key).distinct()
    missing = valid_ids.join(silver_ids, contract.dedup_key, "left_anti").count()
    distinct_silver = silver_ids.count()
    scored_batches = stats.where("model_version IS NOT NULL").agg(F.sum("silver")).collect()[0][0] or 0
    duplicates_dropped = n_valid - filtered - n_silver

    def check(ok: bool, detail: str) -> dict[str, Any]:
        return {"ok": bool(ok), "detail": detail}

    checks = {
        "bronze_equals_published": check(n_bronze == published, f"bronze {n_bronze} vs published to the raw topic {published}"),
        "producer_rejects_in_dead_letter": check(by_source.get("producer", 0) == producer_invalid,
                                                 f"dead-letter(producer) {by_source.get('producer', 0)} "
                                                 f"vs producer invalid {producer_invalid}"),
        "stream_rejects_in_dead_letter": check(by_source.get("stream", 0) == poison and n_bronze - n_valid == n_dead,
                                               f"dead-letter(stream) {by_source.get('stream', 0)} vs poison sent {poison}"),
        "every_valid_event_in_silver": check(missing == 0, f"{missing} valid event ids (passing the contract's "
                                             f"filter) missing from silver; {filtered} rows filtered out"),
        "silver_dropped_no_late_event": check(job.late_rows.get("silver", 0) == 0,
                                              f"{job.late_rows.get('silver', 0)} events behind the watermark"),
        "silver_has_no_duplicates": check(distinct_silver == n_silver, f"{n_silver} rows, {distinct_silver} distinct ids"),
        "duplicates_dropped_equal_injected": check(duplicates_dropped == injected_dups,
                                                   f"dropped {duplicates_dropped} vs injected {injected_dups}"),
        "predictions_for_scored_batches": check(n_pred == scored_batches,
                                                f"predictions {n_pred} vs silver rows written with a model {scored_batches}"),
    }
    return {
        "produced": sum(r.records for r in runs),
        "invalid": n_dead,
        "bronze": n_bronze,
        "silver": n_silver,
        "dead_letter": n_dead,
        "dead_letter_by_source": by_source,
        "duplicates_dropped": duplicates_dropped,
        "late_rows_dropped": dict(job.late_rows),
        "filtered": filtered,
        "predictions": n_pred,
        "reconciled": all(c["ok"] for c in checks.values()),
        "checks": checks,
    }


if __name__ == "__main__":  # pragma: no cover
    from streamsight.settings import load_settings

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    sys.exit(0 if run_demo(load_settings()).get("reconciled") else 1)
