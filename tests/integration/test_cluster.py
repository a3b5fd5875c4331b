"""The streaming job on a real Spark standalone cluster (a master and a worker on loopback, from
PySpark's own jars), submitted with spark-submit as the README tells a cluster user to: the Kafka
connector's jars (.jvm/spark) and the project's code as --py-files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestion import sources
from ingestion.producer import produce
from streamsight import jars
from streamsight.contracts import load_contracts
from streamsight.lake import read_table
from streamsight.settings import load_settings
from streamsight.spark import DELTA_CONF
from tests.conftest import AI4I_CSV
from tests.integration.helpers import ROOT, cli_env, isolated_contract, wait_for

pytestmark = pytest.mark.integration
SPARK_HOME = Path(__import__("pyspark").__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workers(ui_port: int) -> list[dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return [w for w in json.load(r).get("workers", []) if w.get("state") == "ALIVE"]
    except OSError:
        return []


@pytest.fixture
def standalone(tmp_path) -> Iterator[tuple[str, int]]:
    with contextlib.ExitStack() as files:
        yield from _standalone(tmp_path, files)


def _standalone(tmp_path: Path, files: contextlib.ExitStack) -> Iterator[tuple[str, int]]:
    """``spark://`` URL and web UI port of a master with one worker (1 core, 1 GB), stopped afterwards."""
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(tmp_path / "logs"), "PYSPARK_PYTHON": sys.executable}
    port, ui = _free_port(), _free_port()
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    master_log = files.enter_context((tmp_path / "master.log").open("wb"))
    worker_log = files.enter_context((tmp_path / "worker.log").open("wb"))
    procs = [subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(ui)], env=env,
                              stdout=master_log, stderr=subprocess.STDOUT, start_new_session=True)]
    url = f"spark://127.0.0.1:{port}"
    try:
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
             "--memory", "1g", "--webui-port", str(_free_port()), "--work-dir", str(tmp_path / "work"), url],
            env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_for(lambda: _workers(ui) or any(p.poll() is not None for p in procs), timeout=120,
                 what="the standalone worker to register with the master")
        assert all(p.poll() is None for p in procs), (tmp_path / "master.log").read_text()[-2000:]
        yield url, ui
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _code_archive(path: Path) -> Path:
    """The project's packages as one zip, as ansible/scripts/build_artifacts.sh builds it."""
    with zipfile.ZipFile(path, "w") as zf:
        for package in ("streamsight", "ingestion", "streaming_jobs", "ml", "analytics"):
            for file in sorted((ROOT / package).rglob("*.py")):
                zf.write(file, file.relative_to(ROOT).as_posix())
    return path


def test_spark_submit_to_a_standalone_cluster_reconciles(standalone, tmp_path, kafka_broker, spark):
    contracts_dir = isolated_contract(tmp_path, kafka_broker)
    env = cli_env(tmp_path, kafka_broker, contracts_dir)
    settings = load_settings(kafka={"bootstrap_servers": kafka_broker.bootstrap_servers}, contracts_dir=str(contracts_dir))
    contract = load_contracts(contracts_dir)["machine_telemetry"]
    good = produce(settings, contract, sources.ai4i_source(AI4I_CSV, limit=1000), progress=False)
    bad = produce(settings, contract, sources.synthetic_source(
        contract, machines=5, seed=9, faults=sources.FaultSpec(malformed=0.5, schema=0.5)), count=40, validate=False,
        progress=False)
    rejects = bad.faults["malformed"] + bad.faults["schema"]

    master, ui = standalone
    submit = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", master, "--deploy-mode", "client",
              "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.executor.memory=1g",
              "--conf", "spark.sql.shuffle.partitions=2",
              "--jars", ",".join(map(str, jars.classpath("spark"))),
              *[arg for key, value in DELTA_CONF.items() for arg in ("--conf", f"{key}={value}")],
              "--py-files", str(_code_archive(tmp_path / "streamsight.zip")),
              str(ROOT / "streaming_jobs" / "pipeline.py"), "--stream", "machine_telemetry", "--until-idle"]
    run_env = {**env, "SPARK_HOME": str(SPARK_HOME), "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    run_env.pop("PYTHONPATH")  # the code comes from --py-files, as on a cluster
    done = subprocess.run(submit, env=run_env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=10) as r:
        apps = json.load(r)["completedapps"]
    assert [a["name"] for a in apps] == ["streamsight-stream"]  # it ran on the cluster, not in local mode

    lake = Path(env["STREAMSIGHT_LAKE_DIR"])
    silver = read_table(spark, str(lake / "silver" / "machine_telemetry"))
    dead = read_table(spark, str(lake / "dead_letter" / "machine_telemetry"))
    bronze = read_table(spark, str(lake / "bronze" / "machine_telemetry"))
    assert bronze.count() == good.sent + bad.sent == 1040
    assert dead.count() == rejects and silver.count() == 1040 - rejects
    assert silver.select("event_id").distinct().count() == silver.count()
