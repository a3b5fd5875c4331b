"""One settings object for every command.

Precedence, highest first: explicit overrides (CLI flags) > ``STREAMSIGHT_*`` environment variables >
the selected profile in the YAML file > the YAML ``defaults`` block > field defaults.

* YAML file: ``conf/streamsight.yaml`` in the project, or the file named by ``STREAMSIGHT_CONFIG``.
* Profile: ``STREAMSIGHT_PROFILE`` (or ``--profile``): ``local`` (``streamsight broker``, lake in a
  local directory, Spark ``local[*]``), ``docker`` or ``aws``.
* Nested settings use ``__`` in environment variables: ``STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS``,
  ``STREAMSIGHT_SPARK__MASTER``, ``STREAMSIGHT_KAFKA__SASL_PASSWORD``.
* Relative paths in the YAML file are relative to the project root; relative paths given in the
  environment or on the command line are relative to the current directory.

Secrets are :class:`pydantic.SecretStr` and never appear in ``repr`` or logs. A bad value fails at
start-up with :class:`~streamsight.errors.ConfigError` naming the setting, e.g.
``STREAMSIGHT_SPARK__SHUFFLE_PARTITIONS (spark.shuffle_partitions): Input should be a valid integer``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamsight.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "conf" / "streamsight.yaml"
ENV_PREFIX = "STREAMSIGHT_"
PROFILES = ("local", "docker", "aws")

# Fields holding filesystem locations that are resolved against the project root when they come
# from the YAML file. ``lake_dir`` may also be a URI (s3a://, hdfs://), which is left alone.
_PATH_FIELDS = ("lake_dir", "contracts_dir", "run_dir", "data_dir", "reports_dir")
_NESTED_PATH_FIELDS = (("catalog", "metastore_dir"), ("api", "keys_file"))


class KafkaSettings(BaseModel):
    """Kafka client settings, shared by producers, the streaming jobs and the broker check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str | None = Field(
        default=None,
        description="host:port list. Empty means: the local broker's (`streamsight broker` writes its "
        "addresses to <run_dir>/broker.json). Env: STREAMSIGHT_KAFKA__BOOTSTRAP_SERVERS.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    client: Literal["confluent", "kafka-python"] = "confluent"
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    connect_timeout_s: float = Field(default=10.0, gt=0, description="Fail fast after this long.")
    linger_ms: int = Field(
        default=100, ge=0, le=10_000,
        description="How long producers wait to fill a batch per partition (latency for fewer, larger "
        "record batches). Env: STREAMSIGHT_KAFKA__LINGER_MS.",
    )
    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value.strip()


class SparkSettings(BaseModel):
    """Spark settings for the streaming jobs, training and reports."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    master: str = "local[*]"
    shuffle_partitions: int = Field(default=4, ge=1)
    driver_memory: str = "2g"
    max_offsets_per_trigger: int | None = Field(
        default=200_000, ge=1, description="Most Kafka records in one micro-batch of the silver query (and of "
        "the predictions query of a stream scored online).")
    bronze_max_offsets_per_trigger: int | None = Field(
        default=1_000_000, ge=1,
        description="Most Kafka records in one micro-batch of the bronze query, which takes few, large ones "
        "(bronze_trigger_interval): 30 s at 20,000 events/s is 600,000.")
    trigger_interval: str = Field(default="0 seconds", description="Micro-batch trigger interval.")
    bronze_trigger_interval: str = Field(
        default="30 seconds",
        description="Trigger interval of the bronze query (the raw archive is not on the way to silver and "
        "predictions, so it takes fewer, larger micro-batches and leaves the CPU to them).",
    )
    conf: dict[str, str] = Field(default_factory=dict, description="Extra spark.* settings.")
    class_data_sharing: bool = Field(
        default=True, description="A session this process starts maps the driver JVM's class-data-sharing "
        "archive (`python -m streamsight.spark`, run by `make jars`), when there is one for its Java and PySpark: "
        "the JVM starts and runs its first queries seconds sooner. Env: STREAMSIGHT_SPARK__CLASS_DATA_SHARING.")


class AwsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = "us-east-1"
    endpoint_url: str | None = Field(default=None, description="For tests against a local AWS API.")


class MetricsSettings(BaseModel):
    """Operational metrics of the streaming jobs (see ``streaming_jobs/metrics.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sink: Literal["none", "log", "cloudwatch"] = Field(
        default="none",
        description="none; log (one line per micro-batch); cloudwatch (PutMetricData, for the alarms and "
        "dashboard terraform/modules/monitoring creates).",
    )
    namespace: str = Field(default="Streamsight", min_length=1, description="CloudWatch namespace.")
    environment: str = Field(default="local", min_length=1, description="The Environment dimension (dev, prod ...).")


class CatalogSettings(BaseModel):
    """Where the lake's tables are registered by name (``streamsight lake register`` and ``sql``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["hive", "glue", "none"] = Field(
        default="hive",
        description="hive: Spark's built-in catalog on an embedded metastore in metastore_dir (one process "
        "at a time); glue: the AWS Glue Data Catalog (for Athena, Trino, EMR); none. Env: STREAMSIGHT_CATALOG__KIND.")
    database: str = Field(default="streamsight", pattern=r"^[a-z_][a-z0-9_]*$", description="The tables' database.")
    metastore_dir: Path = Field(default=Path("var/metastore"), description="hive: the metastore's folder.")


def _interval(value: str) -> str:
    """An interval such as ``'7 days'`` (the contracts' notation), stripped; else ValueError."""
    from streamsight.contracts import interval_seconds

    interval_seconds(value)
    return value.strip()


class RetentionSettings(BaseModel):
    """What ``streamsight lake maintain`` keeps unless a contract says otherwise (its ``retention``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    files: str = Field(default="7 days", description="Files no current version needs are deleted once older "
                       "than this (Delta's deletedFileRetentionDuration). Env: STREAMSIGHT_RETENTION__FILES.")
    log: str = Field(default="30 days", description="Versions stay readable this long (Delta's "
                     "logRetentionDuration). Env: STREAMSIGHT_RETENTION__LOG.")

    _intervals = field_validator("files", "log")(_interval)


class ApiKey(BaseModel):
    """One API key of ``streamsight serve``: only its SHA-256 is stored (``streamsight api-key create``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Who holds the key (in logs).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the key, lower-case hex.")
    scopes: tuple[Literal["events:write", "predict", "predictions:read", "dashboard:read"], ...] = Field(
        default=("events:write",), min_length=1, description="What the key may do.")
    streams: tuple[str, ...] = Field(default=("*",), min_length=1, description="Streams it may use ('*': all).")
    rate_limit: str | None = Field(default=None, description="Its own limit (e.g. '20/second'), else api.rate_limit.")

    @field_validator("rate_limit")
    @classmethod
    def _limit(cls, value: str | None) -> str | None:
        return None if value is None else _rate_limit(value)


class PredictionsStoreSettings(BaseModel):
    """Where the streaming job also puts each prediction for online reads (``GET /v1/predictions``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["none", "dynamodb"] = Field(
        default="none", description="none; dynamodb (the table below, in aws.region / aws.endpoint_url). "
        "Env: STREAMSIGHT_PREDICTIONS_STORE__KIND.")
    table: str = Field(default="streamsight-predictions", min_length=3, max_length=255,
                       pattern=r"^[A-Za-z0-9_.-]+$", description="The DynamoDB table (Terraform creates it in aws).")


class OnlineSettings(BaseModel):
    """The hot path (``streamsight online``: streaming_jobs/online.py, Spark's Real-Time Mode)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint_interval: str = Field(
        default="1 minute", description="Real-Time Mode's batch duration: how often offsets are committed "
        "(records are scored as they arrive; at least 5 seconds). Env: STREAMSIGHT_ONLINE__CHECKPOINT_INTERVAL.")
    model_refresh_s: float = Field(
        default=5.0, gt=0, le=3600, description="How often the production alias is re-read; a promotion restarts "
        "the query with the new version. Env: STREAMSIGHT_ONLINE__MODEL_REFRESH_S.")
    trigger: Literal["realtime", "microbatch"] = Field(
        default="realtime", description="realtime: Real-Time Mode; microbatch: the same query in micro-batches "
        "as fast as they go (for comparison, or a Spark without Real-Time Mode). Env: STREAMSIGHT_ONLINE__TRIGGER.")
    starting_offsets: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new checkpoint starts on the raw topic: earliest scores what "
        "is there already. Env: STREAMSIGHT_ONLINE__STARTING_OFFSETS.")

    @field_validator("checkpoint_interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        match = re.fullmatch(r"\s*(\d+)\s*(second|minute|hour)s?\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a duration such as '30 seconds' or '1 minute'")
        seconds = int(match[1]) * {"second": 1, "minute": 60, "hour": 3600}[match[2]]
        if seconds < 5:
            raise ValueError(f"{value!r} is shorter than Real-Time Mode's minimum, 5 seconds")
        return value.strip()


class ApiSettings(BaseModel):
    """The HTTP service (``streamsight serve``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="Address to listen on. Env: STREAMSIGHT_API__HOST.")
    port: int = Field(default=8000, ge=0, le=65535, description="0 picks a free port. Env: STREAMSIGHT_API__PORT.")
    auth: Literal["keys", "none"] = Field(
        default="keys", description="keys: every /v1 request needs an API key (Authorization: Bearer or "
        "X-API-Key); none: no authentication (a warning at start).")
    keys: tuple[ApiKey, ...] = Field(default=(), description="API keys (hashed); more in keys_file.")
    keys_file: Path | None = Field(
        default=None, description="YAML list of API keys, as `streamsight api-key create` appends them "
        "(default <run_dir>/api-keys.yaml). Env: STREAMSIGHT_API__KEYS_FILE.")
    rate_limit: str = Field(default="1000/second", description="Requests per key (limits' notation, e.g. "
                            "'100/second', '5000/minute'). Env: STREAMSIGHT_API__RATE_LIMIT.")
    max_body_bytes: int = Field(default=5_242_880, ge=1024, description="Larger request bodies get 413.")
    max_records: int = Field(default=10_000, ge=1, description="Most records in one POST (413 beyond).")
    publish_timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="How long a POST waits for Kafka to acknowledge its records "
        "before answering 503 (the producer's message.timeout.ms). Env: STREAMSIGHT_API__PUBLISH_TIMEOUT_S.")
    linger_ms: int = Field(default=2, ge=0, le=1000, description="The API producer's linger.ms (latency).")
    model_refresh_s: float = Field(
        default=2.0, gt=0, le=3600, description="How often a served model's production alias is re-read: a "
        "promotion is served within this time. Env: STREAMSIGHT_API__MODEL_REFRESH_S.")

    @field_validator("rate_limit")
    @classmethod
    def _limit(cls, value: str) -> str:
        return _rate_limit(value)


class SageMakerSettings(BaseModel):
    """Where ``streamsight deploy --target sagemaker`` puts a model: its artifact in S3, the image that
    serves it (the Dockerfile's ``sagemaker`` stage, pushed to ECR) and the endpoint's instances."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_uri: str | None = Field(default=None, description="The inference image (ECR URI). "
                                  "Env: STREAMSIGHT_SAGEMAKER__IMAGE_URI.")
    builtin_xgboost_image_uri: str | None = Field(
        default=None, description="SageMaker's built-in XGBoost image in the region (deploy --container "
        "builtin-xgboost), e.g. 683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:3.0-5; its XGBoost "
        "must load the booster (metadata: sagemaker_builtin_xgboost.xgboost_version). "
        "Env: STREAMSIGHT_SAGEMAKER__BUILTIN_XGBOOST_IMAGE_URI.")
    execution_role_arn: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$",
        description="The role SageMaker assumes to read the artifact. Env: STREAMSIGHT_SAGEMAKER__EXECUTION_ROLE_ARN.")
    artifacts_uri: str | None = Field(default=None, pattern=r"^s3a?://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
                                      description="s3://bucket/prefix for model.tar.gz files. "
                                      "Env: STREAMSIGHT_SAGEMAKER__ARTIFACTS_URI.")
    instance_type: str = Field(default="ml.m5.large", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    instance_count: int = Field(default=1, ge=1, le=100)
    wait_timeout_s: float = Field(default=1800.0, gt=0, le=7200, description="How long deploy waits for "
                                  "InService. Env: STREAMSIGHT_SAGEMAKER__WAIT_TIMEOUT_S.")
    poll_s: float = Field(default=15.0, gt=0, le=300, description="How often deploy asks for the endpoint's status.")
    # Scoring a stream with an endpoint (a model whose registry backend is sagemaker: ml.endpoint)
    runtime_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/\S*)?$",
                                    description="The SageMaker runtime API's URL, when not AWS's own (e.g. the "
                                    "local serving process of deploy --target local). "
                                    "Env: STREAMSIGHT_SAGEMAKER__RUNTIME_URL.")
    batch_records: int = Field(default=500, ge=1, le=10000, description="Records per InvokeEndpoint call.")
    max_concurrency: int = Field(default=4, ge=1, le=64, description="Calls in flight per Spark task.")
    max_attempts: int = Field(default=4, ge=1, le=10, description="Attempts per call (throttling, 5xx, "
                              "timeouts and lost connections are retried with jittered exponential backoff).")
    connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    read_timeout_s: float = Field(default=10.0, gt=0, le=120, description="An answer slower than this is retried.")
    breaker_failures: int = Field(default=3, ge=1, le=1000, description="Failed calls in a row (after their "
                                  "retries) that open the circuit: the task's calls then score with the "
                                  "model's local copy.")
    breaker_reset_s: float = Field(default=30.0, gt=0, le=3600, description="How long the circuit stays open "
                                   "before one call tries the endpoint again.")
    # Embedded text features by a Hugging Face model on an endpoint (ml.text.embed_remote)
    text_endpoint: str | None = Field(
        default=None, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
        description="A SageMaker endpoint serving a Hugging Face embedding model (streamsight deploy-text): "
        "models trained while it is set embed their text features (model.text_encoding: embedded) with it, "
        "and so does every scorer of those models. Unset: the local model of ml.text. "
        "Env: STREAMSIGHT_SAGEMAKER__TEXT_ENDPOINT.")
    text_image_uri: str | None = Field(
        default=None, description="The Hugging Face Embedding Container's image (Text Embeddings Inference, CPU) "
        "in the region, for deploy-text --target sagemaker, e.g. 683313688378.dkr.ecr.us-east-1.amazonaws.com/"
        "tei-cpu:2.0.1-tei1.8.2-cpu-py310-ubuntu22.04. Env: STREAMSIGHT_SAGEMAKER__TEXT_IMAGE_URI.")
    text_model_id: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2", pattern=r"^[\w.-]+(/[\w.-]+)?$",
        description="The Hugging Face Hub model deploy-text --target sagemaker serves (HF_MODEL_ID). "
        "Env: STREAMSIGHT_SAGEMAKER__TEXT_MODEL_ID.")


class DashboardSettings(BaseModel):
    """The live page (``streamsight dashboard`` builds it; ``GET /dashboard`` serves it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: str = Field(default="1 hour", description="The page covers the rows written in this last interval. "
                        "Env: STREAMSIGHT_DASHBOARD__WINDOW.")
    refresh_s: float = Field(default=60.0, ge=5, le=86400, description="How often it is rebuilt and the page "
                             "reloads. Env: STREAMSIGHT_DASHBOARD__REFRESH_S.")

    _window = field_validator("window")(_interval)


def _rate_limit(value: str) -> str:
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a rate limit such as '100/second': {exc}") from None
    return value.strip()


class Settings(BaseSettings):
    """The Streamsight settings object. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    profile: Literal["local", "docker", "aws"] = "local"
    lake_dir: str = Field(default="var/lake", description="Lake root: a directory, hdfs:// or s3a:// URI.")
    contracts_dir: Path = Field(default=Path("conf/contracts"), description="Directory of stream contracts.")
    run_dir: Path = Field(default=Path("var/run"), description="Where local servers write their addresses.")
    data_dir: Path = Field(default=Path("var/data"), description="Local servers' data (`streamsight broker`: data_dir/kafka).")
    reports_dir: Path = Field(default=Path("var/reports"), description="Where reports are written.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    aws: AwsSettings = Field(default_factory=AwsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    predictions_store: PredictionsStoreSettings = Field(default_factory=PredictionsStoreSettings)
    online: OnlineSettings = Field(default_factory=OnlineSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    sagemaker: SageMakerSettings = Field(default_factory=SageMakerSettings)

    @field_validator("lake_dir")
    @classmethod
    def _check_lake(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if "://" in value and value.split("://", 1)[0] not in ("file", "hdfs", "s3a", "s3", "abfss", "gs"):
            raise ValueError(f"unsupported scheme in {value!r} (use a path, file://, hdfs:// or s3a://)")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ProfileYamlSource(settings_cls))

    # -- derived locations -------------------------------------------------------------------
    @property
    def broker_address_file(self) -> Path:
        return self.run_dir / "broker.json"

    @property
    def api_keys_file(self) -> Path:
        return self.api.keys_file or self.run_dir / "api-keys.yaml"

    @property
    def dashboard_file(self) -> Path:
        """The live page ``streamsight dashboard`` writes and ``GET /dashboard`` serves."""
        return self.reports_dir / "dashboard" / "index.html"

    @property
    def lake_uri(self) -> str:
        """The lake root as a URI Spark/Hadoop understands."""
        if "://" in self.lake_dir:
            return self.lake_dir.rstrip("/")
        return Path(self.lake_dir).resolve().as_uri()

    def with_kafka(self, **changes: Any) -> Settings:
        """A copy with ``kafka`` fields changed (e.g. the servers of a broker started here)."""
        return self.model_copy(update={"kafka": self.kafka.model_copy(update=changes)})

    def redacted(self) -> dict[str, Any]:
        """A JSON-safe view for logs and ``streamsight config``: secrets show as ``**********``."""
        return self.model_dump(mode="json")


class _ProfileYamlSource(PydanticBaseSettingsSource):
    """Reads ``defaults`` merged with ``profiles.<profile>`` from the YAML file."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = Path(os.environ.get(f"{ENV_PREFIX}CONFIG", DEFAULT_CONFIG_FILE))
        profile = self.current_state.get("profile") or os.environ.get(f"{ENV_PREFIX}PROFILE") or "local"
        if profile not in PROFILES:
            raise ConfigError(f"{ENV_PREFIX}PROFILE (profile): {profile!r} is not one of {', '.join(PROFILES)}")
        if not path.exists():
            if f"{ENV_PREFIX}CONFIG" in os.environ:
                raise ConfigError(f"{ENV_PREFIX}CONFIG: file {path} does not exist")
            return {"profile": profile}
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{ENV_PREFIX}CONFIG: {path} is not valid YAML: {exc}") from exc
        merged = _deep_merge(doc.get("defaults") or {}, (doc.get("profiles") or {}).get(profile) or {})
        base = path.resolve().parent.parent
        for name in _PATH_FIELDS:
            value = merged.get(name)
            if isinstance(value, str) and "://" not in value and not Path(value).is_absolute():
                merged[name] = str(base / value)
        for section, name in _NESTED_PATH_FIELDS:
            value = (merged.get(section) or {}).get(name)
            if isinstance(value, str) and not Path(value).is_absolute():
                merged[section] = {**merged[section], name: str(base / value)}
        merged["profile"] = profile
        return merged


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(**overrides: Any) -> Settings:
    """Build settings; ``overrides`` are CLI flags (``None`` values are ignored).

    Raises :class:`ConfigError` naming the environment variable and setting at fault.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            dotted = ".".join(str(p) for p in err["loc"])
            env = ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{env} ({dotted}): {err['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
