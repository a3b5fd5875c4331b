"""``streamsight bench``: sustained end-to-end throughput and latency on this machine.

What runs (all on one machine, as in the demo): the in-memory development broker (a subprocess, or
the configured Kafka when ``STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS`` is set), a producer process
(``streamsight produce --source synthetic``, confluent-kafka, validating every record), and the
streaming job in this process (bronze -> silver -> predictions, local Spark).

The benchmark uses its own stream, ``bench_telemetry``: a copy of the ``machine_telemetry`` contract
with more partitions (so the development broker's ~5 MB per-partition retention is not the limit)
and without gold aggregates. A warm-up run trains and promotes a model first, so predictions are
real MLlib scores.

Figures (one JSON object, printed and written to ``--output``):

* ``produced_per_s``: what the producer process achieved;
* ``silver_per_s`` / ``predictions_per_s``: rows committed per second from the first produced event
  to the last commit;
* ``latency_*_s``: produce time (Kafka timestamp) to the commit of the row's micro-batch, for silver
  and for predictions: p50, p95, p99 over every row;
* ``job_rows_per_s`` / ``behind_at_end``: see :func:`keeping_up`, whether the job sustains the rate.

With ``--warmup-seconds W`` the producer runs W + ``--seconds`` at the rate and the figures above
cover only the events produced after the first W seconds (the warm-up's own are under ``warmup``):
the job's steady state, after the JVM has compiled its hot code, instead of its first minute.

``--job`` chooses what consumes the stream. ``pipeline`` (the default) is the streaming job above.
The two others measure the floor under it, what any job on this machine pays before its own work:
``read`` reads the raw topic through the same Kafka source and writes nothing (Spark's ``noop``
sink), ``bronze`` also appends each micro-batch to one Parquet table (bronze's columns). Both run
as fast as they can (no trigger interval), without the warm-up model, and time each micro-batch in
``foreachBatch`` (:class:`FloorBatches`): its commit time and a sketch of its rows' produce times
(:data:`FLOOR_QUANTILES`), so their latency figures are accurate to a hundredth of a micro-batch's
rows. Their ``silver_*`` / ``predictions_*`` figures are the rows the floor job committed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from streamsight.contracts import load_contract
from streamsight.errors import StreamsightError
from streamsight.settings import Settings

BENCH_STREAM = "bench_telemetry"


def _bench_contracts(settings: Settings, directory: Path, partitions: int) -> Path:
    source = Path(settings.contracts_dir) / "machine_telemetry.yaml"
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    doc.update(name=BENCH_STREAM, aggregates=[],
               topics={"raw": f"{BENCH_STREAM}.raw", "dead_letter": f"{BENCH_STREAM}.dead-letter", "partitions": partitions})
    ref = Path(doc["reference"]["path"])
    doc["reference"]["path"] = str(ref if ref.is_absolute() else (source.parent / ref).resolve())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{BENCH_STREAM}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return directory


def _percentiles(values: list[tuple[float, float]]) -> dict[str, float]:
    """p50 / p95 / p99 of weighted values ``(value, weight)``: the smallest value whose cumulative
    weight exceeds the share (with weights 1, the element at index ``int(q * n)`` when sorted)."""
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    ordered = sorted(values)
    total = sum(w for _, w in ordered)

    def pick(q: float) -> float:
        cum = 0.0
        for value, weight in ordered:
            cum += weight
            if cum > q * total:
                return round(value, 3)
        return round(ordered[-1][0], 3)

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99)}


def _producer(settings: Settings, env: dict[str, str], *, count: int | None, seconds: float | None,
              rate: float | None, seed: int, realtime: bool = False) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "streamsight_cli", "produce", "--stream", BENCH_STREAM, "--source", "synthetic",
           "--machines", "1000", "--seed", str(seed), "--no-progress"]
    if realtime:
        cmd.append("--realtime")
    if count:
        cmd += ["--count", str(count)]
    if seconds:
        cmd += ["--duration", str(seconds)]
    if rate:
        cmd += ["--rate", str(rate)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _silver_committed(directory: Path) -> int:
    """Silver rows committed so far, from the batch records (plain files: no Spark job while measuring)."""
    return sum(json.loads(p.read_text(encoding="utf-8"))["silver"] for p in directory.glob("batch-*.json"))


def _progress_medians(progress: list[dict[str, Any]]) -> dict[str, Any]:
    """Median input rows and phase durations (ms) of a query's micro-batches that read something."""
    from statistics import median

    batches = [p for p in progress if p.get("numInputRows")]
    if not batches:
        return {"batches": 0}
    phases = sorted({k for p in batches for k in p.get("durationMs", {})})
    return {
        "batches": len(batches),
        "input_rows": median(p["numInputRows"] for p in batches),
        "duration_ms": {k: median(p["durationMs"].get(k, 0) for p in batches) for k in phases},
    }


