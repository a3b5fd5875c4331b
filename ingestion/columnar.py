"""Columnar producer path: many records at once as an Arrow table, written to JSON in one pass.

A source that can generate or read many records at once yields :class:`EventBatch` objects instead
of one :class:`~ingestion.sources.Event` per record. The producer checks each row with the
contract's validator and, when every row is valid and the table is :func:`plain_table`, writes
them all with :func:`json_values` (one Arrow string join) and hands them to the Kafka client in
one call (``produce_batch``); otherwise it sends the rows one by one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["EventBatch", "json_values", "key_values", "plain_table", "rows_as_dicts"]


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
    rows = table.to_pylist()
    if not any(col.null_count for col in table.columns):
        return rows
    return [{k: v for k, v in row.items() if v is not None} for row in rows]


def plain_table(table: pa.Table) -> bool:
    """Whether :func:`json_values` writes every row of ``table`` as ``json.dumps`` would: no nulls,
    only string, integer, finite floating point and boolean columns, no string that needs more
    escaping than quote and backslash."""
    for col in table.columns:
        t = col.type
        if col.null_count:
            return False
        if pa.types.is_string(t):
            if pc.any(pc.match_substring_regex(col, "[\\x00-\\x1f]")).as_py():
                return False
        elif pa.types.is_floating(t):
            if not pc.all(pc.is_finite(col)).as_py():
                return False
        elif not (pa.types.is_integer(t) or pa.types.is_boolean(t)):
            return False
    return True


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

    Only for a :func:`plain_table`. Floats are written in shortest round-trip form (Arrow's), so
    ``1171.0`` is written ``1171``: the same JSON number.
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
