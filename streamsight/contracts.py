"""Stream contracts: one YAML file declares a stream; everything else is derived from it.

A contract names the stream's topics, message key, payload schema (a JSON Schema subset that both
the producer and Spark can enforce identically), event time and watermark, de-duplication key, an
optional filter, optional reference data, lake partitioning, windowed aggregates and the model used
for scoring. From it the code derives:

* producer-side validation (:meth:`Contract.validator`),
* the Spark schema of the payload (:meth:`Contract.payload_spark_schema`),
* lake table names and their DDL (:meth:`Contract.table_names`, :meth:`Contract.ddl`).

Adding a stream needs no code: drop ``<name>.yaml`` (and any reference CSV it names) into the
contracts directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamsight.errors import ConfigError

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_INTERVAL = re.compile(r"^\s*(\d+)\s+(second|minute|hour|day)s?\s*$")
# JSON Schema keywords both the producer and the Spark validator enforce identically.
_SUPPORTED_KEYWORDS = {
    "type", "description", "title", "enum", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "pattern", "format", "examples",
}
_JSON_TO_SPARK = {"string": "string", "number": "double", "integer": "bigint", "boolean": "boolean",
                  "object": "string", "array": "string"}
AGGREGATIONS = ("count", "sum", "avg", "min", "max", "count_distinct")
TABLES = ("bronze", "silver", "dead_letter", "predictions")


class ContractError(ConfigError):
    """A contract file is invalid; the message names the file and the field."""


def interval_seconds(text: str) -> int:
    """``"10 minutes"`` -> 600. Raises ValueError for anything else."""
    m = _INTERVAL.match(text)
    if not m:
        raise ValueError(f"{text!r} is not an interval like '30 seconds', '10 minutes', '1 hour'")
    return int(m.group(1)) * {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[m.group(2)]


def _snake_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be lower_snake_case, start with a letter, at most 63 characters")
    return value


def _interval(value: str) -> str:
    interval_seconds(value)
    return value.strip()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Topics(_Model):
    raw: str | None = None
    dead_letter: str | None = None
    predictions: str | None = None
    partitions: int = Field(default=4, ge=1, le=1024)


class EventTime(_Model):
    field: str
    format: Literal["iso8601", "epoch_millis", "epoch_seconds"] = Field(
        default="iso8601",
        description="iso8601 (RFC 3339 with a time zone: a string field), epoch_millis or epoch_seconds "
        "(a number field)",
    )


class Reference(_Model):
    path: str = Field(description="CSV or Parquet file, relative to the contract file")
    format: Literal["csv", "parquet"] = "csv"
    key: str = Field(description="Join key in the stream's payload")
    reference_key: str | None = Field(default=None, description="Join key in the reference data (default: key)")
    columns: list[str] | None = Field(default=None, description="Reference columns to add (default: all)")
    prefix: str = Field(default="", description="Prefix for added columns, to avoid name clashes")


class Metric(_Model):
    name: str
    agg: Literal["count", "sum", "avg", "min", "max", "count_distinct"] = Field(
        description="count_distinct is approximate (Spark's approx_count_distinct: HyperLogLog++, 5 % relative "
        "error), as a streaming aggregate must be")
    column: str | None = None

    @model_validator(mode="after")
    def _column_needed(self) -> Metric:
        if self.agg != "count" and not self.column:
            raise ValueError(f"metric {self.name!r}: agg {self.agg!r} needs a column")
        return self


class Aggregate(_Model):
    name: str
    window: str
    slide: str | None = None
    group_by: list[str] = Field(default_factory=list)
    metrics: list[Metric] = Field(default_factory=list)
    first_seen: list[str] = Field(
        default_factory=list, description="First sightings instead of metrics: a row per combination of "
        "group_by and these columns, in the window of its earliest event time, with first_seen_at (e.g. an "
        "identity's first call in a region); a later or replayed event changes nothing, an earlier one moves it")

    _w = field_validator("window")(classmethod(lambda cls, v: _interval(v)))

    @model_validator(mode="after")
    def _metrics_or_first_seen(self) -> Aggregate:
        if self.first_seen:
            if self.metrics:
                raise ValueError(f"aggregate {self.name!r}: first_seen rows have no metrics (count them with SQL)")
            if self.slide is not None:
                raise ValueError(f"aggregate {self.name!r}: a first sighting falls in one window; first_seen "
                                 "takes no slide")
        elif not self.metrics:
            raise ValueError(f"aggregate {self.name!r}: needs metrics (or first_seen)")
        return self

    @field_validator("slide")
    @classmethod
    def _slide(cls, v: str | None) -> str | None:
        return None if v is None else _interval(v)


class Retention(_Model):
    """How long a table keeps what ``streamsight lake maintain`` may remove (default: settings')."""

    files: str | None = Field(default=None, description="Data files no version newer than this needs are "
                              "deleted once older than this (VACUUM), e.g. '7 days'")
    log: str | None = Field(default=None, description="Versions older than this can no longer be read "
                            "(time travel), e.g. '30 days'")

    _f = field_validator("files", "log")(classmethod(lambda cls, v: None if v is None else _interval(v)))


class Derived(_Model):
    """A column computed from the record: a Spark SQL expression over its fields and the derived
    columns before it. The stream adds it to every valid record (silver and everything after);
    ``ml.portable`` evaluates the same expression outside Spark (DuckDB, via sqlglot)."""

    name: str
    type: Literal["double", "int", "bigint", "boolean", "string"]
    expr: str = Field(min_length=1)
    description: str | None = None

    _name = field_validator("name")(classmethod(lambda cls, v: _snake_name(v)))


@lru_cache(maxsize=1024)
def expression_columns(expr: str) -> frozenset[str]:
    """The columns a derived expression reads; raises ValueError for an expression that is not a
    single row-wise Spark SQL expression of functions both Spark and DuckDB know."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(expr, read="spark")
    except sqlglot.errors.ParseError as exc:
        raise ValueError(f"not a Spark SQL expression: {str(exc).splitlines()[0]}") from None
    # Spark runs in ANSI mode: these fail the whole micro-batch on one record (a zero divisor, a
    # string that is not a number); their try_ forms give null instead, in Spark and DuckDB alike.
    if re.search(r"(?<![\w.])cast\s*\(", expr, re.IGNORECASE):
        raise ValueError("CAST fails the batch on a value it cannot convert: use try_cast(...)")
    for node in tree.walk():
        if isinstance(node, (exp.Div, exp.Mod, exp.IntDiv)):
            raise ValueError(f"{node.sql(dialect='spark')}: a division fails the batch on a zero divisor: use "
                             "try_divide(a, b) (null then)")
        if isinstance(node, (exp.Select, exp.Subquery, exp.Query)):
            raise ValueError("a subquery is not a row-wise expression")
        if isinstance(node, (exp.AggFunc, exp.Window)):
            raise ValueError(f"{node.sql(dialect='spark')}: aggregates and windows are not row-wise")
        if isinstance(node, exp.Anonymous):
            raise ValueError(f"{node.name}(): not a function this expression can use (Spark's and DuckDB's "
                             "common ones: arithmetic, comparisons, CASE, abs, least, greatest, coalesce ...)")
    return frozenset(c.name for c in tree.find_all(exp.Column))


class ModelSpec(_Model):
    name: str
    label: str
    features: list[str] = Field(min_length=1)
    categorical_features: list[str] = Field(default_factory=list)
    text_features: list[str] = Field(
        default_factory=list, description="String fields or derived columns read as text (text_encoding)")
    text_encoding: Literal["hashed", "embedded"] = Field(
        default="hashed", description="hashed: lower-cased, split into tokens of letters and digits (two or more), "
        "each token hashed into one of text_buckets slots; embedded: the text's embedding by a small text model "
        "shipped with the wordllama package (ml.text), text_dimensions numbers")
    text_buckets: int = Field(default=256, ge=16, le=65536, description="hashed: slots per text feature")
    text_dimensions: Literal[64, 128, 256] = Field(default=64, description="embedded: numbers per text feature")
    task: Literal["binary", "multiclass", "regression"] = Field(
        default="binary", description="binary: P(label == positive_label) and a decision threshold; multiclass: "
        "one probability per class, the most probable class predicted; regression: a numeric label, its value "
        "predicted")
    positive_label: int = Field(default=1, description="binary: the label value that counts as positive")
    classes: list[str | int] | None = Field(
        default=None, min_length=2, description="multiclass: the label's values, in order (default: the label "
        "field's enum; without one, the values seen in training, sorted)")
    scoring: Literal["batch", "online"] = Field(
        default="batch", description="batch: the stream job scores each silver micro-batch into the "
        "predictions table; online: `streamsight online` scores each record into the predictions topic, and "
        "the stream job fills the predictions table (and the store) from that topic")
    route_by: str | None = Field(
        default=None, description="A string field naming the model that scores each record (its production "
        "version, trained on this stream); a record without it goes to `name`, one naming a model that has no "
        "production version for this stream goes to the dead letter with UNKNOWN_MODEL")


@dataclass(frozen=True)
class FieldSpec:
    """One payload field, as both validators see it."""

    name: str
    json_type: str
    spark_type: str
    required: bool
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    format: str | None = None
    inner: tuple[FieldSpec, ...] = ()  # an object's declared fields (its schema's properties), in order
    key: str = ""  # a declared field's key in its object (its name is "<object>.<key>")
    items: FieldSpec | None = None  # an array's schema of each element (a scalar's; its name is "<array>[]")


_INNER_TYPES = ("string", "number", "integer", "boolean")  # what an object's declared fields may be


def _field_spec(name: str, spec: dict[str, Any], required: bool, key: str = "") -> FieldSpec:
    inner_required = set(spec.get("required", []))
    return FieldSpec(
        name=name,
        key=key,
        json_type=spec["type"],
        spark_type=_JSON_TO_SPARK[spec["type"]],
        required=required,
        enum=tuple(spec["enum"]) if "enum" in spec else None,
        minimum=spec.get("minimum"),
        maximum=spec.get("maximum"),
        exclusive_minimum=spec.get("exclusiveMinimum"),
        exclusive_maximum=spec.get("exclusiveMaximum"),
        min_length=spec.get("minLength"),
        max_length=spec.get("maxLength"),
        pattern=spec.get("pattern"),
        format=spec.get("format"),
        inner=tuple(_field_spec(f"{name}.{inner}", s, inner in inner_required, inner)
                    for inner, s in (spec.get("properties") or {}).items()),
        items=_field_spec(f"{name}[]", spec["items"], False) if "items" in spec else None,
    )


def _check_property(where: str, spec: Any, *, inner: bool = False) -> None:
    """One property of the schema (``inner``: a declared field of an object property, or an array's items)."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: must be a mapping")
    types = _INNER_TYPES if inner else tuple(_JSON_TO_SPARK)
    nested = set() if inner else {"object": {"properties", "required"}, "array": {"items"}}.get(str(spec.get("type")), set())
    unknown = set(spec) - _SUPPORTED_KEYWORDS - nested
    if unknown:
        raise ValueError(f"{where}: unsupported keyword(s) {sorted(unknown)}; supported: "
                         f"{sorted(_SUPPORTED_KEYWORDS | nested)}")
    if spec.get("type") not in types:
        raise ValueError(f"{where}.type: must be one of {sorted(types)}"
                         + (" (an object's declared fields and an array's items are scalars)" if inner else ""))
    if "format" in spec and spec["format"] not in STRING_FORMATS:
        raise ValueError(f"{where}.format: {spec['format']!r} is not one of "
                         f"{', '.join(STRING_FORMATS)} (the formats the producer and the stream check alike)")
    if "pattern" in spec:
        try:
            re.compile(spec["pattern"])
        except re.error as exc:
            raise ValueError(f"{where}.pattern: not a regular expression: {exc}") from None
    if "items" in spec:  # each element: a scalar with the usual keywords
        _check_property(f"{where}.items", spec["items"], inner=True)
    if "properties" not in nested:
        return
    declared = spec.get("properties", {})
    if not isinstance(declared, dict):
        raise ValueError(f"{where}.properties: must be a mapping of field names to schemas")
    for name, sub in declared.items():
        if "'" in name and '"' in name:
            raise ValueError(f"{where}.properties: {name!r}: a declared field's name cannot hold both ' and \"")
        _check_property(f"{where}.properties.{name}", sub, inner=True)
    for req in spec.get("required", []):
        if req not in declared:
            raise ValueError(f"{where}.required: {req!r} is not one of its properties")


class Contract(_Model):
    """A parsed, validated stream contract. Build with :func:`load_contract`."""

    name: str
    description: str = ""
    owner: str | None = None
    version: int = 1
    topics: Topics = Field(default_factory=Topics)
    key: str
    event_time: EventTime
    watermark: str = "10 minutes"
    dedup_key: list[str] = Field(min_length=1)
    max_record_bytes: int = Field(
        default=983_040, ge=1024, le=100_000_000,
        description="Largest message value accepted (RECORD_TOO_LARGE above it). The default, 960 KiB, "
        "stays under Kafka's default message limit of about 1 MB with room for key and headers.")
    payload_schema: dict[str, Any] = Field(alias="schema")
    filter: str | None = None
    reference: Reference | None = None
    partition_by: list[str] = Field(default_factory=lambda: ["event_date"])
    derived: list[Derived] = Field(default_factory=list, description="Columns computed from each valid "
                                   "record, usable in the filter, aggregates and model features.")
    aggregates: list[Aggregate] = Field(default_factory=list)
    model: ModelSpec | None = None
    retention: Retention = Field(default_factory=Retention)
    source_file: Path | None = Field(default=None, exclude=True)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    _name = field_validator("name")(classmethod(lambda cls, v: _snake_name(v)))

    @field_validator("watermark")
    @classmethod
    def _watermark(cls, v: str) -> str:
        return _interval(v)

    @model_validator(mode="after")
    def _cross_check(self) -> Contract:
        schema = self.payload_schema
        if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
            raise ValueError("schema: must be a JSON Schema with type: object and properties")
        for prop, spec in schema["properties"].items():
            _check_property(f"schema.properties.{prop}", spec)
        names = set(schema["properties"])
        for req in schema.get("required", []):
            if req not in names:
                raise ValueError(f"schema.required: {req!r} is not a property")

        def need(where: str, col: str, pool: set[str]) -> None:
            if col not in pool:
                raise ValueError(f"{where}: {col!r} is not a field (known: {', '.join(sorted(pool))})")

        need("key", self.key, names)
        need("event_time.field", self.event_time.field, names)
        if self.event_time.field not in schema.get("required", []):
            raise ValueError(f"event_time.field: {self.event_time.field!r} must be in schema.required "
                             "(a record without its event time cannot be de-duplicated or windowed)")
        et_type = schema["properties"][self.event_time.field]["type"]
        wanted = ("string",) if self.event_time.format == "iso8601" else ("integer", "number")
        if et_type not in wanted:
            raise ValueError(f"event_time: format {self.event_time.format} needs a field of type "
                             f"{' or '.join(wanted)}; {self.event_time.field!r} is {et_type}")
        for col in self.dedup_key:
            need("dedup_key", col, names)
        if self.reference:
            need("reference.key", self.reference.key, names)
        known = set(names)
        for i, d in enumerate(self.derived):
            where = f"derived.{i}.{d.name}"
            if d.name in known | {"event_date", "event_hour"} | self._reference_columns_hint():
                raise ValueError(f"{where}: {d.name!r} is already a column")
            try:
                columns = expression_columns(d.expr)
            except ValueError as exc:
                raise ValueError(f"{where}.expr: {exc}") from None
            for col in sorted(columns):
                need(f"{where}.expr", col, known)  # fields, and derived columns declared before it
            known.add(d.name)
        derived = {d.name: d for d in self.derived}
        if self.filter:
            try:
                columns = expression_columns(self.filter)
            except ValueError as exc:
                raise ValueError(f"filter: {exc}") from None
            for col in sorted(columns):
                need("filter", col, known)  # the filter runs before the reference join
        silver_cols = known | {"event_date", "event_hour"} | self._reference_columns_hint()
        for col in self.partition_by:
            need("partition_by", col, silver_cols)
        for agg in self.aggregates:
            for col in agg.group_by:
                need(f"aggregates.{agg.name}.group_by", col, silver_cols)
            for col in agg.first_seen:
                need(f"aggregates.{agg.name}.first_seen", col, silver_cols)
                if col in agg.group_by:
                    raise ValueError(f"aggregates.{agg.name}.first_seen: {col!r} is also in group_by")
            for metric in agg.metrics:
                if metric.column:
                    need(f"aggregates.{agg.name}.metrics.{metric.name}", metric.column, silver_cols)
        if self.model:
            need("model.label", self.model.label, known)  # a field or a derived column
            self._check_task(derived)
            spec = self.model
            unused = {"hashed": "text_dimensions", "embedded": "text_buckets"}[spec.text_encoding]
            if unused in spec.model_fields_set:
                raise ValueError(f"model.{unused}: does not apply to text_encoding {spec.text_encoding}")
            if spec.text_encoding == "embedded" and spec.text_features and spec.scoring == "online":
                raise ValueError("model.text_encoding: the hot path (model.scoring: online) runs no Python; embedded "
                                 "text is scored in the stream job (model.scoring: batch)")
            for col in self.model.text_features:
                need("model.text_features", col, known)
                kind = derived[col].type if col in derived else schema["properties"][col]["type"]
                if kind != "string":
                    raise ValueError(f"model.text_features: {col!r} is {kind}; a text feature is a string")
                if col in self.model.features or col in self.model.categorical_features:
                    raise ValueError(f"model.text_features: {col!r} is also a feature; list it once")
            for col in [*self.model.features, *self.model.categorical_features]:
                need("model.features", col, silver_cols)
                if col == self.event_time.field:
                    raise ValueError(f"model.features: {col!r} is the event time, a timestamp in the lake; derive a "
                                     f"number from it (e.g. hour(`{col}`)) and use that")
                if col in derived and col not in self.model.categorical_features and derived[col].type in (
                        "string", "boolean"):
                    raise ValueError(f"model.features: derived column {col!r} is {derived[col].type}; a numeric "
                                     "feature must be double, int or bigint (or list it in categorical_features)")
            route = self.model.route_by
            if route is not None:
                need("model.route_by", route, names)
                if schema["properties"][route]["type"] != "string":
                    raise ValueError(f"model.route_by: {route!r} must be a string field (a model's name)")
                if self.model.scoring == "online":
                    raise ValueError("model.route_by: the hot path (model.scoring: online) scores with one model; "
                                     "routing by field runs in the stream job (model.scoring: batch)")
        return self

    def _check_task(self, derived: dict[str, Derived]) -> None:
        spec = self.model
        assert spec is not None
        label = spec.label
        if label in self.model_reads() or label in self.model_reads(derived=True):
            raise ValueError(f"model.features: the label {label!r} is read by a feature (directly or through a "
                             "derived column); a model cannot see its own label")
        if spec.task != "multiclass" and spec.classes is not None:
            raise ValueError("model.classes: only a multiclass model (model.task: multiclass) has classes")
        if spec.task == "binary":
            return
        if "positive_label" in spec.model_fields_set:
            raise ValueError(f"model.positive_label: a {spec.task} model has no positive label"
                             + (" (list model.classes)" if spec.task == "multiclass" else ""))
        if spec.scoring == "online":
            raise ValueError(f"model.scoring: the hot path (online) scores binary models; a {spec.task} model is "
                             "scored in the stream job (model.scoring: batch)")
        kind = derived[label].type if label in derived else self.payload_schema["properties"][label]["type"]
        if spec.task == "regression":
            if kind not in ("number", "integer", "double", "int", "bigint"):
                raise ValueError(f"model.label: a regression label must be a number; {label!r} is {kind}")
            return
        if kind not in ("string", "integer", "int", "bigint"):
            raise ValueError(f"model.label: a multiclass label must be a string or an integer; {label!r} is {kind}")
        classes = [str(c) for c in spec.classes or []]
        if len(set(classes)) != len(classes):
            raise ValueError(f"model.classes: {classes} lists a class twice")
        enum = None if label in derived else self.payload_schema["properties"][label].get("enum")
        if enum is not None and spec.classes is not None and set(classes) != {str(v) for v in enum}:
            raise ValueError(f"model.classes: {classes} are not the values of {label!r}'s enum {enum}")

    def model_classes(self) -> list[str] | None:
        """A multiclass model's classes as text, in order, when the contract names them (its
        ``classes``, else the label field's enum); None otherwise (binary, or learned in training)."""
        spec = self.model
        if spec is None or spec.task != "multiclass":
            return None
        if spec.classes is not None:
            return [str(c) for c in spec.classes]
        prop = self.payload_schema["properties"].get(spec.label) or {}
        return [str(v) for v in prop["enum"]] if "enum" in prop else None

    def model_reads(self, *, derived: bool = False) -> list[str]:
        """The fields the model reads: its features that are fields, in order, then the fields its
        derived features read, in the schema's order (``derived``: the derived columns its features
        need instead, in declaration order)."""
        if self.model is None:
            return []
        by_name = {d.name: d for d in self.derived}
        columns = [*self.model.features, *self.model.categorical_features, *self.model.text_features]
        fields: set[str] = set()
        needed: set[str] = set()

        def visit(column: str) -> None:
            if column in by_name:
                needed.add(column)
                for used in expression_columns(by_name[column].expr):
                    visit(used)
            else:
                fields.add(column)

        for column in columns:
            visit(column)
        if derived:
            return [d.name for d in self.derived if d.name in needed]
        schema = [f.name for f in self.fields]
        return list(dict.fromkeys([*[c for c in columns if c in schema], *[f for f in schema if f in fields]]))

    def _reference_columns_hint(self) -> set[str]:
        if not self.reference or not self.reference.columns:
            return set()
        return {self.reference.prefix + c for c in self.reference.columns}

    # -- topics and tables -----------------------------------------------------------------
    @property
    def raw_topic(self) -> str:
        return self.topics.raw or f"{self.name}.raw"

    @property
    def dead_letter_topic(self) -> str:
        return self.topics.dead_letter or f"{self.name}.dead-letter"

    @property
    def predictions_topic(self) -> str:
        return self.topics.predictions or f"{self.name}.predictions"

    def table_names(self) -> dict[str, str]:
        """SQL view names of every lake table of this stream."""
        names = {t: f"{self.name}_{t}" for t in TABLES}
        for agg in self.aggregates:
            names[f"gold_{agg.name}"] = f"{self.name}_gold_{agg.name}"
        return names

    # -- schema ----------------------------------------------------------------------------
    @cached_property
    def fields(self) -> tuple[FieldSpec, ...]:
        required = set(self.payload_schema.get("required", []))
        return tuple(_field_spec(name, spec, name in required)
                     for name, spec in self.payload_schema["properties"].items())

    def payload_spark_schema(self) -> str:
        """DDL string of the typed payload, e.g. ``event_id string, torque_nm double``."""
        return ", ".join(f"`{f.name}` {f.spark_type}" for f in self.fields)

    @cached_property
    def reference_path(self) -> Path | None:
        if not self.reference:
            return None
        path = Path(self.reference.path)
        if not path.is_absolute() and self.source_file is not None:
            path = self.source_file.parent / path
        return path

    def ddl(self, lake_uri: str) -> dict[str, str]:
        """``CREATE TABLE`` statements (Spark SQL, Delta Lake tables at their lake locations) for every
        lake table: what the streaming job creates, and how a catalog names them."""
        from streamsight.lake import TABLE_FORMAT, table_columns, table_uri  # local import: lake imports contracts

        out = {}
        for table, view in self.table_names().items():
            cols, parts = table_columns(self, table)
            part_sql = f"\nPARTITIONED BY ({', '.join(parts)})" if parts else ""
            out[table] = (
                f"CREATE TABLE IF NOT EXISTS {view} (\n  "
                + ",\n  ".join(f"`{c}` {t}" for c, t in cols)
                + f"\n) USING {TABLE_FORMAT}{part_sql}\nLOCATION '{table_uri(lake_uri, self, table)}'"
            )
        return out


# Reason codes of the dead-letter table (streamsight/validation.py and streaming_jobs/validation.py
# give the same code to every record; the producer alone has MALFORMED_RECORD, for a CSV row it
# cannot make a record of).
REASON_CODES = (
    "RECORD_TOO_LARGE", "NOT_UTF8", "MALFORMED_JSON", "NOT_AN_OBJECT", "MISSING_FIELD", "TYPE_MISMATCH",
    "NOT_IN_ENUM", "BAD_LENGTH", "PATTERN_MISMATCH", "BAD_FORMAT", "OUT_OF_RANGE", "BAD_EVENT_TIME",
    "MALFORMED_RECORD",
)
# Message headers of a rejected record: a producer attaches them to a record it rejected and still
# publishes to the raw topic; the pipeline's dead-letter topic messages carry them all.
REJECTION_HEADERS = {"code": "streamsight.error_code", "reason": "streamsight.reason",
                     "source": "streamsight.source", "origin": "streamsight.origin",
                     "bytes": "streamsight.original_bytes"}
STRING_FORMATS = ("date-time", "date")  # the `format` values both validators check alike
EVENT_TIME_FORMATS = ("iso8601", "epoch_millis", "epoch_seconds")


def value_of_json_type(json_type: str, value: Any) -> bool:
    """Whether a contract value (an enum option, say) is of JSON Schema type ``json_type``: an
    integer may be an integral float, a bool is neither a number nor an integer."""
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return json_type == "number" or isinstance(value, int) or value.is_integer()


def load_contract(path: Path | str) -> Contract:
    """Parse and validate one contract file; errors name the file and the field."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ContractError(f"contract {path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ContractError(f"contract {path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ContractError(f"contract {path}: expected a mapping at the top level")
    try:
        contract = Contract.model_validate({**doc, "source_file": path.resolve()})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise ContractError(f"contract {path}: {problems}") from None
    if contract.name != path.stem:
        raise ContractError(f"contract {path}: name {contract.name!r} must match the file name {path.stem!r}")
    if contract.reference_path is not None and not contract.reference_path.exists():
        raise ContractError(f"contract {path}: reference.path {contract.reference_path} does not exist")
    return contract


def load_contracts(directory: Path | str) -> dict[str, Contract]:
    """All ``*.yaml``/``*.yml`` contracts in ``directory``, by stream name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ContractError(f"STREAMSIGHT_CONTRACTS_DIR (contracts_dir): {directory} is not a directory")
    contracts = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        contract = load_contract(path)
        contracts[contract.name] = contract
    return contracts


def get_contract(directory: Path | str, name: str) -> Contract:
    contracts = load_contracts(directory)
    if name not in contracts:
        known = ", ".join(sorted(contracts)) or "none"
        raise ContractError(f"no contract for stream {name!r} in {directory} (known: {known})")
    return contracts[name]
