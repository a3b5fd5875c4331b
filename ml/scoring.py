"""Score micro-batches with whatever model version is ``production`` right now.

The streaming job keeps one :class:`ProductionScorer` for the life of the query and calls
:meth:`ProductionScorer.score` inside ``foreachBatch``. Each call re-reads the model's
``aliases.json`` (one small file read) and reloads the model only when the ``production`` alias
points at a different version than the one in memory, so a model promoted with
``streamsight promote`` (or by a better training run) is used from the next micro-batch on, without
restarting the query. Scoring is the model's own ``PipelineModel.transform``, or, when the
registry sends the production version to a SageMaker endpoint, calls to that endpoint from the
tasks (:mod:`ml.endpoint`); the ``scored_by`` column says which. With ``model.route_by``, a
:class:`ModelRouter` keeps one scorer per model name the records use.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from ml import MULTICLASS, PRODUCTION_ALIAS, REGRESSION, task_of
from ml.endpoint import MLLIB
from streamsight.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

    from streamsight.contracts import Contract
    from streamsight.settings import Settings

log = logging.getLogger("ml.scoring")

_PROBABILITY = "_ss_probability"  # the classifier's probability vector (see ml.train)
_PREDICTION = "_ss_prediction"  # the model's prediction (a regression model's value)


class ProductionScorer:
    """Scores DataFrames with the contract model's current ``production`` version."""

    def __init__(self, spark: SparkSession, settings: Settings, contract: Contract, model_name: str | None = None,
                 registry: Any = None) -> None:
        from ml.registry import ModelRegistry
        from streamsight.lake import models_uri, prediction_columns

        if contract.model is None:
            raise ConfigError(f"contract {contract.name!r} has no model: block; nothing to score")
        self.spark = spark
        self.contract = contract
        self.model_name = model_name or contract.model.name
        self.registry = registry or ModelRegistry(spark, models_uri(settings.lake_uri))
        self.columns = prediction_columns(contract)
        self._lock = threading.Lock()
        self._loaded: tuple[int, PipelineModel, dict[str, Any]] | None = None
        self.last_version: int | None = None
        self.settings = settings
        self._local_copy: tuple[int, dict[str, Any]] | None = None  # (version, scorer.json)
        self._said: str | None = None  # the last backend choice logged

    def current(self) -> tuple[int, PipelineModel, dict[str, Any]] | None:
        """``(version, model, metadata)`` of the production version, or ``None`` if there is none.

        Reads ``aliases.json`` on every call; loads a model only when the version changed. If the
        alias file cannot be read (e.g. a transient object-store error) the model already in memory
        keeps serving and the error is logged; with nothing in memory the error is raised.
        """
        with self._lock:
            try:
                version = self.registry.get_alias(self.model_name, PRODUCTION_ALIAS)
            except Exception as exc:
                if self._loaded is None:
                    raise
                log.warning("cannot read the aliases of %s (%s); keeping v%d", self.model_name, exc,
                            self._loaded[0])
                return self._loaded
            if version is None:
                if self._loaded is not None:
                    log.warning("model %s has no production version any more; scoring stops",
                                self.model_name)
                self._loaded = None
                return None
            if self._loaded is None or self._loaded[0] != version:
                metadata = self.registry.metadata(self.model_name, version)
                model = self.registry.load(self.model_name, version)
                previous = self._loaded[0] if self._loaded else None
                self._loaded = (version, model, metadata)
                task = task_of(metadata)
                rule = (f"classes {', '.join(metadata['classes'])}" if task == MULTICLASS else "regression"
                        if task == REGRESSION else f"threshold {float(metadata['threshold']):.4f}")
                log.info("scoring with %s v%d (%s, was %s)", self.model_name, version, rule,
                         f"v{previous}" if previous else "none")
            return self._loaded

    def score(self, df: DataFrame, loaded: tuple[int, PipelineModel, dict[str, Any]] | None = None
              ) -> DataFrame | None:
        """``df`` with ``probability``, ``prediction``, ``model_name``, ``model_version``,
        ``scored_by``, ``scored_at``, ``predicted_class`` and ``predicted_value``, selected (and cast)
        to ``streamsight.lake.prediction_columns(contract)``; ``None`` when no model is in production.

        A binary model's ``probability`` is P(positive) and ``prediction`` 1 at or above its
        threshold; a multiclass model's are the most probable class's probability and index, and
        ``predicted_class`` that class; a regression model's ``predicted_value`` is its prediction
        (``probability`` and ``prediction`` null).

        ``df`` needs the contract's key, de-duplication key, event time, ``event_date``, the fields
        the model reads, label (may be null) and the lineage columns ``_kafka_timestamp`` and
        ``_batch_id``; derived columns it lacks are computed.
        """
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F

        from streamsight.lake import with_derived

        loaded = loaded or self.current()
        if loaded is None:
            return None
        version, model, metadata = loaded
        self.last_version = int(version)  # the version this DataFrame is scored with
        df = with_derived(df, self.contract)  # the contract's derived columns it lacks
        missing = [c for c, _ in self.columns if c not in df.columns and c not in _ADDED]
        if missing:
            raise ValueError(f"cannot score {self.contract.name!r}: input lacks column(s) {missing}")
        task = task_of(metadata)
        endpoint, payload = self.endpoint(int(version))
        if endpoint is not None:  # adds the task's prediction column (EndpointScorer.output) and scored_by
            scored = self._invoke(df, endpoint, int(version), payload)
        else:
            scored = model.transform(df).withColumn("scored_by", F.lit(MLLIB))
            if task == REGRESSION:
                scored = scored.withColumn("predicted_value", F.col(_PREDICTION).cast("double"))
            elif task == MULTICLASS:
                scored = scored.withColumn("probabilities", vector_to_array(F.col(_PROBABILITY)))
            else:
                scored = scored.withColumn("probability", vector_to_array(F.col(_PROBABILITY)).getItem(1).cast("double"))
        if task == REGRESSION:
            scored = (scored.withColumn("probability", F.lit(None).cast("double"))
                      .withColumn("prediction", F.lit(None).cast("int"))
                      .withColumn("predicted_class", F.lit(None).cast("string")))
        elif task == MULTICLASS:
            probabilities = F.col("probabilities")
            index = (F.array_position(probabilities, F.array_max(probabilities)) - 1).cast("int")  # the first most probable
            scored = (scored
                      .withColumn("probability", F.array_max(probabilities))
                      .withColumn("prediction", index)
                      .withColumn("predicted_class",
                                  F.element_at(F.array(*[F.lit(c) for c in metadata["classes"]]), index + 1))
                      .withColumn("predicted_value", F.lit(None).cast("double")))
        else:
            scored = (scored
                      .withColumn("prediction", (F.col("probability") >= F.lit(float(metadata["threshold"])))
                                  .cast("int"))
                      .withColumn("predicted_class", F.lit(None).cast("string"))
                      .withColumn("predicted_value", F.lit(None).cast("double")))
        scored = (scored
                  .withColumn("model_name", F.lit(self.model_name))
                  .withColumn("model_version", F.lit(int(version)).cast("int"))
                  .withColumn("scored_at", F.current_timestamp()))
        return scored.select(*[F.col(f"`{c}`").cast(t).alias(c) for c, t in self.columns])

    def endpoint(self, version: int) -> tuple[str | None, str]:
        """``(endpoint, payload)``: the SageMaker endpoint that scores production version ``version``
        and what it is sent (:data:`ml.endpoint.PAYLOADS`), per the registry's ``backend.json``
        (re-read each call); ``(None, ...)``: in the job."""
        from ml.endpoint import BACKEND_FILE, INPUTS, PAYLOADS, endpoint_for

        why: str | None = None
        try:
            doc = self.registry.read_file(self.model_name, BACKEND_FILE)
        except Exception as exc:  # an unreadable choice: score in the job
            doc, why = None, f"cannot read {BACKEND_FILE} ({exc}): scoring in the job"
        endpoint, not_used = endpoint_for(doc, version)
        payload = str(doc.get("payload") or INPUTS) if isinstance(doc, dict) else INPUTS
        if endpoint is not None and payload not in PAYLOADS:
            endpoint, not_used = None, (f"{BACKEND_FILE}'s payload {payload!r} is not one of {', '.join(PAYLOADS)}: "
                                        "scoring in the job")
        said = why or not_used or (f"scoring with SageMaker endpoint {endpoint} (sent the {payload})"
                                   if endpoint else "scoring in the job")
        if said != self._said:
            (log.warning if why or not_used else log.info)("%s v%d: %s", self.model_name, version, said)
            self._said = said
        return endpoint, payload

    def _invoke(self, df: DataFrame, endpoint: str, version: int, payload: str) -> DataFrame:
        """``df``'s prediction columns with the task's prediction (``probability``, ``probabilities`` or
        ``predicted_value``) and ``scored_by`` from ``endpoint`` (:class:`ml.endpoint.EndpointScorer`,
        in the tasks)."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import StringType, StructField, StructType, _parse_datatype_string

        from ml.endpoint import EndpointClient, EndpointScorer
        from ml.registry import SCORER_FILE

        if self._local_copy is None or self._local_copy[0] != version:
            doc = self.registry.read_file(self.model_name, SCORER_FILE, version)
            if doc is None:
                raise ValueError(f"{self.model_name} v{version} has no {SCORER_FILE}: the endpoint would have no "
                                 "local copy to fall back on (train it again)")
            self._local_copy = (version, doc)
        doc = self._local_copy[1]
        keep = [c for c in dict.fromkeys([*(c for c, _ in self.columns if c not in _ADDED), *doc["features"]])
                if c in df.columns]
        base = df.select(*[F.col(f"`{c}`") for c in keep])
        scorer = EndpointScorer(EndpointClient.from_settings(self.settings, endpoint), doc, payload)
        name, kind = scorer.output()
        schema = StructType([*base.schema.fields, StructField(name, _parse_datatype_string(kind)),
                             StructField("scored_by", StringType())])
        return base.mapInArrow(scorer, schema)


_ADDED = {"probability", "prediction", "model_name", "model_version", "scored_by", "scored_at", "predicted_class",
          "predicted_value", "probabilities"}


UNKNOWN_MODEL = "UNKNOWN_MODEL"  # dead-letter reason code: a record names no usable model
MAX_ROUTED_MODELS = 100  # models one stream job keeps loaded
Routed = tuple[ProductionScorer, tuple[int, "PipelineModel", dict[str, Any]]]


class ModelRouter:
    """Scorers by model name, for a contract whose ``model.route_by`` field names each record's model.

    A name is usable when the registry holds a ``production`` version of it trained on this stream
    (its metadata's ``contract``). A model trained and promoted under a new name is usable from the
    next micro-batch on; nothing is configured per name.
    """

    def __init__(self, spark: SparkSession, settings: Settings, contract: Contract) -> None:
        from ml.registry import ModelRegistry
        from streamsight.lake import models_uri

        assert contract.model is not None and contract.model.route_by is not None
        self.spark, self.settings, self.contract = spark, settings, contract
        self.registry = ModelRegistry(spark, models_uri(settings.lake_uri))
        self._scorers: dict[str, ProductionScorer] = {}
        self._refused: dict[str, str] = {}  # name -> why, logged once per reason

    def route(self) -> Any:
        """The column naming each record's model (the contract's model when the field is absent)."""
        from pyspark.sql import functions as F

        assert self.contract.model is not None and self.contract.model.route_by is not None
        return F.coalesce(F.col(f"`{self.contract.model.route_by}`"), F.lit(self.contract.model.name))

    def scorers(self, names: list[str]) -> tuple[dict[str, Routed], dict[str, str]]:
        """``({name: (scorer, the production version it checked)}, {name: why it is unusable})``:
        score with that version (a promotion meanwhile is the next batch's)."""
        from ml.registry import _NAME

        usable: dict[str, Routed] = {}
        refused: dict[str, str] = {}
        for name in names:
            loaded, why = self._check(name) if _NAME.fullmatch(name) else (None, "is not a model name")
            if loaded is not None:
                usable[name] = (self._scorers[name], loaded)
                continue
            refused[name] = why = why or "cannot score"
            if self._refused.get(name) != why:
                log.warning("%s: records naming model %r go to the dead letter: it %s", self.contract.name, name, why)
                if len(self._refused) >= 10 * MAX_ROUTED_MODELS:  # names seen once each: log them again later
                    self._refused.clear()
                self._refused[name] = why
        return usable, refused

    def _check(self, name: str) -> tuple[Any, str | None]:
        """``(loaded production version, None)`` or ``(None, why not)``."""
        scorer = self._scorers.get(name) or ProductionScorer(self.spark, self.settings, self.contract, name,
                                                             registry=self.registry)
        loaded = scorer.current()
        if loaded is None:
            return None, "has no production version"
        trained_on = loaded[2].get("contract")
        if trained_on != self.contract.name:
            return None, f"was trained on stream {trained_on!r}, not {self.contract.name!r}"
        if len(self._scorers) >= MAX_ROUTED_MODELS and name not in self._scorers:
            return None, f"would be model number {MAX_ROUTED_MODELS + 1} of this job (at most {MAX_ROUTED_MODELS})"
        self._scorers[name] = scorer
        self._refused.pop(name, None)
        return loaded, None
