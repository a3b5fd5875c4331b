"""``ml.sagemaker.deploy``'s paths moto's server does not cover (it has no UpdateEndpoint) and its
waiting, with botocore's Stubber standing in for S3 and SageMaker (a stand-in: no AWS here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.stub import ANY, Stubber

from streamsight.settings import load_settings

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/streamsight:sagemaker"
ROLE = "arn:aws:iam::123456789012:role/streamsight-sagemaker"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    version = tmp_path / "lake" / "_models" / "pump_vibration" / "v3"
    version.mkdir(parents=True)
    (version / "scorer.json").write_text(json.dumps({"format": "streamsight.portable/1"}))
    (version / "metadata.json").write_text(json.dumps({"model_name": "pump_vibration", "version": 3, "threshold": 0.4}))
    (version.parent / "aliases.json").write_text(json.dumps({"production": 3}))
    for name, value in {"IMAGE_URI": IMAGE, "EXECUTION_ROLE_ARN": ROLE, "ARTIFACTS_URI": "s3://models/serving",
                        "WAIT_TIMEOUT_S": "60", "POLL_S": "20"}.items():
        monkeypatch.setenv(f"STREAMSIGHT_SAGEMAKER__{name}", value)
    return load_settings(lake_dir=str(tmp_path / "lake"))


def _clients() -> tuple[Any, Any, Stubber, Stubber]:
    kwargs = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    s3, sm = boto3.client("s3", **kwargs), boto3.client("sagemaker", **kwargs)
    return s3, sm, Stubber(s3), Stubber(sm)


def _status(state: str, **extra: Any) -> dict[str, Any]:
    return {"EndpointName": "pump-vibration", "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/pump-vibration",
            "EndpointConfigName": "c", "EndpointStatus": state, "CreationTime": 0, "LastModifiedTime": 0, **extra}


def _made(s3_stub: Stubber, sm_stub: Stubber) -> None:
    s3_stub.add_response("put_object", {}, {"Bucket": "models", "Key": "serving/pump_vibration/v3/model.tar.gz", "Body": ANY})
    sm_stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"}, {
        "ModelName": ANY, "ExecutionRoleArn": ROLE, "PrimaryContainer": {
            "Image": IMAGE, "ModelDataUrl": "s3://models/serving/pump_vibration/v3/model.tar.gz",
            "Environment": {"STREAMSIGHT_MODEL": "pump_vibration", "STREAMSIGHT_MODEL_VERSION": "3"}}})
    config_arn = "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c"
    sm_stub.add_response("create_endpoint_config", {"EndpointConfigArn": config_arn},
                         {"EndpointConfigName": ANY, "ProductionVariants": ANY})


def _creates(sm_stub: Stubber, name: str, container: dict[str, Any]) -> None:
    """The calls that make SageMaker model ``container`` and a new endpoint ``name`` in service."""
    sm_stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"}, {
        "ModelName": ANY, "ExecutionRoleArn": ROLE, "PrimaryContainer": container})
    sm_stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c"},
                         {"EndpointConfigName": ANY, "ProductionVariants": ANY})
    sm_stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint",
                             expected_params={"EndpointName": name})
    sm_stub.add_response("create_endpoint", {"EndpointArn": _status("x")["EndpointArn"]},
                         {"EndpointName": name, "EndpointConfigName": ANY})
    sm_stub.add_response("describe_endpoint", _status("InService"), {"EndpointName": name})


def test_an_existing_endpoint_is_switched_to_the_new_configuration_and_waited_for(settings):
    from ml.sagemaker import deploy

    s3, sm, s3_stub, sm_stub = _clients()
    _made(s3_stub, sm_stub)
    sm_stub.add_response("describe_endpoint", _status("InService"), {"EndpointName": "pump-vibration"})
    sm_stub.add_response("update_endpoint", {"EndpointArn": _status("x")["EndpointArn"]},
                         {"EndpointName": "pump-vibration", "EndpointConfigName": ANY})
    for state in ("Updating", "Updating", "InService"):
        sm_stub.add_response("describe_endpoint", _status(state), {"EndpointName": "pump-vibration"})
    clock = FakeClock()
    with s3_stub, sm_stub:
        made = deploy(settings, "pump_vibration", clients=(s3, sm), clock=clock)
        s3_stub.assert_no_pending_responses()
        sm_stub.assert_no_pending_responses()
    assert (made["action"], made["status"], made["version"], made["endpoint"]) == ("updated", "InService", 3,
                                                                                    "pump-vibration")
    assert clock.slept == [20.0, 20.0]


@pytest.mark.parametrize("states, says", [
    (["Creating", "Failed"], "endpoint pump-vibration failed: image not found"),
    (["Creating"] * 4, "still Creating after 60 s (sagemaker.wait_timeout_s)"),  # at 0, 20, 40 and 60 s
])
def test_a_failed_or_slow_endpoint_stops_the_wait_with_the_reason(settings, states, says):
    from ml.sagemaker import DeployError, deploy

    s3, sm, s3_stub, sm_stub = _clients()
    _made(s3_stub, sm_stub)
    sm_stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint",
                             expected_params={"EndpointName": "pump-vibration"})
    sm_stub.add_response("create_endpoint", {"EndpointArn": _status("x")["EndpointArn"]},
                         {"EndpointName": "pump-vibration", "EndpointConfigName": ANY})
    for state in states:
        extra = {"FailureReason": "image not found"} if state == "Failed" else {}
        sm_stub.add_response("describe_endpoint", _status(state, **extra), {"EndpointName": "pump-vibration"})
    with s3_stub, sm_stub, pytest.raises(DeployError, match=re.escape(says)):
        deploy(settings, "pump_vibration", clients=(s3, sm), clock=FakeClock())
    sm_stub.assert_no_pending_responses()


def test_a_booster_goes_to_sagemakers_built_in_xgboost_container(settings, monkeypatch):
    """--container builtin-xgboost: the version's sagemaker-xgboost.tar.gz as it is, the built-in image,
    no environment; a missing image setting or archive stops before any call, naming it."""
    from ml.registry import RegistryError
    from ml.sagemaker import deploy
    from ml.train import XGBOOST_ARCHIVE
    from streamsight.errors import ConfigError

    with pytest.raises(ConfigError, match=r"STREAMSIGHT_SAGEMAKER__BUILTIN_XGBOOST_IMAGE_URI"):
        deploy(settings, "pump_vibration", builtin_xgboost=True, clients=(None, None))
    builtin = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:3.0-5"
    monkeypatch.setenv("STREAMSIGHT_SAGEMAKER__BUILTIN_XGBOOST_IMAGE_URI", builtin)
    settings = load_settings(lake_dir=settings.lake_dir)
    with pytest.raises(RegistryError, match=r"v3 has no sagemaker-xgboost\.tar\.gz: train it with --algorithm xgboost"):
        deploy(settings, "pump_vibration", builtin_xgboost=True, clients=(None, None))
    archive = b"\x1f\x8b a booster's archive"
    (Path(settings.lake_dir) / "_models" / "pump_vibration" / "v3" / XGBOOST_ARCHIVE).write_bytes(archive)

    s3, sm, s3_stub, sm_stub = _clients()
    key = "serving/pump_vibration/v3/builtin-xgboost/model.tar.gz"  # not the streamsight container's archive
    s3_stub.add_response("put_object", {}, {"Bucket": "models", "Key": key, "Body": archive})
    _creates(sm_stub, "pump-vibration", {"Image": builtin, "ModelDataUrl": f"s3://models/{key}", "Environment": {}})
    with s3_stub, sm_stub:
        made = deploy(settings, "pump_vibration", builtin_xgboost=True, clients=(s3, sm), clock=FakeClock())
        sm_stub.assert_no_pending_responses()
    assert (made["container"], made["image"], made["status"]) == ("builtin-xgboost", builtin, "InService")


def test_names_and_archives():
    import io
    import tarfile

    from ml.sagemaker import endpoint_name, model_archive
    from streamsight.errors import ConfigError

    assert endpoint_name("machine_failure") == "machine-failure"
    with pytest.raises(ConfigError, match="not a SageMaker endpoint name"):
        endpoint_name("x" * 64)
    files = {"scorer.json": b'{"a": 1}', "metadata.json": b'{"b": 2}'}
    archive = model_archive(files)
    assert archive == model_archive(dict(reversed(files.items())))  # the same model, the same bytes
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == files  # type: ignore[union-attr]


def test_the_stream_uses_an_endpoint_only_while_it_serves_the_production_version(settings):
    from ml.endpoint import backend_doc, endpoint_for
    from ml.online import RegistryFiles
    from streamsight.errors import ConfigError
    from streamsight.lake import models_uri

    files = RegistryFiles(models_uri(settings.lake_uri))
    assert files.backend("pump_vibration") == {"backend": "mllib"}  # no choice recorded: in the job
    files.set_backend("pump_vibration", backend_doc("sagemaker", "pump_vibration", 3))
    doc = files.backend("pump_vibration")
    assert doc == {"backend": "sagemaker", "endpoint": "pump-vibration", "version": 3}
    assert endpoint_for(doc, 3) == ("pump-vibration", None)
    endpoint, why = endpoint_for(doc, 4)
    assert endpoint is None and why is not None and "serves v3, production is v4" in why
    assert endpoint_for({"backend": "mllib"}, 3) == (None, None) == endpoint_for(None, 3)
    with pytest.raises(Exception, match="has no version 9"):
        files.set_backend("pump_vibration", backend_doc("sagemaker", "pump_vibration", 9))
    with pytest.raises(ConfigError, match="choose mllib or sagemaker"):
        backend_doc("tensorflow")
    with pytest.raises(ConfigError, match="needs the endpoint's name and the model version"):
        backend_doc("sagemaker", "pump-vibration")


def _runtime(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> tuple[Any, Stubber]:
    """An EndpointClient whose sagemaker-runtime client is stubbed."""
    from ml.endpoint import EndpointClient

    client = EndpointClient("pump-vibration", "us-east-1", None, backoff_s=0.001, max_backoff_s=0.002, **settings)
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x",
                           aws_secret_access_key="x")
    monkeypatch.setattr(EndpointClient, "client", lambda self: runtime)
    return client, Stubber(runtime)


def _answer(text: str) -> dict[str, Any]:
    from io import BytesIO

    from botocore.response import StreamingBody

    return {"Body": StreamingBody(BytesIO(text.encode()), len(text)), "ContentType": "text/csv"}


def test_endpoint_calls_retry_throttling_and_5xx_but_not_a_refused_record(monkeypatch):
    from ml.endpoint import EndpointFailure, RecordsRefused

    client, stub = _runtime(monkeypatch, max_attempts=3)
    with stub:
        stub.add_client_error("invoke_endpoint", "ThrottlingException", http_status_code=400)
        stub.add_client_error("invoke_endpoint", "ServiceUnavailable", http_status_code=503)
        stub.add_response("invoke_endpoint", _answer("0.25\n0.75\n"))
        assert client.invoke(b"1,2\n3,4\n", 2) == [[0.25], [0.75]]
        stub.assert_no_pending_responses()

        for code in ("ModelNotReadyException", "InternalFailure", "ThrottlingException"):
            stub.add_client_error("invoke_endpoint", code, http_status_code=429 if code.startswith("Model") else 500)
        with pytest.raises(EndpointFailure, match="ThrottlingException"):  # three attempts, then given up
            client.invoke(b"1,2\n", 1)
        stub.assert_no_pending_responses()

        stub.add_client_error("invoke_endpoint", "ModelError", "line 1: torque is missing", http_status_code=424)
        with pytest.raises(RecordsRefused, match="ModelError"):  # one attempt: the records are the problem
            client.invoke(b",2\n", 1)
        stub.assert_no_pending_responses()

        stub.add_response("invoke_endpoint", _answer("0.5\n"))
        with pytest.raises(EndpointFailure, match="1 lines for 2 records"):
            client.invoke(b"1,2\n3,4\n", 2)
        stub.add_response("invoke_endpoint", _answer("0.5,0.5\n0.2,0.7\n"))  # a class missing
        with pytest.raises(EndpointFailure, match="not 3 number"):
            client.invoke(b"1,2\n3,4\n", 2, width=3)
        stub.add_response("invoke_endpoint", _answer("0.5,0.25,0.25\n0.1,0.2,0.7\n"))
        assert client.invoke(b"1,2\n3,4\n", 2, width=3) == [[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]


def test_an_open_circuit_skips_the_endpoint_and_the_local_copy_scores(monkeypatch):
    import pyarrow as pa

    from ml.endpoint import LOCAL_COPY, EndpointScorer, scored_by

    client, stub = _runtime(monkeypatch, max_attempts=1, breaker_failures=2, breaker_reset_s=3600, batch_records=2,
                            max_concurrency=1)  # chunks in order
    monkeypatch.setattr("ml.endpoint._BREAKERS", {})
    scorer = EndpointScorer(client, {"features": ["x"]})
    # the local copy (ml.portable, checked against MLlib elsewhere) replaced by a visible rule
    monkeypatch.setattr(EndpointScorer, "local", lambda self, records: [[(r["x"] or 0) / 10] for r in records])
    batch = pa.RecordBatch.from_pydict({"id": [1, 2, 3, 4, 5, 6, 7], "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, None]})
    with stub:
        stub.add_response("invoke_endpoint", _answer("0.9\n0.8\n"), {
            "EndpointName": "pump-vibration", "ContentType": "application/jsonlines", "Accept": "text/csv",
            "Body": b'{"features":[1.0]}\n{"features":[2.0]}\n'})
        stub.add_client_error("invoke_endpoint", "InternalFailure", http_status_code=500)
        stub.add_client_error("invoke_endpoint", "InternalFailure", http_status_code=500)  # opens the circuit
        out = pa.Table.from_batches(list(scorer(iter([batch]))))
        stub.assert_no_pending_responses()  # the fourth chunk made no call
    assert out.column("id").to_pylist() == [1, 2, 3, 4, 5, 6, 7]
    assert out.column("probability").to_pylist() == pytest.approx([0.9, 0.8, 0.3, 0.4, 0.5, 0.6, 0.0])
    assert out.column("scored_by").to_pylist() == [scored_by("pump-vibration")] * 2 + [LOCAL_COPY] * 5


def test_the_stream_sends_log_events_the_serving_process_reads_back_unchanged():
    """app_logs' inputs as the stream holds them (a timestamp; messages with newlines, quotes, commas,
    accents, a line separator; an empty one) through the JSON Lines the stream sends an endpoint and
    back out of the serving process's parser: the same records, the same derived columns (DuckDB,
    from the event time in epoch milliseconds) and so the same probability as the stream's local copy."""
    from datetime import datetime

    from ml import portable
    from ml.endpoint import EndpointScorer
    from ml.online import ServedModel
    from ml.serving import Invocations
    from streamsight.contracts import load_contract
    from tests.integration.helpers import CONTRACTS

    contract = load_contract(CONTRACTS / "app_logs.yaml")
    features, categorical = portable.feature_order(contract)
    assert features == ["@timestamp", "@logStream", "@message", "@log"]
    derived = portable.derived_for(contract)
    assert [d["name"] for d in derived] == ["hour_of_day", "message_length", "log_length"]
    doc = {"format": portable.FORMAT, "features": features, "categorical": categorical,
           "input_schema": portable.input_schema(contract), "derived": derived,
           "event_time": portable.event_time_for(contract),
           "stages": [{"kind": "assemble", "inputs": ["hour_of_day", "message_length", "log_length"], "output": "v"},
                      {"kind": "logistic", "coefficients": [0.1, 0.01, -0.05], "intercept": -1.0}]}
    served = ServedModel.of("log_anomaly", 1, doc, {"threshold": 0.5})
    at = datetime(2024, 12, 8, 23, 59, 59, 999000)  # the stream's timestamp (UTC, naive)
    stream_rows = [
        {"@timestamp": at, "@logStream": "api/1", "@log": "1:/ecs/api",
         "@message": 'ERROR boom, "quoted"\r\njava.lang.IllegalStateException: état\n\tat a.B(B.java:1)'},
        {"@timestamp": at.replace(hour=3), "@logStream": "api,2", "@log": "1:/ecs/api", "@message": "x" * 5000},
        {"@timestamp": at.replace(hour=4), "@logStream": "api/3", "@log": "1:/ecs/api", "@message": ""},
        {"@timestamp": at.replace(hour=5), "@logStream": "api/4", "@log": "1:/ecs/api", "@message": "a\u2028b\x85c"},
    ]
    scorer = EndpointScorer(None, doc)  # type: ignore[arg-type]
    body = scorer.body(stream_rows)
    assert body.isascii() and body.count(b"\n") == len(stream_rows)
    read = Invocations(served).records(body, "application/jsonlines")
    assert read == [{**r, "@timestamp": 1_733_702_399_999 - [0, 20, 19, 18][i] * 3600 * 1000}
                    for i, r in enumerate(stream_rows)]
    local = served.scorer.probabilities(stream_rows)  # the stream's local copy, on its own rows
    np.testing.assert_allclose(served.scorer.probabilities(read), local, rtol=1e-12)
    hours, lengths = np.array([23, 3, 4, 5]), np.array([len(r["@message"]) for r in stream_rows])
    np.testing.assert_allclose(local, 1 / (1 + np.exp(-(0.1 * hours + 0.01 * lengths - 0.05 * 10 - 1.0))), rtol=1e-12)


