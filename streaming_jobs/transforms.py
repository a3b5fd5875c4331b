"""Pure DataFrame -> DataFrame transforms of the medallion flow, all derived from a contract.

Each function works the same on a batch and a streaming DataFrame, so unit tests use tiny inline
data and the streaming jobs compose them::

    kafka records ──to_bronze──▶ bronze ──parse──▶ parsed ──valid_rows──▶ silver-shaped rows
                                                       └────invalid_rows──▶ dead-letter rows

    in the stream:  bronze ──screen──▶ screened ──dedup_keyed, drop duplicates──▶ valid_rows
                                                └───────────rejected_rows──▶ dead-letter rows

Validation uses Spark's VARIANT type: the value is parsed once with ``try_parse_json`` and every
JSON Schema rule of the contract becomes a SQL predicate on it. The first rule a record breaks gives
its ``error_code`` (the same codes the producer uses, see :data:`streamsight.contracts.REASON_CODES`)
and a human-readable ``reason``.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streamsight.contracts import Contract, FieldSpec
from streamsight.lake import DEAD_LETTER_COLUMNS, silver_columns

# No backslashes: these go inside SQL string literals, where a backslash is an escape character.
_INT_TYPES = "^(TINYINT|SMALLINT|INT|BIGINT|DECIMAL[(][0-9]+,0[)])$"
_NUM_TYPES = "^(TINYINT|SMALLINT|INT|BIGINT|FLOAT|DOUBLE|DECIMAL[(][0-9]+,[0-9]+[)])$"
_TYPE_CHECK = {
    "string": "= 'STRING'", "boolean": "= 'BOOLEAN'", "integer": f"RLIKE '{_INT_TYPES}'",
    "number": f"RLIKE '{_NUM_TYPES}'", "object": "LIKE 'OBJECT%'", "array": "LIKE 'ARRAY%'",
}


def to_bronze(kafka_df: DataFrame) -> DataFrame:
    """Kafka source rows -> bronze: raw bytes, Kafka coordinates, produce and ingest time.

    Ingest time is when the job read the record: the clock, read per row by the JVM function of
    :mod:`streaming_jobs.jvm` where its jar is on the classpath (``current_timestamp()``, which a
    stream turns into its micro-batch's time, would be a literal in the generated code and make
    every micro-batch compile its stages anew), else ``current_timestamp()``.
    """
    from streaming_jobs import jvm

    now = jvm.now_function(kafka_df.sparkSession)
    ingest = F.timestamp_micros(F.call_function(now)) if now else F.current_timestamp()
    return (
        kafka_df.select(
            "key", "value", "topic", "partition", "offset",
            F.col("timestamp").alias("kafka_timestamp"),
            ingest.alias("ingest_time"),
        )
        .withColumn("ingest_date", F.to_date("ingest_time"))
    )


def _path(name: str) -> str:
    return "$['" + name.replace("\\", "\\\\").replace("'", "\\'") + "']"


def _lit_sql(value: object) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _field_rules(f: FieldSpec, present: str, kind: str, typed: str) -> list[tuple[str, str, str]]:
    """(condition that means 'broken', code, reason SQL) for one field, in check order.

    ``present``, ``kind`` and ``typed`` are SQL for: the field is there and not JSON null; its
    variant type name (``schema_of_variant``); its value cast to the contract's Spark type.
    """
    q = _lit_sql
    shown = f"cast({typed} AS STRING)"
    rules = []
    if f.required:
        rules.append((f"NOT {present}", "MISSING_FIELD", q(f"field {f.name} is required")))
    rules.append((f"{present} AND NOT ({kind} {_TYPE_CHECK[f.json_type]})", "TYPE_MISMATCH",
                  f"concat({q(f'field {f.name}: expected {f.json_type}, got ')}, lower({kind}))"))
    rules.append((f"{present} AND {typed} IS NULL", "TYPE_MISMATCH",
                  q(f"field {f.name}: value does not fit type {f.spark_type}")))
    bounds = [(f.minimum, "<", "minimum"), (f.exclusive_minimum, "<=", "exclusive minimum"),
              (f.maximum, ">", "maximum"), (f.exclusive_maximum, ">=", "exclusive maximum")]
    for bound, op, label in bounds:
        if bound is not None:
            rules.append((f"{typed} {op} {bound!r}", "OUT_OF_RANGE",
                          f"concat({q(f'field {f.name}: ')}, {shown}, {q(f' is outside {label} {bound}')})"))
    if f.enum is not None:
        options = ", ".join(q(v) for v in f.enum)
        allowed = ", ".join(str(v) for v in f.enum)
        rules.append((f"{typed} IS NOT NULL AND {typed} NOT IN ({options})", "NOT_IN_ENUM",
                      f"concat({q(f'field {f.name}: ')}, {shown}, {q(f' is not one of [{allowed}]')})"))
    if f.min_length is not None:
        rules.append((f"char_length({typed}) < {f.min_length}", "BAD_LENGTH",
                      q(f"field {f.name}: shorter than {f.min_length} characters")))
    if f.max_length is not None:
        rules.append((f"char_length({typed}) > {f.max_length}", "BAD_LENGTH",
                      q(f"field {f.name}: longer than {f.max_length} characters")))
    if f.pattern is not None:
        rules.append((f"NOT regexp_like({typed}, {q(f.pattern)})", "PATTERN_MISMATCH",
                      q(f"field {f.name}: does not match pattern {f.pattern}")))
    return rules


def _event_time_sql(contract: Contract, typed: str) -> str:
    fmt = contract.event_time.format
    if fmt == "iso8601":
        return f"try_to_timestamp({typed})"
    if fmt == "epoch_millis":
        return f"timestamp_millis(try_cast({typed} AS BIGINT))"
    if fmt == "epoch_seconds":
        return f"timestamp_seconds(try_cast({typed} AS DOUBLE))"
    return f"try_to_timestamp({typed}, {_lit_sql(fmt)})"


# What the fast path's typed value of a field is, as a variant type name for the type rules: the
# JSON parser only accepts a number token for a number field and true/false for a boolean one.
# String and integer fields are read as VARIANT and checked as the exact path checks them (a
# string field would take any JSON value as text; an integer may be written 12.0).
_FAST_KIND = {"number": "'DOUBLE'", "boolean": "'BOOLEAN'"}
_FAST_VARIANT = ("string", "integer")
# JSON reader options that make from_json accept no more than parse_json does.
_STRICT_JSON = {"allowSingleQuotes": "false", "allowNonNumericNumbers": "false", "mode": "PERMISSIVE",
                "columnNameOfCorruptRecord": "_corrupt"}


def fast_path_supported(contract: Contract) -> bool:
    """True if :func:`parse` can accept this contract's valid records on the fast path."""
    return all(f.json_type in (*_FAST_VARIANT, *_FAST_KIND) for f in contract.fields)


