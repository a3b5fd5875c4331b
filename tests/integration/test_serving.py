"""``streamsight deploy --target local``: a model version behind SageMaker's container contract, as a
real process, called with boto3's ``sagemaker-runtime`` client (``endpoint_url``) as an endpoint is."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ai4i_silver
from tests.integration.helpers import ROOT

pytestmark = pytest.mark.integration

ENDPOINT = "failure-endpoint"


@pytest.fixture(scope="module")
def endpoint(spark, trained_model, tmp_path_factory) -> Iterator[dict[str, Any]]:
    import os

    lake = tmp_path_factory.mktemp("serving") / "lake"
    trained_model.install(spark, str(lake))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STREAMSIGHT_LAKE_DIR": str(lake), "STREAMSIGHT_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen([sys.executable, "-m", "streamsight_cli", "deploy", "--model", trained_model.name,
                             "--endpoint", ENDPOINT, "--port", "0"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = (proc.stdout.readline() if proc.stdout else "").strip()
    try:
        assert url.startswith("http://"), proc.stderr.read() if proc.stderr else url
        yield {"url": url, "env": env, "lake": lake, "proc": proc}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)


@pytest.fixture(scope="module")
def runtime(endpoint) -> Any:
    import boto3

    return boto3.client("sagemaker-runtime", endpoint_url=endpoint["url"], region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local")


@pytest.fixture(scope="module")
def expected(endpoint, trained_model) -> tuple[Any, list[dict[str, Any]], list[float]]:
    """The production version's portable scorer, 40 AI4I rows and their probabilities."""
    from ml.online import RegistryFiles
    from ml.portable import PortableModel

    files = RegistryFiles(str(endpoint["lake"] / "_models"))
    scorer = PortableModel(files.read_json(trained_model.name, "v1", "scorer.json"))
    rows = ai4i_silver(2040).iloc[2000:]  # rows the model was not trained on
    records = [{f: row[f] for f in scorer.features} for row in rows.to_dict("records")]
    return scorer, records, scorer.probabilities(records).tolist()


def _csv(records: list[dict[str, Any]], features: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[r[f] for f in features] for r in records])
    return out.getvalue()


def test_the_runtime_client_gets_each_records_probability_in_csv_and_json_lines(runtime, expected, trained_model):
    scorer, records, probabilities = expected
    answer = runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Accept="text/csv",
                                     Body=_csv(records, scorer.features))
    assert answer["ContentType"] == "text/csv"
    got = [float(line) for line in answer["Body"].read().decode().splitlines()]
    assert got == pytest.approx(probabilities, rel=1e-12, abs=1e-15) and len(set(got)) > 1

    threshold = trained_model.metadata["threshold"]
    lines = [json.dumps({"features": [r[f] for f in scorer.features]}) for r in records[:20]]
    lines += [json.dumps(r) for r in records[20:]]  # an object of the features by name
    answer = runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="application/jsonlines",
                                     Accept="application/jsonlines", Body="\n".join(lines))
    scored = [json.loads(line) for line in answer["Body"].read().decode().splitlines()]
    assert [s["score"] for s in scored] == pytest.approx(probabilities, rel=1e-12, abs=1e-15)
    assert [s["label"] for s in scored] == [int(p >= threshold) for p in probabilities]


def test_refusals_come_back_as_the_runtime_sends_them(runtime, expected, endpoint):
    from botocore.exceptions import ClientError

    scorer, records, _ = expected
    with pytest.raises(ClientError) as other:
        runtime.invoke_endpoint(EndpointName="nobody", ContentType="text/csv", Body=_csv(records[:1], scorer.features))
    assert other.value.response["Error"]["Code"] == "ValidationError" and "nobody" in str(other.value)

    bad = [dict(r) for r in records[:3]]
    bad[1]["torque_nm"] = "lots"
    with pytest.raises(runtime.exceptions.ModelError) as refused:
        runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Body=_csv(bad, scorer.features))
    assert refused.value.response["OriginalStatusCode"] == 400
    assert refused.value.response["OriginalMessage"] == "line 2: torque_nm: 'lots' is not a number"

    url = endpoint["url"]
    assert httpx.get(f"{url}/ping").status_code == 200
    short = httpx.post(f"{url}/invocations", content="1,2,3\n", headers={"Content-Type": "text/csv"})
    assert short.status_code == 400 and f"the model takes {len(scorer.features)}" in short.json()["detail"]
    out_of_range = dict(records[0], torque_nm=-5.0)
    answer = httpx.post(f"{url}/invocations", content=json.dumps(out_of_range), headers={"Content-Type": "application/jsonlines"})
    assert answer.status_code == 400 and answer.json()["detail"].startswith("line 1: torque_nm must be bigger")
    assert httpx.post(f"{url}/invocations", content="{}", headers={"Content-Type": "application/json"}).status_code == 415
    assert httpx.post(f"{url}/invocations", content="1", headers={"Content-Type": "text/csv", "Accept": "image/png"}
                      ).status_code == 406


