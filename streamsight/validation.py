"""The producer's validator: a record, as bytes or as a parsed object, against its contract.

One of the project's two validators; the other is the stream's (``streaming_jobs/validation.py``).
Both give every record the same verdict and the same reason code, the first rule it breaks, in
this order (``tests/corpus.py`` holds the shared cases, ``tests/unit/test_validation.py`` checks
both on them):

1. the bytes: more than the contract's ``max_record_bytes`` (``RECORD_TOO_LARGE``); not UTF-8
   (``NOT_UTF8``); not exactly one JSON value (``MALFORMED_JSON``: a syntax error, anything after
   the value, ``NaN``/``Infinity``, a string escape that is a lone UTF-16 surrogate, nesting of
   :data:`MAX_DEPTH` levels or more); not an object (``NOT_AN_OBJECT``);
2. the contract's JSON Schema, checked by fastjsonschema (a field whose value is ``null`` counts
   as absent): required fields (``MISSING_FIELD``), then each property in schema order: type
   (``TYPE_MISMATCH``), ``enum`` (``NOT_IN_ENUM``), lengths (``BAD_LENGTH``), ``pattern``
   (``PATTERN_MISMATCH``), ``format`` (``BAD_FORMAT``), bounds (``OUT_OF_RANGE``);
3. what the lake's column types add, each property in schema order: an integer must fit a
   64-bit ``bigint``, a number must be finite (``TYPE_MISMATCH``; the stream reads every number as
   a double, so an integer literal beyond a double's range counts as infinite, in step 2 too);
4. the event time must be a time (``BAD_EVENT_TIME``): a real date for ``iso8601``, years 1 to
   9999 for the epoch formats.

Duplicate keys in an object: the last one wins, as in Spark (``spark.sql.variant.allowDuplicateKeys``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from streamsight.contracts import Contract

# RFC 3339 date-time as both validators accept it: upper-case T and Z, at most 9 fraction digits,
# years 0001-9999, offsets Spark's timestamps can hold (up to +-18:00). The day is checked apart
# (a real date): see _event_time.
DATE_TIME = (r"(?P<y>000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(?P<m>0[1-9]|1[0-2])-"
             r"(?P<d>0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
             r"(?:Z|[+-](?:0[0-9]|1[0-7]):[0-5][0-9]|[+-]18:00)")
DATE = r"(?P<y>000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(?P<m>0[1-9]|1[0-2])-(?P<d>0[1-9]|[12][0-9]|3[01])"
# The string formats a contract may use: both validators check them with these expressions.
FORMATS = {"date-time": DATE_TIME, "date": DATE}
# Spark's JSON parser (Jackson) refuses documents nested more than 1,000 levels deep; the stream
# wraps a record in one array first, so a record nested MAX_DEPTH levels or more is refused.
MAX_DEPTH = 1000
INT64 = (-(2**63), 2**63 - 1)
# epoch milliseconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z
EPOCH_MILLIS_RANGE = (-62_135_596_800_000, 253_402_300_799_999)

_DATE_TIME_RE = re.compile(DATE_TIME)

RULE_CODES = {
    "required": "MISSING_FIELD", "type": "TYPE_MISMATCH", "enum": "NOT_IN_ENUM",
    "minimum": "OUT_OF_RANGE", "maximum": "OUT_OF_RANGE", "exclusiveMinimum": "OUT_OF_RANGE",
    "exclusiveMaximum": "OUT_OF_RANGE", "minLength": "BAD_LENGTH", "maxLength": "BAD_LENGTH",
    "pattern": "PATTERN_MISMATCH", "format": "BAD_FORMAT",
}


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record is not valid: a stable ``code`` (``REASON_CODES``) and a readable ``reason``."""

    code: str
    reason: str


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(parse_constant=_no_constant).decode


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``{}`` is 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


# orjson gives the standard library's value except for integers beyond 64 bits (it makes them
# floats: bytes holding 19 digits in a row take the strict path) and depth (its own limit is 1,024:
# a value is measured when the bytes hold MAX_DEPTH opening brackets). Both are found in one pass:
# digits become 9, opening brackets [, the rest spaces.
_SHAPE = bytes(0x39 if 0x30 <= b <= 0x39 else 0x5B if b in b"[{" else 0x20 for b in range(256))
_LONG_DIGITS = b"9" * 19


def parse_json_bytes(raw: bytes) -> Any:
    """:func:`parse_json` of UTF-8 bytes, by orjson where that gives the same value; raises
    ``UnicodeDecodeError`` (not UTF-8) or ``ValueError`` (``MALFORMED_JSON``) as the strict path."""
    shape = raw.translate(_SHAPE)
    if _LONG_DIGITS not in shape:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the strict path says what is wrong
        else:
            if shape.count(b"[") < MAX_DEPTH or _depth(value) < MAX_DEPTH:
                return value
    return parse_json(raw.decode("utf-8"))