_TEXT = "CAST(value AS STRING)"


def _rules_sql(contract: Contract, present: list[str], kind: list[str], typed: list[str], ts: str) -> list[tuple[str, str, str]]:
    """Every rule of the contract as (condition meaning 'broken', code, reason SQL), in check order."""
    text = "CAST(value AS STRING)"
    rules: list[tuple[str, str, str]] = [
        ("value IS NULL", "MALFORMED_JSON", "'empty message value'"),
        ("_no_json", "MALFORMED_JSON", f"concat('not valid JSON: ', left({text}, 120))"),
        (f"left(ltrim({text}), 1) != '{{'", "NOT_AN_OBJECT", "'JSON value is not an object'"),
    ]
    for i, f in enumerate(contract.fields):
        rules += _field_rules(f, present[i], kind[i], typed[i])
    et = contract.event_time
    typed_et = typed[[f.name for f in contract.fields].index(et.field)]
    rules.append((f"{ts} IS NULL", "BAD_EVENT_TIME",
                  f"concat({_lit_sql(f'field {et.field}: cannot read ')}, "
                  f"coalesce(cast({typed_et} AS STRING), 'null'), {_lit_sql(f' as {et.format}')})"))
    return rules


def _fast_stages(bronze: DataFrame, contract: Contract) -> tuple[DataFrame, list[Column]]:
    """The fast path: bronze columns + ``_f<i>`` typed values, ``_f_ts`` and ``_fast`` (accepted)."""
    keep = [F.col(c) for c in bronze.columns]
    fields = list(contract.fields)
    n = len(fields)
    et_index = [f.name for f in fields].index(contract.event_time.field)
    schema = ", ".join(f"`{f.name}` {'variant' if f.json_type in _FAST_VARIANT else f.spark_type}" for f in fields)
    stage0 = bronze.select(*keep, F.from_json(F.expr(_TEXT), schema + ", `_corrupt` string", _STRICT_JSON).alias("_j"))
    fast_typed, fast_cols = [], []
    for i, f in enumerate(fields):
        ref = f"_j.`{f.name}`"
        if f.json_type in _FAST_VARIANT:
            fast_cols.append(F.expr(f"schema_of_variant({ref})").alias(f"_fk{i}"))
            fast_cols.append(F.expr(f"try_variant_get({ref}, '$', '{f.spark_type}')").alias(f"_f{i}"))
        elif f.json_type == "number":  # + 0.0: -0.0 becomes 0.0, as through the exact path's VARIANT decimal
            fast_cols.append(F.expr(f"{ref} + 0.0").alias(f"_f{i}"))
        else:
            fast_cols.append(F.expr(ref).alias(f"_f{i}"))
        fast_typed.append(f"_f{i}")
    stage0b = stage0.select(*keep, F.expr("_j IS NULL OR _j._corrupt IS NOT NULL").alias("_no_json"), *fast_cols)
    stage0c = stage0b.select("*", F.expr(_event_time_sql(contract, fast_typed[et_index])).alias("_f_ts"))
    kinds = [f"_fk{i}" if f.json_type in _FAST_VARIANT else _FAST_KIND[f.json_type] for i, f in enumerate(fields)]
    present = [f"(_f{i} IS NOT NULL)" for i in range(n)]
    fast_rules = _rules_sql(contract, present, kinds, fast_typed, "_f_ts")
    finite = [f"(_f{i} IS NULL OR NOT (isnan(_f{i}) OR abs(_f{i}) = double('infinity')))"
              for i, f in enumerate(fields) if f.json_type == "number"]
    broken = " OR ".join(f"coalesce({c}, false)" for c, _, _ in fast_rules)  # as CASE WHEN reads NULL
    ok = " AND ".join([f"NOT ({broken})", *finite])
    staged = stage0c.select(*keep, *[F.col(f"_f{i}") for i in range(n)], "_f_ts", F.expr(ok).alias("_fast"))
    return staged, [*keep, *[F.col(f"_f{i}") for i in range(n)], F.col("_f_ts"), F.col("_fast")]


