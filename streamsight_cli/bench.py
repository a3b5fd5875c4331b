"""``streamsight bench capacity | sustained | producer | api | predict | online``: the pipeline's figures on this machine.

Everything runs on the one machine: Apache Kafka (a fresh local one, or the configured one when
``STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS`` is set), producer processes (``streamsight produce
--source synthetic``, 1,000 machines, every record validated) and the streaming job in this
process (local Spark), on the stream ``bench_telemetry``: a copy of ``machine_telemetry`` with
``--partitions`` partitions. Before a pipeline bench, 20,000 events are streamed and a model is
trained and promoted on them, so every measured event is scored.

* ``capacity --events N [--lake local --lake hdfs ...] [--scoring mllib --scoring endpoint ...]``: the
  raw topic is filled with N events first (faults: 0.1 % malformed, 0.2 % schema violations, 1 %
  duplicates), then the job (bronze, silver, dead letter, predictions, gold) drains it with
  ``Trigger.AvailableNow``: ``events_per_s`` = N / the drain's wall time. Each ``--lake`` is one
  run, in order, on a fresh Kafka and lake: a folder (``local``) or a fresh local HDFS with the
  lake in its encryption zone (``hdfs``). Each
  ``--scoring`` is one run within each lake: ``mllib`` scores in the job; ``endpoint`` serves the
  model with ``streamsight deploy --target local`` (its own process) and makes it the model's
  backend, so the tasks call it as a SageMaker endpoint (:mod:`ml.endpoint`); ``scored_by``
  counts the run's predictions by what scored them. With several runs, the output has every run
  and each kind's median against the first kind's.
* ``sustained --rate R --seconds S --warmup-seconds W``: one producer at R events/s for W + S
  seconds (event time = wall clock), the job running as in production; figures cover the events
  produced after W. ``p50_s`` / ``p95_s`` / ``p99_s``: produce time (Kafka timestamp) to the
  commit of the micro-batch that wrote the event's prediction. ``kept_up``: when the producer
  stopped, the job was at most :data:`KEPT_UP_SECONDS` seconds of events behind.
* ``api --seconds S [--batch 100 --connections 8]``: ``streamsight serve`` and a load generator
  (:mod:`streamsight_cli.loadgen`, a separate process, httpx) POSTing ``batch``-record bodies for
  ``S`` seconds after a warm-up: accepted records per second, request latency percentiles, and
  ``kept``: the raw topic holds every record the server acknowledged (more only if a failed
  request had stored some).
* ``producer --events N``: one producer process publishes N events (acks=all, idempotent);
  ``events_per_s`` from its own summary.
* ``online --rate R --seconds S [--trigger realtime --trigger microbatch]``: after the same
  model warm-up (Spark then stopped), ``streamsight online`` in its own process, from the raw
  topic's latest offsets (probe records until one is scored), and one producer at R events/s
  (linger 2 ms) for the warm-up plus S seconds. ``p50_ms`` / ``p95_ms`` / ``p99_ms``: when the
  broker appended the prediction (the predictions topic is switched to LogAppendTime) minus when
  the raw record was produced (its CreateTime), for the events produced after the warm-up;
  ``kept_up``: every event predicted, the last within 5 s of the producer's end. Each
  ``--trigger`` is one run, in order, on the same Kafka and model.

Each prints one JSON object as its last line and writes it to ``--output``. ``cpu_seconds`` splits
the CPU time of the measured span by process (Linux ``/proc``).
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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streamsight.contracts import Contract, load_contract
from streamsight.errors import StreamsightError
from streamsight.lake import read_table
from streamsight.settings import Settings
from streamsight_cli.processes import stop_process

BENCH_STREAM = "bench_telemetry"
KEPT_UP_SECONDS = 5.0
WARMUP_EVENTS = 20_000
PRODUCER_LINGER_MS = 2  # bench online's producer
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _bench_contracts(settings: Settings, directory: Path, partitions: int) -> Path:
    source = Path(settings.contracts_dir) / "machine_telemetry.yaml"
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    doc.update(name=BENCH_STREAM, topics={"partitions": partitions})
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


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (``/proc``), None if it cannot be read."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu_seconds() -> float | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    busy = sum(int(v) for i, v in enumerate(fields) if i not in (3, 4))  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass
class _CpuWatch:
    """CPU seconds per named process over a span (:meth:`start` to :meth:`stop`)."""

    pids: dict[str, int | None]

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._before = {n: _cpu_seconds(p) for n, p in self.pids.items()}
        self._machine = _machine_cpu_seconds()
        self._children = os.times().children_user + os.times().children_system

    def stop(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, pid in self.pids.items():
            now, before = _cpu_seconds(pid), self._before.get(name)
            out[name] = None if now is None or before is None else round(now - before, 1)
        children = os.times().children_user + os.times().children_system
        out["finished_child_processes"] = round(children - self._children, 1)
        machine = _machine_cpu_seconds()
        out["machine"] = None if machine is None or self._machine is None else round(machine - self._machine, 1)
        out["wall"] = round(time.monotonic() - self._t0, 1)
        return out


def _producer(env: dict[str, str], *, count: int | None, seconds: float | None = None, rate: float | None = None,
              seed: int, realtime: bool = False, faults: str | None = None) -> subprocess.Popen[str]:
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
    if faults:
        cmd += ["--faults", faults]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _summary(proc: subprocess.Popen[str], timeout: float = 1800) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"bench producer failed ({proc.returncode}): {err[-2000:]}")
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])["produce"]
    return summary


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


def _machine(spark: Any) -> str:
    return (f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, Spark {spark.version}, "
            f"Java {spark._jvm.java.lang.System.getProperty('java.version')}")


@dataclass
class _Bench:
    settings: Settings
    contract: Contract
    env: dict[str, str]
    broker: str
    kafka_pid: int | None
    work: Path
    lake: str = "local"
    lake_pids: dict[str, int] = field(default_factory=dict)


LAKES = ("local", "hdfs")


@contextmanager
def _bench(settings: Settings, partitions: int, lake: str = "local") -> Iterator[_Bench]:
    """A work folder with the bench contract, a lake (``local``: a folder; ``hdfs``: a fresh local
    HDFS, the lake in its encryption zone) and (unless one is configured) a fresh Kafka."""
    from streamsight.kafka import ensure_topics, stream_topics
    from streamsight_cli.local_hdfs import LocalHdfs
    from streamsight_cli.local_kafka import LocalKafka

    work = Path(tempfile.mkdtemp(prefix="streamsight-bench-"))
    kafka = hdfs = None
    try:
        contracts_dir = _bench_contracts(settings, work / "contracts", partitions)
        contract = load_contract(contracts_dir / f"{BENCH_STREAM}.yaml")
        lake_dir = str(work / "lake")
        if lake == "hdfs":
            hdfs = LocalHdfs(work / "hdfs", port=0).start()
            lake_dir = hdfs.lake_uri
        settings = settings.model_copy(update={
            "lake_dir": lake_dir, "contracts_dir": contracts_dir, "run_dir": work / "run"})
        servers = settings.kafka.bootstrap_servers
        broker = servers or ""
        if not servers:
            kafka = LocalKafka(work / "kafka", port=0, heap_mb=1024).start()
            servers, broker = kafka.bootstrap_servers, f"Apache Kafka {kafka.version} (local)"
        settings = settings.with_kafka(bootstrap_servers=servers)
        ensure_topics(settings, stream_topics(contract))
        env = {**os.environ, "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS": servers, "STREAMSIGHT_CONTRACTS_DIR": str(contracts_dir),
               "STREAMSIGHT_LOG_LEVEL": "WARNING", "PYTHONPATH": str(PROJECT_ROOT)}
        yield _Bench(settings, contract, env, broker, kafka.pid if kafka else None, work, lake,
                     hdfs.pids if hdfs else {})
    finally:
        if kafka is not None:
            kafka.stop()
        if hdfs is not None:
            hdfs.stop()
        shutil.rmtree(work, ignore_errors=True)


def _write(result: dict[str, Any], output: Path | None, settings: Settings, name: str) -> dict[str, Any]:
    path = output or Path(settings.reports_dir) / f"bench-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return {**result, "output": str(path)}


def _warm_job(b: _Bench) -> tuple[Any, Any]:
    """A session and a StreamJob on the bench stream, with a promoted model trained on
    :data:`WARMUP_EVENTS` streamed events."""
    from ml.train import train_model
    from streaming_jobs.pipeline import StreamJob
    from streamsight.spark import build_session

    _summary(_producer(b.env, count=WARMUP_EVENTS, seed=1))
    spark = build_session(b.settings, "streamsight-bench")
    job = StreamJob(spark, b.settings, b.contract, b.settings.kafka.bootstrap_servers)
    job.run_until_idle()
    train_model(spark, b.settings, b.contract, promote=True)
    return spark, job


SCORINGS = ("mllib", "endpoint")


def run_capacity(settings: Settings, *, events: int, partitions: int = 8, output: Path | None = None,
                 lakes: tuple[str, ...] = ("local",), scorings: tuple[str, ...] = ("mllib",)) -> dict[str, Any]:
    """Fill the raw topic with ``events``, then time the job draining it (module docstring), once
    per entry of ``lakes`` and, within each, of ``scorings``, in that order; with more than one run,
    the runs side by side and each kind's median against the first kind's."""
    from statistics import median

    unknown = [lake for lake in lakes if lake not in LAKES]
    if unknown or not lakes:
        raise StreamsightError(f"--lake: {', '.join(unknown) or 'none'} (choose from {', '.join(LAKES)})")
    unknown = [s for s in scorings if s not in SCORINGS]
    if unknown or not scorings:
        raise StreamsightError(f"--scoring: {', '.join(unknown) or 'none'} (choose from {', '.join(SCORINGS)})")
    runs = [_capacity_once(settings, events=events, partitions=partitions, lake=lake, scoring=scoring)
            for lake in lakes for scoring in scorings]
    if len(runs) == 1:
        return _write(runs[0], output, settings, "capacity")
    by = "scoring" if len(set(lakes)) == 1 else "lake" if len(set(scorings)) == 1 else None

    def kind(run: dict[str, Any]) -> str:
        return str(run[by]) if by else f"{run['lake']}+{run['scoring']}"

    kinds = list(dict.fromkeys(kind(r) for r in runs))
    medians = {k: median(r["events_per_s"] for r in runs if kind(r) == k) for k in kinds}
    result = {"bench": "capacity", "events": events, "lakes": list(lakes), "scorings": list(scorings),
              "events_per_s_median": medians,
              "slowdown_vs_" + kinds[0]: {k: round(medians[kinds[0]] / v, 2) for k, v in medians.items()},
              "runs": runs}
    return _write(result, output, settings, "capacity")


@contextmanager
def _endpoint_scoring(b: _Bench, spark: Any) -> Iterator[tuple[Settings, Any, int]]:
    """The bench model served by ``streamsight deploy --target local`` (its own process) and chosen
    as the stream's backend: ``(settings pointing at it, a StreamJob using it)``."""
    from ml.endpoint import SAGEMAKER, backend_doc
    from ml.online import RegistryFiles
    from streaming_jobs.pipeline import StreamJob

    assert b.contract.model is not None
    name = b.contract.model.name
    env = {**b.env, "STREAMSIGHT_LAKE_DIR": b.settings.lake_dir}
    proc = subprocess.Popen([sys.executable, "-m", "streamsight_cli", "deploy", "--model", name, "--port", "0"],
                            env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = (proc.stdout.readline() if proc.stdout else "").strip()
        if not url.startswith("http"):
            raise StreamsightError(f"deploy --target local did not start (exit {proc.poll()})")
        files = RegistryFiles.of(b.settings)
        files.set_backend(name, backend_doc(SAGEMAKER, name, files.production(name)))
        settings = b.settings.model_copy(update={"sagemaker": b.settings.sagemaker.model_copy(
            update={"runtime_url": url})})
        yield settings, StreamJob(spark, settings, b.contract, settings.kafka.bootstrap_servers), proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _scored_by(spark: Any, job: Any) -> dict[str, int]:
    """Predictions by what scored them."""
    return {r["scored_by"]: r["n"] for r in read_table(spark, job.uri("predictions")).groupBy("scored_by")
            .agg({"*": "count"}).withColumnRenamed("count(1)", "n").collect()}


def _capacity_once(settings: Settings, *, events: int, partitions: int, lake: str,
                   scoring: str = "mllib") -> dict[str, Any]:
    with _bench(settings, partitions, lake) as b, ExitStack() as stack:
        spark, job = _warm_job(b)
        try:
            pids = {"spark_jvm": spark._jvm.java.lang.ProcessHandle.current().pid(), "driver_python": os.getpid(),
                    "kafka": b.kafka_pid, **b.lake_pids}
            if scoring == "endpoint":
                _, job, pids["serving"] = stack.enter_context(_endpoint_scoring(b, spark))
            filled = _summary(_producer(b.env, count=events, seed=2, faults="malformed=0.001,schema=0.002,duplicates=0.01"))
            silver_before = read_table(spark, job.uri("silver")).count()
            scored_before = _scored_by(spark, job)
            watch = _CpuWatch(pids)
            watch.start()
            began = time.monotonic()
            progress: dict[str, list[dict[str, Any]]] = {}
            totals = job.run_until_idle(progress=progress)
            seconds = time.monotonic() - began
            cpu = watch.stop()
            silver = read_table(spark, job.uri("silver")).count() - silver_before
            scored = {k: n - scored_before.get(k, 0) for k, n in _scored_by(spark, job).items()}
            result = {
                "bench": "capacity", "lake": b.lake, "scoring": scoring, "events": events, "seconds": round(seconds, 1),
                "events_per_s": round(events / seconds, 1),
                "input_rows": totals, "silver_rows": silver, "producer": filled,
                "scored_by": {k: n for k, n in scored.items() if n},
                "partitions": partitions, "max_offsets_per_trigger": settings.spark.max_offsets_per_trigger,
                "cpu_seconds": cpu,
                "micro_batch_medians": {q: _progress_medians(p) for q, p in progress.items()},
                "machine": _machine(spark), "broker": b.broker,
            }
        finally:
            stack.close()
            spark.stop()
        return result


def run_sustained(settings: Settings, *, rate: float, seconds: float, warmup_seconds: float = 60.0,
                  partitions: int = 8, output: Path | None = None) -> dict[str, Any]:
    """One producer at ``rate`` while the job runs as in production (module docstring)."""
    from streaming_jobs.pipeline import batch_stats

    with _bench(settings, partitions) as b:
        spark, job = _warm_job(b)
        try:
            warm_silver = read_table(spark, job.uri("silver")).count()
            queries = job.start_queries()
            ready_by = time.monotonic() + 120
            while any(q.lastProgress is None for q in queries) and time.monotonic() < ready_by:
                job.check(queries)
                time.sleep(0.2)  # polling the queries' first progress, bounded by ready_by
            watch = _CpuWatch({"spark_jvm": spark._jvm.java.lang.ProcessHandle.current().pid(),
                               "driver_python": os.getpid(), "kafka": b.kafka_pid})
            started = time.time()
            measured_from = started + warmup_seconds
            producer = _producer(b.env, count=None, seconds=warmup_seconds + seconds, rate=rate, seed=2, realtime=True)
            watch.start()
            produced = _summary(producer, timeout=warmup_seconds + seconds + 600)
            produce_ended = time.time()
            cpu = watch.stop()
            target = warm_silver + produced["sent"]
            deadline = time.monotonic() + max(120.0, (warmup_seconds + seconds) * 4)
            while time.monotonic() < deadline:
                job.check(queries)
                if _silver_committed(job) >= target:
                    break
                time.sleep(0.5)  # polling for catch-up, bounded by the deadline
            for q in queries:
                q.stop()
            progress = {q.name: _progress_medians(q.recentProgress) for q in queries}
            stats = batch_stats(spark, job.settings, job.contract)
            commit_times, rows, predicted, commits = _pipeline_measured(spark, job, stats)
            measured = measure(commit_times, rows, predicted, started=measured_from)
            warm = measure(commit_times, rows, predicted, started=started, until=measured_from)
            behind = keeping_up(commits, since=measured_from, until=produce_ended, produced=produced["sent"],
                                before=warm_silver)
            latency = measured["latency_predictions_s"]
            result = {
                "bench": "sustained", "rate": rate, "seconds": seconds, "warmup_seconds": warmup_seconds,
                "produced": produced["sent"], "produced_per_s": round(produced["sent"] / produced["seconds"], 1),
                "kept_up": behind["behind_at_end"] <= KEPT_UP_SECONDS * rate,
                "p50_s": latency["p50"], "p95_s": latency["p95"], "p99_s": latency["p99"],
                **behind, **measured, "warmup": warm, "partitions": partitions, "cpu_seconds": cpu,
                "micro_batch_medians": progress, "machine": _machine(spark), "broker": b.broker,
            }
        finally:
            spark.stop()
        return _write(result, output, settings, "sustained")


def run_producer(settings: Settings, *, events: int, partitions: int = 8, output: Path | None = None) -> dict[str, Any]:
    """One producer process publishing ``events`` validated synthetic events."""
    from ingestion.producer import ConfluentPublisher

    with _bench(settings, partitions) as b:
        before = os.times()
        summary = _summary(_producer(b.env, count=events, seed=3))
        after = os.times()
        producer_cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
        config = ConfluentPublisher.config(b.settings, b.settings.kafka.bootstrap_servers or "")
        result = {
            "bench": "producer", "events": summary["records"], "seconds": summary["seconds"],
            "events_per_s": round(summary["records"] / summary["seconds"], 1), "summary": summary,
            "producer_cpu_seconds": round(producer_cpu, 1),
            "client": {k: config[k] for k in ("acks", "enable.idempotence", "compression.type", "linger.ms", "batch.size")},
            "partitions": partitions, "broker": b.broker,
            "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        }
        return _write(result, output, settings, "producer")


def _api_bodies(contract: Contract, path: Path, *, batch: int, bodies: int) -> None:
    """``bodies`` request bodies of valid synthetic records, one per line: JSON arrays of ``batch``
    records, or single records when ``batch`` is 0."""
    from ingestion.columnar import rows_as_dicts
    from ingestion.sources import synthetic_source

    records: list[dict[str, Any]] = []
    for events in synthetic_source(contract, machines=1000, seed=11):
        records.extend(rows_as_dicts(events.table))
        if len(records) >= max(batch, 1) * bodies:
            break
    with path.open("w", encoding="utf-8") as out:
        for i in range(bodies):
            body = records[i * batch:(i + 1) * batch] if batch else records[i]
            out.write(json.dumps(body, separators=(",", ":")) + "\n")


@contextmanager
def _serving(b: _Bench, key: str, **api: str) -> Iterator[tuple[str, dict[str, str], int]]:
    """``streamsight serve`` on the bench's Kafka and lake: its URL, the environment (the key in
    BENCH_API_KEY) and its pid; stopped on exit."""
    env = {**b.env, "STREAMSIGHT_RUN_DIR": str(b.work / "run"), "STREAMSIGHT_LAKE_DIR": b.settings.lake_dir,
           "STREAMSIGHT_LOG_LEVEL": "INFO", "BENCH_API_KEY": key,
           **{f"STREAMSIGHT_API__{k.upper()}": v for k, v in api.items()}}
    log = b.work / "serve.log"
    server = subprocess.Popen([sys.executable, "-m", "streamsight_cli", "serve", "--port", "0"], env=env,
                              stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    try:
        url = (server.stdout.readline() if server.stdout else "").strip()
        if not url.startswith("http://"):
            raise StreamsightError(f"streamsight serve did not start: {log.read_text()[-2000:]}")
        yield url, env, server.pid
    finally:
        server.terminate()
        server.wait(timeout=60)


def _load(url: str, env: dict[str, str], bodies: Path, *, connections: int, seconds: float, warmup_seconds: float,
          rate: float | None = None) -> dict[str, Any]:
    """The figures of :mod:`streamsight_cli.loadgen`, run as its own process against ``url``."""
    args = [sys.executable, "-m", "streamsight_cli.loadgen", url, "--key-env", "BENCH_API_KEY", "--bodies", str(bodies),
            "--connections", str(connections), "--seconds", str(seconds), "--warmup-seconds", str(warmup_seconds)]
    load = subprocess.run([*args, *(["--rate", str(rate)] if rate else [])], env=env, capture_output=True, text=True,
                          timeout=seconds + warmup_seconds + 300)
    if load.returncode != 0:
        raise StreamsightError(f"the load generator failed: {load.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(load.stdout.strip().splitlines()[-1])
    return figures


def _machine_line() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


def run_api(settings: Settings, *, seconds: float, warmup_seconds: float = 5.0, batch: int = 100,
            connections: int = 8, partitions: int = 8, output: Path | None = None) -> dict[str, Any]:
    """``streamsight serve`` taking ``batch``-record POSTs from the load generator
    (:mod:`streamsight_cli.loadgen`, its own process); the raw topic must then hold every record
    the server acknowledged."""
    from streamsight_cli.api import create_key

    with _bench(settings, partitions) as b:
        bodies = b.work / "bodies.jsonl"
        _api_bodies(b.contract, bodies, batch=batch, bodies=200)
        key = create_key(b.settings, "bench", ["events:write"], ["*"], rate_limit="1000000/second")
        with _serving(b, key, max_records=str(max(batch, 10_000))) as (url, env, pid):
            watch = _CpuWatch({"server": pid, "kafka": b.kafka_pid})
            watch.start()
            figures = _load(f"{url}/v1/streams/{BENCH_STREAM}/events", env, bodies, connections=connections,
                            seconds=seconds, warmup_seconds=warmup_seconds)
            cpu = watch.stop()
        in_topic = _topic_messages(b.settings, b.contract.raw_topic)
        result = {
            "bench": "api", "batch": batch, **figures, "topic_messages": in_topic,
            "kept": in_topic >= figures["records_accepted_total"],  # more only if a request failed after storing some
            "cpu_seconds": cpu,  # finished_child_processes: the load generator
            "partitions": partitions, "broker": b.broker, "machine": _machine_line(),
        }
        return _write(result, output, settings, "api")


def run_predict(settings: Settings, *, rate: float, seconds: float, warmup_seconds: float = 5.0,
                connections: int = 16, output: Path | None = None) -> dict[str, Any]:
    """Single-record ``POST /v1/models/<model>/predict`` at a fixed rate (open loop) from the load
    generator, against the production model ``streamsight train`` made from streamed events."""
    from ml import PRODUCTION_ALIAS
    from ml.registry import ModelRegistry
    from streamsight.lake import models_uri
    from streamsight_cli.api import create_key

    with _bench(settings, partitions=2) as b:
        spark, _ = _warm_job(b)
        model = b.contract.model.name if b.contract.model else ""
        registry = ModelRegistry(spark, models_uri(b.settings.lake_uri))
        version = registry.get_alias(model, PRODUCTION_ALIAS)
        algorithm = registry.metadata(model, int(version or 0))["algorithm"]
        spark.stop()  # its JVM would share the two cores with the server
        bodies = b.work / "records.jsonl"
        _api_bodies(b.contract, bodies, batch=0, bodies=1000)
        key = create_key(b.settings, "bench", ["predict"], ["*"], rate_limit="1000000/second")
        with _serving(b, key) as (url, env, pid):
            watch = _CpuWatch({"server": pid})
            watch.start()
            figures = _load(f"{url}/v1/models/{model}/predict", env, bodies, connections=connections,
                            seconds=seconds, warmup_seconds=warmup_seconds, rate=rate)
            cpu = watch.stop()
        result = {"bench": "predict", "model": model, "version": version, "algorithm": algorithm, **figures,
                  "kept_up": figures["drain_s"] < 1.0,  # answered at the rate, not queued behind it
                  "cpu_seconds": cpu, "machine": _machine_line()}
        return _write(result, output, settings, "predict")


def _java_child(pid: int) -> int | None:
    """The pid of the JVM a PySpark driver process started (its child running java), if any."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split() if Path(f"/proc/{pid}").exists() else []:
        try:
            if "java" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].decode():
                return int(child)
        except OSError:
            continue
    return None


class _PredictionClock:
    """Reads the predictions topic from its end when made: per record (event id and produce time:
    the bench's producers re-use event ids), the first message's broker append time minus the raw
    record's produce time it carries, in milliseconds. The topic is switched to LogAppendTime, so a
    message's timestamp is when the broker wrote it, not when Spark's producer was handed it."""

    def __init__(self, settings: Settings, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition
        from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

        from streamsight.kafka import confluent_config

        admin = AdminClient(confluent_config(settings))
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[ConfigEntry(
            "message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET)])
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(timeout=30)
        self.consumer = Consumer({**confluent_config(settings), "group.id": "streamsight-bench-online",
                                  "enable.auto.commit": False})
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, self.consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=10)[1]) for p in partitions])
        self.first: dict[tuple[str, str], tuple[float, float]] = {}  # record -> (produce time, latency ms)
        self.messages = 0
        self.failed: BaseException | None = None  # what stopped the reader, if anything did
        self._stop = False

    def run(self) -> None:
        from datetime import datetime

        from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

        try:
            while not self._stop:
                for m in self.consumer.consume(10_000, 0.2):
                    value = m.value()
                    if m.error() or value is None:
                        continue
                    self.messages += 1
                    doc = json.loads(value)
                    record = (doc["event_id"], doc["produce_time"])
                    if record not in self.first:
                        assert m.timestamp()[0] == TIMESTAMP_LOG_APPEND_TIME, "the topic's timestamps are not append times"
                        produced = datetime.fromisoformat(doc["produce_time"]).timestamp()
                        self.first[record] = (produced, m.timestamp()[1] - produced * 1000)
        except BaseException as exc:
            self.failed = exc
        finally:
            self.consumer.close()

    def records(self) -> int:
        """Records predicted so far, probes left out."""
        return sum(not k[0].startswith("probe-") for k in list(self.first))

    def stop(self) -> None:
        self._stop = True


def _probe_until_scored(b: _Bench, clock: _PredictionClock, job: subprocess.Popen[str], log: Path) -> None:
    """One valid record a second, until the online job's prediction of one arrives: then it is
    reading (it starts from the latest offsets, so the producer must not start before)."""
    from datetime import UTC, datetime

    from confluent_kafka import Producer

    from streamsight.kafka import confluent_config

    producer = Producer(confluent_config(b.settings))
    deadline = time.monotonic() + 300
    n = 0
    while not any(k[0].startswith("probe-") for k in list(clock.first)):
        if clock.failed is not None:
            raise StreamsightError(f"reading the predictions topic failed: {clock.failed!r}")
        if job.poll() is not None or time.monotonic() > deadline:
            raise StreamsightError(f"streamsight online did not score a probe record: {log.read_text()[-3000:]}")
        n += 1
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = {"event_id": f"probe-{n}", "machine_id": "PROBE", "event_time": now, "type": "L",
                  "air_temperature_k": 300.0, "process_temperature_k": 310.0, "rotational_speed_rpm": 1500.0,
                  "torque_nm": 40.0, "tool_wear_min": 10}
        producer.produce(b.contract.raw_topic, json.dumps(record).encode(), key=b"PROBE")
        producer.flush(10)
        time.sleep(1.0)  # one probe a second while polling the reader, bounded by the deadline


def _online_once(b: _Bench, trigger: str, *, rate: float, seconds: float, warmup_seconds: float) -> dict[str, Any]:
    """One run of the online job with ``trigger`` (fresh checkpoint, from the latest offsets)."""
    import threading

    shutil.rmtree(Path(b.settings.lake_dir) / "_checkpoints" / BENCH_STREAM / "online", ignore_errors=True)
    env = {**b.env, "STREAMSIGHT_LAKE_DIR": b.settings.lake_dir, "STREAMSIGHT_RUN_DIR": str(b.work / "run"),
           "STREAMSIGHT_LOG_LEVEL": "INFO", "STREAMSIGHT_ONLINE__TRIGGER": trigger,
           "STREAMSIGHT_ONLINE__STARTING_OFFSETS": "latest"}
    log = b.work / f"online-{trigger}.log"
    clock = _PredictionClock(b.settings, b.contract.predictions_topic)
    reader = threading.Thread(target=clock.run, daemon=True)
    reader.start()
    with log.open("w") as out:
        job = subprocess.Popen([sys.executable, "-m", "streamsight_cli", "online", "--stream", BENCH_STREAM], env=env,
                               stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        _probe_until_scored(b, clock, job, log)
        watch = _CpuWatch({"online_driver": job.pid, "online_jvm": _java_child(job.pid), "kafka": b.kafka_pid})
        started = time.time()
        measured_from = started + warmup_seconds
        # A latency-minded producer, as the HTTP API's (api.linger_ms), not the bulk default.
        producer = _producer({**b.env, "STREAMSIGHT_KAFKA__LINGER_MS": str(PRODUCER_LINGER_MS)}, count=None,
                             seconds=warmup_seconds + seconds, rate=rate, seed=2, realtime=True)
        watch.start()
        produced = _summary(producer, timeout=warmup_seconds + seconds + 600)
        produce_ended = time.time()
        cpu = watch.stop()
        drain_deadline = time.monotonic() + 120
        while (clock.records() < produced["sent"] and time.monotonic() < drain_deadline and job.poll() is None
               and clock.failed is None):
            time.sleep(0.2)  # polling the reader, bounded by the deadline
        drained = time.time()
    finally:
        clock.stop()
        stop_process(job, 120, kill_wait=30)
        reader.join(timeout=10)
    if clock.failed is not None:
        raise StreamsightError(f"reading the predictions topic failed: {clock.failed!r}")
    batches = [line.split(": online ", 1)[1] for line in log.read_text().splitlines()
               if "streaming_jobs.online: online" in line and " batch " in line]
    records = {k: v for k, v in clock.first.items() if not k[0].startswith("probe-")}
    measured = [(latency, 1.0) for produced_at, latency in records.values() if produced_at >= measured_from]
    late_last = max((p + lat / 1000 for p, lat in records.values()), default=produce_ended) - produce_ended
    pct = _percentiles(measured)
    by_second: dict[int, list[float]] = {}
    for produced_at, latency in records.values():
        if produced_at >= measured_from:
            by_second.setdefault(int(produced_at - measured_from), []).append(latency)
    return {
        "trigger": trigger, "produced": produced["sent"], "produced_per_s": round(produced["sent"] / produced["seconds"], 1),
        "predicted": len(records), "measured_events": len(measured),
        "p50_ms": pct["p50"], "p95_ms": pct["p95"], "p99_ms": pct["p99"],
        "max_ms": round(max((lat for lat, _ in measured), default=float("nan")), 1),
        # every event predicted, the last within KEPT_UP_SECONDS of the producer's end
        "kept_up": len(records) >= produced["sent"] and late_last <= KEPT_UP_SECONDS,
        "last_prediction_after_produce_end_s": round(late_last, 3), "drain_wait_s": round(drained - produce_ended, 1),
        # each measured second of produce time: [second, events, p50, p99, max] (ms)
        "by_second": [[sec, len(v), *(_percentiles([(x, 1.0) for x in v])[q] for q in ("p50", "p99")),
                       round(max(v), 1)] for sec, v in sorted(by_second.items())],
        "online_batches": batches,  # the job's log line per batch (its progress)
        "cpu_seconds": cpu,
    }


def run_online(settings: Settings, *, rate: float, seconds: float, warmup_seconds: float = 60.0,
               partitions: int = 4, triggers: tuple[str, ...] = ("realtime",), output: Path | None = None) -> dict[str, Any]:
    """``streamsight online`` (its own process) scoring one producer's events at ``rate``:
    produce-to-predictions-topic latency of the events produced after the warm-up; once per entry
    of ``triggers`` (``realtime``: Real-Time Mode; ``microbatch``: the same query in micro-batches),
    in that order, on the same Kafka and model. The top-level figures are the first run's."""
    from ml import PRODUCTION_ALIAS
    from ml.registry import ModelRegistry
    from streamsight.lake import models_uri

    with _bench(settings, partitions) as b:
        spark, _ = _warm_job(b)
        model = b.contract.model.name if b.contract.model else ""
        version = ModelRegistry(spark, models_uri(b.settings.lake_uri)).get_alias(model, PRODUCTION_ALIAS)
        machine = _machine(spark)
        spark.stop()  # its JVM would share the two cores with the online job
        runs = [_online_once(b, t, rate=rate, seconds=seconds, warmup_seconds=warmup_seconds) for t in triggers]
        first = runs[0]
        result: dict[str, Any] = {
            "bench": "online", "rate": rate, "seconds": seconds, "warmup_seconds": warmup_seconds,
            **{k: first[k] for k in ("trigger", "p50_ms", "p95_ms", "p99_ms", "kept_up")},
            "runs": runs,
            "producer_linger_ms": PRODUCER_LINGER_MS, "model": model, "version": version, "partitions": partitions,
            "checkpoint_interval": b.settings.online.checkpoint_interval, "machine": machine, "broker": b.broker,
        }
        if len(runs) > 1:
            result["p95_ms_by_trigger"] = {r["trigger"]: r["p95_ms"] for r in runs}
        return _write(result, output, settings, "online")


def _topic_messages(settings: Settings, topic: str) -> int:
    """Messages in ``topic`` (the sum of its partitions' high watermarks)."""
    from confluent_kafka import Consumer, TopicPartition

    from streamsight.kafka import confluent_config

    consumer = Consumer({**confluent_config(settings), "group.id": "streamsight-bench-count"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def _silver_committed(job: Any) -> int:
    """Silver rows committed so far, from the batch records (files read through Hadoop: no Spark job
    while measuring)."""
    from streaming_jobs.lake_writer import BatchRecordLog
    from streaming_jobs.pipeline import ops_uri

    records = BatchRecordLog(ops_uri(job.settings, job.contract, "silver_batches")).records(job.spark)
    return sum(int(r["silver"]) for r in records)


def _pipeline_measured(spark: Any, job: Any, stats: Any) -> tuple[
        dict[int, float], list[tuple[float, int, float]], set[int], list[tuple[float, int]]]:
    """The inputs of :func:`measure` and :func:`keeping_up` from the pipeline's lake: ``stats`` is
    its silver batch log (:func:`streaming_jobs.pipeline.batch_stats`), read once."""
    batches = stats.collect()
    commit_times = {r["batch_id"]: r["committed_at"].timestamp() for r in batches}
    commits = [(r["committed_at"].timestamp(), r["silver"]) for r in batches]
    return commit_times, _silver_rows(spark, job), _predicted_batches(spark, job), commits


LATENCY_RESOLUTION_S = 0.01


def _silver_rows(spark: Any, job: Any) -> list[tuple[float, int, float]]:
    """(produce time, batch id, rows) of silver, the produce times in steps of
    :data:`LATENCY_RESOLUTION_S` (counted by Spark: a few thousand groups, not every row)."""
    from pyspark.sql import functions as F

    step = 1 / LATENCY_RESOLUTION_S
    silver = read_table(spark, job.uri("silver"))
    grouped = (silver.groupBy(F.floor(F.col("_kafka_timestamp").cast("double") * step).alias("t"), "_batch_id")
               .count().collect())
    return [(r["t"] / step, r["_batch_id"], float(r["count"])) for r in grouped]


def _predicted_batches(spark: Any, job: Any) -> set[int]:
    return {r["_batch_id"] for r in read_table(spark, job.uri("predictions")).select("_batch_id").distinct().collect()}


def keeping_up(commits: list[tuple[float, int]], *, since: float, until: float, produced: int,
               before: int) -> dict[str, Any]:
    """Whether the job kept up while the producer ran (from ``since`` to ``until``, epoch seconds).

    ``job_rows_per_s``: silver rows per second between the first and the last micro-batch committed
    in that span (the rows of every commit after the first, over the time between them; None with
    fewer than two commits). ``behind_at_end``: events produced but not in silver when the producer
    stopped (``before`` is the silver rows of earlier runs).
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
    the rows the job committed; ``predicted``: the micro-batches that wrote predictions.
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
