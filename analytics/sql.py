"""Ad-hoc Spark SQL over the lake views.

:func:`run_sql` registers the lake views (:func:`analytics.views.register_views`), runs one SQL
statement and returns either

* a fixed-width text table: a header, a ``-`` rule, one line per row (numbers right-aligned, NULL
  for nulls, long strings and binary values shortened) and a footer ``(N rows)``; when the result
  has more than ``limit`` rows only the first ``limit`` are shown and the footer says so; or
* with ``as_json=True``, **JSON Lines**: one JSON object per row, column name -> value, nothing
  else (no footer; at most ``limit`` rows -- :func:`execute` tells whether rows were cut off).
  Timestamps are ISO-8601 with the session time-zone offset, dates ``YYYY-MM-DD``, binary values
  base64, NaN/Infinity ``null``.

Timestamps in both formats are shown in the Spark session time zone
(``spark.sql.session.timeZone``), as Spark's own ``show()`` does.

Errors in the query (parse errors, unknown tables or columns, runtime errors such as a failed
cast) raise :class:`SqlError` whose message is a single line, e.g.
``[PARSE_SYNTAX_ERROR] Syntax error at or near 'FORM'. (line 1, pos 9)``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analytics.views import one_line, refused, register_views
from streamsight.errors import StreamsightError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from streamsight.settings import Settings

DEFAULT_LIMIT = 1000
_MAX_CELL = 80


class SqlError(StreamsightError):
    """A query failed; the message is one line (no Spark/JVM traceback)."""


@dataclass(frozen=True)
class SqlResult:
    columns: list[str]
    types: list[str]  # Spark simple type strings, e.g. "bigint", "timestamp"
    rows: list[tuple[Any, ...]]
    truncated: bool  # the query returned more than ``limit`` rows
    time_zone: dt.tzinfo | None = None  # session time zone, for timestamp columns


def clean_query(query: str) -> str:
    text = query.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if not text:
        raise SqlError("empty query")
    return text


def error_message(exc: BaseException | str) -> str:
    """A one-line description of a Spark SQL error."""
    line = one_line(exc) if isinstance(exc, BaseException) else (exc.strip().splitlines() or [""])[0]
    line = re.sub(r"\s*SQLSTATE: [0-9A-Z]+;?", "", line).strip()
    line = re.sub(r";\s*line (\d+) pos (\d+);?$", r" (line \1, pos \2)", line)
    condition = exc.getCondition() if hasattr(exc, "getCondition") else None
    if condition == "TABLE_OR_VIEW_NOT_FOUND":
        line += " Run SHOW VIEWS to list the lake views."
    return " ".join(line.split())


@contextlib.contextmanager
def _quiet_query_context_logs() -> Iterator[None]:
    """PySpark logs every failed query with its traceback as JSON; we report it ourselves."""
    loggers = [logging.getLogger(n) for n in ("SQLQueryContextLogger", "DataFrameQueryContextLogger")]
    before = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, was in zip(loggers, before):
            lg.disabled = was


def _session_tz(spark: SparkSession) -> dt.tzinfo | None:
    try:
        from zoneinfo import ZoneInfo

        name = spark.conf.get("spark.sql.session.timeZone")
        return ZoneInfo(name) if name else None
    except Exception:
        return None


def collect(frame: DataFrame, limit: int | None = DEFAULT_LIMIT) -> tuple[list[tuple[Any, ...]], bool]:
    """Rows (as tuples) and whether there were more than ``limit``."""
    if limit is None or limit <= 0:
        return [tuple(r) for r in frame.collect()], False
    rows = [tuple(r) for r in frame.limit(limit + 1).collect()]
    return rows[:limit], len(rows) > limit


@contextlib.contextmanager
def _sql_errors(refused: dict[str, str] | None) -> Iterator[None]:
    """Spark's errors in the block as :class:`SqlError` (one line); a view ``refused`` names, or a
    read the file system refuses, as that refusal."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    from streamsight.hadoop import access_denied

    with _quiet_query_context_logs():
        try:
            yield
        except (PySparkException, Py4JJavaError) as exc:
            if (denied := access_denied(exc)) is not None:
                raise SqlError(f"access denied: {denied}") from None
            condition = exc.getCondition() if isinstance(exc, PySparkException) else None
            names = [v for v in (refused or {}) if condition == "TABLE_OR_VIEW_NOT_FOUND"
                     and re.search(rf"(?<![\w]){re.escape(v)}(?![\w])", str(exc), re.IGNORECASE)]
            if names:
                raise SqlError(f"{names[0]}: access denied: {(refused or {})[names[0]]}") from None
            if isinstance(exc, Py4JJavaError):
                raise SqlError(error_message(exc.java_exception.toString())) from None
            raise SqlError(error_message(exc)) from None