def screen(bronze: DataFrame, contract: Contract, *, use_jvm: bool = True) -> DataFrame:
    """Bronze rows + typed payload columns ``p__<field>``, ``p__event_ts`` and ``_accepted``.

    What the stream runs before de-duplication: it only decides which records are valid and types
    them; :func:`rejected_rows` gives the others their code and reason with the exact path, so its
    cost (its ~100 expressions are evaluated for every row once they are in the plan, even where
    their input is null) is paid only for them.  Typed columns of records that are not accepted
    are null.  The deciding is done by, in order of preference:

    * the JVM screen (:mod:`streaming_jobs.jvm`, when its jar is on the classpath and unless
      ``use_jvm=False``): one pass of a streaming JSON parser, about a tenth of the JVM time of
      the SQL fast path per record (``docs/benchmarks.md``);
    * the fast path of :func:`parse`, for contracts whose fields are strings, numbers, integers or
      booleans (the JVM screen takes the same contracts); other contracts get the full :func:`parse`.

    All three accept the same records with the same values (``tests/unit/test_transforms.py``).
    """
    from streaming_jobs import jvm

    fields = list(contract.fields)
    function = jvm.screen_function(bronze.sparkSession, contract) if use_jvm else None
    if function is None:
        if not fast_path_supported(contract):
            return parse(bronze, contract).drop("_error_code", "_reason", "_fast_path")
        staged, _ = _fast_stages(bronze, contract)
        return staged.select(
            *[F.col(c) for c in bronze.columns],
            *[F.expr(f"CASE WHEN _fast THEN _f{i} END").alias(f"p__{f.name}") for i, f in enumerate(fields)],
            F.expr("CASE WHEN _fast THEN _f_ts END").alias("p__event_ts"),
            F.col("_fast").alias("_accepted"),
        )
    # The JVM screen accepts exactly what the exact path accepts (tests/unit/test_transforms.py);
    # rejected_rows explains the others.
    screened = jvm_screened(bronze, contract, function)
    return screened.select(
        *[F.col(c) for c in bronze.columns],
        *[F.expr(f"CASE WHEN _jok THEN _jv.`{f.name}` END").alias(f"p__{f.name}") for f in fields],
        F.expr("CASE WHEN _jok THEN _jts END").alias("p__event_ts"),
        F.col("_jok").alias("_accepted"),
    )