def _summary(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"bench producer failed ({proc.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])["produce"]


JOBS = ("pipeline", "read", "bronze")
# the produce-time quantiles each floor micro-batch records: 1% of its rows each
FLOOR_QUANTILES = [round((i + 0.5) / 100, 3) for i in range(100)]


def run_bench(settings: Settings, *, seconds: float = 30.0, rate: float | None = None,
              output: Path | None = None, partitions: int = 64, warmup_seconds: float = 0.0,
              job: str = "pipeline") -> dict[str, Any]:
    if job not in JOBS:
        raise StreamsightError(f"bench --job {job!r}: expected one of {', '.join(JOBS)}")
    from ml.train import train_model
    from streamsight.kafka import ensure_topics, stream_topics
    from streamsight_cli.local_kafka import LocalKafka
    from streaming_jobs.pipeline import StreamJob, batch_stats
    from streaming_jobs.session import build_session

    work = Path(tempfile.mkdtemp(prefix="streamsight-bench-"))
    contracts_dir = _bench_contracts(settings, work / "contracts", partitions)
    contract = load_contract(contracts_dir / f"{BENCH_STREAM}.yaml")
    settings = settings.model_copy(update={
        "lake_dir": str(work / "lake"), "contracts_dir": contracts_dir, "run_dir": work / "run"})
    proc = None
    servers = settings.kafka.bootstrap_servers
    if not servers:
        proc = LocalKafka(work / "kafka", port=0).start()
        servers = proc.bootstrap_servers
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": servers})})
    ensure_topics(settings, stream_topics(contract))
    env = {**os.environ, "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS": servers,
           "STREAMSIGHT_CONTRACTS_DIR": str(contracts_dir), "STREAMSIGHT_LOG_LEVEL": "WARNING",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    spark = None
    try:
        spark = build_session(settings, "streamsight-bench")
        stream_job = StreamJob(spark, settings, contract, servers)
        floor: FloorBatches | None = None
        warm_silver = 0
        if job == "pipeline":
            # Warm-up: enough labelled history to train the model the benchmark scores with.
            _summary(_producer(settings, env, count=20_000, seconds=None, rate=None, seed=1))
            stream_job.run_until_idle()
            train_model(spark, settings, contract, promote=True)
            warm_silver = spark.read.parquet(stream_job.uri("silver")).count()
            queries = [stream_job.bronze_query(False), stream_job.silver_query(False)]
            silver_batches = work / "lake" / "_ops" / BENCH_STREAM / "silver_batches"
            committed = lambda: _silver_committed(silver_batches)  # noqa: E731
        else:
            floor = FloorBatches(stream_job.uri("bronze") if job == "bronze" else None)
            queries = [floor_query(stream_job, floor)]
            committed = floor.rows

        def check(q: Any) -> None:
            exc = q.exception()
            if exc is None:
                return
            raise exc

        # Measure the running job, not its start-up: wait for each query's first (empty) micro-batch.
        ready_by = time.monotonic() + 120
        while any(q.lastProgress is None for q in queries) and time.monotonic() < ready_by:
            for q in queries:
                check(q)
            time.sleep(0.2)  # polling query status, bounded by ready_by
        # One producer run of warm-up + measured seconds; only events produced after the warm-up count.
        # Event time follows the wall clock (--realtime), as a live source's does: with the default
        # synthetic clock (1 s per round of 1,000 machines) it would run 20x ahead at 20,000/s, and after a
        # warm-up the watermark would drop the measured events as late.
        started = time.time()
        measured_from = started + warmup_seconds
        producer = _producer(settings, env, count=None, seconds=warmup_seconds + seconds, rate=rate, seed=2,
                             realtime=True)
        produced = _summary(producer)
        produce_ended = time.time()
        target = warm_silver + produced["sent"]
        deadline = time.monotonic() + max(120.0, (warmup_seconds + seconds) * 4)
        caught_up = False
        while time.monotonic() < deadline:
            for q in queries:
                check(q)
            if committed() >= target:
                caught_up = True
                break
            time.sleep(0.5)  # polling for catch-up, bounded by the deadline
        for q in queries:
            q.stop()
        progress = {q.name: _progress_medians(q.recentProgress) for q in queries}

        if floor is None:
            commit_times, rows, predicted, commits = _pipeline_measured(
                spark, stream_job, batch_stats(spark, settings, contract))
        else:
            commit_times, rows, predicted, commits = floor.measured()
        result = measure(commit_times, rows, predicted, started=measured_from)
        if warmup_seconds:
            result["warmup"] = measure(commit_times, rows, predicted, started=started, until=measured_from)
        result.update(keeping_up(commits, since=measured_from, until=produce_ended,
                                 produced=produced["sent"], before=warm_silver))
        result.update({
            "job": job, "seconds": seconds, "warmup_seconds": warmup_seconds, "target_rate": rate,
            "caught_up": caught_up,
            "produced": produced["sent"], "produced_per_s": round(produced["sent"] / produced["seconds"], 1),
            "partitions": partitions,
            "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
                       f"Spark {spark.version}",
            "broker": f"Apache Kafka {proc.version} (local)" if proc else servers,
            "micro_batch_medians": progress,
        })
    finally:
        if spark is not None:
            spark.stop()
        if proc is not None:
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    path = output or Path(settings.reports_dir if isinstance(settings.reports_dir, Path) else Path("var/reports")) / "bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    result["output"] = str(path)
    return result


class FloorBatches:
    """``foreachBatch`` function of the floor jobs (``--job read`` / ``bronze``).

    Writes each micro-batch nowhere (``noop``) or appends it to the Parquet table at ``path``, and
    observes on the way its row count and the :data:`FLOOR_QUANTILES` of its rows' produce times
    (Kafka timestamps), so no second Spark job runs. Keeps per batch: commit time (when the write
    returned), rows, quantiles. The sketch costs the floor job a little CPU per row (the quantile
    summary), so the floor it measures is slightly high.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.batches: list[tuple[int, float, int, list[float]]] = []

    def __call__(self, batch: Any, batch_id: int) -> None:
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        seen = Observation(f"floor_batch_{batch_id}")
        observed = batch.observe(seen, F.count(F.lit(1)).alias("rows"), F.percentile_approx(
            F.col("kafka_timestamp").cast("double"), FLOOR_QUANTILES, 10_000).alias("quantiles"))
        if self.path is None:
            observed.write.format("noop").mode("overwrite").save()
        else:
            observed.write.mode("append").partitionBy("ingest_date").parquet(self.path)
        got = seen.get
        self.batches.append((batch_id, time.time(), int(got["rows"]), list(got["quantiles"] or [])))

    def rows(self) -> int:
        return sum(n for _, _, n, _ in self.batches)

    def measured(self) -> tuple[dict[int, float], list[tuple[float, int, float]], set[int], list[tuple[float, int]]]:
        """The inputs of :func:`measure` and :func:`keeping_up`: each quantile stands for 1% of its batch."""
        commit_times = {b: t for b, t, _, _ in self.batches}
        rows = [(q, b, n / len(qs)) for b, _, n, qs in self.batches if n for q in qs]
        return commit_times, rows, set(commit_times), [(t, n) for _, t, n, _ in self.batches]


def floor_query(job: Any, batches: FloorBatches) -> Any:
    """The floor job: the raw topic through the stream's Kafka source, as bronze has it, into ``batches``."""
    from streaming_jobs import transforms as T

    df = T.to_bronze(job.kafka_stream(job.contract.raw_topic, max_offsets=job.settings.spark.max_offsets_per_trigger))
    return (df.writeStream.queryName(f"{job.contract.name}.floor").option("checkpointLocation", job.checkpoint("floor"))
            .trigger(processingTime="0 seconds").foreachBatch(batches).start())


def _pipeline_measured(spark: Any, job: Any, stats: Any) -> tuple[
        dict[int, float], list[tuple[float, int, float]], set[int], list[tuple[float, int]]]:
    """The inputs of :func:`measure` and :func:`keeping_up` from the pipeline's lake: ``stats`` is
    its silver batch log (:func:`streaming_jobs.pipeline.batch_stats`), read once."""
    batches = stats.collect()
    commit_times = {r["batch_id"]: r["committed_at"].timestamp() for r in batches}
    commits = [(r["committed_at"].timestamp(), r["silver"]) for r in batches]
    return commit_times, _silver_rows(spark, job), _predicted_batches(spark, job), commits


def _silver_rows(spark: Any, job: Any) -> list[tuple[float, int, float]]:
    """(produce time, batch id, weight 1) of every silver row."""
    from pyspark.sql import functions as F

    silver = spark.read.parquet(job.uri("silver"))
    return [(r["ts"], r["_batch_id"], 1.0)
            for r in silver.select(F.col("_kafka_timestamp").cast("double").alias("ts"), "_batch_id").collect()]


def _predicted_batches(spark: Any, job: Any) -> set[int]:
    return {r["_batch_id"] for r in spark.read.parquet(job.uri("predictions")).select("_batch_id").distinct().collect()}


def keeping_up(commits: list[tuple[float, int]], *, since: float, until: float, produced: int,
               before: int) -> dict[str, Any]:
    """Whether the job kept up while the producer ran (from ``since`` to ``until``, epoch seconds).

    ``job_rows_per_s``: silver rows per second between the first and the last micro-batch committed
    in that span (the rows of every commit after the first, over the time between them; None with
    fewer than two commits). ``behind_at_end``: events produced but not in silver when the producer
    stopped (``before`` is the silver rows of earlier runs); a job that keeps up is behind by about a
    micro-batch, one that does not by more with every second it runs, and then latency depends on
    how long the benchmark runs.
    """
    inside = sorted((t, n) for t, n in commits if since <= t <= until)
    rate = None
    if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
        rate = round(sum(n for _, n in inside[1:]) / (inside[-1][0] - inside[0][0]), 1)
    done = sum(n for t, n in commits if t <= until) - before
    return {"job_rows_per_s": rate, "behind_at_end": max(0, produced - done)}


def measure(commits: dict[int, float], rows: list[tuple[float, int, float]], predicted: set[int], *,
            started: float, until: float | None = None) -> dict[str, Any]:
    """Throughput and latency of the rows produced from ``started`` (to ``until``, epoch seconds).

    ``commits``: commit time of each micro-batch; ``rows``: (produce time, micro-batch, weight) of
    the rows the job committed (weight 1 for a row, a share of a batch for a floor job's quantile);
    ``predicted``: the micro-batches that wrote predictions.
    """
    inside = [r for r in rows if r[0] >= started and (until is None or r[0] < until)]
    silver = [(commits[b] - ts, w) for ts, b, w in inside if b in commits]
    scored = [(commits[b] - ts, w) for ts, b, w in inside if b in commits and b in predicted]
    first = min((ts for ts, _, _ in inside), default=started)
    last = max((commits[b] for _, b, _ in inside if b in commits), default=first)
    span = max(last - first, 1e-9)
    n_silver = round(sum(w for _, w in silver))
    n_pred = round(sum(w for _, w in scored))
    return {
        "silver_rows": n_silver,
        "prediction_rows": n_pred,
        "silver_per_s": round(n_silver / span, 1),
        "predictions_per_s": round(n_pred / span, 1),
        "latency_silver_s": _percentiles(silver),
        "latency_predictions_s": _percentiles(scored),
        "micro_batches": len({b for _, b, _ in inside}),
    }
