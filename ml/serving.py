"""One model version behind SageMaker's inference-container contract (FastAPI on uvicorn).

* ``GET /ping``: 200 once the model is loaded.
* ``POST /invocations``: scores the records of the body, in order.

  - ``text/csv``: a record per line, the values of the model's inputs in its order (the numeric
    ones, then the others, as ``{"data": [...]}`` of the HTTP API; an object, array or boolean as
    JSON text), no header;
  - ``application/jsonlines``: a JSON value per line, ``{"features": [...]}`` (that order) or an
    object of the features by name.

  The answer follows ``Accept``: ``text/csv`` (the default: one probability per line; a
  multiclass model's line holds each class's, in its order, as SageMaker's built-in XGBoost
  ``multi:softprob`` answers) or ``application/jsonlines`` (``{"score": p, "label": 0|1}`` per line,
  the label at the version's threshold; multiclass: the most probable class, its probability and
  ``probabilities`` by class; regression: ``{"score": value}``, and the CSV line is the value, as the
  built-in container's regression objectives answer). A bad record answers 400 naming its line and
  feature, and nothing is scored; another content type 415, another ``Accept`` 406, a body over
  6 MiB (SageMaker's limit) 413.
* ``POST /endpoints/{name}/invocations``: the SageMaker runtime API's path, so boto3's
  ``sagemaker-runtime`` client given this process's URL as ``endpoint_url`` calls it as it calls an
  endpoint (its request signature is not checked). Errors come back as the runtime sends them: a
  name other than the served endpoint's is a ``ValidationError`` (400), a record the model refuses
  a ``ModelError`` (424) carrying the container's status and message.

The model is a registry version's ``scorer.json`` (:mod:`ml.portable`, no Spark), read through
:class:`ml.online.RegistryFiles` (``streamsight deploy --target local``), or the ``scorer.json`` and
``metadata.json`` of a model folder (``/opt/ml/model`` in a container).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from ml.online import ServedModel
from ml.registry import METADATA_FILE, SCORER_FILE, RegistryError
from streamsight.web import read_body

if TYPE_CHECKING:  # pragma: no cover
    from streamsight.settings import Settings

log = logging.getLogger("ml.serving")

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker's invocation payload limit
CSV, JSON_LINES, JSON = "text/csv", "application/jsonlines", "application/json"


class BadRecord(Exception):
    """A record the model cannot score: which line, which feature and why."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")


def load_version(settings: Settings, name: str, version: int | None = None) -> ServedModel:
    """Version ``version`` of model ``name`` from the lake's registry (default: its production one)."""
    from ml.online import RegistryFiles

    return RegistryFiles.of(settings).served(name, version)