def jvm_screened(bronze: DataFrame, contract: Contract, function: str) -> DataFrame:
    """Bronze rows + the JVM screen's verdict (:mod:`streaming_jobs.jvm`, SQL function
    ``function``): ``_jv`` (its struct: ``_ok`` and the typed fields), ``_jts`` (the event time,
    converted here as the SQL paths convert it) and ``_jok`` (accepted: ``_ok`` and an event time)."""
    et = contract.event_time.field
    s1 = bronze.select("*", F.call_function(function, F.col("value")).alias("_jv"))
    s2 = s1.select("*", F.expr(_event_time_sql(contract, f"_jv.`{et}`")).alias("_jts"))
    return s2.select("*", F.expr("_jv._ok AND _jts IS NOT NULL").alias("_jok"))


DISAGREEMENT = "VALIDATION_DISAGREEMENT"


def rejected_rows(screened: DataFrame, contract: Contract, source: str = "stream") -> DataFrame:
    """Dead-letter rows for the :func:`screen` output rows that were not accepted.

    The exact path gives each its code and reason.  A record the exact path finds valid although
    the screen did not accept it (the two must agree; ``tests/unit/test_transforms.py`` checks it)
    is not written to silver, since it has not been de-duplicated: it lands here with the code
    ``VALIDATION_DISAGREEMENT``, raw bytes kept, so nothing is lost.
    """
    bronze_columns = ["key", "value", "topic", "partition", "offset", "kafka_timestamp", "ingest_time", "ingest_date"]
    rejected = screened.where(~F.col("_accepted")).select(*bronze_columns)
    exact = parse(rejected, contract, fast=False)
    explained = exact.select(
        *bronze_columns,
        F.coalesce("_error_code", F.lit(DISAGREEMENT)).alias("_error_code"),
        F.coalesce("_reason", F.lit("valid by the contract's rules but not accepted by the stream's fast "
                                    "validation, so not de-duplicated; kept here (please report it)")).alias("_reason"),
    )
    return invalid_rows(explained, source=source)


def parse(bronze: DataFrame, contract: Contract, *, fast: bool = True) -> DataFrame:
    """Bronze rows + typed payload columns + ``_error_code``/``_reason`` (null when valid).

    Typed columns are named ``p__<field>``; the contract's event-time field also gets ``p__event_ts``;
    ``_accepted`` says the record is valid, ``_fast_path`` which path accepted it.

    Two paths, one answer:

    * **Fast path** (every record; contracts whose fields are strings, numbers, integers or
      booleans): ``from_json`` with the contract's types and strict reader options, string and
      integer fields read as VARIANT so that their JSON type can be checked as the exact path
      checks it, then every rule on those values.  A record the JSON reader had to give up on (a
      conversion failed: wrong type, malformed text) is never accepted here.  Records that pass
      are valid, and their values are taken from this path.
    * **Exact path** (only the records the fast path did not accept): the JSON text becomes a
      VARIANT, each field's raw value, its variant type name and its typed value become columns,
      and the rules run on those, giving the first broken rule's code and reason.  For accepted
      records its input is null.  ``fast=False`` uses only this path.

    Both paths accept the same records, with the same values (``tests/unit/test_transforms.py``
    runs both on tricky records); the stream relies on it (:func:`screen`, :func:`rejected_rows`).
    Both work in stages so each value is parsed once and each field looked up once (as one
    projection, each of the ~60 rules would re-extract its field: measured 4-5x slower).
    """
    keep = [F.col(c) for c in bronze.columns]
    fields = list(contract.fields)
    n = len(fields)
    et_ts = lambda typed_et: _event_time_sql(contract, typed_et)  # noqa: E731
    et_index = [f.name for f in fields].index(contract.event_time.field)

    use_fast = fast and fast_path_supported(contract)
    if use_fast:
        staged, carry = _fast_stages(bronze, contract)
        json_sql = f"CASE WHEN _fast THEN NULL ELSE try_parse_json({_TEXT}) END"
    else:
        staged, carry, json_sql = bronze, keep, f"try_parse_json({_TEXT})"

    stage1 = staged.select(*carry, F.expr(json_sql).alias("_v"))
    raw_cols = [F.expr(f"variant_get(_v, {_lit_sql(_path(f.name))})").alias(f"_r{i}") for i, f in enumerate(fields)]
    stage2 = stage1.select(*carry, "_v", *raw_cols)
    extracted = []
    for i, f in enumerate(fields):
        raw = f"_r{i}"
        extracted.append(F.expr(f"({raw} IS NOT NULL AND NOT is_variant_null({raw}))").alias(f"_present{i}"))
        extracted.append(F.expr(f"schema_of_variant({raw})").alias(f"_kind{i}"))
        typed = f"to_json({raw})" if f.json_type in ("object", "array") else f"try_variant_get({raw}, '$', '{f.spark_type}')"
        extracted.append(F.expr(typed).alias(f"_x{i}"))
    stage3 = stage2.select(*carry, F.expr("_v IS NULL").alias("_no_json"), *extracted)
    typed_x = [f"_x{i}" for i in range(n)]
    stage4 = stage3.select("*", F.expr(et_ts(typed_x[et_index])).alias("_x_ts"))
    rules = _rules_sql(contract, [f"_present{i}" for i in range(n)], [f"_kind{i}" for i in range(n)], typed_x, "_x_ts")
    code = "CASE " + " ".join(f"WHEN {c} THEN '{k}'" for c, k, _ in rules) + " END"
    if use_fast:
        code = f"CASE WHEN _fast THEN NULL ELSE {code} END"
    stage5 = stage4.select("*", F.expr(code).alias("_error_code"))
    reason = ("CASE WHEN _error_code IS NULL THEN NULL "
              + " ".join(f"WHEN {c} THEN {r}" for c, _, r in rules) + " END")
    if use_fast:
        pick = lambda i: F.expr(f"CASE WHEN _fast THEN _f{i} ELSE _x{i} END")  # noqa: E731
        ts = F.expr("CASE WHEN _fast THEN _f_ts ELSE _x_ts END")
    else:
        pick = lambda i: F.col(f"_x{i}")  # noqa: E731
        ts = F.col("_x_ts")
    return stage5.select(
        *keep,
        *[pick(i).alias(f"p__{f.name}") for i, f in enumerate(fields)],
        ts.alias("p__event_ts"), "_error_code", F.expr(reason).alias("_reason"),
        F.col("_error_code").isNull().alias("_accepted"),
        (F.col("_fast") if use_fast else F.lit(False)).alias("_fast_path"),
    )


