"""Helpers for integration tests: isolated contracts/topics per test, lake reads, polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "conf" / "contracts"


def isolated_contract(tmp_path: Path, broker: Any, *, base: str = "machine_telemetry",
                      partitions: int = 2, create_predictions_topic: bool = True, **changes: Any) -> Path:
    """Copy a shipped contract into tmp_path with topics unique to this test (created on ``broker``).

    Returns the contracts directory. ``changes`` override top-level contract keys.
    """
    doc = yaml.safe_load((CONTRACTS / f"{base}.yaml").read_text(encoding="utf-8"))
    suffix = uuid.uuid4().hex[:8]
    doc["topics"] = {"raw": f"{base}-{suffix}.raw", "dead_letter": f"{base}-{suffix}.dead-letter",
                     "predictions": f"{base}-{suffix}.predictions", "partitions": partitions}
    if doc.get("reference"):
        doc["reference"]["path"] = str((CONTRACTS / doc["reference"]["path"]).resolve())
    doc.update(changes)
    directory = tmp_path / "contracts"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    broker.create_topic(doc["topics"]["raw"], partitions)
    broker.create_topic(doc["topics"]["dead_letter"], 1)
    if create_predictions_topic:
        broker.create_topic(doc["topics"]["predictions"], partitions)
    return directory


def use_stream_env(monkeypatch: Any, tmp_path: Path, broker: Any, contracts_dir: Path) -> None:
    """Point this process's settings at a test stream: its lake under ``tmp_path``, its contracts, the broker."""
    monkeypatch.setenv("STREAMSIGHT_LAKE_DIR", str(tmp_path / "lake"))
    monkeypatch.setenv("STREAMSIGHT_CONTRACTS_DIR", str(contracts_dir))
    monkeypatch.setenv("STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap_servers)


def use_cli_env(monkeypatch: Any, env: dict[str, str]) -> None:
    """Set the ``STREAMSIGHT_*`` variables of ``env`` (:func:`cli_env`'s) in this process too."""
    for key, value in env.items():
        if key.startswith("STREAMSIGHT_"):
            monkeypatch.setenv(key, value)


def cli_env(tmp_path: Path, broker: Any, contracts_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "STREAMSIGHT_LAKE_DIR": str(tmp_path / "lake"),
        "STREAMSIGHT_RUN_DIR": str(tmp_path / "run"),
        "STREAMSIGHT_REPORTS_DIR": str(tmp_path / "reports"),
        "STREAMSIGHT_CATALOG__METASTORE_DIR": str(tmp_path / "metastore"),
        "STREAMSIGHT_CONTRACTS_DIR": str(contracts_dir),
        "STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "STREAMSIGHT_SPARK__MASTER": "local[2]",
        "STREAMSIGHT_SPARK__SHUFFLE_PARTITIONS": "2",
        "STREAMSIGHT_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


def cli(env: dict[str, str], *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``streamsight ARGS`` as a real process."""
    proc = subprocess.run([sys.executable, "-m", "streamsight_cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"streamsight {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@contextmanager
def model_endpoint(env: dict[str, str], *args: str, command: str = "deploy") -> Iterator[str]:
    """``streamsight deploy --target local ARGS --port 0`` (or ``command``: ``deploy-text``) as a real
    process: its URL, for the runtime API's path (``sagemaker.runtime_url``); stopped with SIGTERM
    afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "streamsight_cli", command, *args, "--port", "0"], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = (proc.stdout.readline() if proc.stdout else "").strip()
        assert url.startswith("http://"), proc.stderr.read() if proc.stderr else url
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``condition`` until truthy (bounded); raises with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def read_topic(servers: str, topic: str) -> list[Any]:
    """Every message of ``topic`` (confluent_kafka.Message), read up to its high watermarks."""
    import confluent_kafka

    consumer = confluent_kafka.Consumer({"bootstrap.servers": servers, "group.id": f"read-{uuid.uuid4().hex[:6]}",
                                         "enable.auto.commit": False})
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=10)[1] for p in parts}
        consumer.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in parts if ends[p]])
        out: list[Any] = []
        total = sum(ends.values())
        while len(out) < total:  # consume() returns once it has num_messages, or after the timeout
            batch = consumer.consume(num_messages=total - len(out), timeout=10)
            assert batch, f"read {len(out)} of {total} messages of {topic}"
            out += [m for m in batch if m.error() is None]
        return out
    finally:
        consumer.close()


def assert_same_rows_outside_spark(table_uri: str, spark_frame: Any, *, key: str) -> None:
    """delta-rs (Delta Lake's Rust reader, no JVM) reads the table at ``table_uri`` (a path, file://
    or hdfs:// URI) as Spark read ``spark_frame``: the same ``key`` values, none twice. It reads
    every file the table's log names in full, so a partial file would fail it."""
    from deltalake import DeltaTable

    outside = DeltaTable(table_uri).to_pyarrow_table().column(key).to_pylist()
    inside = [r[0] for r in spark_frame.select(key).collect()]
    assert len(outside) == len(set(outside)), "a key twice in the table as delta-rs reads it"
    assert sorted(outside) == sorted(inside)


def register_small_gbt(spark: Any, lake_uri: str, contract: Any) -> int:
    """A new ``machine_failure`` version, registered as training registers one (MLlib model and
    scorer.json): a small GBT on AI4I rows 1000-3000, threshold 0.5. Returns its version."""
    from pyspark.sql import functions as F

    from ml import portable
    from ml.registry import ModelRegistry
    from ml.train import LABEL, WEIGHT, _pipeline
    from streamsight.lake import models_uri, with_derived
    from tests.conftest import ai4i_silver

    assert contract.model is not None
    categorical = list(contract.model.categorical_features)
    numeric = [f for f in contract.model.features if f not in categorical]
    rows = with_derived(spark.createDataFrame(ai4i_silver(3000).iloc[1000:]), contract).withColumn(
        LABEL, F.col("machine_failure").cast("double")).withColumn(WEIGHT, F.lit(1.0))
    gbt = _pipeline("gbt", numeric, categorical, seed=3, params={"gbt": {"maxIter": 5}}).fit(rows)
    inputs, strings = portable.feature_order(contract)
    return ModelRegistry(spark, models_uri(lake_uri)).register(
        "machine_failure", gbt, {"threshold": 0.5}, scorer=portable.export(
            gbt, features=inputs, categorical=strings, input_schema=portable.input_schema(contract),
            derived=portable.derived_for(contract)))
