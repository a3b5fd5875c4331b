"""``streamsight deploy --target sagemaker``: one model version as a SageMaker endpoint, with boto3.

1. The version's ``scorer.json`` and ``metadata.json`` go into ``model.tar.gz`` (what SageMaker
   unpacks into ``/opt/ml/model``), uploaded to ``<sagemaker.artifacts_uri>/<model>/v<N>/``.
2. A SageMaker model (``sagemaker.image_uri``: the Dockerfile's ``sagemaker`` stage, whose ``serve``
   is :mod:`ml.serving`; ``sagemaker.execution_role_arn``), an endpoint configuration of one variant
   (``AllTraffic``: ``sagemaker.instance_type`` x ``instance_count``), then the endpoint: created, or
   switched to the new configuration when it exists (``UpdateEndpoint``: SageMaker replaces the
   instances behind it without downtime).
3. Waits until the endpoint is ``InService`` (``sagemaker.wait_timeout_s``); ``Failed`` stops the
   wait with SageMaker's reason.

With ``builtin_xgboost`` (a version trained with ``--algorithm xgboost``), step 1 uploads the
version's ``sagemaker-xgboost.tar.gz`` (the booster as ``xgboost-model``) and step 2 uses SageMaker's
built-in XGBoost image (``sagemaker.builtin_xgboost_image_uri``), which is sent the feature vector.

``deploy_text`` (``streamsight deploy-text --target sagemaker``) makes the text endpoint of
``sagemaker.text_endpoint``: the Hugging Face Embedding Container (``sagemaker.text_image_uri``) given
``HF_MODEL_ID`` (``sagemaker.text_model_id``), with no artifact of ours. It refuses to put another
model behind an existing text endpoint: models trained on its embeddings would read the new one's.

Missing settings fail before any call, naming the setting; an AWS API that does not answer fails
within seconds (botocore's connect timeout, three attempts), with the error.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tarfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ml.registry import METADATA_FILE, SCORER_FILE
from streamsight.errors import ConfigError, StreamsightError

if TYPE_CHECKING:  # pragma: no cover
    from streamsight.settings import Settings

VARIANT = "AllTraffic"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's names


class DeployError(StreamsightError):
    """SageMaker refused a call, or the endpoint did not come into service."""


def endpoint_name(model: str) -> str:
    """A model name as a SageMaker name (letters, digits, hyphens)."""
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", model).strip("-")
    if not _NAME.match(name):
        raise ConfigError(f"--endpoint: {name!r} is not a SageMaker endpoint name (letters, digits, hyphens, 63 at most)")
    return name


def model_archive(files: dict[str, bytes]) -> bytes:
    """``model.tar.gz`` holding ``files`` at its root (fixed times and owners: the same model gives the
    same bytes)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return out.getvalue()


def _require(settings: Settings, fields: tuple[str, ...], command: str) -> None:
    """ConfigError naming the first of the ``sagemaker.*`` settings ``fields`` that is not set."""
    for field in fields:
        if not getattr(settings.sagemaker, field):
            raise ConfigError(f"STREAMSIGHT_SAGEMAKER__{field.upper()} (sagemaker.{field}) is not set: "
                              f"{command} needs it")


def _required(settings: Settings, builtin_xgboost: bool = False) -> tuple[str, str, str, str]:
    sm = settings.sagemaker
    image_field = "builtin_xgboost_image_uri" if builtin_xgboost else "image_uri"
    _require(settings, (image_field, "execution_role_arn", "artifacts_uri"), "deploy --target sagemaker")
    image = getattr(sm, image_field)
    assert image and sm.execution_role_arn and sm.artifacts_uri
    bucket, _, prefix = sm.artifacts_uri.split("://", 1)[1].partition("/")
    return image, sm.execution_role_arn, bucket, prefix.strip("/")


def _clients(settings: Settings) -> tuple[Any, Any]:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    kwargs = {"region_name": settings.aws.region, "endpoint_url": settings.aws.endpoint_url, "config": config}
    return boto3.client("s3", **kwargs), boto3.client("sagemaker", **kwargs)


def deploy(settings: Settings, model: str, version: int | None = None, endpoint: str | None = None, *,
           builtin_xgboost: bool = False, clients: tuple[Any, Any] | None = None,
           clock: Any = time) -> dict[str, Any]:
    """Deploy ``model`` v``version`` (default: production) to endpoint ``endpoint`` (default: the model's
    name); returns what was made and the endpoint's final status."""
    from ml.online import RegistryFiles

    image, role, bucket, prefix = _required(settings, builtin_xgboost)
    name = endpoint_name(endpoint or model)
    files = RegistryFiles.of(settings)
    chosen, metadata, scorer = files.version_files(model, version)
    if builtin_xgboost:
        archive = files.xgboost_archive(model, chosen)
    else:
        archive = model_archive({f: json.dumps(doc, indent=1).encode("utf-8")
                                 for f, doc in ((METADATA_FILE, metadata), (SCORER_FILE, scorer))})
    # one key per container: an endpoint's instances reload their archive when SageMaker replaces them
    key = "/".join(p for p in (prefix, model, f"v{chosen}", "builtin-xgboost" if builtin_xgboost else "",
                               "model.tar.gz") if p)
    made = f"{name[:40]}-v{chosen}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    s3, sm = clients or _clients(settings)
    with _aws_errors(settings):
        s3.put_object(Bucket=bucket, Key=key, Body=archive)
        action, status = _endpoint(settings, sm, name, made, {
            "Image": image, "ModelDataUrl": f"s3://{bucket}/{key}",
            "Environment": {} if builtin_xgboost else {"STREAMSIGHT_MODEL": model,
                                                       "STREAMSIGHT_MODEL_VERSION": str(chosen)}}, role, clock)
    return {"endpoint": name, "action": action, "endpoint_arn": status.get("EndpointArn"), "model": model,
            "version": chosen, "container": "builtin-xgboost" if builtin_xgboost else "streamsight",
            "image": image, "sagemaker_model": made, "endpoint_config": made,
            "model_data_url": f"s3://{bucket}/{key}", "status": status["EndpointStatus"]}