def valid_rows(parsed: DataFrame, contract: Contract) -> DataFrame:
    """Valid parsed rows, shaped like silver before de-duplication, filter and enrichment."""
    et = contract.event_time.field
    cols: list[Column] = []
    for f in contract.fields:
        src = "p__event_ts" if f.name == et else f"p__{f.name}"
        cols.append(F.col(src).alias(f.name))
    return (
        parsed.where(F.col("_accepted"))
        .select(
            *cols,
            F.to_date(F.col("p__event_ts")).alias("event_date"),
            F.hour(F.col("p__event_ts")).alias("event_hour"),
            F.col("partition").alias("_kafka_partition"),
            F.col("offset").alias("_kafka_offset"),
            F.col("kafka_timestamp").alias("_kafka_timestamp"),
            F.col("ingest_time").alias("_ingest_time"),
        )
    )


DEDUP_TIME = "_dedup_time"


def dedup_columns(contract: Contract) -> list[str]:
    """Columns :func:`dedup_keyed` output is de-duplicated on (the contract's key, or coordinates)."""
    return ["_dedup_other", *[f"p__{k}" if k != contract.event_time.field else "p__event_ts" for k in contract.dedup_key]]


def dedup_keyed(parsed: DataFrame, contract: Contract) -> DataFrame:
    """Parsed rows (of the raw and the dead-letter topic) + the columns streaming de-duplication uses.

    Valid records of the raw topic are keyed by the contract's de-duplication key and timed by their
    event time (``_dedup_time``).  Every other row (rejected record, producer dead letter) is keyed
    by its Kafka coordinates (``_dedup_other``) with a null time: unique, so never dropped as a
    duplicate; null, so never dropped as late and never moving the watermark.

    Only what the batch writer needs travels on: the raw bytes of valid records (silver keeps their
    typed values, bronze their bytes) and message keys are dropped, which halves what the
    de-duplication shuffle and the micro-batch cache carry.
    """
    valid = F.col("_accepted") & (F.col("topic") == F.lit(contract.raw_topic))
    coords = F.concat_ws(":", F.col("topic"), F.col("partition").cast("string"), F.col("offset").cast("string"))
    slim = [F.lit(None).cast("binary").alias("key") if c == "key"
            else F.when(~valid, F.col("value")).alias("value") if c == "value" else F.col(c) for c in parsed.columns]
    return parsed.select(
        *slim,
        F.when(valid, F.lit(None).cast("string")).otherwise(coords).alias("_dedup_other"),
        F.when(valid, F.col("p__event_ts")).alias(DEDUP_TIME),
    )


