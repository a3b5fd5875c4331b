"""The stream scored by a SageMaker endpoint (``streamsight backend --use sagemaker``): a real serving
process (``streamsight deploy --target local``) behind a fault-injecting proxy (the stand-in for an
endpoint that throttles, fails, answers late and dies), on a real Apache Kafka and local Spark."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest

from ingestion import sources
from ingestion.producer import produce
from streamsight.contracts import load_contracts
from tests.conftest import AI4I_CSV
from tests.faulty_endpoint import ERRORS, FaultyEndpoint
from tests.integration.helpers import ROOT, cli, cli_env, isolated_contract, wait_for

pytestmark = pytest.mark.integration

ENDPOINT = "failure-endpoint"


def test_endpoint_scoring_survives_throttling_errors_slow_answers_and_a_dead_endpoint(
        spark, kafka_broker, trained_model, tmp_path, monkeypatch):
    from ml.endpoint import LOCAL_COPY, MLLIB, scored_by
    from ml.online import RegistryFiles
    from ml.portable import PortableModel
    from streaming_jobs.pipeline import StreamJob
    from streamsight.lake import models_uri, read_table, table_uri
    from streamsight.settings import load_settings

    contracts_dir = isolated_contract(tmp_path, kafka_broker)
    env = cli_env(tmp_path, kafka_broker, contracts_dir)
    trained_model.install(spark, env["STREAMSIGHT_LAKE_DIR"])
    serving = subprocess.Popen([sys.executable, "-m", "streamsight_cli", "deploy", "--model", trained_model.name,
                                "--endpoint", ENDPOINT, "--port", "0"], env=env, cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    job_queries: list[Any] = []
    proxy: FaultyEndpoint | None = None
    try:
        url = (serving.stdout.readline() if serving.stdout else "").strip()
        assert url.startswith("http://"), url
        proxy = FaultyEndpoint(url, [*ERRORS, "slow"], slow_s=2.5).start()
        env.update({"STREAMSIGHT_SAGEMAKER__RUNTIME_URL": proxy.url, "STREAMSIGHT_SAGEMAKER__READ_TIMEOUT_S": "1",
                    "STREAMSIGHT_SAGEMAKER__BATCH_RECORDS": "100", "STREAMSIGHT_SAGEMAKER__MAX_ATTEMPTS": "3",
                    "STREAMSIGHT_SAGEMAKER__BREAKER_FAILURES": "2", "STREAMSIGHT_SAGEMAKER__BREAKER_RESET_S": "2"})
        for key, value in env.items():
            if key.startswith("STREAMSIGHT_"):
                monkeypatch.setenv(key, value)
        settings = load_settings()
        contract = load_contracts(contracts_dir)["machine_telemetry"]

        chosen = json.loads(cli(env, "backend", "--model", trained_model.name, "--use", "sagemaker",
                                "--endpoint", ENDPOINT).stdout)
        assert chosen == {"backend": "sagemaker", "endpoint": ENDPOINT, "version": 1}

        job = StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers)
        job_queries = job.start_queries()
        produced = 0

        def send(count: int) -> set[str]:
            """``count`` more AI4I rows to the raw topic; their event ids."""
            nonlocal produced
            produce(settings, contract, sources.ai4i_source(AI4I_CSV, skip=produced, limit=count), progress=False)
            produced += count
            return {f"ai4i-{udi}" for udi in range(produced - count + 1, produced + 1)}

        def scored(ids: set[str]) -> dict[str, Any] | None:
            StreamJob.check(job_queries)
            rows = read_table(spark, table_uri(settings.lake_uri, contract, "predictions")).collect()
            by_id = {r["event_id"]: r for r in rows}
            return by_id if ids <= set(by_id) else None

        # Every first attempt fails (throttling, 429, 500, 503, an answer after the read timeout):
        # the retries get every record scored by the endpoint.
        first = send(1000)
        rows = wait_for(lambda: scored(first), timeout=240, what="the first predictions")
        assert {rows[i]["scored_by"] for i in first} == {scored_by(ENDPOINT)}
        assert set(proxy.injected) == {*ERRORS, "slow"}

        # The endpoint is gone: the circuit opens, the local copy scores, nothing is lost.
        proxy.kill()
        down = send(500)
        rows = wait_for(lambda: scored(down), timeout=240, what="the predictions while the endpoint is down")
        assert {rows[i]["scored_by"] for i in down} == {LOCAL_COPY}

        # It comes back: once the circuit lets a call through, the endpoint scores again.
        proxy.revive(faults=[])
        back: set[str] = set()
        for _ in range(30):
            batch = send(100)
            back |= batch
            rows = wait_for(lambda batch=batch: scored(batch), timeout=120, what="the predictions after revival")
            if any(rows[i]["scored_by"] == scored_by(ENDPOINT) for i in batch):
                break
        else:
            pytest.fail("the endpoint never scored again after it came back")

        # Back to the job's own model, with no restart.
        assert json.loads(cli(env, "backend", "--model", trained_model.name, "--use", "mllib").stdout) == {
            "backend": "mllib"}
        last = send(200)
        rows = wait_for(lambda: scored(last), timeout=120, what="the predictions in the job")
        assert {rows[i]["scored_by"] for i in last} == {MLLIB}

        # Each event scored once, with the model's own probability whatever scored it.
        silver = read_table(spark, table_uri(settings.lake_uri, contract, "silver")).select("event_id").collect()
        predictions = read_table(spark, table_uri(settings.lake_uri, contract, "predictions")).collect()
        assert len(predictions) == len({r["event_id"] for r in predictions}) == len(silver) == produced
        files = RegistryFiles(models_uri(settings.lake_uri))
        local = PortableModel(files.read_json(trained_model.name, "v1", "scorer.json"))
        expected = local.probabilities([r.asDict() for r in predictions])
        assert [r["probability"] for r in predictions] == pytest.approx(list(expected), rel=1e-9, abs=1e-12)
        assert {r["scored_by"] for r in predictions} == {scored_by(ENDPOINT), LOCAL_COPY, MLLIB}
        assert {(r["model_name"], r["model_version"]) for r in predictions} == {(trained_model.name, 1)}
    finally:
        for q in job_queries:
            q.stop()
        if proxy is not None and proxy._server is not None:
            proxy.kill()
        serving.send_signal(signal.SIGTERM)
        serving.wait(timeout=60)
