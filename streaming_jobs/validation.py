"""The stream's validator: every message value against its contract, in Spark SQL.

The project's second validator; it gives every record the verdict and the reason code the
producer's gives (:mod:`streamsight.validation`, whose docstring lists the rules in the order both
check them; ``tests/corpus.py`` holds the cases both are held to).

:func:`validate` adds to each row ``p__<field>`` (the field's value in its lake type), ``p__event_ts``,
``_error_code`` and ``_reason`` (null for a valid record) and ``_accepted``. How:

* The value is parsed once into a VARIANT (``try_parse_json``, duplicate keys: the last wins).
  Spark's JSON parsers stop at the end of the first value, so the text is parsed wrapped as
  ``[<text>,"<sentinel>"]``, with a sentinel random to this process: anything after the first
  value (garbage, a second object) breaks the array or its second element.
* Each field is looked up once (``variant_get``); its JSON type is ``schema_of_variant`` of it
  (a JSON null counts as absent); its typed value is ``try_variant_get``; numbers are compared
  as doubles.
* The rules become one ``CASE`` whose first true branch gives the code, in the order above.
"""

from __future__ import annotations

import re
import secrets

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streamsight.contracts import Contract, FieldSpec
from streamsight.validation import DATE_TIME, EPOCH_MILLIS_RANGE, FORMATS

SENTINEL = "streamsight-end-" + secrets.token_hex(12)
_INTEGERS = "('TINYINT', 'SMALLINT', 'INT', 'BIGINT')"
_INF = "double('infinity')"


def _integral(kind: str) -> str:
    """SQL: the variant type name ``kind`` is an integer type (a decimal without scale included)."""
    return f"({kind} IN {_INTEGERS} OR ({kind} LIKE 'DECIMAL(%' AND {kind} LIKE '%,0)'))"


def _numeric(kind: str) -> str:
    return f"({kind} IN {_INTEGERS} OR {kind} IN ('FLOAT', 'DOUBLE') OR {kind} LIKE 'DECIMAL(%')"


def _q(value: object) -> str:
    """A SQL literal."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(float(value)) if isinstance(value, float) else repr(value)


def java_regex(python_regex: str) -> str:
    """One of :data:`streamsight.validation.FORMATS` for Java's engine: no group names, whole string."""
    return "^(?:" + re.sub(r"\(\?P<\w+>", "(?:", python_regex) + r")\z"


def _path(name: str) -> str:
    """The variant path of one key of an object (Spark's paths have no escapes: the name is quoted with
    the quote it lacks; a contract refuses a declared field name holding both)."""
    return f"$['{name}']" if "'" not in name else f'$["{name}"]'



def _matches_type(f: FieldSpec, kind: str, number: str) -> str:
    """SQL: the present value (variant type name ``kind``) is of the field's JSON type, as JSON
    Schema (fastjsonschema) has it: an integer may be written with a zero fraction (12.0, 1e2)."""
    if f.json_type == "string":
        return f"{kind} = 'STRING'"
    if f.json_type == "boolean":
        return f"{kind} = 'BOOLEAN'"
    if f.json_type == "number":
        return _numeric(kind)
    if f.json_type == "integer":
        return (f"({_integral(kind)} OR ({kind} IN ('DOUBLE', 'FLOAT') AND {number} = floor({number}) "
                f"AND abs({number}) < {_INF}))")
    return f"{kind} LIKE '{'OBJECT' if f.json_type == 'object' else 'ARRAY'}%'"


def _enum_values(f: FieldSpec) -> list[object]:
    from streamsight.contracts import value_of_json_type

    return [v for v in (f.enum or ()) if value_of_json_type(f.json_type, v)]