def parse_json(text: str) -> Any:
    """Exactly one JSON value, strictly: raises ``ValueError`` (``MALFORMED_JSON``) otherwise."""
    import sys

    try:
        value = _decode(text)
    except RecursionError:  # Python's own limit is lower than MAX_DEPTH: decide by the real depth
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, MAX_DEPTH + 200))
        try:
            value = _decode(text)
        except RecursionError:
            raise ValueError(f"nested {MAX_DEPTH} levels or more") from None
        finally:
            sys.setrecursionlimit(limit)
        if _depth(value) >= MAX_DEPTH:
            raise ValueError(f"nested {MAX_DEPTH} levels or more") from None
    if "\\u" in text:  # an escaped lone surrogate decodes to a str that is not Unicode text
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string escape is a lone UTF-16 surrogate") from None
    return value


class RecordValidator:
    """Checks records against ``contract``; :meth:`check_bytes` and :meth:`check_record` return
    ``None`` for a valid record and a :class:`Rejection` otherwise."""

    def __init__(self, contract: Contract) -> None:
        import fastjsonschema

        self.contract = contract
        self.max_bytes = contract.max_record_bytes
        schema = {**contract.payload_schema, "$schema": "http://json-schema.org/draft-07/schema#"}
        self._schema: Callable[[Any], Any] = fastjsonschema.compile(
            schema, formats={name: f"(?:{expr})\\Z" for name, expr in FORMATS.items()})  # fastjsonschema uses re.match
        self._schema_error = fastjsonschema.JsonSchemaValueException
        self._integers = {f.name for f in contract.fields if f.json_type == "integer"}
        self._numbers = [f.name for f in contract.fields if f.json_type in ("integer", "number")]
        self._event_time = _event_time_check(contract)
        self._formats = {name: f"(?:{expr})\\Z" for name, expr in FORMATS.items()}
        self._properties: dict[str, Callable[[Any], Any]] = {}

    def _value_ok(self, name: str, value: Any) -> bool:
        """Whether a record holding ``value`` in field ``name`` passes every rule of that field: its
        schema (fastjsonschema, the property on its own), the lake's types and, for the event-time
        field, the event time. Valid for any record because every rule a contract may declare is
        about one field."""
        import fastjsonschema

        check = self._properties.get(name)
        if check is None:
            spec = self.contract.payload_schema["properties"][name]
            check = fastjsonschema.compile({"$schema": "http://json-schema.org/draft-07/schema#", **spec},
                                           formats=self._formats)
            self._properties[name] = check
        try:
            check(value)
        except self._schema_error:
            return False
        if name in self._integers and type(value) is int and not INT64[0] <= value <= INT64[1]:
            return False
        if type(value) is float and not math.isfinite(value):
            return False
        return not (name == self.contract.event_time.field and self._event_time({name: value}) is not None)

    def accepted_rows(self, table: Any) -> Any:
        """Which rows of an Arrow table (no nulls, scalar columns: ``ingestion.columnar.plain_table``)
        are valid, as a numpy bool array. Each column is decided with the rules of its field
        (:meth:`_value_ok`), by its extremes where those rules are an interval (a number's bounds
        in a numeric column, a string's lengths), else one distinct value at a time. Gives the
        verdict of :meth:`check_record`, not the code: a rejected row's first broken rule is for
        :meth:`check_record` to say."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = table.num_rows
        ok = np.ones(n, dtype=bool)
        present = set(table.column_names)
        if any(name not in present for name in self.contract.payload_schema.get("required", [])):
            return np.zeros(n, dtype=bool)
        for name in table.column_names:
            spec = self.contract.payload_schema["properties"].get(name)
            if spec is None or n == 0:
                continue  # other fields are allowed, whatever they hold
            col = table.column(name)
            extremes = self._extremes(name, spec, col)
            if extremes is not None and all(self._value_ok(name, v) for v in extremes):
                continue
            good = [v for v in pc.unique(col).to_pylist() if self._value_ok(name, v)]
            ok &= pc.is_in(col, value_set=pa.array(good, type=col.type)).to_numpy(zero_copy_only=False)
        return ok

    def _extremes(self, name: str, spec: dict[str, Any], col: Any) -> list[Any] | None:
        """The values that decide a whole column when its field's rules are an interval: the
        smallest and largest number, or the shortest and longest string; else None."""
        import pyarrow as pa
        import pyarrow.compute as pc

        rules = set(spec) - {"type", "description", "title", "examples"}
        kind = spec.get("type")
        bounded = rules <= {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
        numeric = pa.types.is_integer(col.type) or (kind == "number" and pa.types.is_floating(col.type))
        if kind in ("number", "integer") and bounded and numeric:
            bounds = pc.min_max(col)
            return [bounds["min"].as_py(), bounds["max"].as_py()]
        if kind == "string" and rules <= {"minLength", "maxLength"} and pa.types.is_string(col.type):
            lengths = pc.utf8_length(col)
            return [col.take(pa.array([pc.index(lengths, pc.min(lengths)).as_py(),
                                       pc.index(lengths, pc.max(lengths)).as_py()])).to_pylist()[i] for i in (0, 1)]
        return None

    def check_bytes(self, raw: bytes) -> tuple[Any, Rejection | None]:
        """``(record, None)`` for a valid record's bytes, else ``(parsed value or None, rejection)``."""
        if len(raw) > self.max_bytes:
            return None, Rejection("RECORD_TOO_LARGE", f"{len(raw)} bytes, more than the contract's "
                                                       f"max_record_bytes {self.max_bytes}")
        try:
            value = parse_json_bytes(raw)
        except UnicodeDecodeError as exc:
            return None, Rejection("NOT_UTF8", f"not UTF-8: {exc.reason} at byte {exc.start}")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return None, Rejection("MALFORMED_JSON", f"not valid JSON: {exc}")
        if not isinstance(value, dict):
            return value, Rejection("NOT_AN_OBJECT", f"the JSON value is {_json_type(value)}, not an object")
        return value, self.check_record(value)

    def check_record(self, record: Mapping[str, Any]) -> Rejection | None:
        """Steps 2-4 of the module's list for a parsed object."""
        if None in record.values():
            record = {k: v for k, v in record.items() if v is not None}
        numbers = [(name, record[name]) for name in self._numbers if name in record]
        huge = [(n, v) for n, v in numbers if type(v) is int and v.bit_length() > 1000 and _overflows(v)]
        if huge:  # the stream reads numbers as doubles: one beyond them is infinite
            record = {**record, **{n: math.inf if v > 0 else -math.inf for n, v in huge}}
            numbers = [(name, record[name]) for name in self._numbers if name in record]
        try:
            self._schema(record)
        except self._schema_error as exc:
            return Rejection(RULE_CODES.get(exc.rule or "", "SCHEMA_VIOLATION"), exc.message)
        for name, value in numbers:
            kind = type(value)
            if kind is float:
                if not math.isfinite(value):
                    return Rejection("TYPE_MISMATCH", f"field {name}: not a finite number")
                if name in self._integers and not INT64[0] <= value <= INT64[1]:
                    return Rejection("TYPE_MISMATCH", f"field {name}: {value} does not fit a 64-bit integer")
            elif kind is int and name in self._integers and not INT64[0] <= value <= INT64[1]:
                return Rejection("TYPE_MISMATCH", f"field {name}: {value} does not fit a 64-bit integer")
        return self._event_time(record)


