"""Shared fixtures: one local SparkSession, one Apache Kafka for the whole run, an isolated lake per test.

Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` if set (a Kafka you run; its plaintext listener), otherwise one
local Apache Kafka (:class:`streamsight_cli.local_kafka.LocalKafka`, KRaft, free ports) started for
the session; tests create their own topics on it.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    kind: str  # "external" or "local"
    bootstrap_servers: str
    local: Any = None  # the LocalKafka, when the session started one

    def create_topic(self, name: str, partitions: int = 1) -> None:
        from streamsight.kafka import ensure_topics
        from streamsight.settings import load_settings

        ensure_topics(load_settings(kafka={"bootstrap_servers": self.bootstrap_servers}), {name: partitions})

    def new_topic(self, prefix: str, partitions: int = 1) -> str:
        """A fresh topic per test (name + uuid), so tests never see each other's data."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.create_topic(name, partitions)
        return name


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBroker]:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        yield TestBroker("external", servers)
        return
    from streamsight_cli.local_kafka import LocalKafka

    kafka = LocalKafka(tmp_path_factory.mktemp("kafka"), port=0).start()
    try:
        yield TestBroker("local", kafka.bootstrap_servers, kafka)
    finally:
        kafka.stop()


@pytest.fixture(scope="session")
def hdfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local HDFS (streamsight_cli.local_hdfs.LocalHdfs: NameNode and DataNode on free ports) for
    the whole run: its lake (``hdfs.lake_uri``) is an encryption zone with the lake's ACLs, owned by
    this process's user; user ``analyst`` is in the analysts' group."""
    from streamsight_cli.local_hdfs import LocalHdfs

    local = LocalHdfs(tmp_path_factory.mktemp("hdfs"), port=0).start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def spark():
    """The session every job builds (streamsight.spark.build_session), on two local cores."""
    from streamsight.settings import load_settings
    from streamsight.spark import build_session

    # Python workers start with the environment of the session's start: the credentials of moto's
    # server (which takes any) for the predictions-store writer that runs in them.
    aws = {f"spark.executorEnv.{k}": "testing" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    settings = load_settings(spark={"master": "local[2]", "shuffle_partitions": 2, "conf": aws})
    session = build_session(settings, "streamsight-tests")
    yield session
    session.stop()


@dataclass
class TrainedModel:
    """A registry holding one model, to copy into the lakes of tests that need one in production."""

    models_uri: str
    name: str
    metadata: dict[str, Any]

    def install(self, spark: Any, lake_uri: str) -> None:
        """Copy the model (every version, its aliases) into the registry of the lake at ``lake_uri``
        (a folder or hdfs://), through Hadoop's FileSystem API."""
        jvm = spark._jvm
        conf = spark._jsc.hadoopConfiguration()
        src = jvm.org.apache.hadoop.fs.Path(f"{self.models_uri}/{self.name}")
        dst = jvm.org.apache.hadoop.fs.Path(f"{lake_uri.rstrip('/')}/_models/{self.name}")
        dst_fs = dst.getFileSystem(conf)
        dst_fs.mkdirs(dst.getParent())
        if not jvm.org.apache.hadoop.fs.FileUtil.copy(src.getFileSystem(conf), src, dst_fs, dst, False, conf):
            raise RuntimeError(f"could not copy {src} to {dst}")


@pytest.fixture(scope="session")
def trained_model(spark, tmp_path_factory: pytest.TempPathFactory, machine_contract: Any) -> TrainedModel:
    """``machine_failure`` v1 in production: logistic regression on 2,000 AI4I rows shaped as silver
    (no refit), trained once per run by ``ml.train.train_model``; tests that only need some model in
    production copy it into their lake (``trained_model.install(spark, lake_uri)``)."""
    from ml.train import train_model
    from streamsight.lake import models_uri
    from streamsight.settings import load_settings

    settings = load_settings(lake_dir=str(tmp_path_factory.mktemp("trained") / "lake"))
    meta = train_model(spark, settings, machine_contract, silver=spark.createDataFrame(ai4i_silver(2000)),
                       promote=True, algorithms=("logistic_regression",), refit=False)
    assert meta["aliases"] == ["production"]
    return TrainedModel(models_uri(settings.lake_uri), meta["model_name"], meta)


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
