"""Columnar producer path: events as Arrow tables, checked and serialised a batch at a time.

A source that can generate or read many records at once yields :class:`EventBatch` objects instead
of one :class:`~ingestion.sources.Event` per record.  The producer then

1. checks the whole table against the contract with :class:`BatchValidator` (vectorised Arrow
   compute, one pass per rule);
2. serialises the accepted rows to JSON with :func:`json_values` (one Arrow string join per batch);
3. hands them to the Kafka client in one call (``produce_batch``).

The columnar check is a fast filter, not a second validator: a row it accepts is one the exact
validator (:meth:`streamsight.contracts.Contract.validator`, fastjsonschema) also accepts, and every
row it does not accept goes through the exact validator, which decides and gives the reason code.
``tests/unit/test_columnar.py`` checks both claims on tricky values.  Rows with a null (a field the
record does not have) and strings that JSON must escape beyond quote and backslash always take the
exact path, so the columnar serialiser only ever sees the easy cases.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamsight.contracts import Contract, FieldSpec, value_of_json_type

__all__ = ["BatchValidator", "EventBatch", "json_values", "key_values", "rows_as_dicts"]


@dataclass
class EventBatch:
    """Many events at once: records as an Arrow table plus the events that are not plain records.

    ``table`` holds one column per payload field the records carry (names as in the contract; a null
    means the record lacks that field); ``faults`` says, per row, which injected fault the row is
    (null for none).  ``extra`` holds events that cannot be table rows (bytes that are not JSON,
    records that break the contract's types).
    """

    table: pa.Table
    faults: pa.Array | None = None
    extra: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return self.table.num_rows + len(self.extra)

    def head(self, n: int) -> EventBatch:
        """The first ``n`` events: table rows and extra events in proportion, so a batch cut short
        keeps its share of each kind of fault."""
        if n >= len(self):
            return self
        extra = min(len(self.extra), round(n * len(self.extra) / len(self)))
        rows = n - extra
        faults = self.faults.slice(0, rows) if self.faults is not None else None
        return EventBatch(self.table.slice(0, rows), faults, self.extra[:extra])

    def split(self, size: int) -> list[EventBatch]:
        """The batch in pieces of about ``size`` events, each with its share of extra events."""
        if len(self) <= size:
            return [self]
        pieces, rest = [], self
        while len(rest) > size:
            head = rest.head(size)
            rows, extra = head.table.num_rows, len(head.extra)
            faults = rest.faults.slice(rows) if rest.faults is not None else None
            pieces.append(head)
            rest = EventBatch(rest.table.slice(rows), faults, rest.extra[extra:])
        return [*pieces, rest]

    def fault_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        if self.faults is not None and self.faults.null_count < len(self.faults):
            for item in pc.value_counts(self.faults.drop_null()).to_pylist():
                counts[item["values"]] = item["counts"]
        for event in self.extra:
            if event.fault:
                counts[event.fault] = counts.get(event.fault, 0) + 1
        return counts


def rows_as_dicts(table: pa.Table) -> list[dict[str, Any]]:
    """Table rows as records (a null field is absent from its record, as in the JSON)."""
    return [{k: v for k, v in row.items() if v is not None} for row in table.to_pylist()]


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _string_checker(contract: Contract, f: FieldSpec) -> Callable[[Any], None] | None:
    """fastjsonschema's own check of a string field's ``format`` and ``pattern`` (exact semantics)."""
    import fastjsonschema

    declared = contract.payload_schema["properties"][f.name]
    spec: dict[str, Any] = {"type": "string", **{k: declared[k] for k in ("format", "pattern") if k in declared}}
    if len(spec) == 1:
        return None
    return fastjsonschema.compile({"$schema": "http://json-schema.org/draft-07/schema#", **spec})


class BatchValidator:
    """Vectorised pre-check of a contract's records: :meth:`accepted` marks the rows that are valid.

    A row is accepted only if every field the contract declares is present and non-null when
    required, has the Arrow type that means its JSON type (string; integer or floating point for
    ``number``, finite; integer for ``integer``; boolean), and satisfies enum, bounds and lengths;
    ``format`` and ``pattern`` are checked by fastjsonschema itself, value by value.  Object and
    array fields, nulls, and strings with control characters are never accepted here.
    """

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.fields = contract.fields
        self._strings = {f.name: _string_checker(contract, f) for f in self.fields if f.json_type == "string"}

    def accepted(self, table: pa.Table) -> np.ndarray:
        n = table.num_rows
        ok = np.ones(n, dtype=bool)
        declared = {f.name for f in self.fields}
        for name in table.column_names:
            if name not in declared:  # extra properties are allowed, but only as plain strings/numbers
                col = table.column(name)
                if not (pa.types.is_string(col.type) or _is_number(col.type) or pa.types.is_boolean(col.type)):
                    return np.zeros(n, dtype=bool)
                ok &= ~_nulls(col)
        for f in self.fields:
            if f.name not in table.column_names:
                if f.required:
                    return np.zeros(n, dtype=bool)
                continue
            col = table.column(f.name)
            ok &= ~_nulls(col)  # a missing field: the exact path decides (required or not)
            check = self._field(f, col)
            if check is None:
                return np.zeros(n, dtype=bool)
            ok &= check
        return ok

    def _field(self, f: FieldSpec, col: pa.ChunkedArray) -> np.ndarray | None:
        """Rows of ``col`` (non-null ones) that pass every rule of ``f``; None: type never accepted."""
        t = col.type
        conds: list[Any] = []
        if f.json_type == "string":
            if not pa.types.is_string(t):
                return None
            conds.append(pc.invert(pc.match_substring_regex(col, "[\\x00-\\x1f]")))
            if f.min_length is not None or f.max_length is not None:
                length = pc.utf8_length(col)
                if f.min_length is not None:
                    conds.append(pc.greater_equal(length, f.min_length))
                if f.max_length is not None:
                    conds.append(pc.less_equal(length, f.max_length))
        elif f.json_type == "number":
            if not _is_number(t):
                return None
            if pa.types.is_floating(t):
                conds.append(pc.is_finite(col))
        elif f.json_type == "integer":
            if not pa.types.is_integer(t):
                return None
        elif f.json_type == "boolean":
            if not pa.types.is_boolean(t):
                return None
        else:  # object / array: records with such values take the exact path
            return None
        if f.json_type in ("number", "integer"):
            for bound, op in ((f.minimum, pc.greater_equal), (f.exclusive_minimum, pc.greater),
                              (f.maximum, pc.less_equal), (f.exclusive_maximum, pc.less)):
                if bound is not None:
                    conds.append(op(col, bound))
        if f.enum is not None:
            allowed = [v for v in f.enum if value_of_json_type(f.json_type, v)]
            if not allowed:
                return np.zeros(len(col), dtype=bool)
            try:
                conds.append(pc.is_in(col, value_set=pa.array(allowed).cast(t)))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                return None
        out = np.ones(len(col), dtype=bool)
        for cond in conds:
            out &= _true(cond)
        checker = self._strings.get(f.name)
        if checker is not None:  # each distinct value once (an event time is shared by many records)
            distinct = pc.unique(col).drop_null()
            good = [v for v in distinct.to_pylist() if _passes(checker, v)]
            out &= _true(pc.is_in(col, value_set=pa.array(good, t)))
        return out


def _passes(checker: Callable[[Any], None], value: Any) -> bool:
    try:
        checker(value)
        return True
    except Exception:  # noqa: BLE001 - fastjsonschema's exception: not accepted here, the exact path decides
        return False


def _nulls(col: pa.ChunkedArray) -> np.ndarray:
    if col.null_count == 0:
        return np.zeros(len(col), dtype=bool)
    return pc.is_null(col).to_numpy(zero_copy_only=False)


def _true(cond: Any) -> np.ndarray:
    """A boolean Arrow result as numpy, null counting as false."""
    return pc.fill_null(cond, False).to_numpy(zero_copy_only=False)


def _json_piece(col: pa.ChunkedArray) -> pa.ChunkedArray:
    t = col.type
    if pa.types.is_string(t):
        escaped = pc.replace_substring(pc.replace_substring(col, "\\", "\\\\"), '"', '\\"')
        return pc.binary_join_element_wise('"', escaped, '"', "")
    if pa.types.is_boolean(t):
        return pc.if_else(col, "true", "false")
    return col.cast(pa.string())  # integers; floats in shortest round-trip form (1e-07 as 1e-7)


def json_values(table: pa.Table) -> list[bytes]:
    """Each row as a compact JSON object, UTF-8 (fields in column order).

    Only for rows :class:`BatchValidator` accepted: no nulls, strings without control characters,
    finite numbers.  Floats are written in shortest round-trip form (Arrow's), so ``1171.0`` is
    written ``1171``: the same JSON number.
    """
    if table.num_rows == 0:
        return []
    parts: list[Any] = []
    for i, name in enumerate(table.column_names):
        parts.append(("{" if i == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":")
        parts.append(_json_piece(table.column(name)))
    parts.append("}")
    joined = pc.binary_join_element_wise(*parts, "")
    return joined.cast(pa.binary()).to_pylist()


def key_values(table: pa.Table, key: str) -> list[bytes | None]:
    """The Kafka message keys: the key field as text, as the row path's ``str(value)`` writes it."""
    if key not in table.column_names:
        return [None] * table.num_rows
    col = table.column(key)
    if pa.types.is_string(col.type) or pa.types.is_integer(col.type):
        return col.cast(pa.string()).cast(pa.binary()).to_pylist()
    return [None if v is None else str(v).encode() for v in col.to_pylist()]