def execute(spark: SparkSession, query: str, *, limit: int | None = DEFAULT_LIMIT,
            refused: dict[str, str] | None = None) -> SqlResult:
    """Run one statement over the views already registered. Raises :class:`SqlError`.

    ``refused``: views not registered because the file system refused this user access
    (:func:`analytics.views.refused`); a query that names one fails with that refusal.
    """
    text = clean_query(query)
    with _sql_errors(refused):
        frame = spark.sql(text)
        rows, truncated = collect(frame, limit)
    return SqlResult(
        columns=list(frame.columns),
        types=[f.dataType.simpleString() for f in frame.schema.fields],
        rows=rows,
        truncated=truncated,
        time_zone=_session_tz(spark),
    )


OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".ndjson": "json", ".parquet": "parquet"}


def output_format(path: Path) -> str:
    """The format :func:`export` writes to ``path``, by its extension; StreamsightError if none."""
    kind = OUTPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise StreamsightError(f"--output: {path.name}: unknown extension; use one of {', '.join(OUTPUT_FORMATS)}")
    return kind


def export(spark: SparkSession, query: str, path: Path, *, limit: int | None = None,
           refused: dict[str, str] | None = None) -> int:
    """Write the result of ``query`` (its first ``limit`` rows; None or 0: all) to ``path``, in the
    format its extension names (:data:`OUTPUT_FORMATS`: CSV with a header, JSON Lines as
    :func:`format_json_lines` writes them, or Parquet); the rows written. Rows stream to the file
    (CSV, JSON Lines); for Parquet they are collected as one Arrow table in this process first. The
    file appears whole or not at all."""
    kind = output_format(path)
    text = clean_query(query)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        written = _write(spark, text, kind, partial, limit, refused)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return written


def _write(spark: SparkSession, text: str, kind: str, partial: Path, limit: int | None,
           refused: dict[str, str] | None) -> int:
    written = 0
    with _sql_errors(refused):
        frame = spark.sql(text)
        if limit:
            frame = frame.limit(limit)
        types = [f.dataType.simpleString() for f in frame.schema.fields]
        tz = _session_tz(spark)
        if kind == "parquet":
            import pyarrow.parquet as pq

            table = frame.toArrow()
            pq.write_table(table, partial)
            written = table.num_rows
        else:
            with partial.open("w", newline="", encoding="utf-8") as fh:
                if kind == "csv":
                    import csv

                    writer = csv.writer(fh)
                    writer.writerow(frame.columns)
                    for row in frame.toLocalIterator():
                        writer.writerow(["" if v is None else cell_text(v, k, tz, None) for v, k in zip(row, types)])
                        written += 1
                else:
                    result = SqlResult(columns=list(frame.columns), types=types, rows=[], truncated=False, time_zone=tz)
                    for row in frame.toLocalIterator():
                        fh.write(format_json_lines(replace(result, rows=[tuple(row)])))
                        written += 1
    return written


