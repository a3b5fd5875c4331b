"""The shipped ``app_logs`` stream scored by a SageMaker endpoint: CloudWatch-style log events
(``@``-named fields) from the synthetic services through a real Apache Kafka into the lake, the
replaced service's four features as derived columns beside the message's hashed words, the anomaly
model trained on them, then served by a real serving process (``streamsight deploy --target local``)
behind a fault-injecting proxy (the stand-in for an endpoint that throttles, fails, answers late and
dies) that the stream calls with boto3's ``sagemaker-runtime`` (``streamsight backend --use
sagemaker``); and the validated API answering 200 and 400 for that model."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from ingestion import sources
from ingestion.producer import produce
from streamsight.contracts import load_contracts
from tests.faulty_endpoint import ERRORS, FaultyEndpoint
from tests.integration.api_server import start_server, stop_server
from tests.integration.helpers import ROOT, cli, cli_env, isolated_contract, use_cli_env, wait_for

pytestmark = pytest.mark.integration

ENDPOINT = "log-anomaly"
MODEL = "log_anomaly"
START = datetime(2024, 5, 1, tzinfo=UTC)
TRACE = ('ERROR [http-nio-8080-exec-7] c.s.checkout.OrderController - POST /orders 500, "order 17" failed\r\n'
         "java.lang.IllegalStateException: état inattendu\u2028\n" + "\n".join(["\tat com.shop.Order.place(Order.java:42)"] * 60))


def test_log_events_scored_by_an_endpoint_that_throttles_fails_answers_late_and_dies(
        spark, kafka_broker, tmp_path, monkeypatch):
    from pyspark.ml.functions import vector_to_array

    from ml.endpoint import LOCAL_COPY, MLLIB, scored_by
    from ml.online import RegistryFiles
    from ml.registry import ModelRegistry
    from ml.train import PROBABILITY, train_model
    from streaming_jobs.pipeline import StreamJob
    from streamsight.lake import models_uri, read_table, table_uri
    from streamsight.settings import load_settings

    contracts_dir = isolated_contract(tmp_path, kafka_broker, base="app_logs")
    env = cli_env(tmp_path, kafka_broker, contracts_dir)
    use_cli_env(monkeypatch, env)
    settings = load_settings()
    contract = load_contracts(contracts_dir)["app_logs"]

    def table(name: str) -> Any:
        return read_table(spark, table_uri(settings.lake_uri, contract, name))

    # Twelve hours of 24 log streams, an event each per two minutes, then streamed into the lake.
    history = sources.synthetic_source(contract, machines=24, seed=11, start=START, interval_ms=120_000)
    sent = produce(settings, contract, history, count=24 * 360, progress=False)
    assert (sent.sent, sent.invalid) == (24 * 360, 0)
    StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers).run_until_idle()
    silver = table("silver").collect()
    assert len(silver) == 24 * 360
    for row in silver:  # the four-feature encoding, as computed here from the record
        assert row["hour_of_day"] == row["@timestamp"].hour and row["log_length"] == len(row["@log"])
        assert row["message_length"] == len(row["@message"])
        assert row["is_error"] == int(any(w in row["@message"] for w in ("ERROR", "FATAL", "Exception")))
    assert {g["@log"] for g in table("gold_by_log_group_5m").collect()} == {r["@log"] for r in silver}

    meta = train_model(spark, settings, contract, train_fraction=0.7, promote=True,
                       algorithms=("logistic_regression",))
    assert meta["text_features"] == ["@message"]
    assert meta["metrics"]["auc_pr"] > 4 * meta["baseline_metrics"]["auc_pr"]

    serving = subprocess.Popen([sys.executable, "-m", "streamsight_cli", "deploy", "--model", MODEL,
                                "--endpoint", ENDPOINT, "--port", "0"], env=env, cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    job_queries: list[Any] = []
    proxy: FaultyEndpoint | None = None
    server = None
    try:
        url = (serving.stdout.readline() if serving.stdout else "").strip()
        assert url.startswith("http://"), url
        proxy = FaultyEndpoint(url, [*ERRORS, "slow"], slow_s=2.5).start()
        env.update({"STREAMSIGHT_SAGEMAKER__RUNTIME_URL": proxy.url, "STREAMSIGHT_SAGEMAKER__READ_TIMEOUT_S": "1",
                    "STREAMSIGHT_SAGEMAKER__BATCH_RECORDS": "100", "STREAMSIGHT_SAGEMAKER__MAX_ATTEMPTS": "3",
                    "STREAMSIGHT_SAGEMAKER__BREAKER_FAILURES": "2", "STREAMSIGHT_SAGEMAKER__BREAKER_RESET_S": "2"})
        use_cli_env(monkeypatch, env)
        settings = load_settings()
        chosen = json.loads(cli(env, "backend", "--model", MODEL, "--use", "sagemaker", "--endpoint", ENDPOINT).stdout)
        assert chosen == {"backend": "sagemaker", "endpoint": ENDPOINT, "version": 1}

        # Live events, unlabelled: the generator's next day, the first a long multi-line stack trace
        # with quotes, commas, accents and a line separator, the second an empty message.
        later = next(sources.synthetic_source(contract, machines=24, seed=12, start=START.replace(day=2),
                                              interval_ms=120_000))
        live = later.table.slice(0, 1500).drop(["anomaly"]).to_pylist()
        live[0]["@message"], live[1]["@message"] = TRACE, ""
        job = StreamJob(spark, settings, contract, kafka_broker.bootstrap_servers)
        job_queries = job.start_queries()
        produced = 0

        def send(count: int) -> set[str]:
            """The next ``count`` live events to the raw topic; their ids."""
            nonlocal produced
            batch = live[produced:produced + count]
            produce(settings, contract, (sources.Event(payload=r) for r in batch), progress=False)
            produced += len(batch)
            return {r["@ptr"] for r in batch}

        def scored(ids: set[str]) -> dict[str, Any] | None:
            StreamJob.check(job_queries)
            by_id = {r["@ptr"]: r for r in table("predictions").where("anomaly IS NULL").collect()}
            return by_id if ids <= set(by_id) else None

        # Every first attempt fails (throttling, 429, 500, 503, an answer after the read timeout):
        # the retries get every record scored by the endpoint.
        first = send(600)
        rows = wait_for(lambda: scored(first), timeout=240, what="the first predictions")
        assert {rows[i]["scored_by"] for i in first} == {scored_by(ENDPOINT)}
        assert set(proxy.injected) == {*ERRORS, "slow"}

        # The endpoint is gone: the circuit opens, the local copy scores, nothing is lost.
        proxy.kill()
        down = send(300)
        rows = wait_for(lambda: scored(down), timeout=240, what="the predictions while the endpoint is down")
        assert {rows[i]["scored_by"] for i in down} == {LOCAL_COPY}

        # It comes back: once the circuit lets a call through, the endpoint scores again.
        proxy.revive(faults=[])
        for _ in range(8):
            batch = send(60)
            rows = wait_for(lambda batch=batch: scored(batch), timeout=120, what="the predictions after revival")
            if any(rows[i]["scored_by"] == scored_by(ENDPOINT) for i in batch):
                break
        else:
            pytest.fail("the endpoint never scored again after it came back")

        # Back to the job's own model, with no restart.
        assert json.loads(cli(env, "backend", "--model", MODEL, "--use", "mllib").stdout) == {"backend": "mllib"}
        last = send(100)
        rows = wait_for(lambda: scored(last), timeout=120, what="the predictions in the job")
        assert {rows[i]["scored_by"] for i in last} == {MLLIB}

        # Each event scored once, with the model's own probability whatever scored it.
        predictions = table("predictions").where("anomaly IS NULL").collect()
        assert len(predictions) == len({r["@ptr"] for r in predictions}) == produced
        model = ModelRegistry(spark, models_uri(settings.lake_uri)).load(MODEL, 1)
        mllib = {r["@ptr"]: r["p"] for r in model.transform(table("silver").where("anomaly IS NULL"))
                 .select("@ptr", vector_to_array(PROBABILITY)[1].alias("p")).collect()}
        assert {r["@ptr"]: r["probability"] for r in predictions} == pytest.approx(mllib, rel=1e-9, abs=1e-12)
        assert {r["scored_by"] for r in predictions} == {scored_by(ENDPOINT), LOCAL_COPY, MLLIB}
        assert {(r["model_name"], r["model_version"]) for r in predictions} == {(MODEL, 1)}
        by_id = {r["@ptr"]: r for r in predictions}
        assert by_id[live[0]["@ptr"]]["probability"] > 0.5  # a stack trace is an anomaly
        assert by_id[live[1]["@ptr"]]["scored_by"] == scored_by(ENDPOINT)  # an empty message is a record

        # The validated API: the model's inputs as a vector in its order (GET gives it), or by name.
        for q in job_queries:
            q.stop()
        job_queries = []
        server = start_server(tmp_path, kafka_broker.bootstrap_servers, contracts_dir)
        info = server.get(f"/v1/models/{MODEL}", key="scorer").json()
        assert info["features"] == ["@timestamp", "@logStream", "@message", "@log"]
        record = {k: live[0][k] for k in info["features"]}
        ok = server.post(f"/v1/models/{MODEL}/predict", {"data": [record[f] for f in info["features"]]}, key="scorer")
        assert ok.status_code == 200, ok.text
        assert ok.json()["probability"] == pytest.approx(by_id[live[0]["@ptr"]]["probability"], rel=1e-9)
        served = RegistryFiles.of(settings).served(MODEL)
        assert ok.json()["probability"] == pytest.approx(float(served.scorer.probabilities([record])[0]), rel=1e-12)
        bad = server.post(f"/v1/models/{MODEL}/predict", {**record, "@timestamp": "yesterday"}, key="scorer")
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "@timestamp"
    finally:
        for q in job_queries:
            q.stop()
        if server is not None:
            stop_server(server)
        if proxy is not None and proxy._server is not None:
            proxy.kill()
        serving.send_signal(signal.SIGTERM)
        serving.wait(timeout=60)