def test_deploying_a_model_the_registry_does_not_hold_fails_at_start(endpoint):
    proc = subprocess.run([sys.executable, "-m", "streamsight_cli", "deploy", "--model", "nothing_here", "--port", "0"],
                          env=endpoint["env"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--model nothing_here: model 'nothing_here' has no production version" in proc.stderr


def test_the_containers_serve_entry_scores_a_model_folder(endpoint, expected, trained_model, tmp_path):
    """docker/sagemaker/serve, as SageMaker starts the image: the model folder of one version (what
    model.tar.gz unpacks to) at SM_MODEL_DIR, the port from SAGEMAKER_BIND_TO_PORT."""
    import os

    scorer, records, probabilities = expected
    version = endpoint["lake"] / "_models" / trained_model.name / "v1"
    for name in ("scorer.json", "metadata.json"):
        (tmp_path / name).write_bytes((version / name).read_bytes())
    env = {**endpoint["env"], "SM_MODEL_DIR": str(tmp_path), "SAGEMAKER_BIND_TO_PORT": "0",
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    proc = subprocess.Popen([str(ROOT / "docker" / "sagemaker" / "serve")], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = (proc.stdout.readline() if proc.stdout else "").strip().replace("0.0.0.0", "127.0.0.1")
        assert url.startswith("http://"), proc.stderr.read() if proc.stderr else url
        assert httpx.get(f"{url}/ping").status_code == 200
        answer = httpx.post(f"{url}/invocations", content=_csv(records, scorer.features),
                            headers={"Content-Type": "text/csv"})
        assert answer.status_code == 200 and answer.headers["content-type"] == "text/csv"
        assert [float(x) for x in answer.text.splitlines()] == pytest.approx(probabilities, rel=1e-12, abs=1e-15)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "serving machine_failure v1 as endpoint machine-failure" in (proc.stderr.read() if proc.stderr else "")
    (tmp_path / "scorer.json").unlink()
    empty = subprocess.run([str(ROOT / "docker" / "sagemaker" / "serve")], env=env, capture_output=True, text=True,
                           timeout=120)
    assert empty.returncode == 2 and f"--model-dir {tmp_path}: {tmp_path} holds no scorer.json" in empty.stderr


def test_deploy_to_sagemaker_uploads_the_version_and_brings_an_endpoint_into_service(endpoint, trained_model,
                                                                                       tmp_path, monkeypatch):
    """The control plane is moto's server (a stand-in for S3 and SageMaker): the CLI as a real process."""
    import tarfile

    import boto3

    from tests.moto_server import CREDENTIALS, start_moto, stop

    moto, url = start_moto(tmp_path / "moto.log")
    try:
        clients = {k: boto3.client(k, endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                                   aws_secret_access_key="testing") for k in ("s3", "sagemaker")}
        clients["s3"].create_bucket(Bucket="models-bucket")
        settings = {"STREAMSIGHT_AWS__ENDPOINT_URL": url, "STREAMSIGHT_SAGEMAKER__ARTIFACTS_URI": "s3://models-bucket/serving",
                    "STREAMSIGHT_SAGEMAKER__IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/streamsight:sagemaker",
                    "STREAMSIGHT_SAGEMAKER__EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/streamsight-sagemaker",
                    "STREAMSIGHT_SAGEMAKER__POLL_S": "1"}
        env = {**endpoint["env"], **CREDENTIALS, **settings}
        env.pop("AWS_PROFILE", None)

        def deploy(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "streamsight_cli", "deploy", "--target", "sagemaker", *args],
                                  env={**env, **(extra or {})}, cwd=ROOT, capture_output=True, text=True, timeout=120)

        done = deploy("--model", trained_model.name)
        assert done.returncode == 0, done.stderr
        made = json.loads(done.stdout)
        assert (made["endpoint"], made["action"], made["status"], made["version"]) == ("machine-failure", "created",
                                                                                        "InService", 1)
        described = clients["sagemaker"].describe_endpoint(EndpointName="machine-failure")
        assert described["EndpointStatus"] == "InService"
        config = clients["sagemaker"].describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
        (variant,) = config["ProductionVariants"]
        assert (variant["VariantName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
            "AllTraffic", "ml.m5.large", 1)
        container = clients["sagemaker"].describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]
        assert container["Image"] == settings["STREAMSIGHT_SAGEMAKER__IMAGE_URI"]
        assert container["ModelDataUrl"] == made["model_data_url"] == "s3://models-bucket/serving/machine_failure/v1/model.tar.gz"
        archive = clients["s3"].get_object(Bucket="models-bucket", Key="serving/machine_failure/v1/model.tar.gz")["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            assert sorted(tar.getnames()) == ["metadata.json", "scorer.json"]
            unpacked = tmp_path / "opt-ml-model"
            tar.extractall(unpacked, filter="data")
        version = endpoint["lake"] / "_models" / trained_model.name / "v1"
        for name in ("scorer.json", "metadata.json"):
            assert json.loads((unpacked / name).read_text()) == json.loads((version / name).read_text())
        # The stream now scores the model with the endpoint (the registry's choice).
        chosen = {"backend": "sagemaker", "endpoint": "machine-failure", "version": 1}
        assert made["backend"] == chosen
        assert json.loads((version.parent / "backend.json").read_text()) == chosen

        missing = deploy("--model", trained_model.name, extra={"STREAMSIGHT_SAGEMAKER__IMAGE_URI": ""})
        assert missing.returncode == 2 and "STREAMSIGHT_SAGEMAKER__IMAGE_URI (sagemaker.image_uri) is not set" in missing.stderr
        unreachable = deploy("--model", trained_model.name, extra={"STREAMSIGHT_AWS__ENDPOINT_URL": "http://127.0.0.1:1"})
        assert unreachable.returncode == 2 and "cannot reach AWS (http://127.0.0.1:1)" in unreachable.stderr
    finally:
        stop(moto)