def invalid_rows(parsed: DataFrame, source: str = "stream") -> DataFrame:
    """Rows that broke the contract, shaped like the dead-letter table."""
    return parsed.where(F.col("_error_code").isNotNull()).select(
        F.col("value").alias("raw_value"),
        F.col("_error_code").alias("error_code"),
        F.col("_reason").alias("reason"),
        F.lit(source).alias("source"),
        "topic", "partition", "offset", "kafka_timestamp", "ingest_time", "ingest_date",
    )


def producer_dead_letters(bronze_like: DataFrame) -> DataFrame:
    """Dead-letter topic records (JSON envelopes written by the producer) -> dead-letter rows."""
    env = F.expr("try_parse_json(CAST(value AS STRING))")
    get = lambda key: F.expr(f"try_variant_get(try_parse_json(CAST(value AS STRING)), '$.{key}', 'string')")  # noqa: E731
    return bronze_like.select(
        F.when(env.isNull(), F.col("value")).otherwise(F.encode(get("raw"), "UTF-8")).alias("raw_value"),
        F.coalesce(get("error_code"), F.lit("UNREADABLE_DEAD_LETTER")).alias("error_code"),
        F.coalesce(get("reason"), F.lit("dead-letter envelope could not be read")).alias("reason"),
        F.coalesce(get("source"), F.lit("producer")).alias("source"),
        "topic", "partition", "offset", "kafka_timestamp", "ingest_time", "ingest_date",
    ).select(*[c for c, _ in DEAD_LETTER_COLUMNS])


def apply_filter(df: DataFrame, contract: Contract) -> DataFrame:
    return df.where(F.expr(contract.filter)) if contract.filter else df


def reference_table(reference: DataFrame, contract: Contract) -> DataFrame:
    """The contract's reference data as the join needs it: key ``__ref_key``, the wanted columns
    (prefixed), one row per key."""
    ref = contract.reference
    assert ref is not None, "contract has no reference block"
    ref_key = ref.reference_key or ref.key
    wanted = ref.columns or [c for c in reference.columns if c != ref_key]
    return reference.select(
        F.col(ref_key).alias("__ref_key"), *[F.col(c).alias(ref.prefix + c) for c in wanted]
    ).dropDuplicates(["__ref_key"])


def join_reference(df: DataFrame, contract: Contract, table: DataFrame | None) -> DataFrame:
    """Stream-static left join with a :func:`reference_table` (rows never dropped)."""
    if contract.reference is None or table is None:
        return df
    return df.join(F.broadcast(table), df[contract.reference.key] == table["__ref_key"], "left").drop("__ref_key")


def enrich(df: DataFrame, contract: Contract, reference: DataFrame | None) -> DataFrame:
    """Stream-static left join with the contract's reference data (rows never dropped)."""
    if contract.reference is None or reference is None:
        return df
    return join_reference(df, contract, reference_table(reference, contract))


def to_silver_shape(df: DataFrame, contract: Contract, batch_id: int) -> DataFrame:
    """Final silver column order (see :func:`streamsight.lake.silver_columns`)."""
    from streaming_jobs import jvm

    name = "streamsight_batch_id_" + "".join(ch if ch.isalnum() else "_" for ch in contract.name)
    with_batch = df.withColumn("_batch_id", jvm.constant(df.sparkSession, name, batch_id))
    return with_batch.select(*[F.col(c).cast(t).alias(c) for c, t in silver_columns(contract)])


def windowed_aggregate(silver: DataFrame, contract: Contract, aggregate_name: str) -> DataFrame:
    """Event-time windowed aggregate (needs a watermark on streaming input)."""
    agg = next(a for a in contract.aggregates if a.name == aggregate_name)
    et = contract.event_time.field
    window = F.window(et, agg.window, agg.slide) if agg.slide else F.window(et, agg.window)
    metrics = []
    for m in agg.metrics:
        col = F.col(m.column) if m.column else None
        expr = {
            "count": lambda: F.count(F.lit(1)),
            "sum": lambda: F.sum(col),
            "avg": lambda: F.avg(col),
            "min": lambda: F.min(col),
            "max": lambda: F.max(col),
            "count_distinct": lambda: F.approx_count_distinct(col),
        }[m.agg]()
        metrics.append(expr.alias(m.name))
    return (
        silver.groupBy(window.alias("window"), *agg.group_by)
        .agg(*metrics)
        .select(F.col("window.start").alias("window_start"), F.col("window.end").alias("window_end"),
                *agg.group_by, *[m.name for m in agg.metrics])
    )