def load_folder(folder: Path) -> ServedModel:
    """The model of a folder holding ``scorer.json`` and ``metadata.json`` (a SageMaker model folder)."""
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        doc = json.loads((folder / SCORER_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RegistryError(f"{folder} holds no {Path(exc.filename).name}") from None
    return ServedModel.of(str(metadata["model_name"]), int(metadata["version"]), doc, metadata)


class Invocations:
    """Parses a body into records, checks them against the model's input schema and scores them."""

    def __init__(self, served: ServedModel) -> None:
        import fastjsonschema

        self.served = served
        self.features = served.scorer.features
        self.categorical = served.scorer.categorical
        self.required = list(served.scorer.input_schema.get("required", []))
        properties = served.scorer.input_schema.get("properties", {})
        self._json = {f for f in self.features if properties.get(f, {}).get("type") in ("object", "array", "boolean")}
        self._check: Callable[[Any], Any] = fastjsonschema.compile(served.scorer.input_schema)

    def records(self, body: bytes, content_type: str) -> list[dict[str, Any]]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRecord(1, f"the body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
        if content_type == CSV:
            rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text)), start=1) if row]
            records = [(n, self._from_values(n, row, text_values=True)) for n, row in rows]
        else:
            lines = text.split("\n")  # JSON Lines: only a newline ends a line (a value may hold U+2028 ...)
            records = [(n, self._from_json(n, line.removesuffix("\r"))) for n, line in enumerate(lines, start=1)
                       if line.strip()]
        if not records:
            raise BadRecord(1, "the body holds no records")
        for n, record in records:
            missing = [f for f in self.required if record.get(f) is None]
            if missing:
                raise BadRecord(n, f"{missing[0]} is missing (or empty)")
            try:
                self._check({k: v for k, v in record.items() if v is not None})  # a null is an absent value
            except Exception as exc:  # fastjsonschema.JsonSchemaValueException
                raise BadRecord(n, str(getattr(exc, "message", exc)).removeprefix("data.")) from None
        return [r for _, r in records]

    def _from_values(self, line: int, values: list[Any], *, text_values: bool) -> dict[str, Any]:
        if len(values) != len(self.features):
            raise BadRecord(line, f"{len(values)} values; the model takes {len(self.features)}: {', '.join(self.features)}")
        record: dict[str, Any] = {}
        for name, value in zip(self.features, values, strict=True):
            if text_values and name not in self.categorical:
                value = value.strip()
                try:
                    record[name] = float(value) if value else None
                except ValueError:
                    raise BadRecord(line, f"{name}: {value!r} is not a number") from None
            elif text_values and name in self._json and value != "":  # JSON text in a CSV field
                try:
                    record[name] = json.loads(value)
                except ValueError:
                    raise BadRecord(line, f"{name}: {value[:80]!r} is not JSON") from None
            else:
                record[name] = None if text_values and value == "" else value  # CSV: an empty field is absent
        return record

    def _from_json(self, line: int, text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise BadRecord(line, f"not JSON: {exc}") from None
        if isinstance(value, dict) and set(value) == {"features"}:
            values = value["features"]
            if not isinstance(values, list):
                raise BadRecord(line, "features must be an array")
            return self._from_values(line, values, text_values=False)
        if not isinstance(value, dict):
            raise BadRecord(line, 'a line must be {"features": [...]} or an object of the features by name')
        return value

    def answer(self, records: list[dict[str, Any]], accept: str) -> Response:
        if self.served.scorer.task == "regression":
            values = [p["value"] for p in self.served.predict(records)]
            body = "".join((json.dumps({"score": v}) if accept == JSON_LINES else repr(v)) + "\n" for v in values)
            return Response(body.encode("utf-8"), headers={"Content-Type": accept})
        if self.served.threshold is None:  # multiclass
            predicted = self.served.predict(records)
            if accept == JSON_LINES:
                body = "".join(json.dumps({"score": p["probability"], "label": p["label"],
                                           "probabilities": p["probabilities"]}) + "\n" for p in predicted)
            else:
                body = "".join(",".join(repr(v) for v in p["probabilities"].values()) + "\n" for p in predicted)
            return Response(body.encode("utf-8"), headers={"Content-Type": accept})
        probabilities = self.served.scorer.probabilities(records).tolist()
        if accept == JSON_LINES:
            lines = (json.dumps({"score": p, "label": int(p >= self.served.threshold)}) for p in probabilities)
            body = "\n".join(lines) + "\n"
        else:
            body = "".join(f"{p!r}\n" for p in probabilities)
        return Response(body.encode("utf-8"), headers={"Content-Type": accept})  # as asked: no charset added


def _media(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


Scorer = Callable[[bytes, str, str], Response]  # (body, content type, accept) -> the answer; BadRecord: 400


def create_app(served: ServedModel, endpoint: str) -> FastAPI:
    """The container's app for ``served``, answering the runtime path of endpoint ``endpoint``."""
    invocations = Invocations(served)

    def score(body: bytes, content_type: str, accept: str) -> Response:
        return invocations.answer(invocations.records(body, content_type), accept)

    return container_app(f"Streamsight model {served.name} v{served.version}", endpoint, score,
                         accepts=(CSV, JSON_LINES), answers=(CSV, JSON_LINES))


def builtin_xgboost_app(booster: bytes, endpoint: str) -> FastAPI:
    """A stand-in for SageMaker's built-in XGBoost container, which cannot run here (no Docker, no
    AWS): ``booster`` (the ``xgboost-model`` file of a version's ``sagemaker-xgboost.tar.gz``) behind
    the same contract -- CSV rows of the feature vector in (no header; an empty field is missing),
    one prediction per line out (a probability; for ``multi:softprob`` each class's, comma-separated; a
    regression objective's value). Blank lines are skipped, as :class:`Invocations` skips them."""
    import numpy as np
    import xgboost

    model = xgboost.Booster()
    model.load_model(bytearray(booster))
    width = model.num_features()

    def score(body: bytes, content_type: str, accept: str) -> Response:
        rows = []
        for line, row in enumerate(csv.reader(io.StringIO(body.decode("utf-8", errors="replace"))), start=1):
            if not row or row == [""]:
                continue
            if len(row) != width:
                raise BadRecord(line, f"{len(row)} values; the booster reads {width}")
            try:
                rows.append([float(v) if v.strip() else np.nan for v in row])
            except ValueError as exc:
                raise BadRecord(line, str(exc)) from None
        if not rows:
            raise BadRecord(1, "the body holds no records")
        out = np.asarray(model.inplace_predict(np.array(rows, dtype=np.float64).reshape(len(rows), width)))
        lines = (",".join(repr(float(v)) for v in np.atleast_1d(p)) for p in out)
        return Response("".join(f"{line}\n" for line in lines).encode("ascii"), headers={"Content-Type": CSV})

    return container_app(f"Stand-in for SageMaker's built-in XGBoost container ({endpoint})", endpoint, score,
                         accepts=(CSV,), answers=(CSV,))


def text_embedding_app(endpoint: str) -> FastAPI:
    """A stand-in for the Hugging Face Embedding Container (Text Embeddings Inference), which cannot run
    here (no Docker, no AWS, and its model would be downloaded from the Hub): the local text model of
    :mod:`ml.text` (WordLlama ``l2_supercat``, 256 numbers) behind that container's SageMaker contract,
    ``{"inputs": text or [texts]}`` as JSON in (at most :data:`ml.text.ENDPOINT_BATCH` texts, the
    container's default limit), a JSON array of one array of numbers per text out."""
    from ml.text import DIMENSIONS, ENDPOINT_BATCH, embed

    def score(body: bytes, content_type: str, accept: str) -> Response:
        try:
            inputs = json.loads(body).get("inputs")
        except (ValueError, AttributeError):
            raise BadRecord(1, 'send a JSON object {"inputs": text or [texts]}') from None
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise BadRecord(1, '"inputs" must be a text or a non-empty array of texts')
        if len(texts) > ENDPOINT_BATCH:  # as the container refuses by default
            raise BadRecord(1, f"batch size {len(texts)} > maximum allowed batch size {ENDPOINT_BATCH}")
        vectors = embed(texts, max(DIMENSIONS))
        return Response(json.dumps(vectors.tolist()).encode("ascii"), headers={"Content-Type": JSON})

    return container_app(f"Stand-in for the Hugging Face Embedding Container ({endpoint})", endpoint, score,
                         accepts=(JSON,), answers=(JSON,))


def container_app(title: str, endpoint: str, scorer: Scorer, *, accepts: tuple[str, ...],
                  answers: tuple[str, ...]) -> FastAPI:
    """SageMaker's container contract around ``scorer``: ``GET /ping``, ``POST /invocations``, and the
    runtime API's ``POST /endpoints/{endpoint}/invocations`` with the runtime's error shapes."""
    app = FastAPI(title=title, openapi_url=None, docs_url=None, redoc_url=None)

    async def score(request: Request) -> Response:
        content_type = _media(request.headers.get("content-type")) or CSV
        if content_type not in accepts:
            raise HTTPException(415, f"send {' or '.join(accepts)} (got {content_type})")
        accept = _media(request.headers.get("accept"))
        accept = answers[0] if accept in ("", "*/*") else accept
        if accept not in answers:
            raise HTTPException(406, f"this model answers {' or '.join(answers)} (asked for {accept})")
        body = await read_body(request, MAX_BODY_BYTES)
        try:
            return scorer(body, content_type, accept)
        except BadRecord as exc:
            raise HTTPException(400, str(exc)) from None

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if not request.url.path.startswith("/endpoints/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        if exc.status_code == 404:  # another endpoint's name
            return JSONResponse({"message": exc.detail}, status_code=400,
                                headers={"x-amzn-ErrorType": "ValidationError"})
        return JSONResponse({"message": f"Received client error ({exc.status_code}) from primary with message "
                             f"\"{exc.detail}\"", "OriginalStatusCode": exc.status_code, "OriginalMessage": exc.detail},
                            status_code=424, headers={"x-amzn-ErrorType": "ModelError"})

    @app.get("/ping")
    async def ping() -> Response:
        return Response(status_code=200)

    @app.post("/invocations")
    async def invoke(request: Request) -> Response:
        return await score(request)

    @app.post("/endpoints/{name}/invocations")
    async def runtime_invoke(name: str, request: Request) -> Response:
        if name != endpoint:
            raise HTTPException(404, f"Endpoint {name} not found (this process serves {endpoint})")
        response = await score(request)
        response.headers["x-Amzn-Invoked-Production-Variant"] = "local"
        return response

    return app


def serve(app: FastAPI, what: str, *, host: str, port: int, announce: Callable[[str], None]) -> None:
    """Bind ``host:port`` (0: a free port), call ``announce`` with the URL, serve ``app`` (``what``,
    for the log) until SIGTERM."""
    import uvicorn

    from streamsight.web import listening_socket

    sock, url = listening_socket(host, port, "--port", backlog=1024)
    log.info("serving %s", what)
    announce(url)
    config = uvicorn.Config(app, log_config=None, access_log=False, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


def load_builtin_xgboost(settings: Settings, name: str, version: int | None = None) -> tuple[int, bytes]:
    """``(version, xgboost-model)``: the booster of a version trained with XGBoost, from its
    ``sagemaker-xgboost.tar.gz`` (what SageMaker's built-in container is given)."""
    import tarfile

    from ml.online import RegistryFiles

    files = RegistryFiles.of(settings)
    chosen, _, _ = files.version_files(name, version)
    with tarfile.open(fileobj=io.BytesIO(files.xgboost_archive(name, chosen))) as tar:
        try:
            member = tar.extractfile("xgboost-model")
        except KeyError:
            member = None
        if member is None:
            raise RegistryError(f"model {name!r} v{chosen}: its booster archive holds no xgboost-model")
        return chosen, member.read()