def _field_rules(f: FieldSpec, i: int | str, columns: tuple[str, str, str] | None = None) -> list[tuple[str, str, str]]:
    """The schema rules of one field as (broken, code, reason SQL), in fastjsonschema's order: an
    object's own, then its required declared fields, then each declared field's (columns ``_k<i>_<j>``);
    an array's own, then its first element's that breaks one (columns ``_ec<i>``, ``_er<i>``).
    ``columns``: the SQL of the value's variant type name, typed value and double value (default: the
    field's columns)."""
    kind, typed, number = columns or (f"_k{i}", f"_x{i}", f"_n{i}")
    shown = (f"coalesce(cast({typed} AS STRING), cast({number} AS STRING), '?')" if f.json_type in ("number", "integer")
             else f"coalesce(cast({typed} AS STRING), '?')")
    name = f.name
    rules = [(f"{kind} IS NOT NULL AND NOT {_matches_type(f, kind, number)}", "TYPE_MISMATCH",
              f"concat({_q(f'field {name}: expected {f.json_type}, got ')}, lower({kind}))")]
    if f.enum is not None:
        allowed = _enum_values(f)
        options = ", ".join(_q(v) for v in allowed) or "NULL"
        listed = ", ".join(str(v) for v in f.enum)
        rules.append((f"{kind} IS NOT NULL AND NOT coalesce({typed} IN ({options}), false)", "NOT_IN_ENUM",
                      f"concat({_q(f'field {name}: ')}, {shown}, {_q(f' is not one of [{listed}]')})"))
    if f.json_type == "string":
        for length, op, word in ((f.min_length, "<", "shorter"), (f.max_length, ">", "longer")):
            if length is not None:
                rules.append((f"char_length({typed}) {op} {length}", "BAD_LENGTH",
                              _q(f"field {name}: {word} than {length} characters")))
        if f.pattern is not None:
            rules.append((f"NOT regexp_like({typed}, {_q(f.pattern)})", "PATTERN_MISMATCH",
                          _q(f"field {name}: does not match pattern {f.pattern}")))
        if f.format is not None:
            rules.append((f"NOT regexp_like({typed}, {_q(java_regex(FORMATS[f.format]))})", "BAD_FORMAT",
                          _q(f"field {name}: not a {f.format} (RFC 3339)")))
    if f.json_type in ("number", "integer"):
        for bound, op, label in ((f.minimum, "<", "minimum"), (f.maximum, ">", "maximum"),
                                 (f.exclusive_minimum, "<=", "exclusive minimum"),
                                 (f.exclusive_maximum, ">=", "exclusive maximum")):
            if bound is not None:
                rules.append((f"{number} {op} {_q(float(bound))}", "OUT_OF_RANGE",
                              f"concat({_q(f'field {name}: ')}, {shown}, {_q(f' is outside {label} {bound}')})"))
    required = [(j, g) for j, g in enumerate(f.inner) if g.required]
    if required:
        absent = ", ".join(f"CASE WHEN {kind}_{j} IS NULL THEN {_q(g.key)} END" for j, g in required)
        rules.append((f"{kind} IS NOT NULL AND ({' OR '.join(f'{kind}_{j} IS NULL' for j, _ in required)})",
                      "MISSING_FIELD", f"concat({_q(f'field {name}: missing required field(s): ')}, "
                                       f"concat_ws(', ', {absent}))"))
    for j, g in enumerate(f.inner):
        rules += _field_rules(g, f"{i}_{j}")
    if f.items is not None:
        codes = dict.fromkeys(code for _, code, _ in _element_rules(f.items))
        rules += [(f"_ec{i} = '{code}'", code, f"_er{i}") for code in codes]
    return rules


_ELEMENT = "_el"  # the lambda variable of an array's element


def _element_rules(items: FieldSpec) -> list[tuple[str, str, str]]:
    """An array element's rules, on the lambda variable :data:`_ELEMENT` (a variant)."""
    return _field_rules(items, "", (f"schema_of_variant({_ELEMENT})", f"try_variant_get({_ELEMENT}, '$', '{items.spark_type}')",
                                    f"try_variant_get({_ELEMENT}, '$', 'double')"))


def _element_columns(f: FieldSpec, i: int, raw: str) -> list[Column]:
    """An array's first element that breaks its ``items`` schema: that rule's code and reason."""
    assert f.items is not None
    rules = _element_rules(f.items)
    elements = f"try_variant_get({raw}, '$', 'array<variant>')"
    codes = f"transform({elements}, {_ELEMENT} -> CASE {' '.join(f'WHEN {c} THEN {_q(k)}' for c, k, _ in rules)} END)"
    reasons = f"transform({elements}, {_ELEMENT} -> CASE {' '.join(f'WHEN {c} THEN {r}' for c, _, r in rules)} END)"
    first = f"array_position(transform({codes}, _c -> _c IS NOT NULL), true)"
    return [F.expr(f"CASE WHEN {first} > 0 THEN element_at({codes}, cast({first} AS INT)) END").alias(f"_ec{i}"),
            F.expr(f"CASE WHEN {first} > 0 THEN concat(element_at({reasons}, cast({first} AS INT)), ' (element ', "
                   f"cast({first} - 1 AS STRING), ')') END").alias(f"_er{i}")]