def _overflows(value: int) -> bool:
    """Whether an integer is beyond a double's range (the stream reads numbers as doubles)."""
    try:
        float(value)
    except OverflowError:
        return True
    return False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else type(value).__name__


def _event_time_check(contract: Contract) -> Callable[[Mapping[str, Any]], Rejection | None]:
    field, fmt = contract.event_time.field, contract.event_time.format

    def bad(value: Any) -> Rejection:
        return Rejection("BAD_EVENT_TIME", f"field {field}: cannot read {value!r} as {fmt}")

    seen: dict[str, bool] = {}  # recent iso8601 strings and whether they are times (records share them)

    def check(record: Mapping[str, Any]) -> Rejection | None:
        value = record.get(field)
        if value is None:
            return None  # absent: required or not, the schema decided
        if fmt == "iso8601" and type(value) is str and value in seen:
            return None if seen[value] else bad(value)
        if fmt == "iso8601":
            verdict = iso8601(value)
            if type(value) is str:
                if len(seen) >= 4096:
                    seen.clear()
                seen[value] = verdict is None
            return verdict
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return bad(value)
        millis = value if fmt == "epoch_millis" else value * 1000
        return None if EPOCH_MILLIS_RANGE[0] <= millis <= EPOCH_MILLIS_RANGE[1] else bad(value)

    def iso8601(value: Any) -> Rejection | None:
        m = _DATE_TIME_RE.fullmatch(value) if isinstance(value, str) else None
        if m is None:
            return bad(value)
        try:
            datetime(int(m["y"]), int(m["m"]), int(m["d"]), tzinfo=UTC)
        except ValueError:
            return bad(value)
        return None

    return check