def deploy_text(settings: Settings, endpoint: str | None = None, *, clients: tuple[Any, Any] | None = None,
                clock: Any = time) -> dict[str, Any]:
    """Make ``endpoint`` (default: ``sagemaker.text_endpoint``) a SageMaker endpoint of the Hugging Face
    Embedding Container (``sagemaker.text_image_uri``) serving ``sagemaker.text_model_id``, which the
    container fetches from the Hugging Face Hub at start; returns what was made."""
    sm_settings = settings.sagemaker
    if not (endpoint or sm_settings.text_endpoint):
        raise ConfigError("STREAMSIGHT_SAGEMAKER__TEXT_ENDPOINT (sagemaker.text_endpoint) is not set: "
                          "deploy-text needs an endpoint name")
    name = endpoint_name(endpoint or sm_settings.text_endpoint or "")
    _require(settings, ("text_image_uri", "execution_role_arn"), "deploy-text --target sagemaker")
    assert sm_settings.text_image_uri and sm_settings.execution_role_arn
    made = f"{name[:40]}-text-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    _, sm = clients or _clients(settings)
    with _aws_errors(settings):
        serving = _text_model_of(sm, name)
        if serving is not None and serving != sm_settings.text_model_id:
            raise DeployError(f"endpoint {name} serves {serving}; models trained on its embeddings would read "
                              f"{sm_settings.text_model_id}'s: deploy it under another endpoint name")
        action, status = _endpoint(settings, sm, name, made, {
            "Image": sm_settings.text_image_uri, "Environment": {"HF_MODEL_ID": sm_settings.text_model_id}},
            sm_settings.execution_role_arn, clock)
    return {"endpoint": name, "action": action, "endpoint_arn": status.get("EndpointArn"),
            "container": "huggingface-tei", "image": sm_settings.text_image_uri,
            "hf_model_id": sm_settings.text_model_id, "sagemaker_model": made, "endpoint_config": made,
            "status": status["EndpointStatus"]}


def _text_model_of(sm: Any, name: str) -> str | None:
    """The Hugging Face model (``HF_MODEL_ID``) endpoint ``name`` serves; None if there is no endpoint."""
    described = _described(sm, name)
    if described is None:
        return None
    config = described["EndpointConfigName"]
    variant = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
    model = sm.describe_model(ModelName=variant["ModelName"])
    return str(model.get("PrimaryContainer", {}).get("Environment", {}).get("HF_MODEL_ID") or "")


@contextlib.contextmanager
def _aws_errors(settings: Settings) -> Iterator[None]:
    """AWS's refusals and unreachability as :class:`DeployError`, with what AWS said."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DeployError(f"SageMaker refused {exc.operation_name}: {error.get('Code')}: {error.get('Message')}") from None
    except BotoCoreError as exc:
        raise DeployError(f"cannot reach AWS ({settings.aws.endpoint_url or settings.aws.region}): {exc}") from None


def _endpoint(settings: Settings, sm: Any, name: str, made: str, container: dict[str, Any], role: str,
              clock: Any) -> tuple[str, dict[str, Any]]:
    """SageMaker model ``made`` of ``container``, an endpoint configuration of one variant, and endpoint
    ``name`` created or switched to it; ``(created|updated, its description once InService)``."""
    sm.create_model(ModelName=made, ExecutionRoleArn=role, PrimaryContainer=container)
    sm.create_endpoint_config(EndpointConfigName=made, ProductionVariants=[{
        "VariantName": VARIANT, "ModelName": made, "InstanceType": settings.sagemaker.instance_type,
        "InitialInstanceCount": settings.sagemaker.instance_count}])
    if _described(sm, name) is not None:
        sm.update_endpoint(EndpointName=name, EndpointConfigName=made)
        action = "updated"
    else:
        sm.create_endpoint(EndpointName=name, EndpointConfigName=made)
        action = "created"
    return action, _wait(sm, name, settings.sagemaker.wait_timeout_s, settings.sagemaker.poll_s, clock)


def _described(sm: Any, name: str) -> dict[str, Any] | None:
    """Endpoint ``name``'s description, or None if there is no such endpoint."""
    from botocore.exceptions import ClientError

    try:
        return dict(sm.describe_endpoint(EndpointName=name))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationException":  # SageMaker: no such endpoint
            return None
        raise


def _wait(sm: Any, name: str, timeout_s: float, poll_s: float, clock: Any) -> dict[str, Any]:
    """The endpoint's description once it is InService; raises on Failed or after ``timeout_s``."""
    deadline = clock.monotonic() + timeout_s
    while True:
        status = sm.describe_endpoint(EndpointName=name)
        state = status["EndpointStatus"]
        if state == "InService":
            return dict(status)
        if state == "Failed":
            raise DeployError(f"endpoint {name} failed: {status.get('FailureReason', 'no reason given')}")
        if clock.monotonic() >= deadline:
            raise DeployError(f"endpoint {name} is still {state} after {timeout_s:g} s "
                              "(sagemaker.wait_timeout_s); it may still come into service")
        clock.sleep(poll_s)  # SageMaker's status changes in minutes; the loop is bounded by the deadline