def _inner_columns(f: FieldSpec, i: int, raw: str) -> list[Column]:
    """An object's declared fields: each one's variant type name (``VOID`` for a JSON null, which JSON
    Schema checks as a value), its typed value and, for numbers, its value as a double."""
    out: list[Column] = []
    for j, g in enumerate(f.inner):
        value = f"variant_get({raw}, {_q(_path(g.key))})"
        out.append(F.expr(f"CASE WHEN {value} IS NOT NULL THEN schema_of_variant({value}) END").alias(f"_k{i}_{j}"))
        out.append(F.expr(f"try_variant_get({value}, '$', '{g.spark_type}')").alias(f"_x{i}_{j}"))
        if g.json_type in ("number", "integer"):
            out.append(F.expr(f"try_variant_get({value}, '$', 'double')").alias(f"_n{i}_{j}"))
    return out


def _type_rules(f: FieldSpec, i: int) -> list[tuple[str, str, str]]:
    """What the lake's column types add (after every schema rule of every field)."""
    if f.json_type == "integer":
        return [(f"_k{i} IS NOT NULL AND _x{i} IS NULL", "TYPE_MISMATCH",
                 _q(f"field {f.name}: does not fit a 64-bit integer"))]
    if f.json_type == "number":
        return [(f"abs(_n{i}) = {_INF}", "TYPE_MISMATCH", _q(f"field {f.name}: not a finite number"))]
    return []


def _event_time(contract: Contract, i: int) -> tuple[str, str]:
    """(SQL of the event time as a timestamp, SQL of 'it is not a time')."""
    fmt, typed, number = contract.event_time.format, f"_x{i}", f"_n{i}"
    if fmt == "iso8601":
        ts = f"CASE WHEN regexp_like({typed}, {_q(java_regex(DATE_TIME))}) THEN try_to_timestamp({typed}) END"
        return ts, f"{typed} IS NOT NULL AND _ts IS NULL"
    lo, hi = EPOCH_MILLIS_RANGE
    scale = 1 if fmt == "epoch_millis" else 1000
    millis = f"({number} * {scale})"
    ts = f"CASE WHEN {millis} BETWEEN {lo} AND {hi} THEN timestamp_millis(cast({millis} AS BIGINT)) END"
    return ts, f"{number} IS NOT NULL AND _ts IS NULL"


