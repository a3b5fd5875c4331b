"""Shared fixtures: one local SparkSession, one Kafka-protocol broker, an isolated lake per test.

Broker choice, in order: ``KAFKA_BOOTSTRAP_SERVERS`` if set (a real Kafka you run); Apache Kafka in
a container through testcontainers if a Docker engine answers; otherwise Streamsight's in-memory
development broker (librdkafka's mock cluster, real Kafka protocol over TCP — not Apache Kafka).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT.parent / "shared" / "data"
AI4I_CSV = DATA_DIR / "ai4i2020" / "ai4i2020.csv"
EPOCH = pd.Timestamp("2020-01-01T00:00:00Z")
sys.path.insert(0, str(ROOT))
DEPLOY_TESTS = "tests/deploy/"


# Work started with background_command gets only the CPU the Spark tests leave idle, so while they run
# its wall time says nothing about its own speed: in one CI run the moto round trip's `terraform init`
# took 35 s (2 s alone) and its apply overran a 420 s deadline (76 s alone). Deadlines on background
# work only catch hangs, so they add this allowance: longer than the Spark tests run here (~11 min).
BACKGROUND_ALLOWANCE = 900.0


def background_command(args: list[str]) -> list[str]:
    """``args`` at the lowest CPU priority (``nice -n 19``): the deployment tests' slow work runs
    beside the Spark tests and should take only the CPU they leave idle (so its deadlines add
    BACKGROUND_ALLOWANCE)."""
    nice = shutil.which("nice")
    return [nice, "-n", "19", *args] if nice else list(args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The deployment tests run last (in their usual order). Their slow work (Terraform against moto,
    Ansible runs, linters) is mostly waiting and runs in other processes: it starts as the session
    does (below) and overlaps the Spark tests instead of adding its time to theirs."""
    items.sort(key=lambda item: item.nodeid.startswith(DEPLOY_TESTS))


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    selected: dict[object, set[str]] = {}
    for item in session.items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "start_background"):
            selected.setdefault(module, set()).add(getattr(item, "originalname", item.name))
    for module, names in selected.items():
        module.start_background(names, session.config._tmp_path_factory)  # type: ignore[attr-defined]


@dataclass
class TestBroker:
    kind: str  # "external", "testcontainers" or "embedded"
    bootstrap_servers: str
    _create: Callable[[str, int], None]

    def create_topic(self, name: str, partitions: int = 1) -> None:
        self._create(name, partitions)

    def new_topic(self, prefix: str, partitions: int = 1) -> str:
        """A fresh topic per test (name + uuid), so tests never see each other's data."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.create_topic(name, partitions)
        return name


def _admin_create(servers: str) -> Callable[[str, int], None]:
    def create(name: str, partitions: int) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": servers})
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        for future in futures.values():
            try:
                future.result(timeout=30)
            except Exception as exc:  # already exists is fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise

    return create


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TestBroker]:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        yield TestBroker("external", servers, _admin_create(servers))
        return
    if _docker_answers():
        try:
            from testcontainers.kafka import KafkaContainer
        except ImportError:
            pass
        else:
            # testcontainers' KafkaContainer drives Confluent's image of Apache Kafka (KRaft mode).
            with KafkaContainer("confluentinc/cp-kafka:7.7.1").with_kraft() as container:
                servers = container.get_bootstrap_server()
                yield TestBroker("testcontainers", servers, _admin_create(servers))
            return
    from ingestion.embedded_broker import EmbeddedBroker

    broker = EmbeddedBroker()
    broker.start()
    try:
        yield TestBroker("embedded", broker.bootstrap_servers, broker.create_topic)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    from streaming_jobs import jvm
    from streaming_jobs.session import SESSION_SQL_CONF

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master("local[2]")
        .config("spark.jars", str(jvm.build()))  # the JVM screen; needs a JDK (javac), as make setup does
        .appName("streamsight-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.streaming.stateStore.providerClass",
                "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider")
    )
    for key, value in SESSION_SQL_CONF.items():
        builder = builder.config(key, value)
    from streaming_jobs.jvm import classdata

    if (options := classdata.java_options()) is not None:  # as local sessions start (session.build_session)
        builder = builder.config("spark.driver.extraJavaOptions", options)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def lake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point STREAMSIGHT_LAKE_DIR / run / reports dirs at a fresh temporary directory."""
    monkeypatch.setenv("STREAMSIGHT_LAKE_DIR", str(tmp_path / "lake"))
    monkeypatch.setenv("STREAMSIGHT_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("STREAMSIGHT_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path


def ai4i_silver(rows: int | None = None) -> pd.DataFrame:
    """The first ``rows`` AI4I readings shaped like silver rows of ``machine_telemetry``."""
    raw = pd.read_csv(AI4I_CSV, encoding="utf-8-sig", nrows=rows)
    event_time = EPOCH + pd.to_timedelta(raw["UDI"] - 1, unit="min")
    frame = pd.DataFrame({
        "event_id": "ai4i-" + raw["UDI"].astype(str),
        "machine_id": raw["Product ID"],
        "event_time": event_time,
        "type": raw["Type"],
        "air_temperature_k": raw["Air temperature [K]"].astype("float64"),
        "process_temperature_k": raw["Process temperature [K]"].astype("float64"),
        "rotational_speed_rpm": raw["Rotational speed [rpm]"].astype("float64"),
        "torque_nm": raw["Torque [Nm]"].astype("float64"),
        "tool_wear_min": raw["Tool wear [min]"].astype("int64"),
        "machine_failure": raw["Machine failure"].astype("int64"),
    })
    for mode in ("TWF", "HDF", "PWF", "OSF", "RNF"):
        frame[mode.lower()] = raw[mode].astype("int64")
    frame["event_date"] = event_time.dt.date
    return frame


@pytest.fixture(scope="session")
def machine_contract():
    from streamsight.contracts import load_contract

    return load_contract(ROOT / "conf" / "contracts" / "machine_telemetry.yaml")
