"""Scoring a stream's records with a SageMaker endpoint, inside the Spark job.

Each model's scoring backend is recorded in the registry, in ``<model>/backend.json``:
``{"backend": "mllib"}`` (the default: the job's own ``PipelineModel``) or
``{"backend": "sagemaker", "endpoint": NAME, "version": N}``, which ``streamsight deploy --target
sagemaker`` writes once the endpoint is in service and ``streamsight backend`` sets by hand; with
``"payload": "vector"`` the endpoint is SageMaker's built-in XGBoost container, sent CSV rows of the
feature vector the booster reads (:meth:`ml.portable.PortableModel.vectors`) instead of the inputs.
The stream uses the endpoint only while it serves the production version; otherwise it scores in
the job and says why in its log.

:class:`EndpointScorer` is the function of ``DataFrame.mapInArrow``. Each task sends its rows to
``InvokeEndpoint`` (boto3's ``sagemaker-runtime`` client) as JSON Lines bodies of
``sagemaker.batch_records`` records (``{"features": [...]}`` each: JSON keeps an empty text apart
from an absent one, which CSV cannot), at most ``sagemaker.max_concurrency`` at a time:

* throttling (``ThrottlingException``, ``ModelNotReadyException``, HTTP 429), 5xx answers, read
  timeouts and lost connections are retried with jittered exponential backoff (tenacity), up to
  ``sagemaker.max_attempts`` attempts;
* a call that still fails counts against a circuit breaker (pybreaker, one per endpoint in each
  Python worker): after ``sagemaker.breaker_failures`` failures in a row the circuit opens and calls
  are not made for ``sagemaker.breaker_reset_s``; then one call tries the endpoint again;
* the records of a failed or skipped call are scored by the model's local copy (its ``scorer.json``,
  :mod:`ml.portable`: the same probabilities), so every record gets its prediction.

Each output row says what scored it: ``sagemaker:<endpoint>`` or ``local-copy``. An endpoint answers a
CSV line per record: a binary model's probability, a multiclass model's probability of each class
(as the serving process and the built-in XGBoost container's ``multi:softprob`` answer), a
regression model's value.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from streamsight.settings import Settings

log = logging.getLogger("ml.endpoint")

BACKEND_FILE = "backend.json"
MLLIB, SAGEMAKER = "mllib", "sagemaker"
BACKENDS = (MLLIB, SAGEMAKER)
JSON_LINES = "application/jsonlines"  # what the stream sends an endpoint
LOCAL_COPY = "local-copy"  # scored_by of records the endpoint did not score
INPUTS, VECTOR = "inputs", "vector"  # what an endpoint is sent: the model's inputs, or its feature vector
PAYLOADS = (INPUTS, VECTOR)
CSV = "text/csv"
JSON = "application/json"
_THROTTLING = {"ThrottlingException", "Throttling", "ModelNotReadyException", "TooManyRequestsException"}


def scored_by(endpoint: str) -> str:
    return f"{SAGEMAKER}:{endpoint}"


def backend_doc(backend: str, endpoint: str | None = None, version: int | None = None,
                payload: str = INPUTS) -> dict[str, Any]:
    """A checked ``backend.json`` document."""
    from ml.sagemaker import endpoint_name
    from streamsight.errors import ConfigError

    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: choose {' or '.join(BACKENDS)}")
    if backend == MLLIB:
        return {"backend": MLLIB}
    if not endpoint or version is None:
        raise ConfigError("backend sagemaker needs the endpoint's name and the model version it serves")
    if payload not in PAYLOADS:
        raise ConfigError(f"payload {payload!r}: choose {' or '.join(PAYLOADS)}")
    return {"backend": SAGEMAKER, "endpoint": endpoint_name(endpoint), "version": int(version),
            **({"payload": VECTOR} if payload == VECTOR else {})}


def endpoint_for(doc: Any, production: int) -> tuple[str | None, str | None]:
    """``(endpoint, None)`` when ``doc`` (a ``backend.json``, or None) sends production version
    ``production`` to an endpoint; ``(None, why not)`` when it names an endpoint serving another
    version; ``(None, None)`` for in-job scoring."""
    if not isinstance(doc, dict) or doc.get("backend") != SAGEMAKER:
        return None, None
    if int(doc.get("version", -1)) != int(production):
        return None, (f"endpoint {doc.get('endpoint')} serves v{doc.get('version')}, production is v{production}: "
                      "scoring in the job until that version is deployed")
    return str(doc["endpoint"]), None


class EndpointFailure(Exception):
    """An InvokeEndpoint call that failed, after its retries when the failure was transient."""


class RecordsRefused(EndpointFailure):
    """The endpoint refused the records themselves (a 4xx other than throttling): not the endpoint's
    health, so the circuit does not count it."""


class _Transient(EndpointFailure):
    """Throttling, a 5xx, a timeout or a lost connection: worth another attempt."""


@dataclass(frozen=True)
class EndpointClient:
    """How the job's Python workers call one endpoint (picklable: it travels with the task)."""

    endpoint: str
    region: str
    runtime_url: str | None
    batch_records: int = 500
    max_concurrency: int = 4
    max_attempts: int = 4
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 10.0
    breaker_failures: int = 3
    breaker_reset_s: float = 30.0
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings, endpoint: str) -> EndpointClient:
        sm = settings.sagemaker
        return cls(endpoint, settings.aws.region, sm.runtime_url, sm.batch_records, sm.max_concurrency,
                   sm.max_attempts, sm.connect_timeout_s, sm.read_timeout_s, sm.breaker_failures, sm.breaker_reset_s)

    def client(self) -> Any:
        """This process's ``sagemaker-runtime`` client for these settings (made once; thread-safe)."""
        key = (self.region, self.runtime_url, self.connect_timeout_s, self.read_timeout_s, self.max_concurrency)
        with _LOCK:
            if key not in _CLIENTS:
                import boto3
                from botocore import UNSIGNED
                from botocore.config import Config

                # A runtime other than AWS's (runtime_url) may be called without credentials, unsigned.
                unsigned = self.runtime_url is not None and boto3.Session().get_credentials() is None
                config = Config(connect_timeout=self.connect_timeout_s, read_timeout=self.read_timeout_s,
                                retries={"total_max_attempts": 1},  # retried here, with the breaker's count
                                max_pool_connections=self.max_concurrency,
                                **({"signature_version": UNSIGNED} if unsigned else {}))
                _CLIENTS[key] = boto3.client("sagemaker-runtime", region_name=self.region,
                                             endpoint_url=self.runtime_url, config=config)
            return _CLIENTS[key]

    def breaker(self) -> Any:
        """This process's circuit breaker for the endpoint."""
        import pybreaker

        key = (self.endpoint, self.runtime_url)
        with _LOCK:
            if key not in _BREAKERS:
                _BREAKERS[key] = pybreaker.CircuitBreaker(
                    fail_max=self.breaker_failures, reset_timeout=self.breaker_reset_s,
                    exclude=[RecordsRefused], name=self.endpoint)
            return _BREAKERS[key]

    def invoke(self, body: bytes, records: int, content_type: str = JSON_LINES, width: int = 1) -> list[list[float]]:
        """The endpoint's answer for a body of ``records`` records, ``width`` numbers per record (one, or
        one per class), retried while the failure is transient; raises :class:`EndpointFailure`."""
        text = self._retrying()(self._call, body, content_type, CSV)
        try:
            rows = [[float(v) for v in line.split(",")] for line in text.split()]
        except ValueError:
            raise EndpointFailure(f"the answer is not {width} number(s) per line: {text[:200]!r}") from None
        if len(rows) != records or any(len(r) != width for r in rows):
            raise EndpointFailure(f"{len(rows)} lines for {records} records, or not {width} number(s) in each")
        return rows

    def invoke_json(self, document: Any) -> Any:
        """The endpoint's JSON answer to ``document`` sent as JSON, retried as :meth:`invoke` is."""
        text = self._retrying()(self._call, json.dumps(document).encode("utf-8"), JSON, JSON)
        try:
            return json.loads(text)
        except ValueError:
            raise EndpointFailure(f"the answer is not JSON: {text[:200]!r}") from None

    def _retrying(self) -> Any:
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

        return Retrying(stop=stop_after_attempt(self.max_attempts), reraise=True,
                        wait=wait_exponential_jitter(initial=self.backoff_s, max=self.max_backoff_s),
                        retry=retry_if_exception_type(_Transient))

    def _call(self, body: bytes, content_type: str, accept: str) -> str:
        """One InvokeEndpoint call's answer, as text; a failure as the exception that says whether
        to try again."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            HTTPClientError,
            ReadTimeoutError,
        )

        try:
            answer = self.client().invoke_endpoint(EndpointName=self.endpoint, ContentType=content_type,
                                                   Accept=accept, Body=body)
            text: str = answer["Body"].read().decode("utf-8")
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            what = f"{error.get('Code')} ({status}): {error.get('Message')}"
            if error.get("Code") in _THROTTLING or status == 429 or status >= 500:
                raise _Transient(what) from None
            raise RecordsRefused(what) from None
        except (ReadTimeoutError, ConnectionError, HTTPClientError) as exc:  # timeouts, refused or reset
            raise _Transient(str(exc)) from None
        except BotoCoreError as exc:  # e.g. no credentials: the circuit counts it, the local copy scores
            raise EndpointFailure(str(exc)) from None
        return text


_LOCK = threading.Lock()
_CLIENTS: dict[tuple[Any, ...], Any] = {}
_BREAKERS: dict[tuple[Any, ...], Any] = {}


class EndpointScorer:
    """``mapInArrow`` function: each row with :meth:`output` (the prediction: ``probability``,
    ``probabilities`` or ``predicted_value``, by the model's task) and ``scored_by`` appended.

    ``scorer`` is the version's ``scorer.json``: the local copy, and the model's inputs (its
    ``features``, the input order of :mod:`ml.serving`), which are read from the rows. ``payload``:
    what the endpoint is sent (:data:`INPUTS` or :data:`VECTOR`).
    """

    def __init__(self, client: EndpointClient, scorer: dict[str, Any], payload: str = INPUTS) -> None:
        self.endpoint = client
        self.features, self.scorer, self.payload = list(scorer["features"]), scorer, payload
        self.task = str(scorer.get("task") or "binary")
        self.width = len(scorer.get("classes") or ()) if self.task == "multiclass" else 1
        properties = (scorer.get("input_schema") or {}).get("properties", {})
        self._structured = {f for f in self.features if properties.get(f, {}).get("type") in ("object", "array")}
        self._local: Any = None

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        name, _ = self.output()
        arrow = pa.list_(pa.float64()) if self.task == "multiclass" else pa.float64()
        with ThreadPoolExecutor(max_workers=self.endpoint.max_concurrency) as pool:
            for batch in batches:
                size = self.endpoint.batch_records
                chunks = [batch.slice(at, size) for at in range(0, batch.num_rows, size)]
                for chunk, (rows, by) in zip(chunks, pool.map(self.score, chunks), strict=True):
                    values = rows if self.task == "multiclass" else [r[0] for r in rows]
                    yield pa.RecordBatch.from_arrays(
                        [*chunk.columns, pa.array(values, arrow), pa.array([by] * chunk.num_rows)],
                        names=[*chunk.schema.names, name, "scored_by"])

    def output(self) -> tuple[str, str]:
        """The column the prediction is appended as, and its Spark type."""
        if self.task == "multiclass":
            return "probabilities", "array<double>"
        return ("predicted_value", "double") if self.task == "regression" else ("probability", "double")

    def score(self, chunk: pa.RecordBatch) -> tuple[list[list[float]], str]:
        """The chunk's predictions (``width`` numbers each) and what scored them."""
        import pybreaker

        records = chunk.select(self.features).to_pylist()
        try:
            body, content_type = (self.vector_body(records), CSV) if self.payload == VECTOR else \
                (self.body(records), JSON_LINES)
            return self.endpoint.breaker().call(self.endpoint.invoke, body, len(records), content_type,
                                                self.width), scored_by(self.endpoint.endpoint)
        except pybreaker.CircuitBreakerError:
            pass  # open: the local copy scores until the next trial call
        except EndpointFailure as exc:
            log.warning("endpoint %s: %s; %d records scored by the local copy", self.endpoint.endpoint, exc,
                        len(records))
        return self.local(records), LOCAL_COPY

    def body(self, records: list[dict[str, Any]]) -> bytes:
        """The records as the serving process reads JSON Lines: the inputs in order, the stream's
        timestamp in the contract's format again, objects and arrays (JSON text in the stream) as
        JSON; ASCII only, so no character inside a value ends a line."""
        from ml.portable import event_time_wire

        event_time = self.scorer.get("event_time") or {}
        lines = []
        for record in records:
            values = []
            for name in self.features:
                value = record.get(name)
                if name == event_time.get("field"):
                    value = event_time_wire(value, event_time["format"])
                elif name in self._structured and isinstance(value, str):
                    value = json.loads(value)
                values.append(value)
            lines.append(json.dumps({"features": values}, separators=(",", ":")))
        return ("\n".join(lines) + "\n").encode("ascii")

    def vector_body(self, records: list[dict[str, Any]]) -> bytes:
        """The records' feature vectors as CSV rows (no header), as SageMaker's built-in XGBoost
        container reads them; a missing value is an empty field."""
        rows = self.portable().vectors(records).tolist()
        return "".join(",".join("" if v != v else repr(v) for v in row) + "\n" for row in rows).encode("ascii")

    def portable(self) -> Any:
        from ml.portable import PortableModel

        if self._local is None:
            self._local = PortableModel(self.scorer)
        return self._local

    def local(self, records: list[dict[str, Any]]) -> list[list[float]]:
        model = self.portable()
        if self.task == "multiclass":
            return [[float(p) for p in row] for row in model.class_probabilities(records)]
        values = model.values(records) if self.task == "regression" else model.probabilities(records)
        return [[float(v)] for v in values]