@pytest.mark.parametrize(("task", "answer", "column", "expected"), [
    ("multiclass", "0.1,0.2,0.7\n0.6,0.3,0.1\n", "probabilities", [[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]),
    ("regression", "41.5\n-2.25\n", "predicted_value", [41.5, -2.25]),
])
def test_an_endpoint_scores_multiclass_and_regression_models_too(monkeypatch, task, answer, column, expected):
    """Each record's line of the answer: every class's probability, or the value; the local copy
    gives the same shape (ml.portable's class_probabilities or values)."""
    import pyarrow as pa

    from ml import portable
    from ml.endpoint import LOCAL_COPY, EndpointScorer

    client, stub = _runtime(monkeypatch, max_attempts=1, batch_records=2, max_concurrency=1)
    monkeypatch.setattr("ml.endpoint._BREAKERS", {})
    last = ({"kind": "softmax", "coefficients": [[0.0], [1.0], [2.0]], "intercepts": [0.0, 0.0, 0.0]}
            if task == "multiclass" else {"kind": "linear", "coefficients": [2.0], "intercept": 1.0})
    doc = {"format": portable.FORMAT, "features": ["x"], "categorical": [], "input_schema": {}, "task": task,
           **({"classes": ["a", "b", "c"]} if task == "multiclass" else {}),
           "stages": [{"kind": "assemble", "inputs": ["x"], "output": "v"}, last]}
    scorer = EndpointScorer(client, doc)
    assert scorer.output() == (column, "array<double>" if task == "multiclass" else "double")
    batch = pa.RecordBatch.from_pydict({"x": [1.0, 2.0, 0.5]})
    with stub:
        stub.add_response("invoke_endpoint", _answer(answer))
        stub.add_client_error("invoke_endpoint", "ValidationError", http_status_code=400)  # the local copy scores
        out = pa.Table.from_batches(list(scorer(iter([batch]))))
    local = portable.PortableModel(doc)
    last_row = (local.class_probabilities([{"x": 0.5}])[0].tolist() if task == "multiclass"
                else float(local.values([{"x": 0.5}])[0]))
    np.testing.assert_allclose(out.column(column).to_pylist(), [*expected, last_row], rtol=1e-12)
    assert out.column("scored_by").to_pylist()[2] == LOCAL_COPY


def test_the_text_endpoint_is_the_hugging_face_embedding_container_given_its_model_id(settings, monkeypatch):
    """deploy-text --target sagemaker: the embedding container's image with HF_MODEL_ID and no artifact;
    a missing image setting stops before any call, naming it."""
    from ml.sagemaker import deploy_text
    from streamsight.errors import ConfigError

    with pytest.raises(ConfigError, match=r"STREAMSIGHT_SAGEMAKER__TEXT_IMAGE_URI"):
        deploy_text(settings, "log-text", clients=(None, None))
    image = "683313688378.dkr.ecr.us-east-1.amazonaws.com/tei-cpu:2.0.1-tei1.8.2-cpu-py310-ubuntu22.04"
    monkeypatch.setenv("STREAMSIGHT_SAGEMAKER__TEXT_IMAGE_URI", image)
    monkeypatch.setenv("STREAMSIGHT_SAGEMAKER__TEXT_ENDPOINT", "log-text")
    monkeypatch.setenv("STREAMSIGHT_SAGEMAKER__TEXT_MODEL_ID", "BAAI/bge-small-en-v1.5")
    settings = load_settings(lake_dir=settings.lake_dir)

    _, sm, _, sm_stub = _clients()
    sm_stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint",
                             expected_params={"EndpointName": "log-text"})
    _creates(sm_stub, "log-text", {"Image": image, "Environment": {"HF_MODEL_ID": "BAAI/bge-small-en-v1.5"}})
    with sm_stub:
        made = deploy_text(settings, clients=(None, sm), clock=FakeClock())
        sm_stub.assert_no_pending_responses()
    assert (made["endpoint"], made["container"], made["hf_model_id"], made["status"]) == (
        "log-text", "huggingface-tei", "BAAI/bge-small-en-v1.5", "InService")

    # Another model behind the same endpoint would change every trained model's features: refused.
    from ml.sagemaker import DeployError

    sm_stub.add_response("describe_endpoint", _status("InService"), {"EndpointName": "log-text"})
    sm_stub.add_response("describe_endpoint_config", {
        "EndpointConfigName": "c", "EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c",
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "log-text-text-1"}], "CreationTime": 0},
        {"EndpointConfigName": "c"})
    sm_stub.add_response("describe_model", {
        "ModelName": "log-text-text-1", "ModelArn": "arn:aws:sagemaker:us-east-1:1:model/m", "CreationTime": 0,
        "PrimaryContainer": {"Image": image, "Environment": {"HF_MODEL_ID": "sentence-transformers/all-MiniLM-L6-v2"}}},
        {"ModelName": "log-text-text-1"})
    with sm_stub, pytest.raises(DeployError, match=re.escape(
            "endpoint log-text serves sentence-transformers/all-MiniLM-L6-v2; models trained on its embeddings "
            "would read BAAI/bge-small-en-v1.5's")):
        deploy_text(settings, clients=(None, sm), clock=FakeClock())
    sm_stub.assert_no_pending_responses()
    monkeypatch.delenv("STREAMSIGHT_SAGEMAKER__TEXT_ENDPOINT")
    with pytest.raises(ConfigError, match=r"STREAMSIGHT_SAGEMAKER__TEXT_ENDPOINT \(sagemaker\.text_endpoint\)"):
        deploy_text(load_settings(lake_dir=settings.lake_dir), clients=(None, None))