def run_sql(
    spark: SparkSession,
    settings: Settings,
    query: str,
    *,
    as_json: bool = False,
    limit: int | None = DEFAULT_LIMIT,
) -> str:
    """Register the lake views, run ``query`` and format the result (see the module docstring)."""
    from streamsight.contracts import load_contracts

    clean_query(query)  # fail fast on an empty query, before touching the lake
    views = register_views(spark, settings, load_contracts(settings.contracts_dir))
    result = execute(spark, query, limit=limit, refused=refused(views))
    return format_json_lines(result) if as_json else format_table(result)


# -- formatting -------------------------------------------------------------------------------------

def _timestamp(value: dt.datetime, tz: dt.tzinfo | None) -> dt.datetime:
    # PySpark returns TIMESTAMP values as naive datetimes in the Python process's local time;
    # astimezone() treats a naive value as local time, giving the right instant.
    return value.astimezone(tz)


def _iso_time(value: dt.datetime, sep: str) -> str:
    spec = "seconds" if value.microsecond == 0 else ("milliseconds" if value.microsecond % 1000 == 0 else "microseconds")
    return value.isoformat(sep=sep, timespec=spec)


def _float_text(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    text = f"{value:.6g}"
    if "e" in text and abs(value) >= 1:
        text = f"{value:.2f}"
    elif "e" not in text and "." not in text:
        text += ".0"  # keep floats recognisable as floats
    return text


def cell_text(value: Any, kind: str, tz: dt.tzinfo | None, max_len: int | None = _MAX_CELL) -> str:
    """Display text of one value of Spark type ``kind`` (``max_len=None``: never shortened)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, dt.datetime):
        if kind == "timestamp":
            value = _timestamp(value, tz)
            text = _iso_time(value.replace(tzinfo=None), " ")
        else:
            text = _iso_time(value, " ")
        return text
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        hexed = bytes(value).hex()
        return "0x" + (hexed if max_len is None or len(hexed) <= 32 else hexed[:32] + "…")
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(_json_value(value, "", tz), ensure_ascii=False)
    else:
        text = str(value)
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return text if max_len is None or len(text) <= max_len else text[: max_len - 1] + "…"


NUMERIC_TYPE = re.compile(r"^(tinyint|smallint|int|bigint|float|double|decimal.*)$")


def format_table(result: SqlResult) -> str:
    """Fixed-width text table with a row-count footer."""
    if not result.columns:
        return "(statement executed, no result columns)\n"
    cells = [[cell_text(v, k, result.time_zone) for v, k in zip(row, result.types)] for row in result.rows]
    widths = [len(c) for c in result.columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    numeric = [bool(NUMERIC_TYPE.match(k)) for k in result.types]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return " | ".join(parts).rstrip()

    out = [line(result.columns), "-+-".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    n = len(result.rows)
    if result.truncated:
        out.append(f"(first {n} rows shown; the query returned more: --limit N shows more, --limit 0 all)")
    else:
        out.append(f"({n} row{'' if n == 1 else 's'})")
    return "\n".join(out) + "\n"


def _json_value(value: Any, kind: str, tz: dt.tzinfo | None) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, dt.datetime):
        return _iso_time(_timestamp(value, tz), "T") if kind == "timestamp" else _iso_time(value, "T")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "asDict"):  # Row (struct)
        return {k: _json_value(v, "", tz) for k, v in value.asDict().items()}
    if isinstance(value, dict):
        return {str(k): _json_value(v, "", tz) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v, "", tz) for v in value]
    return str(value)


def json_records(result: SqlResult) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts; duplicate column names get a ``_2``, ``_3`` suffix."""
    names: list[str] = []
    for name in result.columns:
        candidate, n = name, 1
        while candidate in names:
            n += 1
            candidate = f"{name}_{n}"
        names.append(candidate)
    return [
        {name: _json_value(v, k, result.time_zone) for name, v, k in zip(names, row, result.types)}
        for row in result.rows
    ]


def format_json_lines(result: SqlResult) -> str:
    """One JSON object per line (empty string for no rows)."""
    return "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in json_records(result))
