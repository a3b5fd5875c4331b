"""Online scoring: ``POST /v1/models/{name}/predict`` with the model's production version, and the
stored predictions of the streams: ``GET /v1/predictions`` (the DynamoDB store, :mod:`streamsight.store`).

A request holds one record (an object with the model's features by name; other fields are ignored),
an array of records, or ``{"data": [...]}``: the feature values in the model's feature order (its
``features`` in ``GET /v1/models/{name}``), or a list of such vectors. Each record is checked against the
model's input schema (the contract's JSON Schema of each feature, all required) and scored by
:class:`~ml.portable.PortableModel` -- the same probabilities as the MLlib pipeline, without Spark.

* ``200`` ``model``, ``version``, ``threshold`` and, for one record, ``probability`` and ``label``
  (1 when the probability reaches the threshold); for several, ``predictions`` in request order.
  A multiclass model has no threshold: ``label`` is the most probable class, ``probability`` its
  probability, and ``probabilities`` holds every class's; a regression model answers ``value``;
* ``400`` every invalid record's index, field and message; nothing is scored;
* ``404`` no such model, or none in production; ``413``/``415`` as for events;
* ``503`` the production version cannot be served (e.g. trained before ``scorer.json`` existed), or
  its text endpoint (``sagemaker.text_endpoint``) did not answer.

The router takes its state from ``request.app.state.models`` (a :class:`Predictor`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from ml.endpoint import EndpointFailure
from ml.online import ModelCatalog, ModelUnavailable, ServedModel
from ml.registry import RegistryError
from streamsight.contracts import Contract
from streamsight.settings import ApiSettings
from streamsight.store import MAX_LIMIT, DynamoPredictions, StoreError
from streamsight.web import ErrorBody, json_body

log = logging.getLogger("ml.http_api")

MODEL_PATH = "/v1/models/{name}"
PREDICT_PATH = "/v1/models/{name}/predict"
PREDICTIONS_PATH = "/v1/predictions"


class Predictor:
    """What the model routes need: the model catalog, the limits, the input checks per version, and
    the predictions store (None when off) with the streams it holds."""

    def __init__(self, catalog: ModelCatalog, api: ApiSettings, metrics: Any = None, *,
                 store: DynamoPredictions | None = None, streams: tuple[str, ...] = ()) -> None:
        self.catalog = catalog
        self.api = api
        self.metrics = metrics  # an object with predicted(model, version, n), or None
        self.store = store
        self.streams = streams
        self._checks: dict[tuple[str, int], Any] = {}

    async def model(self, name: str) -> ServedModel:
        try:
            hit = self.catalog.cached(name)
            served = hit if hit is not False else await asyncio.to_thread(self.catalog.get, name)
        except RegistryError:
            served = None  # a name the registry cannot hold
        except ModelUnavailable as exc:
            raise HTTPException(503, f"model {name!r} cannot be served: {exc}") from None
        if served is None:
            raise HTTPException(404, f"no model {name!r} in production")
        return served

    def check(self, served: ServedModel) -> Any:
        """The compiled input schema of ``served`` (fastjsonschema)."""
        key = (served.name, served.version)
        check = self._checks.get(key)
        if check is None:
            import fastjsonschema

            check = self._checks[key] = fastjsonschema.compile(served.scorer.input_schema)
        return check


async def get_predictor(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.models
    return predictor


class FieldError(BaseModel):
    index: int = Field(description="The record's position in the request (0 for a single record).")
    field: str | None = Field(description="The feature at fault, when one is.")
    message: str


class Invalid(BaseModel):
    detail: str
    errors: list[FieldError]
    request_id: str | None = None


class Prediction(BaseModel):
    probability: float | None = Field(default=None, description="Binary: P(positive label); multiclass: the "
                                      "predicted class's.")
    label: int | str | None = Field(default=None, description="Binary: 1 when probability >= threshold, else 0; "
                                    "multiclass: the most probable class.")
    probabilities: dict[str, float] | None = Field(default=None, description="Multiclass: each class's.")
    value: float | None = Field(default=None, description="Regression: the predicted value.")


class Predicted(BaseModel):
    model: str
    version: int
    threshold: float | None = Field(default=None, description="Binary models' decision threshold.")
    classes: list[str] | None = Field(default=None, description="Multiclass models' classes.")
    probability: float | None = Field(default=None, description="One record: its probability.")
    label: int | str | None = Field(default=None, description="One record: its label.")
    probabilities: dict[str, float] | None = Field(default=None, description="One record, multiclass: each class's.")
    value: float | None = Field(default=None, description="One record, regression: its predicted value.")
    predictions: list[Prediction] | None = Field(default=None, description="Several records: in request order.")


router = APIRouter(tags=["models"])

_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
    {"type": "object", "description": "One record: the features by name"},
    {"type": "array", "items": {"type": "object"}, "minItems": 1, "description": "Several records"},
    {"type": "object", "required": ["data"], "properties": {"data": {"type": "array", "minItems": 1}},
     "description": "Feature values in the model's order, or a list of such vectors"}]}}}}}


class ModelInfo(BaseModel):
    model: str
    version: int
    task: str = Field(description="binary, multiclass or regression.")
    threshold: float | None = Field(default=None, description="Binary models' decision threshold.")
    classes: list[str] | None = Field(default=None, description="Multiclass models' classes, in order.")
    features: list[str] = Field(description="The feature order of the {\"data\": [...]} form.")
    input_schema: dict[str, Any] = Field(description="JSON Schema of one record.")


@router.get(MODEL_PATH, response_model=ModelInfo, summary="A model's production version and its input",
            responses={404: {"model": ErrorBody}, 503: {"model": ErrorBody}})
async def model_info(name: Annotated[str, Path(max_length=128)],
                     predictor: Annotated[Predictor, Depends(get_predictor)]) -> Any:
    served = await predictor.model(name)
    return ModelInfo(model=served.name, version=served.version, task=served.scorer.task, threshold=served.threshold,
                     classes=served.scorer.classes, features=served.scorer.features,
                     input_schema=served.scorer.input_schema)


def model_operation(generic: dict[str, Any], contract: Contract) -> dict[str, Any]:
    """The predict operation of one contract's model for the OpenAPI document: the model's input
    schema as the body (one record, several, or the vector form)."""
    import copy

    from ml.portable import feature_order, input_schema

    record = input_schema(contract)
    features, _ = feature_order(contract)
    name = contract.model.name if contract.model else contract.name
    operation = copy.deepcopy(generic)
    operation["parameters"] = [p for p in operation.get("parameters", []) if p.get("name") != "name"]
    operation["operationId"] = f"predict_{name}"
    operation["summary"] = f"Score records with {name}"
    operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"oneOf": [
        record, {"type": "array", "items": record, "minItems": 1},
        {"type": "object", "required": ["data"], "additionalProperties": False, "properties": {"data": {
            "type": "array", "minItems": len(features), "maxItems": len(features),
            "prefixItems": [record["properties"][f] for f in features]}}}]}}}}
    return operation


_SHAPE_ERROR = object()  # a vector of the wrong length: already reported


def _records(body: Any, features: list[str]) -> tuple[list[Any], bool, list[FieldError]]:
    """The body as records by feature name, whether it held one record, and shape errors."""
    if isinstance(body, dict) and set(body) == {"data"} and "data" not in features:
        data = body["data"]
        if not isinstance(data, list) or not data:
            return [], True, [FieldError(index=0, field="data", message="must be a non-empty array")]
        single = not isinstance(data[0], list)
        vectors = [data] if single else data
        records: list[Any] = []
        errors = []
        for i, vector in enumerate(vectors):
            if not isinstance(vector, list) or len(vector) != len(features):
                got = f"{len(vector)} values" if isinstance(vector, list) else "not an array"
                errors.append(FieldError(index=i, field="data", message=f"{got}; the model takes {len(features)}: "
                                         f"{', '.join(features)}"))
                records.append(_SHAPE_ERROR)
            else:
                records.append(dict(zip(features, vector, strict=True)))
        return records, single, errors
    if isinstance(body, list):
        if not body:
            return [], False, [FieldError(index=0, field=None, message="the array holds no records")]
        return body, False, []
    return [body], True, []


@router.post(
    PREDICT_PATH, response_model=Predicted, response_model_exclude_none=True, openapi_extra=_BODY,
    summary="Score records with a model's production version",
    responses={400: {"model": Invalid, "description": "Invalid records (listed) or a body that is not JSON"},
               404: {"model": ErrorBody}, 413: {"model": ErrorBody}, 415: {"model": ErrorBody},
               503: {"model": ErrorBody, "description": "The production version cannot be served"}},
)
async def predict(request: Request, name: Annotated[str, Path(max_length=128)],
                  predictor: Annotated[Predictor, Depends(get_predictor)]) -> Any:
    from fastapi.responses import JSONResponse

    served = await predictor.model(name)
    body = await json_body(request, predictor.api.max_body_bytes)
    records, single, errors = _records(body, served.scorer.features)
    if len(records) > predictor.api.max_records:
        raise HTTPException(413, f"{len(records)} records, more than api.max_records {predictor.api.max_records}")
    check = predictor.check(served)
    for index, record in enumerate(records):
        if record is _SHAPE_ERROR:
            continue
        if not isinstance(record, dict):
            errors.append(FieldError(index=index, field=None, message="a record must be a JSON object"))
            continue
        missing = [f for f in served.scorer.input_schema.get("required", []) if record.get(f) is None]
        if missing:
            errors += [FieldError(index=index, field=f, message=f"{f} is missing (or null)") for f in missing]
            continue
        try:
            check({k: v for k, v in record.items() if v is not None})  # a null is an absent value
        except Exception as exc:  # fastjsonschema.JsonSchemaValueException
            field = str(getattr(exc, "name", "") or "").removeprefix("data").lstrip(".") or None
            message = str(getattr(exc, "message", exc)).removeprefix("data.")
            errors.append(FieldError(index=index, field=field, message=message))
    if errors:
        errors.sort(key=lambda e: e.index)
        payload = Invalid(detail=f"{len({e.index for e in errors})} of {max(len(records), 1)} records are invalid; "
                                 "nothing was scored", errors=errors,
                          request_id=getattr(request.state, "request_id", None))
        return JSONResponse(payload.model_dump(), status_code=400)
    try:  # a model whose text features a text endpoint embeds makes network calls: off the event loop
        predicted = await asyncio.to_thread(served.predict, records) if served.scorer.calls_endpoint else \
            served.predict(records)
    except EndpointFailure as exc:
        log.warning("model %s v%d: %s", served.name, served.version, exc)
        raise HTTPException(503, "the model's text endpoint did not answer; try again later",
                            headers={"Retry-After": "5"}) from None
    if predictor.metrics is not None:
        predictor.metrics.predicted(served.name, served.version, len(predicted))
    answer: dict[str, Any] = {"model": served.name, "version": served.version}
    if served.threshold is not None:
        answer["threshold"] = served.threshold
    elif served.scorer.classes is not None:
        answer["classes"] = served.scorer.classes
    if single:
        answer.update(predicted[0])
    else:
        answer["predictions"] = predicted
    return JSONResponse(answer)  # shaped as Predicted; a Response skips FastAPI's second validation


class StoredPrediction(BaseModel):
    key: str
    event_id: str
    event_time: str = Field(description="ISO 8601, UTC.")
    probability: float | None = Field(description="Binary: P(positive label); multiclass: the predicted class's; "
                                      "regression: null.")
    prediction: int | None = Field(description="Binary: 0 or 1; multiclass: the class's index; regression: null.")
    model_name: str
    model_version: int
    scored_at: str = Field(description="When the streaming job scored it (ISO 8601, UTC).")
    scored_by: str = Field(description="mllib (in the job), sagemaker:<endpoint>, or local-copy (the endpoint "
                           "failed and the job's copy of the model scored it).")
    predicted_class: str | None = Field(default=None, description="A multiclass model's predicted class "
                                        "(prediction is its index).")
    predicted_value: float | None = Field(default=None, description="A regression model's predicted value.")


class StoredPredictions(BaseModel):
    stream: str
    key: str | None
    predictions: list[StoredPrediction] = Field(description="Newest event time first.")


stored_router = APIRouter(tags=["predictions"])


@stored_router.get(PREDICTIONS_PATH, response_model=StoredPredictions, summary="Stored predictions, newest first",
                   responses={404: {"model": ErrorBody}, 503: {"model": ErrorBody}})
async def stored_predictions(
    predictor: Annotated[Predictor, Depends(get_predictor)],
    stream: Annotated[str, Query(max_length=128, description="The stream (its contract's name).")],
    key: Annotated[str | None, Query(max_length=1024, description="Only this key's (e.g. one machine).")] = None,
    since: Annotated[datetime | None, Query(description="Only events at or after this time (ISO 8601).")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> Any:
    """What the streaming job scored, from the predictions store (``predictions_store``)."""
    if predictor.store is None:
        raise HTTPException(404, "no predictions store: predictions_store.kind is none")
    if stream not in predictor.streams:
        raise HTTPException(404, f"unknown stream {stream!r}; streams with a model: {', '.join(predictor.streams) or 'none'}")
    try:
        rows = await asyncio.to_thread(predictor.store.query, stream, key=key, since=since, limit=limit)
    except StoreError as exc:
        raise HTTPException(503, f"the predictions store did not answer: {exc}"[:300],
                            headers={"Retry-After": "1"}) from None
    from fastapi.responses import JSONResponse

    return JSONResponse({"stream": stream, "key": key, "predictions": rows})