def test_texts_go_to_the_text_endpoint_once_each_in_batches_and_a_wrong_answer_is_refused(monkeypatch):
    """embed_remote: distinct texts only, batch_records per call, TEI's {"inputs": [...]}; empty and
    null texts are zeros; an answer of another shape or width fails naming the endpoint; training
    reads the width from the endpoint."""
    from ml.endpoint import EndpointClient, EndpointFailure
    from ml.text import embed_remote

    sent: list[Any] = []
    answers: list[Any] = []

    def invoke_json(self: Any, document: Any) -> Any:
        sent.append(document)
        return answers.pop(0) if answers else [[float(len(t)), 1.0, -1.0] for t in document["inputs"]]

    monkeypatch.setattr(EndpointClient, "invoke_json", invoke_json)
    client = EndpointClient("log-text", "us-east-1", None, batch_records=2)
    got = embed_remote(client, ["ab", None, "abc", "", "ab", "abcd", "x"], 3)
    assert sent == [{"inputs": ["ab", "abc"], "truncate": True}, {"inputs": ["abcd", "x"], "truncate": True}]
    np.testing.assert_array_equal(got[:, 0], [2, 0, 3, 0, 2, 4, 1])
    assert got.dtype == np.float32 and not got[1].any() and not got[3].any()

    answers.append([[1.0, 2.0]])
    with pytest.raises(EndpointFailure, match="text endpoint log-text answers 2 numbers per text; the model was trained on 3"):
        embed_remote(client, ["a"], 3)
    answers.append({"error": "Input validation error"})
    with pytest.raises(EndpointFailure, match=r"text endpoint log-text answered .*expected one array of numbers per text"):
        embed_remote(client, ["a"], 3)
    answers.append([[1.0, 2.0, 3.0]])  # one vector for two texts
    with pytest.raises(EndpointFailure, match="answered"):
        embed_remote(client, ["a", "b"], 3)

    from ml.train import _text_setup
    from streamsight.contracts import load_contract
    from tests.integration.helpers import CONTRACTS

    spec = load_contract(CONTRACTS / "app_logs.yaml").model
    assert spec is not None
    spec = spec.model_copy(update={"text_features": ["@message"], "text_encoding": "embedded"})
    monkeypatch.setenv("STREAMSIGHT_SAGEMAKER__TEXT_ENDPOINT", "log-text")
    text = _text_setup(load_settings(), spec)
    assert (text["text_endpoint"], text["text_dimensions"]) == ("log-text", 3)
    assert _text_setup(load_settings(), spec.model_copy(update={"text_encoding": "hashed"})).get("text_endpoint") is None


def test_the_text_endpoint_stand_in_answers_as_the_embedding_container():
    """The stand-in's contract: {"inputs": text or [texts]} in, an array of numbers per text out (the
    local model's 256); more texts than the container's default limit, or no text, refused with 400."""
    from fastapi.testclient import TestClient

    from ml.serving import text_embedding_app
    from ml.text import ENDPOINT_BATCH, embed

    client = TestClient(text_embedding_app("log-text"))
    answer = client.post("/endpoints/log-text/invocations", json={"inputs": ["disk full", "ok"], "truncate": True})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    np.testing.assert_array_equal(np.asarray(answer.json(), dtype=np.float32), embed(["disk full", "ok"], 256))
    assert len(client.post("/invocations", json={"inputs": "one text"}).json()) == 1
    too_many = client.post("/invocations", json={"inputs": ["x"] * (ENDPOINT_BATCH + 1)})
    assert too_many.status_code == 400 and f"maximum allowed batch size {ENDPOINT_BATCH}" in too_many.json()["detail"]
    assert client.post("/invocations", json={"inputs": []}).status_code == 400
    assert client.post("/invocations", content=b"x", headers={"content-type": "text/csv"}).status_code == 415