def validate(bronze: DataFrame, contract: Contract) -> DataFrame:
    """``bronze`` + ``p__<field>``, ``p__event_ts``, ``_error_code``, ``_reason``, ``_accepted``.

    ``bronze`` needs a binary ``value`` column; every other column is kept. Typed columns are null
    for rejected records.
    """
    keep = [F.col(c) for c in bronze.columns]
    fields = list(contract.fields)
    et = [f.name for f in fields].index(contract.event_time.field)
    text = "CAST(value AS STRING)"
    s1 = bronze.select(*keep, F.octet_length("value").alias("_len"), F.expr(f"is_valid_utf8({text})").alias("_utf8"))
    wrapped = f"try_parse_json(concat('[', {text}, ',\"{SENTINEL}\"]'))"
    s2 = s1.select(*keep, "_len", "_utf8", F.expr(
        f"CASE WHEN value IS NOT NULL AND _len <= {contract.max_record_bytes} AND _utf8 THEN {wrapped} END").alias("_v"))
    raw_struct = "struct<" + ", ".join(f"`{f.name}`: variant" for f in fields) + ">"
    scalars = [f for f in fields if f.json_type not in ("object", "array")]
    typed_schema = ", ".join(f"`{f.name}` {f.spark_type}" for f in scalars) or "`_none` string"
    s3 = s2.select(
        *keep, "_len", "_utf8",
        F.expr(f"coalesce(try_variant_get(_v, '$[1]', 'string') = '{SENTINEL}', false) "
               "AND variant_get(_v, '$[2]') IS NULL").alias("_one"),
        F.expr(f"regexp_like({text}, '^[ \\\\t\\\\n\\\\r]*[{{]')").alias("_obj"),
        # each field's value as a variant (for its JSON type), and in its lake type as Spark's JSON
        # reader gives it (a value it does not convert, such as 12.0 for a bigint, from the variant)
        F.expr(f"try_variant_get(_v, '$[0]', '{raw_struct}')").alias("_o"),
        F.from_json(F.expr(text), typed_schema).alias("_t"))
    extracted: list[Column] = []
    for i, f in enumerate(fields):
        raw = f"_o.`{f.name}`"
        kind = (f"CASE WHEN {raw} IS NOT NULL AND NOT is_variant_null({raw}) THEN schema_of_variant({raw}) END")
        extracted.append(F.expr(kind).alias(f"_k{i}"))
        if f.json_type in ("object", "array"):
            extracted.append(F.expr(f"to_json({raw})").alias(f"_x{i}"))
            extracted += _inner_columns(f, i, raw)
            if f.items is not None:
                extracted += _element_columns(f, i, raw)
        else:
            extracted.append(F.expr(f"coalesce(_t.`{f.name}`, try_variant_get({raw}, '$', '{f.spark_type}'))")
                             .alias(f"_x{i}"))
        if f.json_type == "integer":  # a double as well: is an integer written 12.0 or 12.5?
            extracted.append(F.expr(f"try_variant_get({raw}, '$', 'double')").alias(f"_n{i}"))
    s3b = s3.select(*keep, "_len", "_utf8", "_one", "_obj", *extracted)
    numbers = [F.col(f"_x{i}").alias(f"_n{i}") for i, f in enumerate(fields) if f.json_type == "number"]
    s3 = s3b.select("*", *numbers)
    s4 = s3
    ts_sql, bad_ts = _event_time(contract, et)
    s5 = s4.select("*", F.expr(ts_sql).alias("_ts"))

    required = [f"_k{i} IS NULL" for i, f in enumerate(fields) if f.required]
    missing = [f"CASE WHEN _k{i} IS NULL THEN {_q(f.name)} END" for i, f in enumerate(fields) if f.required]
    rules: list[tuple[str, str, str]] = [
        ("value IS NULL", "MALFORMED_JSON", "'empty message value'"),
        (f"_len > {contract.max_record_bytes}", "RECORD_TOO_LARGE",
         f"concat(cast(_len AS STRING), ' bytes, more than the contract''s max_record_bytes {contract.max_record_bytes}')"),
        ("NOT _utf8", "NOT_UTF8", "'not UTF-8'"),
        ("NOT _one", "MALFORMED_JSON", f"concat('not valid JSON: ', left({text}, 120))"),
        ("NOT _obj", "NOT_AN_OBJECT", "'the JSON value is not an object'"),
    ]
    if required:
        rules.append((" OR ".join(required), "MISSING_FIELD",
                      f"concat('missing required field(s): ', concat_ws(', ', {', '.join(missing)}))"))
    for i, f in enumerate(fields):
        rules += _field_rules(f, i)
    for i, f in enumerate(fields):
        rules += _type_rules(f, i)
    shown_ts = f"_x{et}" if contract.event_time.format == "iso8601" else f"cast(_n{et} AS STRING)"
    rules.append((bad_ts, "BAD_EVENT_TIME",
                  f"concat({_q(f'field {contract.event_time.field}: cannot read ')}, {shown_ts}, "
                  f"{_q(f' as {contract.event_time.format}')})"))
    code = "CASE " + " ".join(f"WHEN {c} THEN '{k}'" for c, k, _ in rules) + " END"
    s6 = s5.select("*", F.expr(code).alias("_error_code"))
    reason = "CASE WHEN _error_code IS NULL THEN NULL " + " ".join(f"WHEN {c} THEN {r}" for c, _, r in rules) + " END"
    ok = F.col("_error_code").isNull()
    typed = [F.when(ok, F.col(f"_n{i}" if f.json_type == "number" else f"_x{i}")).alias(f"p__{f.name}")
             for i, f in enumerate(fields)]
    return s6.select(*keep, *typed, F.when(ok, F.col("_ts")).alias("p__event_ts"), "_error_code",
                     F.expr(reason).alias("_reason"), ok.alias("_accepted"))
